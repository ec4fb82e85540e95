//! One error type for the library.
//!
//! Every error caused by what the user gave us (a file, a manifest, an argument) is
//! an [`Error::Input`] that names the offending file and says what is wrong; the
//! binary maps it to exit code 1. Failures to write outputs and broken internal
//! invariants map to exit code 2.

use std::path::{Path, PathBuf};

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in cortexmap.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: a file that is missing, corrupt, of the wrong kind, or a manifest
    /// or table whose content is invalid. `path` names the file, `msg` the problem.
    #[error("{}: {msg}", path.display())]
    Input { path: PathBuf, msg: String },

    /// A command-line argument or option that cannot be honoured.
    #[error("{0}")]
    Usage(String),

    /// An output could not be written (disk full, permission denied, ...).
    #[error("cannot write {}: {msg}", path.display())]
    Output { path: PathBuf, msg: String },

    /// A broken internal invariant: a bug in cortexmap, never the user's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A bad-input error about `path`.
    pub fn input(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Input {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    /// An output error about `path`.
    pub fn output(path: impl AsRef<Path>, msg: impl std::fmt::Display) -> Self {
        Error::Output {
            path: path.as_ref().to_path_buf(),
            msg: msg.to_string(),
        }
    }

    /// A usage error (bad argument or option).
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }

    /// An internal error (a bug).
    pub fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }

    /// The process exit code this error maps to: 1 for bad input or usage, 2 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input { .. } | Error::Usage(_) => 1,
            Error::Output { .. } | Error::Internal(_) => 2,
        }
    }
}

/// Test helper: `r` is an input error naming `path` whose message mentions `needle`.
#[cfg(test)]
pub(crate) fn assert_input_error<T: std::fmt::Debug>(r: Result<T>, path: &Path, needle: &str) {
    match r {
        Err(Error::Input { path: p, msg }) => {
            assert_eq!(p, path, "error names the file ({msg})");
            assert!(
                msg.contains(needle),
                "message {msg:?} should mention {needle:?}"
            );
        }
        other => panic!("expected an input error mentioning {needle:?}, got {other:?}"),
    }
}
