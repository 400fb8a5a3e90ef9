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
        .init();
    match cli.command {
        Command::Serve { args, demo } => serve(args, demo),
        Command::Doctor(args) => doctor::run(args),
    }
}

fn serve(args: config::ServeArgs, demo: demo::DemoArgs) -> anyhow::Result<()> {
    let mut config = args.resolve()?;
    demo.apply(&mut config)?;
    let listen = config.listen;
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
