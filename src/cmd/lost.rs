//! `kaudit lost --topic T --tier U --bucket TIME`: every message the edge into tier `U` lost (or
//! got extra, or altered) in one bucket, named from the tiers' sketches, each with its partition,
//! offset and the `kcat` command that fetches it from Kafka.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use kaudit_alerting::time::rfc3339;
use kaudit_schema::{NamedKind, NamedMessage, StoreUrl, TallyRow};
use kaudit_verifier::named::{BucketDiff, bucket_diff};
use kaudit_verifier::{PipelineConfig, pipeline_for};

use crate::exit::Exit;

/// How far before `--bucket` a bucket containing it may start: the widest bucket the agents use.
const WIDEST_BUCKET_MS: i64 = 3_600_000;

#[derive(Debug, Clone, Args)]
pub struct LostArgs {
    /// The topic.
    #[arg(long)]
    pub topic: String,
    /// The downstream tier of the edge (its upstream comes from the topic's pipeline).
    #[arg(long)]
    pub tier: String,
    /// The edge's upstream tier, when no pipeline in the configuration covers the topic (or to
    /// compare two tiers the pipeline does not join).
    #[arg(long)]
    pub upstream: Option<String>,
    /// A time inside the bucket: RFC 3339 (`2026-11-23T10:04:00Z`) or ms since the epoch.
    #[arg(long)]
    pub bucket: String,
    /// Configuration file (store, pipelines and the Kafka cluster to fetch from).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Store URL (overrides the config's).
    #[arg(long)]
    pub store: Option<String>,
    /// Bootstrap servers for the fetch commands (default: the config's `kafka.bootstrap_servers`).
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
}

pub async fn run(args: LostArgs) -> Result<(), Exit> {
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
    let at =
        kaudit_verifier::api::query::parse_time(&args.bucket).map_err(|e| Exit::usage(format!("--bucket: {e}")))?;
    let mut pipelines: Vec<_> = config.verifier.pipelines.iter().map(|p| p.build()).collect();
    if let Some(upstream) = &args.upstream {
        let edge = PipelineConfig {
            topics: vec![args.topic.clone()],
            tiers: vec![upstream.clone(), args.tier.clone()],
            consumers: Vec::new(),
        };
        if let Some(issue) = edge.validate("").into_iter().next() {
            return Err(Exit::usage(format!("--topic, --upstream and --tier: {}", issue.message)));
        }
        pipelines = vec![edge.build()];
    }
    let pipeline = pipeline_for(&pipelines, &args.topic).ok_or_else(|| {
        Exit::usage(format!(
            "no pipeline in the configuration applies to topic {:?} (verifier.pipelines); or give --upstream",
            args.topic
        ))
    })?;
    let store = kaudit_schema::open_store(&url, &config.scylla).await?;
    let rows = store.read_range(&args.topic, at - WIDEST_BUCKET_MS, at + 1).await?;
    let Some(bucket) = bucket_of(&rows, at) else {
        return Err(Exit::failure(format!("no tallies of topic {:?} in a bucket holding {}", args.topic, rfc3339(at))));
    };
    let diff =
        bucket_diff(&args.topic, bucket, &args.tier, &rows, pipeline).map_err(|e| Exit::failure(e.to_string()))?;
    let bootstrap = args.bootstrap_servers.or(config.kafka.bootstrap_servers.clone());
    print!("{}", render(&diff, bootstrap.as_deref()));
    Ok(())
}

/// The start of the bucket of `rows` that holds `at`.
fn bucket_of(rows: &[TallyRow], at: i64) -> Option<i64> {
    rows.iter()
        .filter(|r| r.key.bucket_start_ms <= at && at < r.key.bucket_start_ms + r.bucket_width_ms)
        .map(|r| r.key.bucket_start_ms)
        .max()
}

/// The difference as a table, one fetch command per located message.
pub fn render(diff: &BucketDiff, bootstrap: Option<&str>) -> String {
    let n = &diff.named;
    let mut out = format!(
        "topic {}, bucket {}, {} → {}: upstream {}, downstream {}\n",
        diff.topic,
        rfc3339(diff.bucket_start_ms),
        diff.upstream_tier,
        diff.tier,
        diff.upstream_count,
        diff.count
    );
    if n.complete {
        let _ = writeln!(out, "lost {}, extra {}, altered {} (every difference named)", n.lost, n.extra, n.altered);
    } else {
        let _ = writeln!(
            out,
            "more differences than the sketch can name: {} named below (lost {}, extra {}, altered {} among them); \
             the counts differ by {}",
            n.total,
            n.lost,
            n.extra,
            n.altered,
            diff.upstream_count.abs_diff(diff.count)
        );
    }
    if n.messages.is_empty() {
        return out;
    }
    let _ =
        writeln!(out, "{:<8} {:<16} {:>6} {:>9} {:>12}  FETCH", "KIND", "FINGERPRINT", "COPIES", "PARTITION", "OFFSET");
    for m in &n.messages {
        let (p, o) =
            (m.partition.map_or("-".into(), |p| p.to_string()), m.offset.map_or("-".into(), |o| o.to_string()));
        let _ = writeln!(
            out,
            "{:<8} {:<16} {:>6} {p:>9} {o:>12}  {}",
            m.kind.as_str(),
            m.fingerprint,
            m.copies,
            fetch(diff, m, bootstrap)
        );
    }
    out
}

/// The command that fetches `m` from Kafka, or why there is none.
fn fetch(diff: &BucketDiff, m: &NamedMessage, bootstrap: Option<&str>) -> String {
    let (Some(p), Some(o)) = (m.partition, m.offset) else {
        return "(not located: its tiers did not record where it lives)".into();
    };
    let replaced = match (m.kind, &m.replaced_by) {
        (NamedKind::Altered, Some(by)) => format!("   # downstream now holds {by} there"),
        _ => String::new(),
    };
    let b = bootstrap.unwrap_or("<bootstrap>");
    format!("kcat -C -b {b} -t {} -p {p} -o {o} -c 1 -e{replaced}", diff.topic)
}

#[cfg(test)]
mod tests {
    use kaudit_schema::NamedDifferences;

    use super::*;

    #[test]
    fn every_located_message_gets_its_fetch_command() {
        let lost = NamedMessage {
            kind: NamedKind::Lost,
            fingerprint: "00000000000000ab".into(),
            copies: 1,
            partition: Some(2),
            offset: Some(41),
            replaced_by: None,
        };
        let unlocated = NamedMessage { partition: None, offset: None, kind: NamedKind::Extra, ..lost.clone() };
        let named = NamedDifferences {
            complete: true,
            lost: 1,
            extra: 1,
            total: 2,
            messages: vec![lost, unlocated],
            ..NamedDifferences::default()
        };
        let diff = BucketDiff {
            topic: "orders".into(),
            bucket_start_ms: 60_000,
            upstream_tier: "producer".into(),
            tier: "consumer/billing".into(),
            upstream_count: 10,
            count: 10,
            named,
        };
        let text = render(&diff, Some("127.0.0.1:9092"));
        assert!(text.contains("lost 1, extra 1, altered 0 (every difference named)"), "{text}");
        assert!(text.contains("kcat -C -b 127.0.0.1:9092 -t orders -p 2 -o 41 -c 1 -e"), "{text}");
        assert!(text.contains("(not located"), "{text}");
    }
}
