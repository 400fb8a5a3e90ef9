//! `loopback_floor`: the kernel's own cost of one small fan-out delivery over loopback TCP on this machine (see
//! `ringcast_bench::floor`), and the shortest time any server plus client here could deliver one message to a
//! given number of subscribers.
//!
//! Usage: `loopback_floor [PAIRS=8000] [SIZE=100] [ROUNDS=5] [SUBSCRIBERS=1000000]`. Prints, per mode, the median
//! per-delivery send and receive cost over the rounds and the resulting floor for SUBSCRIBERS on all cores.

use std::time::Duration;

use ringcast_bench::floor::{Mode, Pairs, measure};

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn main() {
    let (n, size, rounds, subs) = (
        arg(1, 8000),
        arg(2, 100),
        arg(3, 5).max(1),
        arg(4, 1_000_000),
    );
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mut pairs = match Pairs::open(n) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "loopback_floor: opening {n} pairs failed: {e} (each pair takes 2 descriptors)"
            );
            std::process::exit(2);
        }
    };
    for (mode, name) in [
        (Mode::Syscalls, "send/recv syscalls"),
        (Mode::Uring, "io_uring batches"),
    ] {
        let r = match measure(&mut pairs, mode, size, rounds) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("loopback_floor: {name}: {e}");
                std::process::exit(1);
            }
        };
        let send = median(r.iter().map(|x| x.send).collect()).as_secs_f64() * 1e6 / n as f64;
        let recv = median(r.iter().map(|x| x.recv).collect()).as_secs_f64() * 1e6 / n as f64;
        let floor = subs as f64 * (send + recv) / 1e6 / cores as f64;
        println!(
            "loopback floor ({name}, {n} idle pairs, {size} B, median of {rounds} rounds): send {send:.2} µs + \
             receive {recv:.2} µs = {:.2} µs of kernel CPU per delivery; {subs} deliveries on {cores} core(s) \
             take at least {floor:.2} s",
            send + recv
        );
    }
}
