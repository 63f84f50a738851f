//! `kaudit report --topic T --since 1h`: a per-bucket, per-tier table from the store.

use std::path::PathBuf;

use clap::Args;
use kaudit_schema::{Clock, Store, StoreUrl, SystemClock};
use kaudit_verifier::pipeline_for;

use crate::config::KauditConfig;
use crate::exit::{BoxError, Exit};
use crate::support::duration::{human_ms, parse_ms};

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The topic to report on.
    #[arg(long)]
    pub topic: String,
    /// How far back: `90s`, `30m`, `1h`, `2d`.
    #[arg(long, default_value = "1h", value_parser = parse_ms)]
    pub since: i64,
    /// Configuration file (store and pipelines).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Store URL (overrides the config's).
    #[arg(long)]
    pub store: Option<String>,
}

pub async fn run(args: ReportArgs) -> Result<(), Exit> {
    let config = crate::support::load::config(args.config.as_deref())?;
    let url = match args.store.as_deref() {
        Some(s) => s.parse::<StoreUrl>(),
        None => config.store_url(),
    }
    .map_err(Exit::config)?;
    if let StoreUrl::Sqlite(path) = &url
        && !path.exists()
    {
        return Err(Exit::failure(format!("no database at {} (give --store or --config)", path.display())));
    }
    let store = kaudit_schema::open_store(&url, &config.scylla).await?;
    match table(&*store, &config, &args).await? {
        Some(table) => print!("{table}"),
        None => {
            println!("no tallies for topic {:?} in the last {} in {url}", args.topic, human_ms(args.since));
            let topics = store.list_topics().await?;
            if !topics.is_empty() {
                println!("topics with tallies: {}", topics.join(", "));
            }
        }
    }
    Ok(())
}

/// The report's table, or `None` when the topic has no tallies in the window.
async fn table(store: &dyn Store, config: &KauditConfig, args: &ReportArgs) -> Result<Option<String>, BoxError> {
    let now = SystemClock.now_ms();
    let rows = store.read_range(&args.topic, now - args.since, now).await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let merged = crate::report::merge_by_tier(&rows);
    let pipelines: Vec<_> = config.verifier.pipelines.iter().map(|p| p.build()).collect();
    let (tiers, edges) = match pipeline_for(&pipelines, &args.topic) {
        Some(p) => (p.tiers().to_vec(), p.edges().iter().map(|e| (e.upstream.clone(), e.downstream.clone())).collect()),
        None => crate::report::tiers_in_order(&rows),
    };
    let delay_ms = config.verifier.thresholds.p99_delay_ms;
    Ok(Some(crate::report::render_edges(&merged, &tiers, &edges, delay_ms)))
}
