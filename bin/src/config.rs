//! `ringcast serve` settings: command-line flags over an optional TOML file over the engine's defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use ringcast_engine::{Config, CoreSet, Driver, SlowConsumerPolicy};
use serde::Deserialize;

/// Reactor driver choice on the command line.
#[derive(Clone, Copy, Debug, ValueEnum, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DriverArg {
    /// io_uring when available, else epoll (logged once).
    Auto,
    /// io_uring only.
    Uring,
    /// The legacy epoll driver.
    Epoll,
}

/// Slow-consumer policy on the command line.
#[derive(Clone, Copy, Debug, ValueEnum, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PolicyArg {
    /// Close the connection with 1008.
    Disconnect,
    /// Drop the oldest queued data messages.
    Drop,
}

/// Every knob of `ringcast serve`. Each is optional here so that a flag overrides the file, which overrides the
/// default shown in the help.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ServeArgs {
    /// TOML file with any of these settings (keys are the flag names without the dashes)
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Reactor cores: a count ("4") or a CPU list ("0,2-3"; one CPU: "2-2" or "2,") [default: all online cores]
    #[arg(long, value_name = "N|LIST")]
    pub cores: Option<String>,
    /// Do not pin reactor threads to their cores [default: pinned]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub no_pin: Option<bool>,
    /// io_uring or epoll [default: auto]
    #[arg(long, value_enum)]
    pub driver: Option<DriverArg>,
    /// Listen backlog per core [default: 4096]
    #[arg(long, value_name = "N")]
    pub backlog: Option<i32>,
    /// Connections per core; more get 503 [default: 500000]
    #[arg(long, value_name = "N")]
    pub max_connections_per_core: Option<usize>,
    /// Time to complete the request head [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub handshake_timeout: Option<String>,
    /// Ping a WebSocket silent this long [default: 30s]
    #[arg(long, value_name = "DURATION")]
    pub ping_interval: Option<String>,
    /// Close a WebSocket silent this long (1001) [default: 90s]
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Longest wait for the peer after a close frame [default: 5s]
    #[arg(long, value_name = "DURATION")]
    pub close_timeout: Option<String>,
    /// Longest graceful-shutdown drain [default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// Largest WebSocket message, 1009 over it [default: 1MiB]
    #[arg(long, value_name = "SIZE")]
    pub max_message_size: Option<String>,
    /// Largest WebSocket frame payload, 1009 over it [default: 1MiB]
    #[arg(long, value_name = "SIZE")]
    pub max_frame_size: Option<String>,
    /// Largest HTTP request head, 431 over it [default: 8KiB]
    #[arg(long, value_name = "SIZE")]
    pub max_head_bytes: Option<String>,
    /// Most HTTP request headers, 431 over it [default: 64]
    #[arg(long, value_name = "N")]
    pub max_headers: Option<usize>,
    /// Queued output per connection before the slow-consumer policy applies [default: 4MiB]
    #[arg(long, value_name = "SIZE")]
    pub write_high_water: Option<String>,
    /// What to do with a slow consumer [default: disconnect]
    #[arg(long, value_enum)]
    pub slow_consumer: Option<PolicyArg>,
    /// Per-core read buffer [default: 64KiB]
    #[arg(long, value_name = "SIZE")]
    pub read_buffer_size: Option<String>,
}

fn duration(name: &str, v: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(v).with_context(|| format!("--{name}: {v:?} is not a duration like 10s or 500ms"))
}

fn size(name: &str, v: &str) -> anyhow::Result<usize> {
    let b: bytesize::ByteSize =
        v.parse().map_err(|e| anyhow::anyhow!("--{name}: {v:?} is not a size like 64KiB or 1MiB ({e})"))?;
    usize::try_from(b.as_u64()).with_context(|| format!("--{name}: {v} is too large"))
}

fn cores(v: &str) -> anyhow::Result<CoreSet> {
    if let Ok(n) = v.parse::<usize>() {
        if n == 0 {
            bail!("--cores: must be at least 1");
        }
        return Ok(CoreSet::Count(n));
    }
    let mut list = Vec::new();
    for part in v.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let parse = |s: &str| s.trim().parse::<usize>().with_context(|| format!("--cores: bad core id {s:?}"));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse(a)?, parse(b)?);
                if a > b {
                    bail!("--cores: range {part} is backwards");
                }
                list.extend(a..=b);
            }
            None => list.push(parse(part)?),
        }
    }
    Ok(CoreSet::List(list))
}

