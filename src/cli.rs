//! The command line: what `main` parses, and how the process logs.

use std::io::IsTerminal;

use clap::Parser;

use crate::cmd::Command;

#[derive(Debug, Parser)]
#[command(name = "kaudit", version, about = "Kafka end-to-end message auditor")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Log to stderr, filtered by `RUST_LOG` (default `warn`; the demo prints alerts itself, so there
/// the verifier engine's alert log lines are left out by default). No colours unless stderr is a
/// terminal.
pub fn init_tracing(command: &Command) {
    let default = match command {
        Command::Demo(_) => "warn,kaudit_verifier::engine=error",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}
