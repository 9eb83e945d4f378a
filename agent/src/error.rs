//! The agent's one error type. Every variant says what was being done and to
//! what (path, URL, field), so a log line alone tells an operator where to
//! look: "installing certificate: renaming /etc/ssl/device.crt.tmp: No space
//! left on device".

use lancert_protocol::problem::ProblemType;
use std::path::PathBuf;
use std::time::Duration;

/// Result alias used across the agent.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the agent.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file is unreadable or has a bad field.
    Config {
        /// The configuration file.
        file: PathBuf,
        /// The offending field (`""` for the file as a whole).
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A file-system operation failed.
    Io {
        /// What was being done ("installing certificate: renaming").
        doing: String,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server could not be reached or the exchange broke off
    /// (DNS, connect, TLS, timeout, body too large).
    Network {
        /// What was being done.
        doing: String,
        /// The URL.
        url: String,
        /// What happened.
        detail: String,
    },
    /// The server answered with an error (a problem document or a bare
    /// status).
    Server {
        /// What was being done.
        doing: String,
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The problem type, when the server sent a known one.
        problem: Option<ProblemType>,
        /// The problem's `detail`, or a description of the bad answer.
        detail: String,
        /// The server's `Retry-After`, already clamped.
        retry_after: Option<Duration>,
    },
    /// An answer from the server was refused by validation before anything
    /// was written (wrong key, wrong name, untrusted chain, bad JSON, ...).
    Rejected {
        /// What was being done.
        doing: String,
        /// Why it was refused.
        reason: String,
    },
    /// A command the agent runs (the reload command) failed.
    Command {
        /// What was being done.
        doing: String,
        /// How it failed.
        detail: String,
    },
    /// Anything else, already phrased with its context.
    Other(String),
}

impl Error {
    /// An I/O error with its context.
    pub fn io(doing: impl Into<String>, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            doing: doing.into(),
            path: path.into(),
            source,
        }
    }

    /// A refused server answer.
    pub fn rejected(doing: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Rejected {
            doing: doing.into(),
            reason: reason.into(),
        }
    }

    /// How long the server asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The server's problem type, if the server sent one.
    pub fn problem(&self) -> Option<ProblemType> {
        match self {
            Error::Server { problem, .. } => *problem,
            _ => None,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Config { file, field, problem } if field.is_empty() => {
                write!(f, "config {}: {problem}", file.display())
            }
            Error::Config { file, field, problem } => {
                write!(f, "config {}: field `{field}`: {problem}", file.display())
            }
            Error::Io { doing, path, source } => write!(f, "{doing} {}: {source}", path.display()),
            Error::Network { doing, url, detail } => write!(f, "{doing}: {url}: {detail}"),
            Error::Server {
                doing,
                url,
                status,
                problem,
                detail,
                ..
            } => {
                write!(f, "{doing}: {url}: server answered {status}")?;
                if let Some(p) = problem {
                    write!(f, " {}", p.name())?;
                }
                if !detail.is_empty() {
                    write!(f, ": {detail}")?;
                }
                Ok(())
            }
            Error::Rejected { doing, reason } => write!(f, "{doing}: refused the server's answer: {reason}"),
            Error::Command { doing, detail } => write!(f, "{doing}: {detail}"),
            Error::Other(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
