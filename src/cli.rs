//! Command-line interface.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::KauditConfig;

/// Exit code for an invalid configuration (sysexits' EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code when the demo's audit did not come out complete.
pub const EXIT_AUDIT_MISMATCH: u8 = 3;
/// Exit code when the demo's detection matched but its alerts could not all be delivered.
pub const EXIT_ALERTS_UNDELIVERED: u8 = 4;

#[derive(Debug, Parser)]
#[command(name = "kaudit", version, about = "Kafka end-to-end message auditor")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the fingerprint of one message: xxh64(payload) XOR (crc32c(business_id) << 16), hex.
    Fingerprint(FingerprintArgs),
    /// Check a configuration file and report every problem with its key and line.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Run a local audit end to end on embedded defaults (mock Kafka cluster, SQLite).
    Demo(crate::demo::DemoArgs),
    /// Create or upgrade the store's schema (SQLite file, or a Scylla/Cassandra keyspace).
    Migrate(crate::migrate::MigrateArgs),
    /// Run the sidecar agent: tap topics as a tier (see `[tap]`), serve /metrics.
    Agent(crate::agent_cmd::AgentArgs),
    /// Run the verifier: evaluate buckets, raise and deliver alerts, serve the API and /metrics.
    Verifier(crate::serve::VerifierArgs),
    /// Print a per-bucket, per-tier table of a topic's recent tallies and verdicts.
    Report(crate::report_cmd::ReportArgs),
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false, id = "payload_source")]
pub struct PayloadSource {
    /// The payload, as text.
    #[arg(long)]
    payload: Option<String>,
    /// A file holding the payload bytes.
    #[arg(long)]
    payload_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FingerprintArgs {
    /// The message's business id (usually its key).
    #[arg(long, default_value = "")]
    business_id: String,
    #[command(flatten)]
    payload: PayloadSource,
}

/// Log to stderr, filtered by `RUST_LOG` (default `warn`; the demo prints alerts itself, so there
/// the verifier engine's alert log lines are left out by default).
pub fn init_tracing(cli: &Cli) {
    let default = match cli.command {
        Command::Demo(_) => "warn,kaudit_verifier::engine=error",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Fingerprint(args) => fingerprint(args),
        Command::CheckConfig { file } => check_config(&file),
        Command::Demo(args) => crate::demo::main(args),
        Command::Migrate(args) => crate::migrate::main(args),
        Command::Verifier(args) => crate::serve::main(args),
        Command::Agent(args) => crate::agent_cmd::main(args),
        Command::Report(args) => crate::report_cmd::main(args),
    }
}

/// The configuration at `path`, or the defaults without one; on error the message is printed and
/// the exit code returned.
pub fn load_config(path: Option<&std::path::Path>) -> Result<KauditConfig, ExitCode> {
    match path {
        None => Ok(KauditConfig::default()),
        Some(path) => KauditConfig::load(path).map_err(|e| {
            eprint!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }),
    }
}

fn fingerprint(args: FingerprintArgs) -> ExitCode {
    let payload = match (&args.payload.payload, &args.payload.payload_file) {
        (Some(text), _) => text.clone().into_bytes(),
        (None, Some(path)) => match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => {
                eprintln!("kaudit: cannot read payload file {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        (None, None) => unreachable!("clap requires one payload source"),
    };
    let fp = kaudit_agent::fingerprint(args.business_id.as_bytes(), &payload);
    let _ = writeln!(std::io::stdout(), "{fp:016x}");
    ExitCode::SUCCESS
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match KauditConfig::load(file) {
        Ok(config) => {
            let store = config.store_url().map(|u| u.to_string()).unwrap_or_default();
            println!(
                "{}: ok (agent {:?}, store {store}, {} topic rule(s))",
                file.display(),
                config.agent.name,
                config.agent.topics.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