impl ServeArgs {
    /// Fills every unset field from `file`.
    fn or(self, file: ServeArgs) -> ServeArgs {
        macro_rules! merge {
            ($($f:ident),*) => { ServeArgs { config: self.config, $($f: self.$f.or(file.$f)),* } };
        }
        merge!(
            listen, cores, no_pin, driver, backlog, max_connections_per_core, handshake_timeout, ping_interval,
            idle_timeout, close_timeout, drain_timeout, max_message_size, max_frame_size, max_head_bytes,
            max_headers, write_high_water, slow_consumer, read_buffer_size
        )
    }

    /// Builds the engine configuration: flags, then the file, then defaults.
    pub(crate) fn resolve(self) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<ServeArgs>(&text).with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => ServeArgs::default(),
        };
        let a = self.or(file);
        let mut c = Config::default();
        if let Some(v) = a.listen {
            c.listen = v;
        }
        if let Some(v) = &a.cores {
            c.cores = cores(v)?;
        }
        if let Some(v) = a.no_pin {
            c.pin_threads = !v;
        }
        if let Some(v) = a.driver {
            c.driver = match v {
                DriverArg::Auto => Driver::Auto,
                DriverArg::Uring => Driver::Uring,
                DriverArg::Epoll => Driver::Epoll,
            };
        }
        if let Some(v) = a.backlog {
            c.backlog = v;
        }
        if let Some(v) = a.max_connections_per_core {
            c.max_connections_per_core = v;
        }
        for (name, field, target) in [
            ("handshake-timeout", &a.handshake_timeout, &mut c.handshake_timeout),
            ("ping-interval", &a.ping_interval, &mut c.ping_interval),
            ("idle-timeout", &a.idle_timeout, &mut c.idle_timeout),
            ("close-timeout", &a.close_timeout, &mut c.close_timeout),
            ("drain-timeout", &a.drain_timeout, &mut c.drain_timeout),
        ] {
            if let Some(v) = field {
                *target = duration(name, v)?;
            }
        }
        for (name, field, target) in [
            ("max-message-size", &a.max_message_size, &mut c.max_message_size),
            ("max-frame-size", &a.max_frame_size, &mut c.max_frame_size),
            ("max-head-bytes", &a.max_head_bytes, &mut c.max_head_bytes),
            ("write-high-water", &a.write_high_water, &mut c.write_high_water),
            ("read-buffer-size", &a.read_buffer_size, &mut c.read_buffer_size),
        ] {
            if let Some(v) = field {
                *target = size(name, v)?;
            }
        }
        if let Some(v) = a.max_headers {
            c.max_headers = v;
        }
        if let Some(v) = a.slow_consumer {
            c.slow_consumer = match v {
                PolicyArg::Disconnect => SlowConsumerPolicy::Disconnect,
                PolicyArg::Drop => SlowConsumerPolicy::DropOldest,
            };
        }
        c.validate().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists_and_counts() {
        assert_eq!(cores("3").unwrap(), CoreSet::Count(3));
        assert_eq!(cores("0,2-4").unwrap(), CoreSet::List(vec![0, 2, 3, 4]));
        assert_eq!(cores("1-1").unwrap(), CoreSet::List(vec![1]));
        assert_eq!(cores("1,").unwrap(), CoreSet::List(vec![1]));
        assert!(cores("0").is_err());
        assert!(cores("3-1").is_err());
        assert!(cores("x").is_err());
    }

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("ringcast-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ringcast.toml");
        std::fs::write(&path, "idle-timeout = \"2m\"\nping-interval = \"20s\"\nmax-message-size = \"2MiB\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ping_interval: Some("5s".into()),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.ping_interval, Duration::from_secs(5), "flag wins");
        assert_eq!(c.idle_timeout, Duration::from_secs(120), "file wins over default");
        assert_eq!(c.max_message_size, 2 << 20);
        assert_eq!(c.handshake_timeout, Duration::from_secs(10), "default");
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<ServeArgs>("no-such-knob = 1").is_err());
        let bad = ServeArgs { idle_timeout: Some("soon".into()), ..Default::default() };
        assert!(bad.resolve().unwrap_err().to_string().contains("idle-timeout"));
        let bad = ServeArgs { max_frame_size: Some("lots".into()), ..Default::default() };
        assert!(bad.resolve().unwrap_err().to_string().contains("max-frame-size"));
    }
}
