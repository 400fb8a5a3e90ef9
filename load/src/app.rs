//! Owns the program flow of each mode: start the workers (threads or processes), run the phases (connect, go,
//! publish, hold, sample server memory), merge the tallies and print the [`Report`].

use std::time::{Duration, Instant};

use crate::churn_sub::{churn_sub_thread, publisher_args};
use crate::cli::{Cli, Common, Mode};
use crate::connect::{connect_thread, cpu_secs_of, rss_bytes, slab_bytes, tcp_mem_bytes};
use crate::echo::{churn_thread, echo_thread};
use crate::fanout::{fanout_thread, publish};
use crate::net::raise_fd_limit;
use crate::run::{Control, Group, Progress, Ranges, spawn_threads, worker_main};
use crate::stats::{Report, ServerMemory, Tally};

type Handles = Vec<std::thread::JoinHandle<Tally>>;

fn start_threads(
    common: &Common,
    mode: &Mode,
    control: &std::sync::Arc<Control>,
) -> anyhow::Result<Handles> {
    match mode.clone() {
        Mode::Echo(a) => spawn_threads(common, control, move |ctx| echo_thread(ctx, a.clone())),
        Mode::Churn(a) if a.subscribe => {
            spawn_threads(common, control, move |ctx| churn_sub_thread(ctx, a.clone()))
        }
        Mode::Churn(a) => spawn_threads(common, control, move |ctx| churn_thread(ctx, a.clone())),
        Mode::Fanout(a) => spawn_threads(common, control, move |ctx| fanout_thread(ctx, a.clone())),
        Mode::Connect(a) => {
            spawn_threads(common, control, move |ctx| connect_thread(ctx, a.clone()))
        }
    }
}

/// Connections this process will hold, to check against the open-file limit.
fn conns_per_proc(cli: &Cli) -> usize {
    let n = match &cli.mode {
        Mode::Connect(a) => a.connections,
        Mode::Echo(a) => a.connections,
        Mode::Fanout(a) => a.subscribers,
        Mode::Churn(a) => a.concurrency * cli.common.threads.max(1) * cli.common.procs.max(1),
    };
    n.div_ceil(cli.common.procs.max(1))
}

/// Runs the program: as a worker process when `--worker` is set (prints its tally), otherwise the whole run
/// (prints the report). Returns the exit code: 0, or 3 when the fanout or subscribing-churn check found lost,
/// duplicated or reordered messages (or churn cycles that got no message in time).
///
/// # Errors
/// When workers cannot be started or a worker process fails.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let fds = raise_fd_limit();
    if cli.common.worker.is_some() {
        let (common, mode) = (cli.common.clone(), cli.mode.clone());
        worker_main(&cli.common, move |c| start_threads(&common, &mode, c))?;
        return Ok(0);
    }
    let need = conns_per_proc(&cli) as u64 + 64;
    if need > fds {
        eprintln!(
            "ringcast-load: warning: {need} file descriptors needed per process but the open-file limit is {fds}; \
             connections past it will fail as fd_limit (use --procs {})",
            (need * cli.common.procs.max(1) as u64).div_ceil(fds.saturating_sub(64).max(1))
        );
    }
    if let Mode::Churn(a) = &cli.mode
        && a.subscribe
        && a.publish_rate == 0
    {
        anyhow::bail!("churn --subscribe needs a --publish-rate above 0");
    }
    let report = execute(&cli)?;
    if cli.common.json {
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    let bad = matches!(report.mode.as_str(), "fanout" | "churn")
        && (report.lost + report.duplicated + report.out_of_order + report.lost_cycles) > 0;
    Ok(if bad { 3 } else { 0 })
}

