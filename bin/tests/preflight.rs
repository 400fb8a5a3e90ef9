//! `ringcast serve` logs, before it listens, each check `ringcast doctor` would report as WARN or FAIL for the same
//! flags. Uses the write-mark check, which flags alone decide (against twice `--send-buffer`), so the outcome does
//! not depend on the machine's sysctls.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts `ringcast serve` with `args` on a free port and returns its log lines up to the "listening" line.
fn start_up_log(args: &[&str]) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cores",
            "1",
            "--no-demo",
        ])
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting ringcast serve");
    // The log goes to standard output.
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let done = line.contains("ringcast listening");
            lines.push(line);
            if done {
                break;
            }
        }
        let _ = tx.send(lines);
    });
    let lines = rx.recv_timeout(Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    let lines = lines.expect("the server logs its start within 20 s");
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("ringcast listening")),
        "no listening line: {lines:#?}"
    );
    lines
}

#[test]
fn serve_logs_a_write_mark_at_or_below_the_kernel_buffer() {
    let lines = start_up_log(&["--send-buffer", "4194304", "--write-high-water", "1048576"]);
    let warn = lines
        .iter()
        .find(|l| l.contains("check=write_mark"))
        .unwrap_or_else(|| panic!("no write_mark warning: {lines:#?}"));
    assert!(warn.contains("level=WARN"), "{warn}");
    assert!(
        warn.contains("-- fix: --write-high-water 16777216"),
        "{warn}"
    );
    assert!(
        !warn.contains('\u{1b}'),
        "colour codes in a log that is not a terminal: {warn:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("ringcast doctor")),
        "{lines:#?}"
    );
}

#[test]
fn serve_logs_no_write_mark_warning_above_the_kernel_buffer() {
    let lines = start_up_log(&["--send-buffer", "65536", "--write-high-water", "16777216"]);
    assert!(
        !lines.iter().any(|l| l.contains("check=write_mark")),
        "{lines:#?}"
    );
}
