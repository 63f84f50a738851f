//! Durations written as strings: `flush_interval = "5s"` for `flush_interval_ms = 5000`.
//!
//! Every duration key of the configuration ends in `_ms` and is listed in [`DURATION_KEYS`]. Each
//! may instead be written without the suffix, as a humantime string (`"250ms"`, `"5s"`, `"1m30s"`,
//! `"1h"`). [`normalize`] runs over the TOML document before it is deserialised and rewrites every
//! short form into its `_ms` key, so the config structs only ever see milliseconds and no struct
//! needs to know. It records each rewrite, so that a problem later found at the `_ms` key is
//! reported at the key and line the file (or the environment) actually has.
//!
//! Invariant: after [`normalize`], no table holds a short-form key, and every `_ms` key it leaves
//! is one the file or the environment gave as a number, or one it wrote itself.

use toml_edit::{DocumentMut, Item, TableLike, Value};

use super::locate::{KeyPath, Segment};

/// Every duration key, as `table.key_ms`, `[]` standing for any element of an array.
/// `tests::the_readme_documents_every_duration_key` keeps this list and the README's table in step.
pub const DURATION_KEYS: &[&str] = &[
    "agent.bucket_width_ms",
    "agent.flush_interval_ms",
    "agent.close_after_ms",
    "agent.shutdown_timeout_ms",
    "agent.max_future_ms",
    "ingest.ack.timeout_ms",
    "ingest.ack.linger_ms",
    "ingest.idempotency.window_ms",
    "scylla.request_timeout_ms",
    "scylla.connection_timeout_ms",
    "verifier.grace_ms",
    "verifier.lateness_ms",
    "verifier.agent_timeout_ms",
    "verifier.evaluate_interval_ms",
    "verifier.thresholds.p99_delay_ms",
    "verifier.thresholds.max_lag_ms",
    "verifier.sigma_floor_delay_ms",
    "verifier.coordination.session_timeout_ms",
    "alerting.retry_base_ms",
    "alerting.retry_max_ms",
    "alerting.sinks[].repost_interval_ms",
    "http.header_timeout_ms",
    "http.body_timeout_ms",
    "http.idle_timeout_ms",
];

/// What accepted durations look like, for messages.
const ACCEPTED: &str = "a number and a unit such as \"250ms\", \"5s\", \"1m30s\" or \"1h\" (units ms, s, m, h, d)";

/// The table pattern of a key path: `alerting.sinks[0]` → `alerting.sinks[]`.
pub(super) fn pattern(path: &[Segment]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Segment::Key(k) if out.is_empty() => out.push_str(k),
            Segment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Segment::Index(_) => out.push_str("[]"),
        }
    }
    out
}

fn is_duration(table: &str, key: &str) -> bool {
    let full = if table.is_empty() { key.to_string() } else { format!("{table}.{key}") };
    DURATION_KEYS.contains(&full.as_str())
}

/// The other spelling of `key` in the table at `table` (a pattern), if `key` is a duration:
/// `flush_interval` ↔ `flush_interval_ms`.
pub(super) fn twin(table: &str, key: &str) -> Option<String> {
    if is_duration(table, key) {
        return key.strip_suffix("_ms").map(str::to_string);
    }
    let long = format!("{key}_ms");
    is_duration(table, &long).then_some(long)
}

/// Whether `path` is a duration key, in either spelling.
pub(super) fn names_a_duration(path: &KeyPath) -> bool {
    match path.0.split_last() {
        Some((Segment::Key(key), parents)) => twin(&pattern(parents), key).is_some(),
        _ => false,
    }
}

/// A short-form key rewritten into its `_ms` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rename {
    /// Where the value now is: `agent.flush_interval_ms`.
    pub long: KeyPath,
    /// Where it was written: `agent.flush_interval`.
    pub short: KeyPath,
}

/// What [`normalize`] did and found.
#[derive(Debug, Default)]
pub(super) struct Normalized {
    pub renames: Vec<Rename>,
    /// Keys it refused and removed (both spellings given, a bad duration), with the reason.
    pub problems: Vec<(KeyPath, String)>,
}

/// Rewrite every short-form duration in `doc` into its `_ms` key; refuse and remove what cannot be.
pub(super) fn normalize(doc: &mut DocumentMut) -> Normalized {
    let mut out = Normalized::default();
    walk(doc.as_table_mut(), &mut Vec::new(), &mut out);
    out
}

fn walk(table: &mut dyn TableLike, path: &mut Vec<Segment>, out: &mut Normalized) {
    let at = pattern(path);
    let keys: Vec<String> = table.iter().map(|(k, _)| k.to_string()).collect();
    for key in keys {
        path.push(Segment::Key(key.clone()));
        if is_duration(&at, &key) {
            check_long(table, &key, path, out);
        } else if is_duration(&at, &format!("{key}_ms")) {
            rewrite_short(table, &key, path, out);
        } else if let Some(item) = table.get_mut(&key) {
            descend(item, path, out);
        }
        path.pop();
    }
}

