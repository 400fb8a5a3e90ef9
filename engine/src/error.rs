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
