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
    /// pieces; what cannot be cut fails with `advice`, which a command that knows its own flags
    /// replaces (`with_room_advice`).
    #[error("device: {what}; {advice}")]
    NoRoom { what: String, advice: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// What an out-of-room error advises where the command has nothing better to say.
pub const NO_ROOM_ADVICE: &str = "use smaller batches or --device cpu";

impl Error {
    pub fn input(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Input {
            path: path.as_ref().display().to_string(),
            msg: msg.into(),
        }
    }
    /// No room on the device for `what`, with the advice that fits any command.
    pub fn no_room(what: impl Into<String>) -> Self {
        Error::NoRoom {
            what: what.into(),
            advice: NO_ROOM_ADVICE.into(),
        }
    }
    /// An out-of-room error with the advice that fits the command; other errors unchanged.
    pub fn with_room_advice(self, advice: &str) -> Self {
        match self {
            Error::NoRoom { what, .. } => Error::NoRoom {
                what,
                advice: advice.into(),
            },
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
