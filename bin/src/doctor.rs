//! `ringcast doctor`: reads the machine (kernel, limits, sysctls, CPU) and the configuration `ringcast serve` would
//! run with, and says, one line per check, whether they fit, with the exact command that fixes each shortfall.
//!
//! It only reads: files under `/proc` and `/sys`, and one throw-away io_uring ring to prove the kernel gives one.
//! It changes nothing. The work is split so it can be tested without the machine: [`Facts::gather`] reads
//! everything once, then [`checks`] is a pure function of those facts and the engine [`Config`].

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::Args;
use ringcast_engine::{Config, CoreSet, Driver};
use serde::Serialize;

use crate::config::ServeArgs;

/// Entries of each reactor's submission queue (the engine builds its rings with this many).
const RING_ENTRIES: u64 = 4096;
/// Descriptors a reactor holds besides connections: listener, ring, epoll set, eventfds, their duplicates.
const FDS_PER_CORE: u64 = 8;
/// Descriptors the process holds besides reactors: stdio, signal pipe, logs, config file, headroom.
const FDS_BASE: u64 = 64;

/// `ringcast doctor` flags: `--json`, plus every `ringcast serve` flag, so the checks use the configuration the
/// server would run with.
#[derive(Args, Debug)]
pub(crate) struct DoctorArgs {
    /// Print the checks (and the facts they were decided on) as one JSON object
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    serve: ServeArgs,
}

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub(crate) enum Level {
    /// The machine fits the configuration.
    Ok,
    /// Nothing to check here (feature absent, not used by this configuration); said for completeness.
    Info,
    /// The server runs, but slower, less dense or less robust than it could: apply the fix.
    Warn,
    /// The configuration cannot be served as written on this machine: apply the fix (or lower the configuration).
    Fail,
}

impl Level {
    /// WARN or FAIL: what `serve` logs at start-up.
    pub(crate) fn needs_attention(self) -> bool {
        matches!(self, Level::Warn | Level::Fail)
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// One decided check.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Check {
    /// Stable identifier (also the JSON key automation matches on).
    pub name: &'static str,
    /// The verdict.
    pub level: Level,
    /// What was found, with the numbers.
    pub message: String,
    /// The exact command or setting that fixes it; `None` when nothing needs fixing.
    pub fix: Option<String>,
}

/// The names of every check, in the order [`checks`] returns them.
#[cfg(test)]
pub(crate) const CHECK_NAMES: [&str; 15] = [
    "kernel",
    "io_uring",
    "nofile",
    "memlock",
    "somaxconn",
    "syn_backlog",
    "port_range",
    "file_max",
    "nr_open",
    "conntrack",
    "ehash",
    "thp",
    "governor",
    "cores",
    "write_mark",
];

/// A soft/hard resource limit pair; `None` means unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Limit {
    /// The limit in force (what the process gets).
    pub soft: Option<u64>,
    /// The ceiling the process may raise the soft limit to without privilege.
    pub hard: Option<u64>,
}

/// The outcome of setting up an io_uring ring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct UringProbe {
    /// A ring was set up.
    pub ok: bool,
    /// The errno when it was not.
    pub errno: Option<i32>,
    /// The error text when it was not.
    pub error: Option<String>,
}

/// Everything the checks decide on, read once from the machine (or fabricated by tests). `None` means the file
/// was absent or unreadable.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Facts {
    /// `/proc/sys/kernel/osrelease`.
    pub kernel_release: Option<String>,
    /// Setting up a ring the size the reactors use.
    pub uring: UringProbe,
    /// `kernel.io_uring_disabled` (0 allowed, 1 only CAP_SYS_ADMIN / `io_uring_group`, 2 nobody); absent before 6.6.
    pub io_uring_disabled: Option<u32>,
    /// `Seccomp:` of `/proc/self/status` (0 none, 1 strict, 2 filter).
    pub seccomp: Option<u32>,
    /// RLIMIT_NOFILE.
    pub nofile: Option<Limit>,
    /// RLIMIT_MEMLOCK.
    pub memlock: Option<Limit>,
    /// `net.core.somaxconn`.
    pub somaxconn: Option<u64>,
    /// `net.ipv4.tcp_max_syn_backlog`.
    pub tcp_max_syn_backlog: Option<u64>,
    /// `net.ipv4.ip_local_port_range`.
    pub port_range: Option<(u16, u16)>,
    /// `net.ipv4.ip_local_reserved_ports`, as inclusive ranges.
    pub reserved_ports: Vec<(u16, u16)>,
    /// `fs.file-max`.
    pub file_max: Option<u64>,
    /// Descriptors allocated system-wide now (first field of `fs.file-nr`).
    pub files_allocated: Option<u64>,
    /// `fs.nr_open`.
    pub nr_open: Option<u64>,
    /// `net.netfilter.nf_conntrack_max`; `None` when the conntrack module is not loaded.
    pub conntrack_max: Option<u64>,
    /// `net.netfilter.nf_conntrack_buckets`.
    pub conntrack_buckets: Option<u64>,
    /// `net.netfilter.nf_conntrack_count`: connections tracked now.
    pub conntrack_count: Option<u64>,
    /// Buckets of the kernel's TCP established-connection hash (`net.ipv4.tcp_ehash_entries`, read-only, sized at
    /// boot; negative when this network namespace has its own table).
    pub ehash_entries: Option<i64>,
    /// TCP sockets in use now (`TCP: inuse` of `/proc/net/sockstat`).
    pub tcp_inuse: Option<u64>,
    /// The selected mode of `/sys/kernel/mm/transparent_hugepage/enabled` (`always`, `madvise`, `never`).
    pub thp: Option<String>,
    /// `(cpu, scaling_governor)` for every CPU that has cpufreq; empty in most VMs.
    pub governors: Vec<(usize, String)>,
    /// CPUs this process may run on (`Cpus_allowed_list:` of `/proc/self/status`).
    pub allowed_cpus: Vec<usize>,
    /// The ceiling of the kernel's send-buffer autotuning (third value of `net.ipv4.tcp_wmem`).
    pub tcp_wmem_max: Option<u64>,
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn read_u64(path: &str) -> Option<u64> {
    read(path)?.split_whitespace().next()?.parse().ok()
}

/// A field of `/proc/self/status`, e.g. `Seccomp`.
fn status_field<'a>(status: &'a str, field: &str) -> Option<&'a str> {
    status.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}

/// The soft and hard values of one row of `/proc/self/limits`, e.g. `Max open files`.
pub(crate) fn parse_limit(limits: &str, row: &str) -> Option<Limit> {
    let line = limits.lines().find(|l| l.starts_with(row))?;
    let mut it = line.get(row.len()..)?.split_whitespace();
    let value = |s: Option<&str>| -> Option<Option<u64>> {
        match s? {
            "unlimited" => Some(None),
            v => v.parse().ok().map(Some),
        }
    };
    Some(Limit {
        soft: value(it.next())?,
        hard: value(it.next())?,
    })
}

