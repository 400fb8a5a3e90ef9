//! The `ringcast-load` binary: parses the command line and runs [`ringcast_load::app::run`].

use clap::Parser;

fn main() {
    let cli = ringcast_load::cli::Cli::parse();
    match ringcast_load::app::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("ringcast-load: {e:#}");
            std::process::exit(1);
        }
    }
}
