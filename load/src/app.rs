//! Owns the program flow of each mode: start the workers (threads or processes), run the phases (connect, go,
//! publish, hold, sample server memory), merge the tallies and print the [`Report`].

use std::time::{Duration, Instant};

use crate::churn_sub::{churn_sub_thread, publisher_args};
use crate::cli::{Cli, Common, Mode};
use crate::connect::{connect_thread, rss_bytes, tcp_mem_bytes};
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
    let pid = match mode {
        Mode::Connect(a) => a.server_pid,
        _ => None,
    };
    let before = pid.map(|p| (rss_bytes(p).unwrap_or(0), tcp_mem_bytes().unwrap_or(0)));
    let mut group = Group::start(common, |c| start_threads(common, mode, c))?;
    let progress = Progress::start(mode.name(), group.control(), common.json);
    group.wait_ready()?;
    let mut published = None;
    let seconds;
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
            if let (Some(p), Some((rss0, mem0))) = (pid, before) {
                memory = Some((
                    p,
                    rss0,
                    mem0,
                    rss_bytes(p).unwrap_or(0),
                    tcp_mem_bytes().unwrap_or(0),
                ));
            }
            std::thread::sleep(
                Duration::from_secs(a.hold).saturating_sub(Duration::from_millis(500)),
            );
            group.go(&Ranges::new())?;
            seconds = a.hold as f64;
        }
        Mode::Fanout(a) => {
            let p = publish(a.publish_target.unwrap_or(common.target), a);
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
    if let Some((_, rss0, mem0, rss1, mem1)) = memory {
        let n = tally.established.max(1) as f64;
        report.server_memory = Some(ServerMemory {
            rss_before: rss0,
            rss_after: rss1,
            tcp_mem_before: mem0,
            tcp_mem_after: mem1,
            rss_per_conn: (rss1 as f64 - rss0 as f64) / n,
            tcp_mem_per_conn: (mem1 as f64 - mem0 as f64) / n,
        });
    }
    Ok(report)
}
