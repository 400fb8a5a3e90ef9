//! Owns the command line: the four modes and the options they share (target, threads, processes, source
//! addresses, output format).

use std::net::{Ipv4Addr, SocketAddr};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `ringcast-load`: a thread-per-core io_uring load generator for push servers.
#[derive(Parser, Debug, Clone)]
#[command(name = "ringcast-load", version, about)]
pub struct Cli {
    /// Options every mode shares.
    #[command(flatten)]
    pub common: Common,
    /// The workload.
    #[command(subcommand)]
    pub mode: Mode,
}

/// Options shared by every mode.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Server address.
    #[arg(long, global = true, default_value = "127.0.0.1:8080")]
    pub target: SocketAddr,
    /// Reactor threads per process (one monoio io_uring runtime each, pinned to the CPUs this process may use).
    #[arg(long, global = true, default_value_t = 1)]
    pub threads: usize,
    /// Worker processes (the tool re-executes itself); connections are split between them so one process's
    /// open-file limit is no ceiling.
    #[arg(long, global = true, default_value_t = 1)]
    pub procs: usize,
    /// Spread connections over this many source addresses, starting at --source-base (bind before connect), so
    /// the ephemeral port range of one address is no ceiling. 0: let the kernel choose.
    #[arg(long, global = true, default_value_t = 0)]
    pub source_addrs: u32,
    /// First source address used with --source-addrs.
    #[arg(long, global = true, default_value = "127.0.0.2")]
    pub source_base: Ipv4Addr,
    /// Print the result as one JSON object on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Do not pin reactor threads.
    #[arg(long, global = true)]
    pub no_pin: bool,
    /// Use the epoll driver instead of io_uring (for comparison only).
    #[arg(long, global = true)]
    pub epoll: bool,
    /// Internal: this process is worker INDEX of COUNT (set by --procs).
    #[arg(long, global = true, hide = true, value_parser = parse_worker)]
    pub worker: Option<(usize, usize)>,
}

fn parse_worker(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s.split_once('/').ok_or("expected INDEX/COUNT")?;
    let a = a.parse().map_err(|_| "bad index")?;
    let b: usize = b.parse().map_err(|_| "bad count")?;
    if a >= b {
        return Err("index must be below count".into());
    }
    Ok((a, b))
}

/// A subscriber or connection transport.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket (`/ws`, or the echo path).
    Ws,
    /// Server-Sent Events (`/sse/{topic}`).
    Sse,
    /// Long polling (`/poll/{topic}`).
    Poll,
    /// Round-robin over ws, sse and poll.
    Mix,
}

impl Transport {
    /// The concrete transport of connection `i` (resolves `Mix`).
    pub fn nth(self, i: usize) -> Transport {
        match self {
            Transport::Mix => [Transport::Ws, Transport::Sse, Transport::Poll]
                .get(i % 3)
                .copied()
                .unwrap_or(Transport::Ws),
            t => t,
        }
    }
}

/// How the fanout publisher sends.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubVia {
    /// `POST /publish/{topic}` on a keep-alive connection.
    Http,
    /// `{"op":"pub"}` over a WebSocket.
    Ws,
}

/// The workloads.
#[derive(Subcommand, Debug, Clone)]
pub enum Mode {
    /// Open N connections at a rate and hold them idle; report connect rate, failures and server memory.
    Connect(ConnectArgs),
    /// N WebSocket connections echoing messages of S bytes with a window in flight (or at a fixed rate).
    Echo(EchoArgs),
    /// N subscribers on K topics, one publisher: deliveries/s, latency, lost/duplicated/out-of-order counts.
    Fanout(FanoutArgs),
    /// Connect, one exchange, close, at a rate: handshakes/s and errors. With --subscribe: connect, subscribe,
    /// receive, close, against a steady publisher: cycles/s, lost and reordered messages.
    Churn(ChurnArgs),
}

/// `connect` options.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Connections.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub connections: usize,
    /// Transport.
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: Transport,
    /// New connections per second over all threads and processes (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds to hold the connections once all are open.
    #[arg(long, default_value_t = 10)]
    pub hold: u64,
    /// Topic for SSE and long-poll connections.
    #[arg(long, default_value = "load.idle")]
    pub topic: String,
    /// Server PID: sample its RSS and the kernel's TCP socket memory before and after.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Handshakes in flight per thread.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
}

/// `echo` options.
#[derive(Args, Debug, Clone)]
pub struct EchoArgs {
    /// Connections.
    #[arg(short = 'n', long, default_value_t = 100)]
    pub connections: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Fixed total rate in messages per second instead of a window (0: window mode).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Request path of the echo endpoint.
    #[arg(long, default_value = "/echo")]
    pub path: String,
    /// Send text frames instead of binary ones.
    #[arg(long)]
    pub text: bool,
}

