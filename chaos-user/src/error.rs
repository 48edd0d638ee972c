//! The library's error type. Every variant renders as one line that names the problem and, where
//! there is one, the fix.

use std::path::PathBuf;

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between a fault spec and an armed (or recovered) fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the spec is wrong. Nothing was armed.
    #[error("invalid {field}: {problem}; {fix}")]
    Invalid {
        /// The field, as spelled in the spec and on the command line (`percent`, `interface`...).
        field: &'static str,
        /// What is wrong with the value.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// A field of a spec given as JSON is malformed: of the wrong type, unknown, missing or
    /// given twice. Nothing was armed. (Values of the right type are checked by the plan and
    /// refused as [`Error::Invalid`].)
    #[error("invalid {field}: {problem}; {fix}")]
    InvalidField {
        /// The field's path in the spec, e.g. `percent` or `dst[1]`; `spec` for the whole.
        field: String,
        /// What is wrong with it.
        problem: String,
        /// How to fix it.
        fix: String,
    },
    /// The caller lacks a privilege the injector needs.
    #[error("{0}")]
    Privilege(String),
    /// No strategy available on this kernel can serve the fault.
    #[error("this kernel cannot {what}: {why}")]
    Unsupported {
        /// The fault or feature asked for.
        what: String,
        /// What the probe found missing.
        why: String,
    },
    /// No fault with that id is known.
    #[error("no fault with id {0}; `chaos list` shows the armed faults")]
    NotFound(String),
    /// This binary was built without the eBPF object (`AYA_BUILD_SKIP`).
    #[error(
        "this chaos binary was built without its eBPF programs (AYA_BUILD_SKIP); rebuild with `cargo xtask build`"
    )]
    NoEbpfObject,
    /// Loading, attaching or updating a BPF object failed. (The verifier's log is cut to its
    /// start and end, so the message stays one readable line.)
    #[error("{context}: {}", shorten(&source.to_string()))]
    Bpf {
        /// What the injector was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the injector was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The state store holds something unreadable.
    #[error("state file {path}: {problem}")]
    Store {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

/// One line, at most about 600 characters: the start (what failed) and the end (the verifier's
/// verdict) of a long message.
fn shorten(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let chars: Vec<char> = flat.chars().collect();
    if chars.len() <= 600 {
        return flat;
    }
    let head: String = chars[..250].iter().collect();
    let tail: String = chars[chars.len() - 300..].iter().collect();
    format!("{head} [...] {tail}")
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(
        field: &'static str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            field,
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// The spec field a bad-input error names ([`Error::Invalid`], [`Error::InvalidField`]), as
    /// a daemon reports it next to the message.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Invalid { field, .. } => Some(field),
            Error::InvalidField { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Wraps any BPF-side error with what the injector was doing.
    pub fn bpf(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Bpf {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// Wraps an I/O error with what the injector was doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds context to `io::Result`s.
pub(crate) trait IoContext<T> {
    /// Turns the error into [`Error::Io`] with the context `f()` gives.
    fn ctx<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::io(f(), std::io::Error::from(e)))
    }
}
