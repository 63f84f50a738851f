//! `kaudit migrate`: create or upgrade the store's schema. Safe to run any number of times.

use std::path::PathBuf;

use std::error::Error as _;

use clap::Args;
use kaudit_schema::scylladb::{Replication, connect_session, migrate};
use kaudit_schema::sqlite::SqliteOptions;
use kaudit_schema::{SqliteStore, StoreUrl};

use crate::config::KauditConfig;
use crate::exit::{BoxError, Exit};

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// `sqlite:///path/audit.db` or `scylla://host:9042[,host:port...]`; default: the config's store.
    #[arg(long)]
    pub store: Option<String>,
    /// Configuration file (for `[scylla]` settings and the default store).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Keyspace to create or upgrade (overrides `scylla.keyspace`).
    #[arg(long)]
    pub keyspace: Option<String>,
    /// SimpleStrategy with this many replicas (one data center).
    #[arg(long, conflicts_with = "datacenter")]
    pub replication_factor: Option<u32>,
    /// NetworkTopologyStrategy replicas per data center, as DC=N; repeat for each data center.
    #[arg(long, value_parser = parse_dc)]
    pub datacenter: Vec<(String, u32)>,
    /// Retention of tallies and verdicts in days (the tables' default TTL).
    #[arg(long)]
    pub retention_days: Option<u32>,
    /// Do not wait for schema agreement (single-node test servers only).
    #[arg(long)]
    pub no_schema_agreement: bool,
}

fn parse_dc(s: &str) -> Result<(String, u32), String> {
    let (dc, n) = s.split_once('=').ok_or_else(|| format!("{s:?} is not DC=N, e.g. eu-west=3"))?;
    let n: u32 = n.parse().map_err(|_| format!("replica count {n:?} in {s:?} is not a number"))?;
    if dc.is_empty() || n == 0 {
        return Err(format!("{s:?}: need a data center name and at least one replica"));
    }
    Ok((dc.to_string(), n))
}

pub async fn run(args: MigrateArgs) -> Result<(), Exit> {
    let mut config = crate::support::load::config(args.config.as_deref())?;
    apply_overrides(&args, &mut config);
    let problems = config.scylla.validate("scylla");
    if !problems.is_empty() {
        // One line per problem, each after the command's name as `main` prints the first.
        let lines: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect();
        return Err(Exit::config(lines.join("\nkaudit migrate: ")));
    }
    let url = match args.store.as_deref() {
        Some(s) => s.parse::<StoreUrl>(),
        None => config.store_url(),
    }
    .map_err(Exit::config)?;
    println!("{}", migrate_store(&url, &config).await?);
    if let Some(coordination) = &config.verifier.coordination {
        kaudit_verifier::coordination::ensure_topic(&config.kafka_client(), coordination).await.map_err(|e| {
            format!("verifier.coordination: {e}: {}", e.source().map(|s| s.to_string()).unwrap_or_default())
        })?;
        println!("coordination topic {} ready with {} shards", coordination.topic, coordination.shards);
    }
    Ok(())
}

/// The command line's settings over the configuration file's.
fn apply_overrides(args: &MigrateArgs, config: &mut KauditConfig) {
    if let Some(k) = &args.keyspace {
        config.scylla.keyspace = k.clone();
    }
    if let Some(rf) = args.replication_factor {
        config.scylla.replication = Replication::simple(rf);
    }
    if !args.datacenter.is_empty() {
        config.scylla.replication = Replication::network_topology(args.datacenter.clone());
    }
    if let Some(days) = args.retention_days {
        config.scylla.retention_days = days;
    }
    if args.no_schema_agreement {
        config.scylla.await_schema_agreement = false;
    }
}

async fn migrate_store(url: &StoreUrl, config: &KauditConfig) -> Result<String, BoxError> {
    match url {
        StoreUrl::Sqlite(path) => {
            let store = SqliteStore::open(path, &SqliteOptions::default())?;
            Ok(format!("{url}: schema at version {}", store.schema_version()?))
        }
        StoreUrl::Scylla(hosts) => {
            let options = &config.scylla;
            let session = connect_session(hosts, options).await?;
            let applied = migrate::migrate(&session, options).await?;
            let all = migrate::applied_versions(&session).await?;
            Ok(format!(
                "{url}: keyspace {} with replication {}; applied {applied:?}, now at {all:?}",
                options.keyspace,
                options.replication.to_cql()
            ))
        }
    }
}
