//! The agent's overhead table, from the estimates criterion left in `target/criterion` by
//! `cargo bench -p kaudit-agent --bench tally --bench producer --bench tap`: each row a ratio of a
//! baseline and kaudit measured in one run (time per message for the tally hot path, messages per
//! second for the producer and the tap; for those two from the rounds the benches ran baseline and
//! kaudit in turn, `interleaved.json`, when present), beside its goal and the figure issue 15 started from, and
//! the bytes kaudit allocates per message where the bench counted them (`alloc.json`, left by the
//! benches' counting allocator: the hot path's steady state; for the producer and the tap, the
//! excess over the plain client).
//!
//! ```text
//! cargo run --release -p kaudit-agent --example bench_table -- [--criterion DIR] [--date YYYY-MM-DD]
//!     [--readme README.md]
//! ```
//!
//! With `--readme`, the table replaces what stands between `<!-- bench-table -->` and
//! `<!-- /bench-table -->` in that file. `scripts/bench.sh` runs the benches and then this.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

const START: &str = "<!-- bench-table -->";
const END: &str = "<!-- /bench-table -->";

/// One row: a baseline and kaudit, each a criterion `group/function`, what the ratio should be at
/// least, and the ratio measured before issue 15.
struct Row {
    label: &'static str,
    baseline: &'static str,
    kaudit: &'static str,
    goal: Option<f64>,
    before: &'static str,
}

const ROWS: [Row; 10] = [
    Row {
        label: "tally 100 B: raw `xxh64` + `crc32c` / hot path, manual clock",
        baseline: "tally_100B/raw_hash",
        kaudit: "tally_100B/hot_path",
        goal: None,
        before: "0.49",
    },
    Row {
        label: "tally 100 B: raw / hot path with the deployed clock",
        baseline: "tally_100B/raw_hash",
        kaudit: "tally_100B/hot_path_system_clock",
        goal: Some(0.6),
        before: "0.31",
    },
    Row {
        label: "tally 1 KiB: raw / hot path",
        baseline: "tally_1KiB/raw_hash",
        kaudit: "tally_1KiB/hot_path",
        goal: Some(0.9),
        before: "0.80",
    },
    Row {
        label: "tally 16 KiB: raw / hot path",
        baseline: "tally_16KiB/raw_hash",
        kaudit: "tally_16KiB/hot_path",
        goal: Some(0.98),
        before: "1.00",
    },
    Row {
        label: "producer 100 B: audited / plain `ThreadedProducer`",
        baseline: "producer_100B/plain",
        kaudit: "producer_100B/audited",
        goal: Some(0.97),
        before: "0.88",
    },
    Row {
        label: "producer 1 KiB: audited / plain",
        baseline: "producer_1KiB/plain",
        kaudit: "producer_1KiB/audited",
        goal: Some(0.98),
        before: "0.95",
    },
    Row {
        label: "producer 100 B: hashing handed to another thread (experiment) / plain",
        baseline: "producer_100B/plain",
        kaudit: "producer_100B/audited_hand_off",
        goal: None,
        before: "—",
    },
    Row {
        label: "producer 1 KiB: hashing handed to another thread (experiment) / plain",
        baseline: "producer_1KiB/plain",
        kaudit: "producer_1KiB/audited_hand_off",
        goal: None,
        before: "—",
    },
    Row {
        label: "tap / plain consumer (poll only), 1 KiB",
        baseline: "tap_1KiB/plain_consumer",
        kaudit: "tap_1KiB/tap",
        goal: Some(0.95),
        before: "0.87",
    },
    Row {
        label: "tap / plain consumer reading each payload once, 1 KiB",
        baseline: "tap_1KiB/plain_consumer_reading_payloads",
        kaudit: "tap_1KiB/tap",
        goal: None,
        before: "1.04",
    },
];

/// One benchmark's mean time per iteration, ns, and the messages an iteration stands for when
/// criterion was given an element throughput.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    mean_ns: f64,
    elements: Option<u64>,
}

impl Estimate {
    fn read(criterion: &Path, id: &str) -> anyhow::Result<Option<Self>> {
        let dir = criterion.join(id).join("new");
        let estimates = dir.join("estimates.json");
        if !estimates.exists() {
            return Ok(None);
        }
        let json = |path: &Path| -> anyhow::Result<serde_json::Value> {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
        };
        let Some(mean_ns) = json(&estimates)?["mean"]["point_estimate"].as_f64() else {
            bail!("{}: no mean.point_estimate", estimates.display());
        };
        let elements = json(&dir.join("benchmark.json")).ok().and_then(|b| b["throughput"]["Elements"].as_u64());
        Ok(Some(Self { mean_ns, elements }))
    }