/// A kernel CPU or port list such as `0-3,8,10-11` as inclusive ranges; `None` on anything malformed.
pub(crate) fn parse_ranges(s: &str) -> Option<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let v = part.parse().ok()?;
                (v, v)
            }
        };
        if a > b {
            return None;
        }
        out.push((a, b));
    }
    Some(out)
}

/// `(major, minor)` of a kernel release such as `6.8.0-45-generic`.
pub(crate) fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

fn probe_uring() -> UringProbe {
    // A ring of the size each reactor builds, so a RLIMIT_MEMLOCK too small for it shows here too.
    let entries = u32::try_from(RING_ENTRIES).unwrap_or(u32::MAX);
    match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(entries)
        .build()
    {
        Ok(_runtime) => UringProbe {
            ok: true,
            errno: None,
            error: None,
        },
        Err(e) => UringProbe {
            ok: false,
            errno: e.raw_os_error(),
            error: Some(e.to_string()),
        },
    }
}

impl Facts {
    /// Reads the machine. Never writes anything.
    pub(crate) fn gather() -> Facts {
        let status = read("/proc/self/status").unwrap_or_default();
        let limits = read("/proc/self/limits").unwrap_or_default();
        let to_u16 = |v: Vec<(u64, u64)>| -> Vec<(u16, u16)> {
            v.into_iter()
                .filter_map(|(a, b)| Some((u16::try_from(a).ok()?, u16::try_from(b).ok()?)))
                .collect()
        };
        let port_range = read("/proc/sys/net/ipv4/ip_local_port_range").and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        });
        let thp = read("/sys/kernel/mm/transparent_hugepage/enabled").and_then(|s| {
            s.split_whitespace()
                .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
                .map(str::to_owned)
        });
        let mut governors: Vec<(usize, String)> = std::fs::read_dir("/sys/devices/system/cpu")
            .map(|dir| {
                dir.filter_map(|e| {
                    let e = e.ok()?;
                    let id = e.file_name().to_str()?.strip_prefix("cpu")?.parse().ok()?;
                    let g = read(e.path().join("cpufreq/scaling_governor"))?;
                    Some((id, g))
                })
                .collect()
            })
            .unwrap_or_default();
        governors.sort();
        let allowed_cpus = status_field(&status, "Cpus_allowed_list")
            .and_then(parse_ranges)
            .map(|r| {
                r.into_iter()
                    .flat_map(|(a, b)| a..=b)
                    .filter_map(|c| usize::try_from(c).ok())
                    .collect()
            })
            .unwrap_or_else(|| {
                (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
            });
        Facts {
            kernel_release: read("/proc/sys/kernel/osrelease"),
            uring: probe_uring(),
            io_uring_disabled: read_u64("/proc/sys/kernel/io_uring_disabled")
                .and_then(|v| u32::try_from(v).ok()),
            seccomp: status_field(&status, "Seccomp").and_then(|v| v.parse().ok()),
            nofile: parse_limit(&limits, "Max open files"),
            memlock: parse_limit(&limits, "Max locked memory"),
            somaxconn: read_u64("/proc/sys/net/core/somaxconn"),
            tcp_max_syn_backlog: read_u64("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
            port_range,
            reserved_ports: read("/proc/sys/net/ipv4/ip_local_reserved_ports")
                .and_then(|s| parse_ranges(&s))
                .map(to_u16)
                .unwrap_or_default(),
            file_max: read_u64("/proc/sys/fs/file-max"),
            files_allocated: read_u64("/proc/sys/fs/file-nr"),
            nr_open: read_u64("/proc/sys/fs/nr_open"),
            conntrack_max: read_u64("/proc/sys/net/netfilter/nf_conntrack_max"),
            conntrack_buckets: read_u64("/proc/sys/net/netfilter/nf_conntrack_buckets"),
            conntrack_count: read_u64("/proc/sys/net/netfilter/nf_conntrack_count"),
            ehash_entries: read("/proc/sys/net/ipv4/tcp_ehash_entries")
                .and_then(|s| s.trim().parse().ok()),
            tcp_inuse: read("/proc/net/sockstat").and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("TCP:"))?;
                let mut it = line.split_whitespace();
                it.find(|w| *w == "inuse")?;
                it.next()?.parse().ok()
            }),
            thp,
            governors,
            allowed_cpus,
            tcp_wmem_max: read("/proc/sys/net/ipv4/tcp_wmem")
                .and_then(|s| s.split_whitespace().nth(2)?.parse().ok()),
        }
    }
}

/// The CPUs the reactors would run on, as the engine picks them.
fn reactor_cpus(facts: &Facts, config: &Config) -> Vec<usize> {
    match &config.cores {
        CoreSet::All => facts.allowed_cpus.clone(),
        CoreSet::Count(n) if facts.allowed_cpus.is_empty() => (0..*n).collect(),
        CoreSet::Count(n) => facts
            .allowed_cpus
            .iter()
            .copied()
            .cycle()
            .take(*n)
            .collect(),
        CoreSet::List(l) => l.clone(),
    }
}

fn reactors(facts: &Facts, config: &Config) -> u64 {
    u64::try_from(reactor_cpus(facts, config).len()).unwrap_or(u64::MAX)
}

/// Connections the configuration admits on the whole process.
fn connections(facts: &Facts, config: &Config) -> u64 {
    let per_core = u64::try_from(config.max_connections_per_core).unwrap_or(u64::MAX);
    reactors(facts, config).saturating_mul(per_core)
}

/// Descriptors the process needs at the configured connection limit.
fn fds_needed(facts: &Facts, config: &Config) -> u64 {
    connections(facts, config)
        .saturating_add(reactors(facts, config).saturating_mul(FDS_PER_CORE))
        .saturating_add(FDS_BASE)
}

/// Bytes one io_uring ring of `entries` pins: 64-byte SQEs, the 4-byte SQ index array, 16-byte CQEs (twice as
/// many) and a page of ring header each for the SQ and CQ.
fn ring_bytes(entries: u64) -> u64 {
    entries * 64 + entries * 4 + 2 * entries * 16 + 2 * 4096
}

fn fmt_limit(v: Option<u64>) -> String {
    v.map_or_else(|| "unlimited".to_owned(), |v| v.to_string())
}

fn check(name: &'static str, level: Level, message: String, fix: Option<String>) -> Check {
    Check {
        name,
        level,
        message,
        fix,
    }
}

fn driver_name(d: Driver) -> &'static str {
    match d {
        Driver::Auto => "auto",
        Driver::Uring => "uring",
        Driver::Epoll => "epoll",
    }
}

