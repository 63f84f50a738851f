//! The subcommands, one file each. Every command is `async fn run(args) -> Result<(), Exit>`:
//! `main` parses the arguments, builds the one runtime, runs the command and prints its error
//! chain once. Commands import shared helpers from [`crate::support`], never each other.

pub mod agent;
pub mod check_config;
pub mod completions;
pub mod demo;
pub mod fingerprint;
pub mod health;
pub mod lost;
pub mod man;
pub mod migrate;
pub mod report;
pub mod verifier;

use clap::Subcommand;

use crate::exit::Exit;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the fingerprint of one message: xxh64(payload) XOR (crc32c(business_id) << 16), hex.
    Fingerprint(fingerprint::FingerprintArgs),
    /// Check a configuration file and report every problem with its key and line.
    CheckConfig(check_config::CheckConfigArgs),
    /// Run a local audit end to end on embedded defaults (mock Kafka cluster, SQLite).
    Demo(crate::demo::DemoArgs),
    /// Create or upgrade the store's schema (SQLite file, or a Scylla/Cassandra keyspace).
    Migrate(migrate::MigrateArgs),
    /// Run the sidecar agent: tap topics as a tier (see `[tap]`), serve /metrics.
    Agent(agent::AgentArgs),
    /// Run the verifier: evaluate buckets, raise and deliver alerts, serve the API and /metrics.
    Verifier(verifier::VerifierArgs),
    /// Print a per-bucket, per-tier table of a topic's recent tallies and verdicts.
    Report(report::ReportArgs),
    /// Name the messages one edge lost, duplicated or altered in one bucket, with their partition,
    /// offset and the command that fetches each from Kafka.
    Lost(lost::LostArgs),
    /// GET a URL for a container HEALTHCHECK or probe: exit 0 on 2xx, else 1 with the reason.
    Health(health::HealthArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    Completions(completions::CompletionsArgs),
    /// Print the roff manual page of kaudit or of one of its commands.
    Man(man::ManArgs),
}

impl Command {
    /// The name the command is invoked by, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Fingerprint(_) => "fingerprint",
            Command::CheckConfig(_) => "check-config",
            Command::Demo(_) => "demo",
            Command::Migrate(_) => "migrate",
            Command::Agent(_) => "agent",
            Command::Verifier(_) => "verifier",
            Command::Report(_) => "report",
            Command::Lost(_) => "lost",
            Command::Health(_) => "health",
            Command::Completions(_) => "completions",
            Command::Man(_) => "man",
        }
    }

    /// Run the command to its end.
    pub async fn run(self) -> Result<(), Exit> {
        match self {
            Command::Fingerprint(args) => fingerprint::run(args).await,
            Command::CheckConfig(args) => check_config::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Migrate(args) => migrate::run(args).await,
            Command::Agent(args) => agent::run(args).await,
            Command::Verifier(args) => verifier::run(args).await,
            Command::Report(args) => report::run(args).await,
            Command::Lost(args) => lost::run(args).await,
            Command::Health(args) => health::run(args).await,
            Command::Completions(args) => completions::run(args).await,
            Command::Man(args) => man::run(args).await,
        }
    }
}