    /// The estimate of `group/function` from the group's interleaved rounds (`interleaved.json`,
    /// time per message), if the bench ran them.
    fn interleaved(criterion: &Path, id: &str) -> anyhow::Result<Option<Self>> {
        let Some((group, function)) = id.split_once('/') else { return Ok(None) };
        let path = criterion.join(group).join("interleaved.json");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        // As an element throughput of one message per iteration, so it reads as msg/s.
        Ok(json["ns_per_message"][function].as_f64().map(|mean_ns| Self { mean_ns, elements: Some(1) }))
    }

    /// "43.6 ns", "1.16 µs" per message, or "1.72 M msg/s".
    fn text(&self) -> String {
        match self.elements {
            Some(n) => {
                let per_s = n as f64 / (self.mean_ns / 1e9);
                if per_s >= 1e6 { format!("{:.2} M msg/s", per_s / 1e6) } else { format!("{:.0} k msg/s", per_s / 1e3) }
            }
            None if self.mean_ns >= 1_000.0 => format!("{:.3} µs", self.mean_ns / 1_000.0),
            None => format!("{:.1} ns", self.mean_ns),
        }
    }
}

/// Bytes allocated per message, from `alloc.json` beside the estimates: "0 B", "12.5 B (0.200
/// allocations)"; with a steady stretch's figure when the bench left one (the tap: a whole pass
/// has a start and a shutdown), "17.8 B (0.026 allocations) a pass, 0 B steady".
fn allocated(criterion: &Path, id: &str) -> String {
    let path = criterion.join(id).join("alloc.json");
    let json = std::fs::read_to_string(&path).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    let Some(json) = json else { return "—".into() };
    let figure = |bytes: &str, calls: &str| match (json[bytes].as_f64(), json[calls].as_f64()) {
        (Some(b), Some(n)) if b.abs() < 0.05 && n.abs() < 0.0005 => Some("0 B".to_string()),
        (Some(b), Some(n)) => Some(format!("{b:.1} B ({n:.3} allocations)")),
        _ => None,
    };
    let whole = figure("bytes_per_message", "allocations_per_message");
    match (whole, figure("steady_bytes_per_message", "steady_allocations_per_message")) {
        (Some(whole), Some(steady)) => format!("{whole} a pass, {steady} steady"),
        (Some(whole), None) => whole,
        _ => "—".into(),
    }
}

/// The CPU model and core count, from `/proc/cpuinfo` (Linux).
fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']));
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{}, {cores} cores", model.unwrap_or("unknown CPU"))
}

fn table(criterion: &Path, date: &str) -> anyhow::Result<String> {
    let mut out = format!(
        "Measured {date} on {} (`bash scripts/bench.sh`; each ratio from one run, higher is better; the producer's and \
         the tap's from rounds that ran baseline and kaudit in turn):\n\n\
         | bench | baseline | kaudit | ratio | goal | before issue 15 | allocated per message |\n\
         |---|---|---|---|---|---|---|\n",
        machine()
    );
    for row in &ROWS {
        let (baseline, kaudit) =
            match (Estimate::interleaved(criterion, row.baseline)?, Estimate::interleaved(criterion, row.kaudit)?) {
                (Some(b), Some(k)) => (Some(b), Some(k)),
                _ => (Estimate::read(criterion, row.baseline)?, Estimate::read(criterion, row.kaudit)?),
            };
        let goal = row.goal.map_or("—".to_string(), |g| format!("≥ {g}"));
        let (b, k, ratio) = match (baseline, kaudit) {
            (Some(b), Some(k)) => {
                let ratio = b.mean_ns / k.mean_ns;
                let met = match row.goal {
                    Some(g) if ratio >= g => " ✓",
                    Some(_) => " ✗",
                    None => "",
                };
                (b.text(), k.text(), format!("{ratio:.2}{met}"))
            }
            _ => ("not run".into(), "not run".into(), "—".into()),
        };
        let allocated = allocated(criterion, row.kaudit);
        out.push_str(&format!("| {} | {b} | {k} | {ratio} | {goal} | {} | {allocated} |\n", row.label, row.before));
    }
    Ok(out)
}