fn check_kernel(f: &Facts, c: &Config) -> Check {
    let Some(release) = &f.kernel_release else {
        return check(
            "kernel",
            Level::Warn,
            "cannot read /proc/sys/kernel/osrelease".into(),
            Some(
                "mount /proc (ringcast needs it for these checks and the engine for CPU ids)"
                    .into(),
            ),
        );
    };
    match kernel_version(release) {
        None => check(
            "kernel",
            Level::Warn,
            format!("cannot parse kernel release {release:?}"),
            Some("check `uname -r`; ringcast wants Linux >= 5.12 for io_uring".into()),
        ),
        Some(v) if v < (5, 6) => check(
            "kernel",
            if c.driver == Driver::Uring {
                Level::Fail
            } else {
                Level::Warn
            },
            format!(
                "Linux {release}: older than 5.6, io_uring is missing or too incomplete; the reactors use epoll"
            ),
            Some("upgrade to Linux >= 5.12 (or run with --driver epoll knowingly)".into()),
        ),
        Some(v) if v < (5, 12) => check(
            "kernel",
            Level::Ok,
            format!(
                "Linux {release}: io_uring works; before 5.12 rings are charged to RLIMIT_MEMLOCK (see memlock)"
            ),
            None,
        ),
        Some(_) => check(
            "kernel",
            Level::Ok,
            format!(
                "Linux {release}: io_uring rings are charged to the memory cgroup, not RLIMIT_MEMLOCK"
            ),
            None,
        ),
    }
}

fn check_uring(f: &Facts, c: &Config) -> Check {
    let context = format!(
        "io_uring_disabled={}, seccomp={}",
        f.io_uring_disabled
            .map_or_else(|| "absent".to_owned(), |v| v.to_string()),
        match f.seccomp {
            Some(0) => "none",
            Some(1) => "strict",
            Some(2) => "filter",
            _ => "unknown",
        }
    );
    if f.uring.ok {
        let (level, what) = if c.driver == Driver::Epoll {
            (Level::Info, "available but not used (--driver epoll)")
        } else {
            (
                Level::Ok,
                "a 4096-entry ring was set up; the reactors will use io_uring",
            )
        };
        return check("io_uring", level, format!("{what} ({context})"), None);
    }
    let error = f.uring.error.as_deref().unwrap_or("unknown error");
    let kernel = f.kernel_release.as_deref().and_then(kernel_version);
    let (cause, fix) = if f.io_uring_disabled == Some(2) {
        (
            "kernel.io_uring_disabled=2 turns io_uring off for every process".to_owned(),
            "sysctl -w kernel.io_uring_disabled=0 (persist it: tuning/sysctl.conf)".to_owned(),
        )
    } else if f.io_uring_disabled == Some(1) {
        (
            "kernel.io_uring_disabled=1 allows io_uring only to CAP_SYS_ADMIN and kernel.io_uring_group"
                .to_owned(),
            "sysctl -w kernel.io_uring_group=$(id -g ringcast) (or kernel.io_uring_disabled=0)".to_owned(),
        )
    } else if f.seccomp == Some(2) {
        (
            "a seccomp filter on this process blocks io_uring_setup (container default profiles do)".to_owned(),
            "run under a seccomp profile that allows io_uring_setup, io_uring_enter and io_uring_register \
             (docker/podman: --security-opt seccomp=<profile>; systemd: no SystemCallFilter excluding them)"
                .to_owned(),
        )
    } else if f.uring.errno == Some(libc_errno::ENOMEM) && kernel.is_some_and(|v| v < (5, 12)) {
        (
            "the ring does not fit in RLIMIT_MEMLOCK (kernels before 5.12 charge rings to it)"
                .to_owned(),
            format!(
                "LimitMEMLOCK={} in the unit (or `ulimit -l {}`)",
                reactors(f, c) * ring_bytes(RING_ENTRIES),
                (reactors(f, c) * ring_bytes(RING_ENTRIES)).div_ceil(1024)
            ),
        )
    } else if f.uring.errno == Some(libc_errno::ENOSYS) {
        (
            "the kernel was built without io_uring (CONFIG_IO_URING=n)".to_owned(),
            "use a kernel with CONFIG_IO_URING=y (every distribution kernel >= 5.12 has it)"
                .to_owned(),
        )
    } else {
        (
            "unknown cause".to_owned(),
            "run `ringcast serve --driver uring` to see the error, check dmesg and the container runtime"
                .to_owned(),
        )
    };
    let (level, consequence) = match c.driver {
        Driver::Uring => (Level::Fail, "--driver uring will refuse to start"),
        Driver::Auto => (
            Level::Warn,
            "the reactors fall back to epoll (works, more syscalls)",
        ),
        Driver::Epoll => (Level::Info, "not needed with --driver epoll"),
    };
    check(
        "io_uring",
        level,
        format!("cannot set up a ring: {error}; {cause}; {consequence} ({context})"),
        (c.driver != Driver::Epoll).then_some(fix),
    )
}

/// The errno values the io_uring check tells apart (Linux, every architecture).
mod libc_errno {
    /// Out of memory (also: locked-memory limit exceeded).
    pub(super) const ENOMEM: i32 = 12;
    /// Function not implemented.
    pub(super) const ENOSYS: i32 = 38;
}

fn check_nofile(f: &Facts, c: &Config) -> Check {
    let need = fds_needed(f, c);
    let what = format!(
        "{} reactors x {} connections + {} = {need} descriptors needed",
        reactors(f, c),
        c.max_connections_per_core,
        need - connections(f, c)
    );
    let Some(limit) = f.nofile else {
        return check(
            "nofile",
            Level::Warn,
            format!("cannot read RLIMIT_NOFILE from /proc/self/limits; {what}"),
            Some(format!("make sure `ulimit -n` is at least {need}")),
        );
    };
    let soft = limit.soft.unwrap_or(u64::MAX);
    let hard = limit.hard.unwrap_or(u64::MAX);
    if soft >= need {
        return check(
            "nofile",
            Level::Ok,
            format!("RLIMIT_NOFILE {} >= {what}", fmt_limit(limit.soft)),
            None,
        );
    }
    let usable = soft.saturating_sub(need - connections(f, c));
    let fix = if need <= hard {
        format!(
            "`ulimit -n {need}` in the shell that starts ringcast (hard limit {} allows it), LimitNOFILE={need} in \
             the unit; or --max-connections-per-core {}",
            fmt_limit(limit.hard),
            usable / reactors(f, c).max(1)
        )
    } else {
        format!(
            "LimitNOFILE={need} in the unit, or `ringcast - nofile {need}` in \
             /etc/security/limits.d/ringcast.conf (tuning/limits.conf) and log in again; or \
             --max-connections-per-core {}",
            usable / reactors(f, c).max(1)
        )
    };
    check(
        "nofile",
        Level::Fail,
        format!(
            "RLIMIT_NOFILE soft {} (hard {}) < {what}: accept fails with EMFILE after about {usable} connections",
            fmt_limit(limit.soft),
            fmt_limit(limit.hard)
        ),
        Some(fix),
    )
}

