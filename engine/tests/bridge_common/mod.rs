//! Helpers of the multi-node tests (`bridge_*.rs`): a real `redis-server` on a free port with no persistence
//! (started, killed and restarted by the test), and ringcast nodes pointed at it.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringcast_engine::{Config, RedisConfig, ServerHandle};

use crate::pubsub_common as pc;

/// A `redis-server` child process.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

/// Is `redis-server` installed? Tests print why they skip when it is not.
pub fn redis_available() -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "SKIPPED: redis-server is not installed (scripts/test.sh installs it: apt-get install -y redis-server)"
        );
    }
    ok
}

impl Redis {
    /// Starts a server on a free port, no RDB, no AOF.
    pub fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Redis { port, child: None };
        r.restart();
        r
    }

    /// (Re)starts the server on the same port, empty.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL): everything it held is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A two-core node of the cluster around `redis`.
pub fn node_config(redis_url: &str, id: &str) -> Config {
    let mut c = pc::config();
    c.redis = Some(RedisConfig {
        url: redis_url.to_owned(),
        node_id: id.to_owned(),
    });
    c
}

pub fn start_nodes(redis: &Redis, n: usize) -> Vec<ServerHandle> {
    (0..n)
        .map(|i| pc::start(node_config(&redis.url(), &format!("node-{i}"))))
        .collect()
}

pub fn readyz(addr: SocketAddr) -> u16 {
    pc::http_once(addr, "GET", "/readyz", &[], b"").status
}

/// Waits until every node reports ready.
pub fn wait_ready(nodes: &[ServerHandle]) {
    for n in nodes {
        let ok = pc::wait_until(Duration::from_secs(15), || readyz(n.local_addr()) == 200);
        assert!(ok, "node {} never became ready", n.local_addr());
    }
}

/// A TCP proxy in front of Redis that the test can close: while closed it cuts every connection it carries and
/// refuses new ones, so one node stays away from Redis while others reconnect. Its threads end with the process.
pub struct Proxy {
    port: u16,
    open: Arc<AtomicBool>,
    /// Every carried connection (both ends), to cut on close.
    live: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Listens on a free port and forwards to Redis on `upstream`.
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let live = Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
        let (o, l) = (open.clone(), live.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !o.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let mut ends = l.lock().unwrap();
                ends.push(client.try_clone().unwrap());
                ends.push(server.try_clone().unwrap());
                drop(ends);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { port, open, live }
    }

    /// Opens (forwards new connections) or closes (cuts every carried connection, refuses new ones).
    pub fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
        if !open {
            for s in self.live.lock().unwrap().drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}
