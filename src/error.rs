//! The library's one error type. Every variant names what the user has to look at:
//! the file, the line, the tensor or the flag.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The I/O error is part of the message, not a `source`, so that `{:#}` prints it once.
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },

    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },

    #[error("{path}:{line}: {msg}")]
    Line { path: PathBuf, line: usize, msg: String },

    #[error("tensor `{name}` in {path}: {msg}")]
    Tensor { path: PathBuf, name: String, msg: String },

    #[error("unsupported: {0}")]
    Unsupported(String),

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("backend {backend}: {msg}")]
    Backend { backend: &'static str, msg: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, err: std::io::Error) -> Self {
        Error::Io { path: path.into(), err }
    }
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::File { path: path.into(), msg: msg.into() }
    }
    pub fn line(path: impl Into<PathBuf>, line: usize, msg: impl Into<String>) -> Self {
        Error::Line { path: path.into(), line, msg: msg.into() }
    }
    pub fn tensor(path: impl Into<PathBuf>, name: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor { path: path.into(), name: name.into(), msg: msg.into() }
    }
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// This error as the consequence of the flags that sized what failed (an allocation, say):
    /// `sized_by("--batch-size 8 x --seq-len 512")` names them in front of the message.
    pub fn sized_by(flags: impl std::fmt::Display) -> impl FnOnce(Error) -> Error {
        move |e| Error::invalid(format!("{flags}: {e} (lower these flags)"))
    }
}
