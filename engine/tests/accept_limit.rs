//! Running out of descriptors: accepting pauses (counted in `ringcast_accept_pauses_total`) instead of spinning on
//! a listener that stays readable, and resumes by itself once descriptors are free again. Alone in its file (its
//! own process): it lowers the process's open-file limit, which every test sharing the process would feel.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

fn nofile() -> libc::rlimit {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid, exclusively borrowed pointer.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
    l
}

fn set_nofile(l: &libc::rlimit) {
    // SAFETY: setrlimit reads one rlimit from a valid pointer.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, l) }, 0);
}

/// The highest descriptor this process has open.
fn highest_fd() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap()
}

fn pauses(server: &ringcast_engine::ServerHandle) -> u64 {
    server.stats().iter().map(|s| s.accept_pauses()).sum()
}

#[test]
fn accepting_pauses_when_descriptors_run_out_and_resumes() {
    let server = common::start(common::config());
    let addr = server.local_addr();
    // One full exchange first, so nothing the server sets up lazily needs a descriptor later.
    drop(common::raw_ws(&server));
    common::wait_open(&server, 0);
    assert_eq!(pauses(&server), 0);

    // Sockets for the clients, made while descriptors are plentiful; connecting them needs none.
    let clients: Vec<Socket> = (0..8)
        .map(|_| Socket::new(Domain::IPV4, Type::STREAM, None).unwrap())
        .collect();
    let saved = nofile();
    // No descriptor above those open now, and every free one below taken: the server's next accept fails with
    // EMFILE, while the clients' connections complete in the kernel's backlog.
    set_nofile(&libc::rlimit {
        rlim_cur: highest_fd() + 1,
        rlim_max: saved.rlim_max,
    });
    let mut fillers = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        fillers.push(f);
        assert!(fillers.len() < 100_000, "the open-file limit does not hold");
    }
    let began = Instant::now();
    for c in &clients {
        c.connect(&addr.into()).unwrap();
    }
    // Hold the shortage for a while: a listener left readable in the set would be retried every turn.
    let paused = common::wait_until(Duration::from_secs(5), || pauses(&server) >= 1);
    std::thread::sleep(Duration::from_millis(500));
    let held = began.elapsed();
    let n = pauses(&server);
    drop(fillers);
    set_nofile(&saved);
    assert!(paused, "the server never ran out of descriptors");
    // At most one pause per 20 ms backoff (and per sweep, at least 100 ms): a spinning accept loop would count
    // one per turn.
    let most = held.as_millis() as u64 / 20 + 2;
    assert!(n <= most, "{n} accept pauses in {held:?}: accepting spins");

    // Descriptors are free again: the connections that waited in the backlog are accepted and served.
    for c in clients {
        let mut s: TcpStream = c.into();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let head = common::request_head(&mut s, common::UPGRADE.as_bytes());
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        common::assert_raw_echo(&mut s, "after the shortage");
    }
    common::wait_open(&server, 0);
    common::stop(server);
}
