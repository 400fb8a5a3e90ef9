//! Owns execution: one pinned monoio runtime per reactor thread, the two-phase barrier every mode uses (threads
//! set up, report ready, wait for the go signal, finish), worker processes (`--procs`, the tool re-executing
//! itself and reporting over a pipe), progress counters and the live progress line.

use std::future::Future;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::cli::Common;
use crate::stats::Tally;

/// What the go signal carries: for fanout, the seq range `(first, last)` published on each topic.
pub type Ranges = Vec<Option<(u64, u64)>>;

/// State shared by the reactor threads of one process.
#[derive(Default)]
pub struct Control {
    ready: AtomicUsize,
    go: AtomicBool,
    ranges: Mutex<Ranges>,
    /// Connections established (live counter for progress and readiness).
    pub established: AtomicU64,
    /// Connections failed.
    pub failed: AtomicU64,
    /// Subscribers that completed their subscription (fanout).
    pub subscribed: AtomicU64,
    /// Messages sent.
    pub sent: AtomicU64,
    /// Messages received.
    pub received: AtomicU64,
}

impl Control {
    /// A thread finished its setup.
    pub fn set_ready(&self) {
        self.ready.fetch_add(1, Ordering::AcqRel);
    }

    /// Threads that finished their setup.
    pub fn ready_threads(&self) -> usize {
        self.ready.load(Ordering::Acquire)
    }

    /// Gives the go signal.
    pub fn go(&self, ranges: Ranges) {
        if let Ok(mut r) = self.ranges.lock() {
            *r = ranges;
        }
        self.go.store(true, Ordering::Release);
    }

    /// True once the go signal was given.
    pub fn is_go(&self) -> bool {
        self.go.load(Ordering::Acquire)
    }

