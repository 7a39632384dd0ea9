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

/// An option of Add or Blend. Errors name it by this, and each front end
/// words it itself: the command line by its flag ([`Opt::flag`], what
/// `Display` uses), the plug-in by its dialog's label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opt {
    Steps,
    Strength,
    Guidance,
    Variants,
    Detail,
    Threads,
    Scale,
    Harmonize,
    Shadow,
    Sampler,
    Scheduler,
    Prompt,
    NegativePrompt,
    CudaGraph,
}

impl Opt {
    /// The `pie` command line's flag.
    pub fn flag(self) -> &'static str {
        match self {
            Opt::Steps => "--steps",
            Opt::Strength => "--strength",
            Opt::Guidance => "--guidance",
            Opt::Variants => "--variants",
            Opt::Detail => "--detail",
            Opt::Threads => "--threads",
            Opt::Scale => "--scale",
            Opt::Harmonize => "--harmonize",
            Opt::Shadow => "--shadow",
            Opt::Sampler => "--sampler",
            Opt::Scheduler => "--scheduler",
            Opt::Prompt => "--prompt",
            Opt::NegativePrompt => "--negative-prompt",
            Opt::CudaGraph => "--cuda-graph",
        }
    }
}

/// `value` with a space before it, or nothing (a switch has no value).
fn spaced(value: &str) -> String {
    if value.is_empty() {
        String::new()
    } else {
        format!(" {value}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadInput(String),
    /// An option's value is outside what pie accepts.
    #[error("{}{} is out of range ({range})", .option.flag(), spaced(.value))]
    OutOfRange { option: Opt, value: String, range: String },
    /// An option the concept's backbone does not read.
    #[error("{}{} is for {} concepts; {concept:?} is a {backbone} concept ({lacks})", .option.flag(), spaced(.value), .readers.join(" and "))]
    NotForBackbone {
        option: Opt,
        value: String,
        concept: String,
        backbone: &'static str,
        /// What the backbone lacks that the option needs.
        lacks: &'static str,
        /// The backbones that do read it.
        readers: Vec<&'static str>,
    },
    /// Two options that cannot go together.
    #[error("{}{} {why}: use it with {}{}", .option.flag(), spaced(.value), .with.flag(), spaced(.with_value))]
    Conflict { option: Opt, value: String, why: &'static str, with: Opt, with_value: String },
    /// A bundle failed validation; `file` is the file inside the bundle folder
    /// (`bundle.json` for the manifest itself).
    #[error("concept bundle {bundle}: {file}: {what}")]
    Bundle { bundle: String, file: String, what: String },
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Unavailable(String),
    /// Something pie needs is not set up: `what` says what and where pie
    /// looked, `fix` how to set it up from a terminal.
    #[error("{what}. {fix}")]
    Missing { what: String, fix: String },
    /// CUDA was asked for and cannot be used; says why.
    #[error("--device cuda: CUDA cannot be used here: {0}")]
    CudaUnavailable(String),
    /// A concept whose graphs run on CUDA only, refused before any of them is
    /// opened: `cuda` is why CUDA is out (`None`: the CPU was asked for).
    #[error("{}", cuda_only_words(.concept, .needs, .cuda.as_deref()))]
    CudaOnly { concept: String, needs: CudaOnly, cuda: Option<String> },
    #[error("{0}")]
    Internal(String),
}

/// What ties a concept to CUDA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CudaOnly {
    /// float16 weights.
    Float16,
    /// Graphs fused for CUDA after export (bundle.json `model.optimized`):
    /// the optimizer and the graphs' keys.
    Fused { by: crate::manifest::Optimizer, graphs: Vec<&'static str> },
}

/// The command line's words for [`Error::CudaOnly`].
fn cuda_only_words(concept: &str, needs: &CudaOnly, cuda: Option<&str>) -> String {
    let why = match cuda {
        None => String::from(" (--device cpu was asked)"),
        Some(why) => format!(", and CUDA cannot be used here ({why})"),
    };
    match needs {
        CudaOnly::Float16 => format!(
            "concept {concept:?} has float16 weights, which pie runs on CUDA only{why}: use --device cuda on a machine with an NVIDIA GPU, \
             or learn the concept again with float32 weights (the trainer's fp32 export) to run it on the CPU"
        ),
        CudaOnly::Fused { by, graphs } => format!(
            "concept {concept:?} has graphs fused for CUDA by {by} ({}), whose operators ONNX Runtime runs on CUDA only{why}: \
             use --device cuda on a machine with an NVIDIA GPU, or learn the concept again with --optimize off and float32 weights \
             (--export-precision fp32) to run it on the CPU",
            graphs.join(", ")
        ),
    }
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BadInput(_)
            | Error::Bundle { .. }
            | Error::OutOfRange { .. }
            | Error::NotForBackbone { .. }
            | Error::Conflict { .. }
            | Error::CudaOnly { .. } => ErrorKind::BadInput,
            Error::Cancelled => ErrorKind::Cancelled,
            Error::Unavailable(_) | Error::Missing { .. } | Error::CudaUnavailable(_) => {
                ErrorKind::Unavailable
            }
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    pub fn bad(msg: impl Into<String>) -> Error {
        Error::BadInput(msg.into())
    }

    pub fn out_of_range(option: Opt, value: impl ToString, range: impl Into<String>) -> Error {
        Error::OutOfRange { option, value: value.to_string(), range: range.into() }
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