/// `fanout` options.
#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Subscribers.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Topics (subscriber i listens on topic i mod K).
    #[arg(short = 'k', long, default_value_t = 1)]
    pub topics: usize,
    /// Topic name prefix; topics are PREFIX.0, PREFIX.1, ...
    #[arg(long, default_value = "load")]
    pub topic_prefix: String,
    /// Subscriber transport.
    #[arg(long, value_enum, default_value = "ws")]
    pub transport: Transport,
    /// Publisher transport.
    #[arg(long, value_enum, default_value = "http")]
    pub publish_via: PubVia,
    /// Publishes per second over all topics (0: as fast as possible, one at a time). A fixed rate over `ws` is
    /// open loop: publishes leave on schedule without waiting for the previous acknowledgement, so a server slow
    /// to answer shows in the latency rather than in a lower rate (over `http` each waits for its response).
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// Seconds to publish.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Stop after this many publishes (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub messages: u64,
    /// Publish nothing: the server publishes seqs 1..=N on each topic by itself (a flood published inside the
    /// server, started by the subscriptions). Subscribers read until each has every one of them or the grace
    /// period ends; `messages_per_sec_drained` is then the deliveries after every subscriber was ready over the
    /// time until the last of them had all N (0: off).
    #[arg(long, default_value_t = 0)]
    pub expect_seq: u64,
    /// Extra payload bytes per message (padding after the timestamp).
    #[arg(long, default_value_t = 0)]
    pub pad: usize,
    /// Milliseconds subscribers keep reading after the last publish.
    #[arg(long, default_value_t = 1000)]
    pub grace_ms: u64,
    /// Publish to this address instead of --target (e.g. another node of a multi-node deployment), so
    /// publish-to-receive latency crosses nodes
    #[arg(long)]
    pub publish_target: Option<std::net::SocketAddr>,
    /// Percentage of subscribers that use SSE instead of --transport (subscriber i when i mod 100 is below it).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub sse_percent: u8,
    /// Subscriptions in progress per thread (connect, upgrade, subscribe); 0: all at once.
    #[arg(long, default_value_t = 0)]
    pub connect_concurrency: usize,
    /// Longest wait for every subscriber to subscribe, seconds.
    #[arg(long, default_value_t = 60)]
    pub ready_timeout: u64,
    /// Read buffer per subscriber connection, bytes. Its pages are touched only as far as reads fill it, so an idle
    /// or slow subscriber costs little; a backed-up one drains in reads of up to this size (at 10,000 subscribers
    /// of a flood, 64 KiB read 8.3M deliveries/s on one core where 8 KiB read 6.2M).
    #[arg(long, default_value_t = 65536)]
    pub read_buffer: usize,
    /// Kernel receive buffer (`SO_RCVBUF`) per subscriber socket, bytes, set before connecting; 0: the kernel's
    /// autotuning (on loopback up to `tcp_rmem`'s maximum, 32 MB here). Bounds what a flood can park in the
    /// kernel per subscriber, for every server alike.
    #[arg(long, default_value_t = 0)]
    pub recv_buffer: usize,
    /// Write every WebSocket subscriber's whole read buffer once when its subscription is confirmed, so its pages
    /// are mapped before the measurement instead of by the first reads of a flood (a page fault per 4 KiB, about
    /// 44,000 in the first 1.5 s of a 10,000-subscriber flood). Costs `--read-buffer` of memory per subscriber at
    /// once, so it is for floods, not for density runs.
    #[arg(long)]
    pub prefault: bool,
    /// Seconds to hold every subscriber idle before publishing (the server's idle CPU is sampled over it when
    /// --server-pid is given).
    #[arg(long, default_value_t = 0)]
    pub idle: u64,
    /// Server process to sample (RSS, CPU) before connecting, with every subscriber connected, and over the
    /// idle period; repeat for a server made of several processes (their figures are summed).
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
}

/// `churn` options.
#[derive(Args, Debug, Clone)]
pub struct ChurnArgs {
    /// Connect-exchange-close cycles per second over all threads and processes (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Cycles in flight per thread.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Request path of the echo endpoint used for the one exchange.
    #[arg(long, default_value = "/echo")]
    pub path: String,
    /// Churn subscribers instead of echoes: each cycle connects, asks `GET /messages/{topic}` where the topic
    /// stands, upgrades `/ws` on the same connection, subscribes from there (`since`), reads until it has a
    /// message published after the subscription was acknowledged (checking every seq in between arrives once and
    /// in order), and closes. A built-in HTTP publisher publishes on the topics at --publish-rate.
    #[arg(long)]
    pub subscribe: bool,
    /// With --subscribe: topics (each cycle picks one at random).
    #[arg(short = 'k', long, default_value_t = 100)]
    pub topics: usize,
    /// With --subscribe: topic name prefix; topics are PREFIX.0, PREFIX.1, ...
    #[arg(long, default_value = "churn")]
    pub topic_prefix: String,
    /// With --subscribe: publishes per second over all topics, round-robin (each topic gets one every
    /// K / RATE seconds, which sets how long a cycle waits).
    #[arg(long, default_value_t = 50)]
    pub publish_rate: u64,
    /// With --subscribe: a cycle that has no message published after its subscription within this many
    /// milliseconds of the acknowledgement counts as lost (0: twice a topic's publish interval plus 5 s).
    #[arg(long, default_value_t = 0)]
    pub receive_timeout_ms: u64,
}

impl ChurnArgs {
    /// With --subscribe: how long a cycle may wait for its message before it counts as lost.
    pub fn receive_timeout(&self) -> std::time::Duration {
        if self.receive_timeout_ms > 0 {
            return std::time::Duration::from_millis(self.receive_timeout_ms);
        }
        let interval = self.topics.max(1) as f64 / self.publish_rate.max(1) as f64;
        std::time::Duration::from_secs_f64(2.0 * interval + 5.0)
    }
}

impl Mode {
    /// The mode's name as used in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Connect(_) => "connect",
            Mode::Echo(_) => "echo",
            Mode::Fanout(_) => "fanout",
            Mode::Churn(_) => "churn",
        }
    }
}
