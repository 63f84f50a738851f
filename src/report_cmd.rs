//! `kaudit report --topic T --since 1h`: a per-bucket, per-tier table from the store.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use kaudit_schema::{Clock, StoreUrl, SystemClock};
use kaudit_verifier::pipeline_for;

use crate::cli::EXIT_CONFIG;

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The topic to report on.
    #[arg(long)]
    pub topic: String,
    /// How far back: `90s`, `30m`, `1h`, `2d`.
    #[arg(long, default_value = "1h", value_parser = parse_duration_ms)]
    pub since: i64,
    /// Configuration file (store and pipelines).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Store URL (overrides the config's).
    #[arg(long)]
    pub store: Option<String>,
}

/// `90s`, `30m`, `1h`, `2d` to milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| format!("{s:?} is not a duration like 30m, 1h or 2d"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: unit must be ms, s, m, h or d")),
    };
    if n <= 0 || n > 30 * 86_400_000 / ms {
        return Err(format!("{s:?} must be positive and at most 30 days"));
    }
    Ok(n * ms)
}

pub fn main(args: ReportArgs) -> ExitCode {
    let config = match crate::cli::load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let url = match args.store.as_deref().map(str::parse::<StoreUrl>).unwrap_or_else(|| config.store_url()) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("kaudit report: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let StoreUrl::Sqlite(path) = &url
        && !path.exists()
    {
        eprintln!("kaudit report: no database at {} (give --store or --config)", path.display());
        return ExitCode::FAILURE;
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let delay_ms = config.verifier.thresholds.p99_delay_ms;
    let result = runtime.block_on(async {
        let store = kaudit_schema::open_store(&url, &config.scylla).await?;
        let now = SystemClock.now_ms();
        let rows = store.read_range(&args.topic, now - args.since, now).await?;
        let merged = crate::report::merge_by_tier(&rows);
        let pipelines: Vec<_> = config.verifier.pipelines.iter().map(|p| p.build()).collect();
        let (tiers, edges) = match pipeline_for(&pipelines, &args.topic) {
            Some(p) => {
                (p.tiers().to_vec(), p.edges().iter().map(|e| (e.upstream.clone(), e.downstream.clone())).collect())
            }
            None => crate::report::tiers_in_order(&rows),
        };
        let topics = if rows.is_empty() { store.list_topics().await? } else { Vec::new() };
        let table = crate::report::render_edges(&merged, &tiers, &edges, delay_ms);
        Ok::<_, kaudit_schema::StoreError>((table, rows.len(), topics))
    });
    match result {
        Ok((_, 0, topics)) => {
            println!("no tallies for topic {:?} in the last {} in {url}", args.topic, human_ms(args.since));
            if !topics.is_empty() {
                println!("topics with tallies: {}", topics.join(", "));
            }
            ExitCode::SUCCESS
        }
        Ok((table, _, _)) => {
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kaudit report: {}", kaudit_agent::flusher::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// `3600000` → `1h`: the largest unit that divides it.
fn human_ms(ms: i64) -> String {
    for (unit, n) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms % n == 0 {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::parse_duration_ms("90s"), Ok(90_000));
        assert_eq!(super::parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(super::parse_duration_ms("2d"), Ok(172_800_000));
        assert!(super::parse_duration_ms("1y").unwrap_err().contains("unit"));
        assert!(super::parse_duration_ms("h").unwrap_err().contains("not a duration"));
        assert!(super::parse_duration_ms("0m").is_err());
        assert_eq!(super::human_ms(3_600_000), "1h");
        assert_eq!(super::human_ms(90_000), "90s");
        assert_eq!(super::human_ms(1_500), "1500ms");
    }
}