fn check_memlock(f: &Facts, c: &Config) -> Check {
    let need = reactors(f, c) * ring_bytes(RING_ENTRIES);
    let soft = f.memlock.map(|l| l.soft);
    let shown = soft.map_or_else(|| "unknown".to_owned(), fmt_limit);
    let kernel = f.kernel_release.as_deref().and_then(kernel_version);
    if kernel.is_some_and(|v| v >= (5, 12)) {
        return check(
            "memlock",
            Level::Ok,
            format!("RLIMIT_MEMLOCK {shown}: not used for io_uring rings on Linux >= 5.12"),
            None,
        );
    }
    if c.driver == Driver::Epoll {
        return check(
            "memlock",
            Level::Info,
            format!("RLIMIT_MEMLOCK {shown}: not needed with --driver epoll"),
            None,
        );
    }
    let limit = soft.flatten().unwrap_or(u64::MAX);
    if soft.is_some() && limit >= need {
        return check(
            "memlock",
            Level::Ok,
            format!(
                "RLIMIT_MEMLOCK {shown} >= {need} bytes for {} rings of {RING_ENTRIES} entries",
                reactors(f, c)
            ),
            None,
        );
    }
    check(
        "memlock",
        if c.driver == Driver::Uring {
            Level::Fail
        } else {
            Level::Warn
        },
        format!(
            "RLIMIT_MEMLOCK {shown} < {need} bytes for {} rings of {RING_ENTRIES} entries (charged to it before \
             Linux 5.12)",
            reactors(f, c)
        ),
        Some(format!(
            "LimitMEMLOCK={need} in the unit, or `ringcast - memlock {}` (KiB) in \
             /etc/security/limits.d/ringcast.conf",
            need.div_ceil(1024)
        )),
    )
}

fn check_somaxconn(f: &Facts, c: &Config) -> Check {
    let backlog = u64::try_from(c.backlog.max(0)).unwrap_or(0);
    match f.somaxconn {
        None => check(
            "somaxconn",
            Level::Warn,
            "cannot read net.core.somaxconn".into(),
            Some(format!("check `sysctl net.core.somaxconn` >= {backlog}")),
        ),
        Some(s) if s >= backlog => check(
            "somaxconn",
            Level::Ok,
            format!("net.core.somaxconn {s} >= --backlog {backlog}"),
            None,
        ),
        Some(s) => check(
            "somaxconn",
            Level::Warn,
            format!(
                "net.core.somaxconn {s} < --backlog {backlog}: the kernel silently caps each listener's accept \
                 queue at {s}; connect bursts overflow it and clients wait for SYN retransmits (1 s, 3 s, ...)"
            ),
            Some(format!(
                "sysctl -w net.core.somaxconn={backlog} (persist: tuning/sysctl.conf), or --backlog {s}"
            )),
        ),
    }
}

/// The write high-water mark counts what the kernel holds for a connection too, so it must be above the most the
/// kernel's send buffer can hold (twice `--send-buffer`, or `net.ipv4.tcp_wmem`'s maximum with autotuning).
fn check_write_mark(f: &Facts, c: &Config) -> Check {
    let mark = c.write_high_water as u64;
    let (ceiling, source) = if c.send_buffer > 0 {
        (Some(c.send_buffer as u64 * 2), "twice --send-buffer")
    } else {
        (f.tcp_wmem_max, "net.ipv4.tcp_wmem max")
    };
    match ceiling {
        None => check(
            "write_mark",
            Level::Warn,
            "cannot read net.ipv4.tcp_wmem".into(),
            Some(format!(
                "check that `sysctl net.ipv4.tcp_wmem`'s maximum is below --write-high-water {mark}"
            )),
        ),
        Some(k) if k < mark => check(
            "write_mark",
            Level::Ok,
            format!(
                "--write-high-water {mark} above the kernel's send buffer ceiling {k} ({source})"
            ),
            None,
        ),
        Some(k) => check(
            "write_mark",
            Level::Warn,
            format!(
                "--write-high-water {mark} <= the kernel's send buffer ceiling {k} ({source}): the mark counts the \
                 kernel's queue, so a subscriber whose send buffer fills is at the mark as soon as anything waits \
                 in ringcast's queue, and is disconnected (or loses messages under drop-oldest) even when only \
                 briefly behind"
            ),
            Some(format!(
                "--write-high-water {}, or a lower ceiling: net.ipv4.tcp_wmem max (tuning/sysctl.conf) or \
                 --send-buffer",
                k.saturating_mul(2)
            )),
        ),
    }
}

fn check_syn_backlog(f: &Facts, c: &Config) -> Check {
    let backlog = u64::try_from(c.backlog.max(0)).unwrap_or(0);
    match f.tcp_max_syn_backlog {
        None => check(
            "syn_backlog",
            Level::Info,
            "net.ipv4.tcp_max_syn_backlog not readable".into(),
            None,
        ),
        Some(s) if s >= backlog => check(
            "syn_backlog",
            Level::Ok,
            format!("net.ipv4.tcp_max_syn_backlog {s} >= --backlog {backlog}"),
            None,
        ),
        Some(s) => check(
            "syn_backlog",
            Level::Warn,
            format!(
                "net.ipv4.tcp_max_syn_backlog {s} < --backlog {backlog}: half-open connections past {s} fall back \
                 to SYN cookies or are dropped during connect storms"
            ),
            Some(format!("sysctl -w net.ipv4.tcp_max_syn_backlog={backlog}")),
        ),
    }
}

fn check_port_range(f: &Facts, c: &Config) -> Check {
    let Some((lo, hi)) = f.port_range else {
        return check(
            "port_range",
            Level::Info,
            "net.ipv4.ip_local_port_range not readable".into(),
            None,
        );
    };
    let width = u32::from(hi.saturating_sub(lo)) + 1;
    let port = c.listen.port();
    let reserved = f
        .reserved_ports
        .iter()
        .any(|&(a, b)| (a..=b).contains(&port));
    if port != 0 && (lo..=hi).contains(&port) && !reserved {
        return check(
            "port_range",
            Level::Warn,
            format!(
                "listen port {port} is inside the ephemeral range {lo}-{hi}: an outgoing connection (the Redis \
                 bridge, a local load generator) can take it and `serve` then fails with EADDRINUSE"
            ),
            Some(format!(
                "sysctl -w net.ipv4.ip_local_reserved_ports={port} (persist it), or listen on a port outside \
                 {lo}-{hi}"
            )),
        );
    }
    check(
        "port_range",
        Level::Ok,
        format!(
            "ephemeral ports {lo}-{hi} ({width}); the server needs none (every accepted connection shares port \
             {port}); a client host needs one per connection per (source address, server address) pair"
        ),
        None,
    )
}

