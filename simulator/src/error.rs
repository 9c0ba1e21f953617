//! The crate's one error type.

use std::{io, net::SocketAddr, path::PathBuf};

/// Everything that can go wrong in the simulator library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A profile or fleet config has a value out of range; the message names the field.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// What was being validated, e.g. `profile` or `fleet backend "fast"`.
        what: String,
        /// Which field is wrong and why.
        message: String,
    },
    /// A config file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A config file is not valid YAML for its type.
    #[error("cannot parse {what}: {message}")]
    Parse {
        /// What was being parsed (a path or a description).
        what: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        source: io::Error,
    },
    /// The HTTP server stopped with an error.
    #[error("server failed: {0}")]
    Serve(#[source] io::Error),
    /// A response could not be serialized (a bug: every body is built from plain data).
    #[error("cannot serialize a response: {0}")]
    Json(#[from] serde_json::Error),
    /// The body of a response ends abruptly on purpose (the `reset` fault).
    #[error("connection reset by the simulator's fault injection")]
    InjectedReset,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for [`Error::Invalid`].
pub(crate) fn invalid(what: impl Into<String>, message: impl Into<String>) -> Error {
    Error::Invalid { what: what.into(), message: message.into() }
}