fn descend(item: &mut Item, path: &mut Vec<Segment>, out: &mut Normalized) {
    match item {
        Item::Table(t) => walk(t, path, out),
        Item::Value(Value::InlineTable(t)) => walk(t, path, out),
        Item::ArrayOfTables(a) => {
            for (i, t) in a.iter_mut().enumerate() {
                path.push(Segment::Index(i));
                walk(t, path, out);
                path.pop();
            }
        }
        Item::Value(Value::Array(a)) => {
            for (i, v) in a.iter_mut().enumerate() {
                if let Value::InlineTable(t) = v {
                    path.push(Segment::Index(i));
                    walk(t, path, out);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

/// `flush_interval_ms` takes a number; a string there is most likely a duration in the wrong key.
fn check_long(table: &mut dyn TableLike, key: &str, path: &[Segment], out: &mut Normalized) {
    if table.get(key).and_then(Item::as_str).is_some() {
        let short = key.strip_suffix("_ms").unwrap_or(key);
        let message = format!("takes a number of milliseconds; write a duration string as `{short} = \"5s\"`");
        out.problems.push((KeyPath(path.to_vec()), message));
        table.remove(key);
    }
}

fn rewrite_short(table: &mut dyn TableLike, short: &str, path: &[Segment], out: &mut Normalized) {
    let long = format!("{short}_ms");
    let here = KeyPath(path.to_vec());
    let parsed = match table.get(short) {
        _ if table.contains_key(&long) => {
            Err(format!("`{short}` and `{long}` are the same setting; give one of them, not both"))
        }
        Some(item) => match item.as_str() {
            Some(text) => parse_ms(text),
            None => Err(format!("takes a duration string, {ACCEPTED}; a number of milliseconds goes in `{long}`")),
        },
        None => return,
    };
    table.remove(short);
    match parsed {
        Ok(ms) => {
            table.insert(&long, Item::Value(Value::from(ms)));
            let mut long_path = path.to_vec();
            long_path.pop();
            long_path.push(Segment::Key(long));
            out.renames.push(Rename { long: KeyPath(long_path), short: here });
        }
        Err(message) => out.problems.push((here, message)),
    }
}

/// A humantime duration (`"1m30s"`) as whole milliseconds: the one parser of durations, for
/// config keys and command-line flags alike.
pub(crate) fn parse_ms(text: &str) -> Result<i64, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}); write {ACCEPTED}"))?;
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("{text:?} is not a whole number of milliseconds"));
    }
    i64::try_from(duration.as_millis()).map_err(|_| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humantime_strings_become_milliseconds() {
        assert_eq!(parse_ms("250ms"), Ok(250));
        assert_eq!(parse_ms("5s"), Ok(5_000));
        assert_eq!(parse_ms("1m30s"), Ok(90_000));
        assert_eq!(parse_ms(" 1h "), Ok(3_600_000));
        assert_eq!(parse_ms("2d"), Ok(172_800_000));
        assert!(parse_ms("5").unwrap_err().contains("\"5\" is not a duration"));
        assert!(parse_ms("5 parsecs").unwrap_err().contains("units ms, s, m, h, d"));
        assert!(parse_ms("1500us").unwrap_err().contains("whole number of milliseconds"));
    }

    #[test]
    fn twins_pair_short_and_long_spellings_of_duration_keys_only() {
        assert_eq!(twin("agent", "flush_interval").as_deref(), Some("flush_interval_ms"));
        assert_eq!(twin("agent", "flush_interval_ms").as_deref(), Some("flush_interval"));
        assert_eq!(twin("alerting.sinks[]", "repost_interval").as_deref(), Some("repost_interval_ms"));
        assert_eq!(twin("agent", "name"), None);
        assert_eq!(twin("kafka.options", "linger"), None);
    }

    #[test]
    fn normalize_rewrites_in_tables_inline_tables_and_arrays_of_tables() {
        let mut doc: DocumentMut = "[agent]\nflush_interval = \"10s\"\n[ingest]\nack = { timeout = \"1s\" }\n\
                                    [[alerting.sinks]]\ntype = \"alertmanager\"\nrepost_interval = \"2m\"\n"
            .parse()
            .unwrap();
        let out = normalize(&mut doc);
        assert_eq!(out.problems, []);
        let text = doc.to_string();
        let back: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(back["agent"]["flush_interval_ms"].as_integer(), Some(10_000), "{text}");
        assert_eq!(back["ingest"]["ack"]["timeout_ms"].as_integer(), Some(1_000), "{text}");
        assert_eq!(back["alerting"]["sinks"][0]["repost_interval_ms"].as_integer(), Some(120_000), "{text}");
        let renamed: Vec<_> = out.renames.iter().map(|r| (r.long.to_string(), r.short.to_string())).collect();
        assert_eq!(
            renamed,
            [
                ("agent.flush_interval_ms", "agent.flush_interval"),
                ("ingest.ack.timeout_ms", "ingest.ack.timeout"),
                ("alerting.sinks[0].repost_interval_ms", "alerting.sinks[0].repost_interval"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn the_readme_documents_every_duration_key() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let section = readme.split("## Configuration reference").nth(1).unwrap().split("\n## ").next().unwrap();
        let mut documented: Vec<String> = section
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells.len() > 4 && cells[3] == "ms").then(|| cells[1].trim_matches('`').to_string())
            })
            .collect();
        assert!(section.contains("`repost_interval_ms`"), "the sinks row names repost_interval_ms");
        documented.push("alerting.sinks[].repost_interval_ms".into());
        documented.sort();
        let mut listed: Vec<String> = DURATION_KEYS.iter().map(|k| k.to_string()).collect();
        listed.sort();
        assert_eq!(documented, listed, "README rows with unit `ms` vs DURATION_KEYS");
    }
}
