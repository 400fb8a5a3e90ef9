//! Starting and stopping the reactors: one pinned thread per core, each with its own monoio runtime and its own
//! SO_REUSEPORT listener on the shared address.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use socket2::{Domain, Protocol, Socket, Type};

use crate::bus::Mesh;
use crate::config::{Config, CoreSet, Driver};
use crate::core::{Core, Shared, run};
use crate::error::EngineError;
use crate::poller::Waker;
use crate::publisher::Publisher;
use crate::stats::CoreStats;

/// The driver a running server ended up using.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActiveDriver {
    /// io_uring.
    Uring,
    /// monoio's legacy epoll driver.
    Epoll,
}

/// A running server. Dropping it does not stop the reactors: call [`ServerHandle::shutdown`] then
/// [`ServerHandle::join`].
pub struct ServerHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    wakers: Vec<Arc<Waker>>,
    threads: Vec<JoinHandle<Result<(), EngineError>>>,
    driver: ActiveDriver,
    publisher: Publisher,
    /// The Redis bridge's waker and thread (multi-node mode).
    bridge: Option<(Arc<Waker>, JoinHandle<()>)>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.local_addr)
            .field("cores", &self.wakers.len())
            .field("driver", &self.driver)
            .finish()
    }
}

/// Wakes every core and asks it to drain. Cloneable and callable from any thread (e.g. a signal handler thread).
#[derive(Clone, Debug)]
pub struct ShutdownTrigger {
    shared_flag: Arc<SharedFlag>,
}

#[derive(Debug)]
struct SharedFlag {
    wakers: Vec<Arc<Waker>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl ShutdownTrigger {
    /// Starts a graceful shutdown: stop accepting, close every connection with 1001, drain, exit.
    pub fn shutdown(&self) {
        self.shared_flag
            .shared
            .shutdown
            .store(true, Ordering::Release);
        for w in &self.shared_flag.wakers {
            w.wake();
        }
    }
}

impl ServerHandle {
    /// The address the listeners are bound to (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many reactors run.
    pub fn cores(&self) -> usize {
        self.wakers.len()
    }

    /// The driver in use.
    pub fn driver(&self) -> ActiveDriver {
        self.driver
    }

    /// Every core's counters, in core order.
    pub fn stats(&self) -> &[Arc<CoreStats>] {
        &self.shared.stats
    }

    /// Test only: hands a connected stream socket to core `core`, which serves it like an accepted connection
    /// (without a peer address, so no per-IP limit applies). Returns false when the core's channel is full.
    #[cfg(test)]
    pub(crate) fn adopt(&self, core: usize, fd: std::os::fd::OwnedFd) -> bool {
        self.publisher
            .mesh()
            .send_now(core, crate::bus::CoreMsg::Adopt(fd))
            .is_ok()
    }

    /// A handle that publishes into this server from any thread.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// A handle that can start the graceful shutdown from another thread.
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger {
            shared_flag: Arc::new(SharedFlag {
                wakers: self
                    .wakers
                    .iter()
                    .chain(self.bridge.as_ref().map(|b| &b.0))
                    .cloned()
                    .collect(),
                shared: self.shared.clone(),
            }),
        }
    }

    /// Starts a graceful shutdown (see [`ShutdownTrigger::shutdown`]).
    pub fn shutdown(&self) {
        self.shutdown_trigger().shutdown();
    }

    /// Waits until every reactor has stopped.
    pub fn join(self) -> Result<(), EngineError> {
        let mut result = Ok(());
        if let Some((_, t)) = self.bridge
            && t.join().is_err()
        {
            result = Err(EngineError::Panicked(self.threads.len()));
        }
        for (i, t) in self.threads.into_iter().enumerate() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = result.and(Err(e)),
                Err(_) => result = result.and(Err(EngineError::Panicked(i))),
            }
        }
        result
    }
}

