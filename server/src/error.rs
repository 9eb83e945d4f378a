//! The error type of everything outside request handling: command line,
//! configuration, files, database, CA and TLS setup. Request-level failures
//! are [`crate::problem::Problem`]s instead.

use std::fmt;
use std::path::PathBuf;

use crate::store::StoreError;

/// What went wrong, with what was being done to what.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The command line is wrong; the message says how.
    Usage(String),
    /// The configuration file is unreadable or invalid; `message` names the
    /// field.
    Config {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong, starting with the field's name.
        message: String,
    },
    /// A file or socket operation failed.
    Io {
        /// What was being done ("writing CA key").
        context: String,
        /// The file or address concerned.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The database failed.
    Store(StoreError),
    /// Setting up the local CA or the TLS certificate failed.
    Ca(String),
    /// Any other failure, described.
    Other(String),
}

impl Error {
    /// A file or socket error with its context.
    pub fn io(context: impl Into<String>, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            path: path.into(),
            source,
        }
    }

    /// The process exit code for this error: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) => write!(f, "{m} (see --help)"),
            Error::Config { path, message } => write!(f, "config {}: {message}", path.display()),
            Error::Io { context, path, source } => write!(f, "{context} {}: {source}", path.display()),
            Error::Store(e) => e.fmt(f),
            Error::Ca(m) => write!(f, "certificate authority: {m}"),
            Error::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Store(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        Error::Store(e)
    }
}
