//! The engine's one error type.

use std::io;

/// Why the engine could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The configuration is inconsistent; the message names the knob.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listening socket could not be created or bound (address in use, permission, ...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address that failed.
        addr: std::net::SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
    /// Another socket already listens on the address and sharing was not asked for (`Config::share_port`): with
    /// SO_REUSEPORT this server would silently take a share of the other one's new connections.
    #[error(
        "another process already listens on {0}; SO_REUSEPORT would split new connections between it and this \
         server. Stop it, listen elsewhere, or pass --share-port to run several processes on one port on purpose"
    )]
    PortInUse(std::net::SocketAddr),
    /// `--driver uring` was asked for and io_uring could not be set up on this kernel.
    #[error("io_uring is not available here ({0}); use --driver epoll or --driver auto")]
    UringUnavailable(io::Error),
    /// A core failed to start or its reactor failed.
    #[error("core {core}: {source}")]
    Core {
        /// The core's index in the reactor list.
        core: usize,
        /// The underlying error.
        source: io::Error,
    },
    /// A reactor thread panicked.
    #[error("core {0} panicked")]
    Panicked(usize),
}