/// Whether some socket already listens on `addr`: a probe bound *without* SO_REUSEPORT (but with SO_REUSEADDR, so
/// connections of an earlier run lingering in TIME_WAIT do not count) fails with EADDRINUSE only then. Any other
/// failure is left to the real bind to report.
fn port_has_listener(addr: SocketAddr) -> bool {
    let Ok(probe) = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
    else {
        return false;
    };
    if probe.set_reuse_address(true).is_err() {
        return false;
    }
    matches!(probe.bind(&addr.into()), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
}

pub(crate) fn bind_listener(addr: SocketAddr, backlog: i32) -> std::io::Result<StdListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_cloexec(true)?;
    // Accepted sockets inherit it (on Linux), so each connection is spared the `setsockopt`.
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

fn core_ids(set: &CoreSet) -> Result<Vec<Option<core_affinity::CoreId>>, EngineError> {
    let online = core_affinity::get_core_ids().unwrap_or_default();
    let available = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    Ok(match set {
        CoreSet::All => {
            if online.is_empty() {
                vec![None; available]
            } else {
                online.into_iter().map(Some).collect()
            }
        }
        CoreSet::Count(n) => {
            if online.is_empty() {
                vec![None; *n]
            } else {
                // More reactors than cores is allowed (tests, oversubscription); they wrap around the cores.
                (0..*n).map(|i| Some(online[i % online.len()])).collect()
            }
        }
        CoreSet::List(list) => {
            let mut v = Vec::with_capacity(list.len());
            for &id in list {
                if !online.is_empty() && !online.iter().any(|c| c.id == id) {
                    return Err(EngineError::Config(format!("core {id} is not online")));
                }
                v.push(Some(core_affinity::CoreId { id }));
            }
            v
        }
    })
}

fn uring_available() -> std::io::Result<()> {
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(8)
        .build()
        .map(|_| ())
}

/// Starts the reactors and returns once every core listens.
pub fn start(config: Config) -> Result<ServerHandle, EngineError> {
    config.validate().map_err(EngineError::Config)?;
    let cores = core_ids(&config.cores)?;
    let driver = match config.driver {
        Driver::Epoll => ActiveDriver::Epoll,
        Driver::Uring => {
            uring_available().map_err(EngineError::UringUnavailable)?;
            ActiveDriver::Uring
        }
        Driver::Auto => match uring_available() {
            Ok(()) => ActiveDriver::Uring,
            Err(e) => {
                tracing::warn!(error = %e, "io_uring unavailable, falling back to the epoll driver");
                ActiveDriver::Epoll
            }
        },
    };
    if !config.share_port && config.listen.port() != 0 && port_has_listener(config.listen) {
        return Err(EngineError::PortInUse(config.listen));
    }
    // Bind every listener up front so errors surface here and port 0 resolves to one port shared by all cores.
    let first =
        bind_listener(config.listen, config.backlog).map_err(|source| EngineError::Bind {
            addr: config.listen,
            source,
        })?;
    let local_addr = first.local_addr().map_err(|source| EngineError::Bind {
        addr: config.listen,
        source,
    })?;
    let mut listeners = vec![first];
    for _ in 1..cores.len() {
        listeners.push(bind_listener(local_addr, config.backlog).map_err(|source| {
            EngineError::Bind {
                addr: local_addr,
                source,
            }
        })?);
    }
    let stats: Arc<[Arc<CoreStats>]> = (0..cores.len())
        .map(|_| Arc::new(CoreStats::default()))
        .collect();
    let verifier = match &config.auth {
        Some(key) => Some(crate::auth::Verifier::new(key).map_err(EngineError::Config)?),
        None => None,
    };
    let bridge_stats = config
        .redis
        .as_ref()
        .map(|r| Arc::new(crate::bridge::BridgeStats::new(&r.node_id)));
    let shared = Arc::new(Shared {
        bridge: bridge_stats.clone(),
        verifier,
        config,
        stats,
        shutdown: AtomicBool::new(false),
    });
    let mut wakers = Vec::with_capacity(cores.len());
    for i in 0..cores.len() {
        wakers.push(Arc::new(
            Waker::new().map_err(|source| EngineError::Core { core: i, source })?,
        ));
    }
    let bridge_waker = match &bridge_stats {
        Some(_) => Some(Arc::new(Waker::new().map_err(|source| {
            EngineError::Core {
                core: wakers.len(),
                source,
            }
        })?)),
        None => None,
    };
    let (mesh, mut inboxes) = Mesh::with_bridge(
        wakers.clone(),
        bridge_waker.clone(),
        shared.config.bus_capacity,
    );
    // The bridge's inbox is the last endpoint; it starts before the cores so nothing sent to it is lost.
    let bridge = match (&shared.config.redis, bridge_waker, bridge_stats) {
        (Some(cfg), Some(waker), Some(stats)) => {
            let inbox = inboxes
                .pop()
                .ok_or_else(|| EngineError::Config("mesh".into()))?;
            let t = crate::bridge::spawn(
                cfg,
                mesh.clone(),
                inbox,
                waker.clone(),
                shared.clone(),
                stats,
            )
            .map_err(EngineError::Config)?;
            Some((waker, t))
        }
        _ => None,
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), EngineError>>();
    let mut threads = Vec::with_capacity(cores.len());
    for (i, ((core_id, listener), inbox)) in
        cores.into_iter().zip(listeners).zip(inboxes).enumerate()
    {
        let shared = shared.clone();
        let mesh = mesh.clone();
        let waker = wakers[i].clone();
        let ready = ready_tx.clone();
        let t = std::thread::Builder::new()
            .name(format!("ringcast-core-{i}"))
            .spawn(move || {
                if let (Some(id), true) = (core_id, shared.config.pin_threads)
                    && !core_affinity::set_for_current(id)
                {
                    tracing::warn!(core = i, cpu = id.id, "could not pin reactor thread");
                }
                let core =
                    match Core::new(shared, i, waker, mesh, inbox, driver == ActiveDriver::Uring) {
                        Ok(c) => c,
                        Err(source) => {
                            let _ = ready.send(Err(EngineError::Core { core: i, source }));
                            return Ok(());
                        }
                    };
                let result = match driver {
                    ActiveDriver::Uring => {
                        match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                            .with_entries(4096)
                            .enable_timer()
                            .build()
                        {
                            Ok(mut rt) => {
                                let _ = ready.send(Ok(()));
                                rt.block_on(run(core, listener))
                            }
                            Err(source) => {
                                let _ = ready.send(Err(EngineError::Core { core: i, source }));
                                return Ok(());
                            }
                        }
                    }
                    ActiveDriver::Epoll => {
                        match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                            .enable_timer()
                            .build()
                        {
                            Ok(mut rt) => {
                                let _ = ready.send(Ok(()));
                                rt.block_on(run(core, listener))
                            }
                            Err(source) => {
                                let _ = ready.send(Err(EngineError::Core { core: i, source }));
                                return Ok(());
                            }
                        }
                    }
                };
                result.map_err(|source| {
                    tracing::error!(core = i, error = %source, "reactor stopped");
                    EngineError::Core { core: i, source }
                })
            })
            .map_err(|source| EngineError::Core { core: i, source })?;
        threads.push(t);
    }
    drop(ready_tx);
    let publisher = Publisher::new(mesh, shared.config.max_message_size, shared.bridge.clone());
    let handle = ServerHandle {
        local_addr,
        shared,
        wakers,
        threads,
        driver,
        publisher,
        bridge,
    };
    for _ in 0..handle.threads.len() {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                handle.shutdown();
                let _ = handle.join();
                return Err(e);
            }
            Err(_) => break,
        }
    }
    Ok(handle)
}
