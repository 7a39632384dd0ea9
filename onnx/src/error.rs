//! The engine's one error type. Every message is meant for the person who
//! ran pie: it names the bundle, file or option at fault and what to do.

use std::path::Path;

/// What kind of failure it was; the command line maps it to its exit code
/// and the plug-in to the way it reports the failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The user's input (image, mask, bundle, option, output path) is wrong.
    BadInput,
    /// The user (or GIMP) asked to stop.
    Cancelled,
    /// Something pie needs is missing here: the ONNX Runtime library, CUDA,
    /// the trainer's Python environment.
    Unavailable,
    /// A bug or an unexpected failure of the machine.
    Internal,
}

impl ErrorKind {
    /// The `pie` command line's exit code for this kind.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::BadInput => 2,
            ErrorKind::Cancelled => 3,
            ErrorKind::Unavailable => 4,
            ErrorKind::Internal => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadInput => "bad_input",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadInput(String),
    /// A bundle failed validation; `file` is the file inside the bundle folder
    /// (`bundle.json` for the manifest itself).
    #[error("concept bundle {bundle}: {file}: {what}")]
    Bundle { bundle: String, file: String, what: String },
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BadInput(_) | Error::Bundle { .. } => ErrorKind::BadInput,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    pub fn bad(msg: impl Into<String>) -> Error {
        Error::BadInput(msg.into())
    }

    pub fn internal(msg: impl Into<String>) -> Error {
        Error::Internal(msg.into())
    }

    /// An I/O failure on a path the user named: missing files and refused
    /// permissions are the user's to fix, the rest is the machine's.
    pub fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
        use std::io::ErrorKind as K;
        let msg = format!("{what} {}: {e}", path.display());
        match e.kind() {
            K::NotFound
            | K::PermissionDenied
            | K::AlreadyExists
            | K::InvalidInput
            | K::InvalidData
            | K::IsADirectory
            | K::NotADirectory
            | K::ReadOnlyFilesystem => Error::BadInput(msg),
            _ => Error::Internal(msg),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `s` with control characters (escape sequences included) shown as `\u{..}`
/// escapes, line breaks and tabs kept.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
