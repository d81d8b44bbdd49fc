//! One error type for the library. Every variant is a failure the user can act on; the CLI prints
//! it on one line and exits with code 2. Nothing in regop panics on bad input.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or data set the user gave us is unusable: names the file and the problem.
    #[error("{path}: {msg}")]
    Input { path: String, msg: String },
    /// Flags or arguments that do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// No usable adapter, a lost device, a validation failure in a kernel launch.
    #[error("device: {0}")]
    Device(String),
    /// The device has no room for a buffer: out of memory, or above the adapter's largest
    /// buffer. Work that can be cut (edits, predictions, training steps) retries in smaller
    /// pieces.
    #[error("device: {0}")]
    NoRoom(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn input(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Input {
            path: path.as_ref().display().to_string(),
            msg: msg.into(),
        }
    }
    /// An out-of-memory error with the advice that fits the command (`crate::engine::gpu` gives a
    /// general one); other errors unchanged.
    pub fn with_room_advice(self, advice: &str) -> Self {
        match self {
            Error::NoRoom(m) => {
                let what = m
                    .strip_suffix(crate::engine::gpu::NO_ROOM_ADVICE)
                    .unwrap_or(&m);
                Error::NoRoom(format!("{}; {advice}", what.trim_end_matches("; ")))
            }
            e => e,
        }
    }
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
