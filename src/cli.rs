//! The command line: what `main` parses, and how the process logs.

use std::io::IsTerminal;

use clap::{Parser, ValueEnum};

use crate::cmd::Command;

#[derive(Debug, Parser)]
#[command(name = "kaudit", version, about = "Kafka end-to-end message auditor")]
pub struct Cli {
    /// Log lines on stderr: `text`, or `json` for log collectors.
    ///
    /// `json` writes one JSON object per line: `timestamp`, `level`, `target`, `message` and the
    /// event's other fields at the top level, the current span under `span`, all under `spans`.
    #[arg(long, global = true, value_enum, ignore_case = true, env = "KAUDIT_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// The format of log lines (and of the error a failed command ends with) on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Log to stderr, filtered by `RUST_LOG` (default `warn`; the demo prints alerts itself, so there
/// the verifier engine's alert log lines are left out by default). Text has no colours unless
/// stderr is a terminal; JSON has each event's fields at the top level beside `timestamp`,
/// `level`, `target` and `message`, the current span under `span` and all under `spans`.
pub fn init_tracing(command: &Command, format: LogFormat) {
    let default = match command {
        Command::Demo(_) => "warn,kaudit_verifier::engine=error",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(true).try_init(),
    };
}

/// A command's closing error as `main` prints it: as it is in text, or as one JSON log line
/// (level `ERROR`, target `kaudit`, the whole message in `message`) so that every line on stderr
/// parses. Written directly, not through the filter: `RUST_LOG=off` must not hide why it failed.
pub fn closing_error(format: LogFormat, message: &str) -> String {
    match format {
        LogFormat::Text if message.ends_with('\n') => message.to_string(),
        LogFormat::Text => format!("{message}\n"),
        LogFormat::Json => {
            let line = serde_json::json!({
                "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
                "level": "ERROR",
                "target": "kaudit",
                "message": message.trim_end(),
            });
            format!("{line}\n")
        }
    }
}