    /// The ranges sent with the go signal.
    pub fn ranges(&self) -> Ranges {
        self.ranges.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Waits (inside a reactor) for the go signal, checking every 10 ms (finer polling by dozens of worker
    /// processes costs real CPU; the go signal comes after publishing, so it only delays the final check).
    pub async fn wait_go(&self) {
        while !self.is_go() {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What one reactor thread knows about its place in the run.
#[derive(Clone)]
pub struct ThreadCtx {
    /// Shared options.
    pub common: Common,
    /// This thread's global index over all processes.
    pub global: usize,
    /// Threads over all processes.
    pub total: usize,
    /// The process's shared state.
    pub control: Arc<Control>,
}

impl ThreadCtx {
    /// The global indices of the `n` items (connections, subscribers) this thread owns: `global, global + total, …`.
    pub fn share(&self, n: usize) -> impl Iterator<Item = usize> + use<> {
        (self.global..n).step_by(self.total.max(1))
    }

    /// This thread's part of a total rate (0 stays 0: unlimited).
    pub fn rate_share(&self, rate: u64) -> f64 {
        rate as f64 / self.total.max(1) as f64
    }
}

/// CPU seconds (user + system) this process used so far.
pub fn cpu_secs() -> f64 {
    // SAFETY: rusage is plain data; an all-zero value is valid.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the valid, exclusively borrowed struct.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Starts `common.threads` reactor threads running `body`, each on its own monoio runtime pinned to one of the
/// CPUs this process may use. Returns their join handles.
///
/// # Errors
/// When a thread cannot be spawned.
pub fn spawn_threads<F, Fut>(
    common: &Common,
    control: &Arc<Control>,
    body: F,
) -> anyhow::Result<Vec<std::thread::JoinHandle<Tally>>>
where
    F: Fn(ThreadCtx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Tally> + 'static,
{
    let (proc_index, procs) = common.worker.unwrap_or((0, common.procs.max(1)));
    let threads = common.threads.max(1);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let body = Arc::new(body);
    let mut handles = Vec::new();
    for t in 0..threads {
        let ctx = ThreadCtx {
            common: common.clone(),
            global: proc_index * threads + t,
            total: procs * threads,
            control: control.clone(),
        };
        let core = (!common.no_pin)
            .then(|| cores.get(t % cores.len().max(1)).copied())
            .flatten();
        let body = body.clone();
        let epoll = common.epoll;
        let h = std::thread::Builder::new()
            .name(format!("load-{t}"))
            .spawn(move || {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                crate::net::set_legacy(epoll);
                let fut = body(ctx);
                if epoll {
                    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                        .enable_timer()
                        .build()
                    {
                        Ok(mut rt) => rt.block_on(fut),
                        Err(e) => failed_runtime(&e),
                    }
                } else {
                    match uring_runtime() {
                        Ok(mut rt) => rt.block_on(fut),
                        Err(e) => failed_runtime(&e),
                    }
                }
            })
            .context("spawning a reactor thread")?;
        handles.push(h);
    }
    Ok(handles)
}

/// An io_uring runtime whose completions are posted only when the reactor asks for them (`DEFER_TASKRUN`, single
/// issuer): the kernel then runs the completion work of many sockets in one batch instead of interrupting the
/// reactor for each (measured: ≈ 10–15 % more echoes per CPU-second). Falls back to a plain ring on kernels
/// without it (before 6.1).
fn uring_runtime()
-> std::io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>> {
    let mut urb = io_uring::IoUring::builder();
    urb.setup_single_issuer().setup_defer_taskrun();
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(8192)
        .uring_builder(urb)
        .enable_timer()
        .build()
        .or_else(|_| {
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(8192)
                .enable_timer()
                .build()
        })
}

fn failed_runtime(e: &std::io::Error) -> Tally {
    eprintln!("ringcast-load: cannot start the runtime: {e}");
    let mut t = Tally::default();
    t.error("runtime_start");
    t
}

/// Joins reactor threads and merges their tallies.
pub fn join(handles: Vec<std::thread::JoinHandle<Tally>>) -> Tally {
    let mut total = Tally::default();
    for h in handles {
        match h.join() {
            Ok(t) => total.merge(&t),
            Err(_) => total.error("thread_panicked"),
        }
    }
    total
}

/// One line a worker process writes to its parent.
#[derive(Serialize, Deserialize, Debug)]
enum WorkerLine {
    Ready,
    Result(Box<Tally>),
}

/// Runs this process as worker `--worker i/P`: start the threads, say READY when they are, wait for GO (with the
/// ranges) on stdin, print the merged tally as the last stdout line.
///
/// # Errors
/// When the threads cannot be started or the parent's pipe breaks.
pub fn worker_main(
    common: &Common,
    start: impl FnOnce(&Arc<Control>) -> anyhow::Result<Vec<std::thread::JoinHandle<Tally>>>,
) -> anyhow::Result<()> {
    let control = Arc::new(Control::default());
    let handles = start(&control)?;
    let threads = common.threads.max(1);
    let mut out = std::io::stdout().lock();
    while control.ready_threads() < threads && !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(2));
    }
    writeln!(out, "{}", serde_json::to_string(&WorkerLine::Ready)?)?;
    out.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let ranges: Ranges = serde_json::from_str(line.trim()).unwrap_or_default();
    control.go(ranges);
    let mut tally = join(handles);
    tally.cpu_secs = cpu_secs();
    writeln!(
        out,
        "{}",
        serde_json::to_string(&WorkerLine::Result(Box::new(tally)))?
    )?;
    out.flush()?;
    Ok(())
}

/// A running group of workers: in-process threads (`--procs 1`) or child processes.
pub enum Group {
    /// Threads of this process.
    Local {
        /// Shared state.
        control: Arc<Control>,
        /// Threads.
        handles: Vec<std::thread::JoinHandle<Tally>>,
        /// Threads started.
        threads: usize,
    },
    /// Worker processes.
    Procs {
        /// Children with their pipes.
        children: Vec<(Child, ChildStdin, BufReader<std::process::ChildStdout>)>,
    },
}

impl Group {
    /// Starts the workers: threads here, or `procs` copies of this executable with `--worker i/P`.
    ///
    /// # Errors
    /// When threads or processes cannot be started.
    pub fn start(
        common: &Common,
        local: impl FnOnce(&Arc<Control>) -> anyhow::Result<Vec<std::thread::JoinHandle<Tally>>>,
    ) -> anyhow::Result<Group> {
        if common.procs <= 1 {
            let control = Arc::new(Control::default());
            let handles = local(&control)?;
            return Ok(Group::Local {
                control,
                handles,
                threads: common.threads.max(1),
            });
        }
        let exe = std::env::current_exe().context("locating this executable")?;
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut children = Vec::new();
        for i in 0..common.procs {
            let mut child = Command::new(&exe)
                .args(&args)
                .arg(format!("--worker={i}/{}", common.procs))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .with_context(|| format!("starting worker process {i}"))?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                bail!("worker {i} has no pipes");
            };
            children.push((child, stdin, BufReader::new(stdout)));
        }
        Ok(Group::Procs { children })
    }

    /// The local control block (progress counters), if in-process.
    pub fn control(&self) -> Option<&Arc<Control>> {
        match self {
            Group::Local { control, .. } => Some(control),
            Group::Procs { .. } => None,
        }
    }

    /// Waits until every worker finished its setup.
    ///
    /// # Errors
    /// When a worker process dies or says something unexpected.
    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        match self {
            Group::Local {
                control,
                handles,
                threads,
            } => {
                while control.ready_threads() < *threads && !handles.iter().all(|h| h.is_finished())
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            Group::Procs { children } => {
                for (i, (_, _, out)) in children.iter_mut().enumerate() {
                    let mut line = String::new();
                    out.read_line(&mut line)?;
                    match serde_json::from_str::<WorkerLine>(line.trim()) {
                        Ok(WorkerLine::Ready) => {}
                        _ => bail!("worker {i} did not get ready: {line:?}"),
                    }
                }
            }
        }
        Ok(())
    }

    /// Gives the go signal with `ranges`.
    ///
    /// # Errors
    /// When a worker's pipe is broken.
    pub fn go(&mut self, ranges: &Ranges) -> anyhow::Result<()> {
        match self {
            Group::Local { control, .. } => control.go(ranges.clone()),
            Group::Procs { children } => {
                let line = serde_json::to_string(ranges)?;
                for (_, stdin, _) in children.iter_mut() {
                    writeln!(stdin, "{line}")?;
                    stdin.flush()?;
                }
            }
        }
        Ok(())
    }

    /// Waits for every worker and merges their tallies (CPU: the workers' plus this process's).
    ///
    /// # Errors
    /// When a worker process fails to report.
    pub fn finish(self) -> anyhow::Result<Tally> {
        match self {
            Group::Local { handles, .. } => {
                let mut t = join(handles);
                t.cpu_secs = cpu_secs();
                Ok(t)
            }
            Group::Procs { children } => {
                let mut total = Tally::default();
                for (i, (mut child, stdin, mut out)) in children.into_iter().enumerate() {
                    drop(stdin);
                    let mut line = String::new();
                    out.read_line(&mut line)?;
                    match serde_json::from_str::<WorkerLine>(line.trim()) {
                        Ok(WorkerLine::Result(t)) => total.merge(&t),
                        _ => {
                            eprintln!("ringcast-load: worker {i} reported nothing: {line:?}");
                            total.error("worker_failed");
                        }
                    }
                    let _ = child.wait();
                }
                total.cpu_secs += cpu_secs();
                Ok(total)
            }
        }
    }
}

/// A live progress line on stderr when it is a terminal (and not `--json`); nothing otherwise.
pub struct Progress {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Starts the progress line for `control` (in-process runs only).
    pub fn start(mode: &str, control: Option<&Arc<Control>>, json: bool) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = match control {
            Some(c) if !json && std::io::stderr().is_terminal() => {
                let c = c.clone();
                let stop2 = stop.clone();
                let mode = mode.to_owned();
                Some(std::thread::spawn(move || {
                    let bar = indicatif::ProgressBar::new_spinner();
                    let start = Instant::now();
                    let mut last = (0u64, Instant::now());
                    while !stop2.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(250));
                        let rx = c.received.load(Ordering::Relaxed);
                        let rate = (rx - last.0) as f64 / last.1.elapsed().as_secs_f64().max(1e-3);
                        last = (rx, Instant::now());
                        bar.set_message(format!(
                            "{mode} {:>5.1}s  conns {} (failed {})  subscribed {}  sent {}  received {} ({:.0}/s)",
                            start.elapsed().as_secs_f64(),
                            c.established.load(Ordering::Relaxed),
                            c.failed.load(Ordering::Relaxed),
                            c.subscribed.load(Ordering::Relaxed),
                            c.sent.load(Ordering::Relaxed),
                            rx,
                            rate
                        ));
                        bar.tick();
                    }
                    bar.finish_and_clear();
                }))
            }
            _ => None,
        };
        Progress { stop, handle }
    }

    /// Stops and clears the line.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
