//! How a command ends: the documented exit codes, and the error `main` prints once.

use std::fmt;
use std::process::ExitCode;

/// A boxed error from any layer, as commands propagate it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Exit code for a generic failure (store unreachable, Kafka refused, ...).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for arguments that parse but cannot be used (clap uses 2 for the ones that do not).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the demo's audit did not come out complete.
pub const EXIT_AUDIT_MISMATCH: u8 = 3;
/// Exit code when the demo's detection matched but its alerts could not all be delivered.
pub const EXIT_ALERTS_UNDELIVERED: u8 = 4;
/// Exit code for an invalid configuration (sysexits' EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

/// A command's unsuccessful end: its exit code and, unless the command already said everything
/// on stdout, the error `main` prints (with its whole source chain) to stderr.
#[derive(Debug)]
pub struct Exit {
    code: u8,
    error: Option<BoxError>,
    /// Print the error as it is, not behind `kaudit <command>: ` (a config report that starts
    /// with the file's name and spans lines).
    bare: bool,
}

impl Exit {
    /// Exit with `code` and `error`, printed after the command's name.
    pub fn new(code: u8, error: impl Into<BoxError>) -> Self {
        Self { code, error: Some(error.into()), bare: false }
    }

    /// A generic failure.
    pub fn failure(error: impl Into<BoxError>) -> Self {
        Self::new(EXIT_FAILURE, error)
    }

    /// Arguments that cannot be used.
    pub fn usage(error: impl Into<BoxError>) -> Self {
        Self::new(EXIT_USAGE, error)
    }

    /// An invalid configuration, reported after the command's name.
    pub fn config(error: impl Into<BoxError>) -> Self {
        Self::new(EXIT_CONFIG, error)
    }

    /// An invalid configuration file, whose report names the file itself.
    pub fn config_report(error: impl Into<BoxError>) -> Self {
        Self { bare: true, ..Self::config(error) }
    }

    /// Exit with `code` and nothing more to say (the command printed its findings).
    pub fn silent(code: u8) -> Self {
        Self { code, error: None, bare: false }
    }

    /// The process exit code.
    pub fn code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }

    /// What to print on stderr for `command`, if anything.
    pub fn message(&self, command: &str) -> Option<String> {
        let error = self.error.as_deref()?;
        let chain = kaudit_schema::error_chain(error);
        Some(if self.bare { chain } else { format!("kaudit {command}: {chain}") })
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            Some(e) => write!(f, "exit {}: {e}", self.code),
            None => write!(f, "exit {}", self.code),
        }
    }
}

/// Any error a command propagates with `?` is a generic failure.
impl<E: Into<BoxError>> From<E> for Exit {
    fn from(error: E) -> Self {
        Self::failure(error)
    }
}