/// `text` with what stands between the markers replaced by `table`.
fn replace_between(text: &str, table: &str) -> anyhow::Result<String> {
    let (Some(start), Some(end)) = (text.find(START), text.find(END)) else {
        bail!("the file has no {START} … {END} markers");
    };
    anyhow::ensure!(start < end, "{END} comes before {START}");
    Ok(format!("{}{START}\n{table}{}", &text[..start], &text[end..]))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut criterion = PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()));
    criterion.push("criterion");
    let (mut date, mut readme) = (None, None);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--criterion" => criterion = PathBuf::from(value()?),
            "--date" => date = Some(value()?),
            "--readme" => readme = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other:?} (--criterion DIR, --date YYYY-MM-DD, --readme FILE)"),
        }
    }
    let table = table(&criterion, date.as_deref().unwrap_or("(date not given)"))?;
    print!("{table}");
    if let Some(path) = readme {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        std::fs::write(&path, replace_between(&text, &table)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("{} updated", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_reads_criterion_estimates_and_replaces_the_readme_section() {
        let dir = tempfile::tempdir().unwrap();
        let write = |id: &str, mean: f64, elements: Option<u64>| {
            let new = dir.path().join(id).join("new");
            std::fs::create_dir_all(&new).unwrap();
            std::fs::write(new.join("estimates.json"), format!(r#"{{"mean":{{"point_estimate":{mean}}}}}"#)).unwrap();
            let throughput = elements.map_or("null".to_string(), |n| format!(r#"{{"Elements":{n}}}"#));
            std::fs::write(new.join("benchmark.json"), format!(r#"{{"throughput":{throughput}}}"#)).unwrap();
        };
        write("tally_100B/raw_hash", 20.0, None);
        write("tally_100B/hot_path_system_clock", 40.0, None);
        write("producer_100B/plain", 10_000_000.0, Some(20_000));
        write("producer_100B/audited", 10_200_000.0, Some(20_000));
        let alloc = |id: &str, bytes: f64, calls: f64| {
            let json = format!(r#"{{"bytes_per_message":{bytes},"allocations_per_message":{calls}}}"#);
            std::fs::write(dir.path().join(id).join("alloc.json"), json).unwrap();
        };
        alloc("tally_100B/hot_path_system_clock", 0.0, 0.0);
        alloc("producer_100B/audited", 24.0, 0.5);
        let steady = r#"{"bytes_per_message":17.8,"allocations_per_message":0.026,"steady_bytes_per_message":3.25,"steady_allocations_per_message":0.004}"#;
        std::fs::create_dir_all(dir.path().join("tap_1KiB/tap")).unwrap();
        std::fs::write(dir.path().join("tap_1KiB/tap/alloc.json"), steady).unwrap();
        std::fs::create_dir_all(dir.path().join("tap_1KiB")).unwrap();
        std::fs::write(
            dir.path().join("tap_1KiB/interleaved.json"),
            r#"{"rounds":10,"ns_per_message":{"plain_consumer":500.0,"tap":520.0}}"#,
        )
        .unwrap();
        let t = table(dir.path(), "2026-11-24").unwrap();
        assert!(
            t.contains("| tap / plain consumer (poll only), 1 KiB | 2.00 M msg/s | 1.92 M msg/s | 0.96 ✓ | ≥ 0.95 |"),
            "{t}"
        );
        assert!(
            t.contains(
                "| tally 100 B: raw / hot path with the deployed clock | 20.0 ns | 40.0 ns | 0.50 ✗ | ≥ 0.6 | 0.31 | 0 B |"
            ),
            "{t}"
        );
        assert!(t.contains("| 1.96 M msg/s | 0.98 ✓ | ≥ 0.97 | 0.88 | 24.0 B (0.500 allocations) |"), "{t}");
        assert!(t.contains("| tally 1 KiB: raw / hot path | not run | not run | — | ≥ 0.9 | 0.80 | — |"), "{t}");
        assert!(t.contains("| 17.8 B (0.026 allocations) a pass, 3.2 B (0.004 allocations) steady |"), "{t}");
        let readme = format!("intro\n{START}\nold\n{END}\nrest\n");
        assert_eq!(replace_between(&readme, "new\n").unwrap(), format!("intro\n{START}\nnew\n{END}\nrest\n"));
        assert!(replace_between("no markers", "x").is_err());
    }
}