fn check_file_max(f: &Facts, c: &Config) -> Check {
    let need = fds_needed(f, c);
    let used = f.files_allocated.unwrap_or(0);
    match f.file_max {
        None => check(
            "file_max",
            Level::Warn,
            "cannot read fs.file-max".into(),
            Some(format!("check `sysctl fs.file-max` >= {}", need + used)),
        ),
        Some(m) if m >= need.saturating_add(used) => check(
            "file_max",
            Level::Ok,
            format!("fs.file-max {m} >= {need} needed + {used} open elsewhere"),
            None,
        ),
        Some(m) => {
            let want = need.saturating_add(used).saturating_add(need / 10);
            check(
                "file_max",
                Level::Fail,
                format!(
                    "fs.file-max {m} < {need} needed + {used} open elsewhere: the whole machine runs out of file \
                     descriptors (ENFILE) first"
                ),
                Some(format!(
                    "sysctl -w fs.file-max={want} (persist: tuning/sysctl.conf)"
                )),
            )
        }
    }
}

fn check_nr_open(f: &Facts, c: &Config) -> Check {
    let need = fds_needed(f, c);
    match f.nr_open {
        None => check(
            "nr_open",
            Level::Warn,
            "cannot read fs.nr_open".into(),
            Some(format!("check `sysctl fs.nr_open` >= {need}")),
        ),
        Some(n) if n >= need => check(
            "nr_open",
            Level::Ok,
            format!("fs.nr_open {n} >= {need}: RLIMIT_NOFILE can be raised that far"),
            None,
        ),
        Some(n) => check(
            "nr_open",
            Level::Fail,
            format!(
                "fs.nr_open {n} < {need}: no process may have RLIMIT_NOFILE above {n}, so LimitNOFILE={need} \
                 cannot take effect"
            ),
            Some(format!(
                "sysctl -w fs.nr_open={} before raising LimitNOFILE (persist: tuning/sysctl.conf)",
                need.next_power_of_two()
            )),
        ),
    }
}

fn check_conntrack(f: &Facts, c: &Config) -> Check {
    let need = connections(f, c);
    let Some(max) = f.conntrack_max else {
        return check(
            "conntrack",
            Level::Info,
            "nf_conntrack is not loaded: nothing to size".into(),
            None,
        );
    };
    let buckets = f
        .conntrack_buckets
        .map_or_else(|| "unknown".to_owned(), |b| b.to_string());
    if max >= need {
        return check(
            "conntrack",
            Level::Ok,
            format!(
                "net.netfilter.nf_conntrack_max {max} >= {need} connections (buckets {buckets})"
            ),
            None,
        );
    }
    let want = need.saturating_add(need / 4);
    let port = c.listen.port();
    // Loaded but hooked into no table of this network namespace: nothing is tracked (yet).
    let idle = f.conntrack_count == Some(0) && f.tcp_inuse.is_some_and(|n| n > 0);
    let (level, now) = if idle {
        (
            Level::Warn,
            format!(
                "; it tracks nothing now ({} TCP sockets in use, 0 tracked), but the first stateful firewall or NAT \
                 rule starts tracking every connection",
                f.tcp_inuse.unwrap_or(0)
            ),
        )
    } else {
        (Level::Fail, String::new())
    };
    check(
        "conntrack",
        level,
        format!(
            "nf_conntrack is loaded and nf_conntrack_max {max} < {need} connections: every tracked connection \
             holds an entry (for 5 days by default); past {max} new SYNs are dropped (\"nf_conntrack: table \
             full\"){now}"
        ),
        Some(format!(
            "bypass tracking for the service port: `iptables -t raw -I PREROUTING -p tcp --dport {port} -j NOTRACK; \
             iptables -t raw -I OUTPUT -p tcp --sport {port} -j NOTRACK`, or size it: `sysctl -w \
             net.netfilter.nf_conntrack_max={want}; echo {} > /sys/module/nf_conntrack/parameters/hashsize`",
            (want / 4).max(1)
        )),
    )
}

/// Average sockets per established-hash bucket above which the doctor warns. Every incoming segment walks its
/// bucket's chain; measured on the development VM at 1,000,000 loopback connections (2,000,000 sockets over 262,144
/// buckets, ≈ 7.6 per chain), `__inet_lookup_established` alone took 13 % of the server's CPU during a fan-out.
const EHASH_MAX_CHAIN: u64 = 2;

fn check_ehash(f: &Facts, c: &Config) -> Check {
    let need = connections(f, c);
    let buckets = match f.ehash_entries {
        None => {
            return check(
                "ehash",
                Level::Info,
                "net.ipv4.tcp_ehash_entries not readable (kernel before 6.1): size it at boot if you expect \
                 millions of connections (thash_entries=)"
                    .into(),
                None,
            );
        }
        Some(n) => n.unsigned_abs(),
    };
    let own = if f.ehash_entries.is_some_and(|n| n < 0) {
        " (this network namespace's own table)"
    } else {
        ""
    };
    if need <= buckets.saturating_mul(EHASH_MAX_CHAIN) {
        return check(
            "ehash",
            Level::Ok,
            format!(
                "TCP established hash: {buckets} buckets{own} for {need} connections (≤ {EHASH_MAX_CHAIN} per \
                 chain)"
            ),
            None,
        );
    }
    let want = need.next_power_of_two();
    check(
        "ehash",
        Level::Warn,
        format!(
            "TCP established hash: {buckets} buckets{own} for {need} connections, {:.1} sockets per chain: every \
             incoming segment walks its chain (measured at 7.6 per chain: 13 % of the server's CPU in a fan-out)",
            need as f64 / buckets.max(1) as f64
        ),
        Some(format!(
            "add thash_entries={want} to the kernel command line and reboot (the table is sized at boot; \
             {} MiB); in a container with its own network namespace set net.ipv4.tcp_child_ehash_entries={want} \
             on the host before creating it",
            (want * 8) >> 20
        )),
    )
}

fn check_thp(f: &Facts, _c: &Config) -> Check {
    match f.thp.as_deref() {
        None => check(
            "thp",
            Level::Info,
            "transparent huge pages not present on this kernel".into(),
            None,
        ),
        Some("always") => check(
            "thp",
            Level::Warn,
            "transparent_hugepage=always: many small per-connection allocations get backed by 2 MiB pages (RSS \
             bloat) and khugepaged compaction adds latency spikes"
                .into(),
            Some(
                "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled (persist: transparent_hugepage=madvise \
                 on the kernel command line)"
                    .into(),
            ),
        ),
        Some(mode) => check(
            "thp",
            Level::Ok,
            format!("transparent_hugepage={mode}"),
            None,
        ),
    }
}

