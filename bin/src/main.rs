//! The `ringcast` command: `ringcast serve` runs the push server.
// The flags' doc comments are also their `--help` text, where example origins are written as plain text.
#![allow(rustdoc::bare_urls)]

mod config;
mod demo;
mod doctor;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// ringcast: a real-time push engine (WebSocket, SSE, long and short polling) on thread-per-core io_uring reactors.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve {
        #[command(flatten)]
        args: config::ServeArgs,
        #[command(flatten)]
        demo: demo::DemoArgs,
    },
    /// Check this machine and the configuration `serve` would run with (reads only; exit 1 on any FAIL).
    Doctor(doctor::DoctorArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        // Colour codes only for a terminal: under systemd or a pipe they would land in the log as escapes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    match cli.command {
        Command::Serve { args, demo } => serve(args, demo),
        Command::Doctor(args) => doctor::run(args),
    }
}

/// Logs every check `ringcast doctor` would report as WARN or FAIL for this configuration, one line each with its
/// fix, before the server starts: an untuned machine says so at start-up, not only when someone runs the doctor.
fn preflight(config: &ringcast_engine::Config) {
    let facts = doctor::Facts::gather();
    let mut shown = 0;
    for c in doctor::checks(&facts, config) {
        if !c.level.needs_attention() {
            continue;
        }
        shown += 1;
        match &c.fix {
            Some(fix) => {
                tracing::warn!(check = %c.name, level = %c.level.label(), "{} -- fix: {fix}", c.message)
            }
            None => tracing::warn!(check = %c.name, level = %c.level.label(), "{}", c.message),
        }
    }
    if shown > 0 {
        tracing::warn!(
            "{shown} preflight check(s) need attention; `ringcast doctor` with the same flags explains each"
        );
    }
}

fn serve(args: config::ServeArgs, demo: demo::DemoArgs) -> anyhow::Result<()> {
    let mut config = args.resolve()?;
    demo.apply(&mut config)?;
    let listen = config.listen;
    preflight(&config);
    if config.auth.is_none() {
        tracing::warn!(
            "no --auth-secret or --auth-public-key: the server is open, anyone may subscribe and publish"
        );
    }
    if config.allowed_origins.is_empty() {
        tracing::info!("no --allowed-origin: WebSocket upgrades are accepted from every origin");
    }
    let handle = ringcast_engine::start(config)
        .with_context(|| format!("starting the server on {listen}"))?;
    let addr = handle.local_addr();
    let _feed = demo.start_feed(handle.publisher())?;
    tracing::info!(
        %addr,
        cores = handle.cores(),
        driver = ?handle.driver(),
        "ringcast listening: ws://{addr}/ws (pub/sub), http://{addr}/sse/{{topic}}, http://{addr}/poll/{{topic}}, \
         http://{addr}/messages/{{topic}}, http://{addr}/publish/{{topic}}, ws://{addr}/echo, http://{addr}/healthz, \
         http://{addr}/metrics"
    );
    let trigger = handle.shutdown_trigger();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("installing the SIGINT/SIGTERM handler")?;
    std::thread::Builder::new()
        .name("ringcast-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen == 1 {
                    tracing::info!(
                        signal = sig,
                        "shutting down: closing connections with 1001, draining"
                    );
                    trigger.shutdown();
                } else {
                    tracing::warn!(signal = sig, "second signal: exiting now");
                    std::process::exit(130);
                }
            }
        })
        .context("starting the signal thread")?;
    handle.join().context("a reactor failed")?;
    tracing::info!("stopped");
    Ok(())
}