/// Runs the workload described by `cli` (not as a worker) and returns the report without printing it.
///
/// # Errors
/// When workers cannot be started or a worker process fails.
pub fn execute(cli: &Cli) -> anyhow::Result<Report> {
    let common = &cli.common;
    let mode = &cli.mode;
    let wall = Instant::now();
    let mut memory = None;
    let pids: Vec<u32> = match mode {
        Mode::Connect(a) => a.server_pid.into_iter().collect(),
        Mode::Fanout(a) => a.server_pids.clone(),
        _ => Vec::new(),
    };
    let before = (!pids.is_empty()).then(|| Sample::take(&pids));
    let mut idle = None;
    let mut group = Group::start(common, |c| start_threads(common, mode, c))?;
    let progress = Progress::start(mode.name(), group.control(), common.json);
    group.wait_ready()?;
    let mut published = None;
    let mut seconds;
    match mode {
        Mode::Echo(a) => {
            group.go(&Ranges::new())?;
            seconds = a.duration as f64;
        }
        Mode::Churn(a) => {
            // The subscribing churn's publisher starts with the cycles and runs for the same duration.
            let publisher = if a.subscribe {
                Some(publisher_args(a)?)
            } else {
                None
            };
            group.go(&Ranges::new())?;
            if let Some(pa) = publisher {
                let p = publish(common.target, &pa);
                if let Some(e) = &p.error {
                    eprintln!("ringcast-load: publisher stopped: {e}");
                }
                published = Some(p);
            }
            seconds = a.duration as f64;
        }
        Mode::Connect(a) => {
            std::thread::sleep(Duration::from_millis(500));
            memory = before.map(|b| (b, Sample::take(&pids)));
            std::thread::sleep(
                Duration::from_secs(a.hold).saturating_sub(Duration::from_millis(500)),
            );
            group.go(&Ranges::new())?;
            seconds = a.hold as f64;
        }
        Mode::Fanout(a) => {
            if let Some(b) = before {
                std::thread::sleep(Duration::from_millis(500));
                memory = Some((b, Sample::take(&pids)));
            }
            if a.idle > 0 {
                let cpu0 = server_cpu(&pids);
                let t = Instant::now();
                std::thread::sleep(Duration::from_secs(a.idle));
                let secs = t.elapsed().as_secs_f64();
                idle = Some(((server_cpu(&pids) - cpu0) / secs, secs));
            }
            let p = if a.expect_seq > 0 {
                // The server publishes: every topic's seqs 1..=N are expected.
                crate::fanout::Published {
                    count: a.expect_seq.saturating_mul(a.topics.max(1) as u64),
                    ranges: vec![Some((1, a.expect_seq)); a.topics.max(1)],
                    secs: 0.0,
                    error: None,
                }
            } else {
                publish(a.publish_target.unwrap_or(common.target), a)
            };
            if let Some(e) = &p.error {
                eprintln!("ringcast-load: publisher stopped: {e}");
            }
            group.go(&p.ranges)?;
            seconds = p.secs;
            published = Some(p);
        }
    }
    let mut tally = group.finish()?;
    progress.finish();
    if matches!(mode, Mode::Fanout(a) if a.expect_seq > 0) {
        // No publisher ran: the run is the time until every subscriber had every seq.
        seconds = tally.drained_secs;
    }
    if let Some(p) = &published {
        tally.published = p.count;
        if let Some(e) = &p.error {
            tally.error(&format!("publisher_{e}"));
        }
    }
    let mut report = Report::from_tally(
        mode.name(),
        &common.target.to_string(),
        &tally,
        seconds,
        wall.elapsed().as_secs_f64(),
    );
    report.threads = common.threads.max(1);
    report.procs = common.procs.max(1);
    if let Some((b, a)) = memory {
        let n = tally.established.max(1) as f64;
        let per = |x: u64, y: u64| (y as f64 - x as f64) / n;
        report.server_memory = Some(ServerMemory {
            rss_before: b.rss,
            rss_after: a.rss,
            tcp_mem_before: b.tcp_mem,
            tcp_mem_after: a.tcp_mem,
            rss_per_conn: per(b.rss, a.rss),
            tcp_mem_per_conn: per(b.tcp_mem, a.tcp_mem),
            processes: pids.len(),
            slab_before: b.slab,
            slab_after: a.slab,
            slab_per_conn: per(b.slab, a.slab),
            idle_cpu_cores: idle.map(|(c, _)| c),
            idle_secs: idle.map_or(0.0, |(_, s)| s),
        });
    }
    Ok(report)
}

/// Memory figures of the server processes and the kernel at one moment.
#[derive(Clone, Copy, Debug)]
struct Sample {
    rss: u64,
    tcp_mem: u64,
    slab: u64,
}

impl Sample {
    fn take(pids: &[u32]) -> Sample {
        Sample {
            rss: pids.iter().filter_map(|p| rss_bytes(*p)).sum(),
            tcp_mem: tcp_mem_bytes().unwrap_or(0),
            slab: slab_bytes().unwrap_or(0),
        }
    }
}

/// CPU seconds the server processes used so far, summed.
fn server_cpu(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| cpu_secs_of(*p)).sum()
}