fn check_governor(f: &Facts, c: &Config) -> Check {
    if f.governors.is_empty() {
        return check(
            "governor",
            Level::Info,
            "no cpufreq (typical in VMs, or the firmware controls frequency): nothing to set"
                .into(),
            None,
        );
    }
    let cpus = reactor_cpus(f, c);
    let slow: Vec<String> = f
        .governors
        .iter()
        .filter(|(cpu, g)| cpus.contains(cpu) && g != "performance")
        .map(|(cpu, g)| format!("cpu{cpu}={g}"))
        .collect();
    if slow.is_empty() {
        return check(
            "governor",
            Level::Ok,
            "every reactor CPU runs the performance governor".into(),
            None,
        );
    }
    check(
        "governor",
        Level::Warn,
        format!(
            "reactor CPUs not on the performance governor ({}): clocks ramp up late after idle, adding wake-up \
             latency to fan-out",
            slow.join(", ")
        ),
        Some(
            "cpupower frequency-set -g performance (or: echo performance | tee \
             /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor)"
                .into(),
        ),
    )
}

fn cpu_list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn check_cores(f: &Facts, c: &Config) -> Check {
    let allowed = &f.allowed_cpus;
    let n = allowed.len();
    match &c.cores {
        CoreSet::All => check(
            "cores",
            Level::Ok,
            format!("{n} reactors, one per allowed CPU ({})", cpu_list(allowed)),
            None,
        ),
        CoreSet::Count(k) if *k > n => check(
            "cores",
            Level::Warn,
            format!(
                "--cores {k} > {n} allowed CPUs ({}): reactors share CPUs and wait for each other",
                cpu_list(allowed)
            ),
            Some(format!("--cores {n}")),
        ),
        CoreSet::Count(k) => check(
            "cores",
            Level::Ok,
            format!("--cores {k} of {n} allowed CPUs ({})", cpu_list(allowed)),
            None,
        ),
        CoreSet::List(list) => {
            let missing: Vec<usize> = list
                .iter()
                .copied()
                .filter(|c| !allowed.contains(c))
                .collect();
            if missing.is_empty() {
                check(
                    "cores",
                    Level::Ok,
                    format!("--cores {} are all allowed", cpu_list(list)),
                    None,
                )
            } else {
                check(
                    "cores",
                    Level::Fail,
                    format!(
                        "--cores lists CPUs {} that this process may not run on (allowed: {}): serve refuses to \
                         start",
                        cpu_list(&missing),
                        cpu_list(allowed)
                    ),
                    Some(format!(
                        "--cores {} (or widen CPUAffinity / taskset)",
                        cpu_list(allowed)
                    )),
                )
            }
        }
    }
}

/// Decides every check from the facts and the configuration: pure, no I/O.
pub(crate) fn checks(facts: &Facts, config: &Config) -> Vec<Check> {
    let all: [fn(&Facts, &Config) -> Check; 15] = [
        check_kernel,
        check_uring,
        check_nofile,
        check_memlock,
        check_somaxconn,
        check_syn_backlog,
        check_port_range,
        check_file_max,
        check_nr_open,
        check_conntrack,
        check_ehash,
        check_thp,
        check_governor,
        check_cores,
        check_write_mark,
    ];
    all.iter().map(|f| f(facts, config)).collect()
}

/// The configuration summary printed (and put in the JSON) above the checks.
#[derive(Serialize)]
struct ConfigSummary {
    listen: String,
    driver: &'static str,
    reactors: u64,
    reactor_cpus: Vec<usize>,
    max_connections_per_core: usize,
    connections: u64,
    fds_needed: u64,
    backlog: i32,
}

/// The whole `--json` document.
#[derive(Serialize)]
struct Report<'a> {
    ok: bool,
    fails: usize,
    warns: usize,
    config: ConfigSummary,
    checks: &'a [Check],
    facts: &'a Facts,
}

/// Runs `ringcast doctor`: gathers, decides, prints; exits with status 1 when any check fails.
pub(crate) fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let config = args.serve.resolve()?;
    let facts = Facts::gather();
    let results = checks(&facts, &config);
    let fails = results.iter().filter(|c| c.level == Level::Fail).count();
    let warns = results.iter().filter(|c| c.level == Level::Warn).count();
    let summary = ConfigSummary {
        listen: config.listen.to_string(),
        driver: driver_name(config.driver),
        reactors: reactors(&facts, &config),
        reactor_cpus: reactor_cpus(&facts, &config),
        max_connections_per_core: config.max_connections_per_core,
        connections: connections(&facts, &config),
        fds_needed: fds_needed(&facts, &config),
        backlog: config.backlog,
    };
    let write = |out: &mut dyn Write| -> std::io::Result<()> {
        if args.json {
            let report = Report {
                ok: fails == 0,
                fails,
                warns,
                config: summary,
                checks: &results,
                facts: &facts,
            };
            serde_json::to_writer_pretty(&mut *out, &report)?;
            writeln!(out)?;
        } else {
            writeln!(
                out,
                "ringcast doctor: {} reactors (CPUs {}) x {} connections = {} connections, backlog {}, driver {}, \
             listen {}",
                summary.reactors,
                cpu_list(&summary.reactor_cpus),
                summary.max_connections_per_core,
                summary.connections,
                summary.backlog,
                summary.driver,
                summary.listen
            )?;
            for c in &results {
                match &c.fix {
                    Some(fix) => writeln!(
                        out,
                        "{:<4} {:<11} {} -- fix: {fix}",
                        c.level.label(),
                        c.name,
                        c.message
                    )?,
                    None => writeln!(out, "{:<4} {:<11} {}", c.level.label(), c.name, c.message)?,
                }
            }
            writeln!(
                out,
                "{} checks: {} fail, {} warn; this reads the machine and changes nothing",
                results.len(),
                fails,
                warns
            )?;
        }
        out.flush()
    };
    match write(&mut std::io::stdout().lock()) {
        // A reader that stopped early (`| head`) is not an error of the doctor.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        r => r.context("writing the report")?,
    }
    if fails > 0 {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A well-tuned 2-CPU machine on a recent kernel: every check comes out OK or INFO.
    fn healthy() -> Facts {
        Facts {
            kernel_release: Some("6.8.0-45-generic".into()),
            uring: UringProbe {
                ok: true,
                errno: None,
                error: None,
            },
            io_uring_disabled: Some(0),
            seccomp: Some(0),
            nofile: Some(Limit {
                soft: Some(2_000_000),
                hard: Some(2_000_000),
            }),
            memlock: Some(Limit {
                soft: Some(8 << 20),
                hard: Some(8 << 20),
            }),
            somaxconn: Some(65_535),
            tcp_max_syn_backlog: Some(65_535),
            port_range: Some((32_768, 60_999)),
            reserved_ports: Vec::new(),
            file_max: Some(10_000_000),
            files_allocated: Some(5_000),
            nr_open: Some(4_194_304),
            conntrack_max: None,
            conntrack_buckets: None,
            conntrack_count: None,
            ehash_entries: Some(1 << 20),
            tcp_inuse: Some(100),
            thp: Some("madvise".into()),
            governors: Vec::new(),
            allowed_cpus: vec![0, 1],
            tcp_wmem_max: Some(2 << 20),
        }
    }

    /// 2 reactors x 500,000 = 1,000,000 connections, 1,000,080 descriptors.
    fn config() -> Config {
        Config {
            cores: CoreSet::Count(2),
            ..Config::default()
        }
    }

    fn failed_probe(errno: i32) -> UringProbe {
        UringProbe {
            ok: false,
            errno: Some(errno),
            error: Some(format!("os error {errno}")),
        }
    }

    type Case = (&'static str, Level, fn(&mut Facts, &mut Config));

    /// Each row: the check, the level it must reach, and what to change on the healthy machine to get there.
    const CASES: &[Case] = &[
        ("write_mark", Level::Ok, |_, _| {}),
        // The stock tcp_wmem max equals the default 4 MiB mark.
        ("write_mark", Level::Warn, |f, _| {
            f.tcp_wmem_max = Some(4 << 20)
        }),
        ("write_mark", Level::Ok, |f, c| {
            f.tcp_wmem_max = Some(4 << 20);
            c.write_high_water = 16 << 20;
        }),
        ("write_mark", Level::Warn, |_, c| c.send_buffer = 2 << 20),
        ("write_mark", Level::Ok, |f, c| {
            f.tcp_wmem_max = None;
            c.send_buffer = 1 << 20;
        }),
        ("write_mark", Level::Warn, |f, _| f.tcp_wmem_max = None),
        ("kernel", Level::Ok, |_, _| {}),
        ("kernel", Level::Ok, |f, _| {
            f.kernel_release = Some("5.10.0".into())
        }),
        ("kernel", Level::Warn, |f, _| {
            f.kernel_release = Some("5.4.0-150-generic".into())
        }),
        ("kernel", Level::Fail, |f, c| {
            f.kernel_release = Some("4.19.0".into());
            c.driver = Driver::Uring;
        }),
        ("kernel", Level::Warn, |f, _| {
            f.kernel_release = Some("weird".into())
        }),
        ("kernel", Level::Warn, |f, _| f.kernel_release = None),
        ("io_uring", Level::Ok, |_, _| {}),
        ("io_uring", Level::Info, |_, c| c.driver = Driver::Epoll),
        ("io_uring", Level::Warn, |f, _| {
            f.uring = failed_probe(1);
            f.io_uring_disabled = Some(2);
        }),
        ("io_uring", Level::Fail, |f, c| {
            f.uring = failed_probe(1);
            f.seccomp = Some(2);
            c.driver = Driver::Uring;
        }),
        ("io_uring", Level::Info, |f, c| {
            f.uring = failed_probe(38);
            c.driver = Driver::Epoll;
        }),
        ("nofile", Level::Ok, |_, _| {}),
        ("nofile", Level::Ok, |f, _| {
            f.nofile = Some(Limit {
                soft: None,
                hard: None,
            })
        }),
        ("nofile", Level::Fail, |f, _| {
            f.nofile = Some(Limit {
                soft: Some(20_000),
                hard: Some(20_000),
            })
        }),
        ("nofile", Level::Ok, |f, c| {
            f.nofile = Some(Limit {
                soft: Some(20_000),
                hard: Some(20_000),
            });
            c.max_connections_per_core = 9_900;
        }),
        ("nofile", Level::Warn, |f, _| f.nofile = None),
        ("memlock", Level::Ok, |f, _| {
            f.memlock = Some(Limit {
                soft: Some(65_536),
                hard: Some(65_536),
            })
        }),
        ("memlock", Level::Warn, |f, _| {
            f.kernel_release = Some("5.10.0".into());
            f.memlock = Some(Limit {
                soft: Some(65_536),
                hard: Some(65_536),
            });
        }),
        ("memlock", Level::Fail, |f, c| {
            f.kernel_release = Some("5.10.0".into());
            f.memlock = Some(Limit {
                soft: Some(65_536),
                hard: Some(65_536),
            });
            c.driver = Driver::Uring;
        }),
        ("memlock", Level::Ok, |f, _| {
            f.kernel_release = Some("5.10.0".into())
        }),
        ("memlock", Level::Info, |f, c| {
            f.kernel_release = Some("5.10.0".into());
            c.driver = Driver::Epoll;
        }),
        ("somaxconn", Level::Ok, |_, _| {}),
        ("somaxconn", Level::Warn, |_, c| c.backlog = 100_000),
        ("somaxconn", Level::Warn, |f, _| f.somaxconn = None),
        ("syn_backlog", Level::Ok, |_, _| {}),
        ("syn_backlog", Level::Warn, |f, _| {
            f.tcp_max_syn_backlog = Some(128)
        }),
        ("syn_backlog", Level::Info, |f, _| {
            f.tcp_max_syn_backlog = None
        }),
        ("port_range", Level::Ok, |_, _| {}),
        ("port_range", Level::Warn, |_, c| {
            c.listen = "0.0.0.0:40000".parse().unwrap()
        }),
        ("port_range", Level::Ok, |f, c| {
            c.listen = "0.0.0.0:40000".parse().unwrap();
            f.reserved_ports = vec![(39_000, 41_000)];
        }),
        ("port_range", Level::Ok, |_, c| {
            c.listen = "0.0.0.0:0".parse().unwrap()
        }),
        ("port_range", Level::Info, |f, _| f.port_range = None),
        ("file_max", Level::Ok, |_, _| {}),
        ("file_max", Level::Fail, |f, _| f.file_max = Some(1_002_000)),
        ("file_max", Level::Warn, |f, _| f.file_max = None),
        ("nr_open", Level::Ok, |_, _| {}),
        ("nr_open", Level::Fail, |f, _| f.nr_open = Some(1_000_000)),
        ("nr_open", Level::Warn, |f, _| f.nr_open = None),
        ("conntrack", Level::Info, |_, _| {}),
        ("conntrack", Level::Ok, |f, _| {
            f.conntrack_max = Some(1_250_000)
        }),
        ("conntrack", Level::Fail, |f, _| {
            f.conntrack_max = Some(262_144)
        }),
        ("conntrack", Level::Fail, |f, _| {
            f.conntrack_max = Some(262_144);
            f.conntrack_count = Some(70);
        }),
        ("conntrack", Level::Warn, |f, _| {
            f.conntrack_max = Some(262_144);
            f.conntrack_count = Some(0);
        }),
        ("ehash", Level::Ok, |_, _| {}),
        ("ehash", Level::Warn, |f, _| f.ehash_entries = Some(262_144)),
        ("ehash", Level::Ok, |f, c| {
            f.ehash_entries = Some(262_144);
            c.max_connections_per_core = 100_000;
        }),
        ("ehash", Level::Warn, |f, _| f.ehash_entries = Some(-65_536)),
        ("ehash", Level::Info, |f, _| f.ehash_entries = None),
        ("thp", Level::Ok, |_, _| {}),
        ("thp", Level::Ok, |f, _| f.thp = Some("never".into())),
        ("thp", Level::Warn, |f, _| f.thp = Some("always".into())),
        ("thp", Level::Info, |f, _| f.thp = None),
        ("governor", Level::Info, |_, _| {}),
        ("governor", Level::Ok, |f, _| {
            f.governors = vec![(0, "performance".into()), (1, "performance".into())]
        }),
        ("governor", Level::Warn, |f, _| {
            f.governors = vec![(0, "performance".into()), (1, "powersave".into())]
        }),
        ("governor", Level::Ok, |f, c| {
            f.governors = vec![(0, "performance".into()), (1, "powersave".into())];
            c.cores = CoreSet::List(vec![0]);
        }),
        ("cores", Level::Ok, |_, _| {}),
        ("cores", Level::Ok, |_, c| c.cores = CoreSet::All),
        ("cores", Level::Warn, |_, c| c.cores = CoreSet::Count(4)),
        ("cores", Level::Ok, |_, c| c.cores = CoreSet::List(vec![1])),
        ("cores", Level::Fail, |_, c| {
            c.cores = CoreSet::List(vec![0, 3])
        }),
    ];

    #[test]
    fn every_check_reaches_its_level_on_fabricated_facts() {
        for (i, (name, want, change)) in CASES.iter().enumerate() {
            let (mut f, mut c) = (healthy(), config());
            change(&mut f, &mut c);
            let all = checks(&f, &c);
            let got = all.iter().find(|k| k.name == *name).unwrap();
            assert_eq!(got.level, *want, "case {i} ({name}): {got:?}");
            let needs_fix = matches!(got.level, Level::Warn | Level::Fail);
            assert_eq!(
                got.fix.is_some(),
                needs_fix,
                "case {i} ({name}): a WARN/FAIL carries a fix, an OK/INFO does not: {got:?}"
            );
            assert!(!got.message.is_empty());
        }
    }

    #[test]
    fn the_table_covers_every_level_each_check_can_reach() {
        for name in CHECK_NAMES {
            let levels: Vec<Level> = CASES.iter().filter(|c| c.0 == name).map(|c| c.1).collect();
            assert!(levels.contains(&Level::Ok), "{name} has no OK case");
            assert!(
                levels.iter().any(|l| *l != Level::Ok),
                "{name} has no non-OK case"
            );
        }
    }

    #[test]
    fn a_healthy_machine_passes_in_the_documented_order() {
        let all = checks(&healthy(), &config());
        let names: Vec<&str> = all.iter().map(|c| c.name).collect();
        assert_eq!(names, CHECK_NAMES);
        for c in &all {
            assert!(matches!(c.level, Level::Ok | Level::Info), "{c:?}");
        }
    }

    #[test]
    fn fixes_carry_the_numbers_to_apply() {
        let mut f = healthy();
        f.nofile = Some(Limit {
            soft: Some(20_000),
            hard: Some(20_000),
        });
        f.conntrack_max = Some(262_144);
        let mut c = config();
        c.backlog = 8_192;
        f.somaxconn = Some(4_096);
        let all = checks(&f, &c);
        let fix = |n: &str| {
            all.iter()
                .find(|k| k.name == n)
                .unwrap()
                .fix
                .clone()
                .unwrap()
        };
        assert!(
            fix("nofile").contains("LimitNOFILE=1000080"),
            "{}",
            fix("nofile")
        );
        assert!(
            fix("nofile").contains("--max-connections-per-core 9960"),
            "(20000 - 80) / 2: {}",
            fix("nofile")
        );
        assert!(fix("somaxconn").contains("net.core.somaxconn=8192"));
        assert!(fix("conntrack").contains("nf_conntrack_max=1250000"));
        assert!(fix("conntrack").contains("--dport 8080 -j NOTRACK"));
        let mut f = healthy();
        f.uring = failed_probe(12);
        f.kernel_release = Some("5.10.0".into());
        let u = checks(&f, &config());
        let uring = u.iter().find(|k| k.name == "io_uring").unwrap();
        assert!(
            uring
                .fix
                .as_deref()
                .unwrap()
                .contains("LimitMEMLOCK=835584"),
            "2 rings of 4096 entries: {uring:?}"
        );
    }

    #[test]
    fn the_io_uring_check_names_the_cause() {
        for (change, needle) in [
            (
                (|f: &mut Facts| f.io_uring_disabled = Some(2)) as fn(&mut Facts),
                "io_uring_disabled=0",
            ),
            (|f| f.io_uring_disabled = Some(1), "io_uring_group"),
            (|f| f.seccomp = Some(2), "seccomp"),
            (|_| {}, "CONFIG_IO_URING"),
        ] {
            let mut f = healthy();
            f.uring = failed_probe(38);
            change(&mut f);
            let all = checks(&f, &config());
            let c = all.iter().find(|k| k.name == "io_uring").unwrap();
            assert!(c.fix.as_deref().unwrap().contains(needle), "{c:?}");
        }
    }

    #[test]
    fn parsers() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            20000                1048576              files     \n\
                      Max locked memory         unlimited            unlimited            bytes     \n";
        assert_eq!(
            parse_limit(limits, "Max open files"),
            Some(Limit {
                soft: Some(20_000),
                hard: Some(1_048_576)
            })
        );
        assert_eq!(
            parse_limit(limits, "Max locked memory"),
            Some(Limit {
                soft: None,
                hard: None
            })
        );
        assert_eq!(parse_limit(limits, "Max processes"), None);
        assert_eq!(
            parse_ranges("0-3,8, 10-11\n"),
            Some(vec![(0, 3), (8, 8), (10, 11)])
        );
        assert_eq!(parse_ranges(""), Some(vec![]));
        assert_eq!(parse_ranges("3-1"), None);
        assert_eq!(parse_ranges("x"), None);
        assert_eq!(kernel_version("6.18.44-fc-v857"), Some((6, 18)));
        assert_eq!(kernel_version("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(kernel_version("six"), None);
        assert_eq!(
            status_field("Name:\tx\nSeccomp:\t2\n", "Seccomp"),
            Some("2")
        );
        assert_eq!(
            status_field("Seccomp_filters:\t1\nSeccomp:\t0\n", "Seccomp"),
            Some("0")
        );
    }

    #[test]
    fn ring_memory_estimate() {
        // 4096 x (64 + 4 + 32) + two header pages.
        assert_eq!(ring_bytes(4096), 417_792);
    }
}
