//! Environment overrides: `KAUDIT__AGENT__FLUSH_INTERVAL_MS=10000` sets `agent.flush_interval_ms`.
//!
//! Rules (the README's "Configuration reference" says the same to operators):
//! - A variable named `KAUDIT__` + path segments joined by `__` sets the key at that path; segments
//!   are lowercased (`KAUDIT__SCYLLA__REQUEST_TIMEOUT_MS` → `scylla.request_timeout_ms`), and a
//!   segment of digits is an index into an existing array (`KAUDIT__ALERTING__SINKS__0__URL`).
//! - Under `kafka.options`, `_` stands for `.` (`KAUDIT__KAFKA__OPTIONS__SECURITY_PROTOCOL` →
//!   `kafka.options."security.protocol"`): librdkafka's settable properties have no `_`.
//! - The value is read as a TOML value when it parses as one (number, boolean, array, inline
//!   table, quoted string), else taken as a string as it is. A table or array value replaces what
//!   the file had there: `KAUDIT__KAFKA__OPTIONS='{ "client.id" = "x" }'`.
//! - Either spelling of a duration replaces both spellings in the file.
//! - Overrides are applied to the TOML document before it is deserialised, shallowest first, so a
//!   key override lands inside a table override; a key set twice is an error.
//!
//! The single-underscore variables (`KAUDIT_API_TOKEN`, `KAUDIT_SCYLLA_PASSWORD`, the `*_env`
//! keys name them) are never overrides: the prefix is `KAUDIT__`, two underscores. Values taken
//! from the environment may be secrets, so messages never repeat them (see [`Source::scrub`]).

use toml_edit::{DocumentMut, InlineTable, Item, Table, Value};

use super::durations;
use super::locate::{KeyPath, Segment};

/// The prefix of every override variable.
pub const PREFIX: &str = "KAUDIT__";

/// The override variables of this process, by name. Variables whose value is not UTF-8 are left
/// out with a warning.
pub fn from_process() -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|n| n.starts_with(PREFIX)) else { continue };
        match value.into_string() {
            Ok(value) => vars.push((name.to_string(), value)),
            Err(_) => tracing::warn!(variable = name, "ignoring a configuration override whose value is not UTF-8"),
        }
    }
    vars
}

/// One configuration key set by one environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The variable, e.g. `KAUDIT__AGENT__FLUSH_INTERVAL_MS`.
    pub variable: String,
    /// The key it set, as a dotted path: `agent.flush_interval_ms`.
    pub key: String,
}

/// An applied override, kept to attribute problems to its variable.
#[derive(Debug, Clone)]
pub(super) struct Source {
    pub variable: String,
    pub path: KeyPath,
    /// How the value may appear inside a message: never shown.
    hidden: Vec<String>,
}

impl Source {
    /// `message` about `key` without the value this variable gave, unless that value is no
    /// secret: a duration (its message says what is wrong with it), or the name of a variable
    /// (`password_env`, `http.tokens[].env`).
    pub fn scrub(&self, key: &KeyPath, message: &str) -> String {
        let names_a_variable = matches!(key.0.last(), Some(Segment::Key(k)) if k == "env" || k.ends_with("_env"));
        if names_a_variable || durations::names_a_duration(key) {
            return message.to_string();
        }
        self.hidden.iter().fold(message.to_string(), |m, secret| m.replace(secret.as_str(), "\"(value hidden)\""))
    }
}

/// What [`apply`] did and refused.
#[derive(Debug, Default)]
pub(super) struct Applied {
    pub sources: Vec<Source>,
    /// Variables that could not be applied: (variable, key as far as it could be read, reason).
    pub problems: Vec<(String, String, String)>,
}

/// Apply every variable of `vars` whose name starts with [`PREFIX`] to `doc`.
pub(super) fn apply(doc: &mut DocumentMut, vars: &[(String, String)]) -> Applied {
    let mut parsed: Vec<(&str, &str, Result<KeyPath, String>)> = vars
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.as_str(), path_of(name.strip_prefix(PREFIX)?))))
        .collect();
    parsed.sort_by_key(|(name, _, path)| (path.as_ref().map_or(0, |p| p.0.len()), *name));
    let mut out = Applied::default();
    let mut seen: Vec<(String, &str)> = Vec::new();
    for (variable, raw, path) in parsed {
        let fail = |key: String, reason: String| (variable.to_string(), key, reason);
        let path = match path {
            Ok(path) => path,
            Err(reason) => {
                out.problems.push(fail(String::new(), reason));
                continue;
            }
        };
        let same = setting(&path);
        if let Some((_, first)) = seen.iter().find(|(s, _)| *s == same) {
            out.problems.push(fail(path.to_string(), format!("{first} sets the same key; set it once")));
            continue;
        }
        let value = parse_value(raw);
        let hidden = hidden_forms(raw, &value);
        match set(doc.as_item_mut(), &path, value) {
            Ok(()) => {
                seen.push((same, variable));
                out.sources.push(Source { variable: variable.to_string(), path, hidden });
            }
            Err(reason) => out.problems.push(fail(path.to_string(), reason)),
        }
    }
    out
}

/// The key path a variable name (after the prefix) addresses.
fn path_of(name: &str) -> Result<KeyPath, String> {
    let mut path = Vec::new();
    for segment in name.split("__") {
        if segment.is_empty() {
            return Err("empty path segment: separate keys with exactly two underscores".into());
        }
        let key = segment.to_lowercase();
        let under_options = matches!(&path[..], [Segment::Key(a), Segment::Key(b)] if a == "kafka" && b == "options");
        path.push(if under_options {
            Segment::Key(key.replace('_', "."))
        } else if key.bytes().all(|b| b.is_ascii_digit()) {
            Segment::Index(key.parse().map_err(|_| format!("index {key} is too large"))?)
        } else {
            Segment::Key(key)
        });
    }
    Ok(KeyPath(path))
}

/// The setting a path names, the same for both spellings of a duration.
fn setting(path: &KeyPath) -> String {
    let Some((Segment::Key(last), parents)) = path.0.split_last() else { return path.to_string() };
    match durations::twin(&durations::pattern(parents), last) {
        Some(twin) if !last.ends_with("_ms") => format!("{}.{twin}", KeyPath(parents.to_vec())),
        _ => path.to_string(),
    }
}

/// A TOML value if `raw` is one, else `raw` as a string.
fn parse_value(raw: &str) -> Value {
    match raw.parse::<Value>() {
        Ok(value) => value.decorated(" ", ""),
        Err(_) => Value::from(raw).decorated(" ", ""),
    }
}

/// The forms in which serde or a validation message could repeat the value.
fn hidden_forms(raw: &str, value: &Value) -> Vec<String> {
    let mut forms = vec![format!("{raw:?}")];
    match value {
        Value::String(s) => forms.push(format!("{:?}", s.value())),
        other => forms.push(format!("`{}`", other.to_string().trim())),
    }
    if raw.trim().len() >= 6 {
        forms.push(raw.trim().to_string());
    }
    forms
}

/// Set `value` at `path` in `root`, creating tables on the way and removing the other spelling of
/// a duration.
fn set(root: &mut Item, path: &KeyPath, value: Value) -> Result<(), String> {
    let (last, parents) = path.0.split_last().ok_or("no key")?;
    let mut item = root;
    for (i, seg) in parents.iter().enumerate() {
        let here = || KeyPath(path.0[..i].to_vec());
        item = match seg {
            Segment::Key(key) => {
                let inline = item.is_inline_table();
                if !item.is_table() && !inline {
                    return Err(format!("`{}` is not a table", here()));
                }
                let child = item.get_mut(key.as_str()).ok_or_else(|| format!("`{}` is not a table", here()))?;
                let next_is_key = matches!(parents.get(i + 1).unwrap_or(last), Segment::Key(_));
                if child.is_none() && next_is_key {
                    *child =
                        if inline { Item::Value(Value::InlineTable(InlineTable::new())) } else { implicit_table() };
                }
                child
            }
            Segment::Index(n) => {
                let len = item.as_array_of_tables().map(|a| a.len()).or_else(|| item.as_array().map(|a| a.len()));
                let Some(len) = len else {
                    let whole = "give the whole array instead, as [{ ... }, ...]";
                    return Err(if item.is_none() {
                        format!("`{}` is not in the file; {whole}", here())
                    } else {
                        format!("`{}` is not an array", here())
                    });
                };
                item.get_mut(*n).ok_or_else(|| format!("`{}` has {len} element(s); there is no [{n}]", here()))?
            }
        };
    }
    match last {
        Segment::Key(key) => {
            let table =
                item.as_table_like_mut().ok_or_else(|| format!("`{}` is not a table", KeyPath(parents.to_vec())))?;
            if let Some(twin) = durations::twin(&durations::pattern(parents), key) {
                table.remove(&twin);
            }
            table.insert(key, Item::Value(value));
            Ok(())
        }
        Segment::Index(n) => {
            let at = KeyPath(parents.to_vec());
            let element = item.get_mut(*n).ok_or_else(|| format!("`{at}` has no element [{n}]"))?;
            *element = match (&*element, value) {
                (Item::Table(_), Value::InlineTable(t)) => Item::Table(t.into_table()),
                (Item::Table(_), _) => return Err(format!("an element of `{at}` takes an inline table {{ ... }}")),
                (_, value) => Item::Value(value),
            };
            Ok(())
        }
    }
}

fn implicit_table() -> Item {
    let mut table = Table::new();
    table.set_implicit(true);
    Item::Table(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(file: &str, vars: &[(&str, &str)]) -> (String, Applied) {
        let mut doc: DocumentMut = file.parse().unwrap();
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let out = apply(&mut doc, &vars);
        (doc.to_string(), out)
    }

    #[test]
    fn names_map_to_lowercase_paths_and_librdkafka_properties_to_dots() {
        let path = |name: &str| path_of(name).map(|p| p.to_string());
        assert_eq!(path("AGENT__FLUSH_INTERVAL_MS").as_deref(), Ok("agent.flush_interval_ms"));
        assert_eq!(path("STORE").as_deref(), Ok("store"));
        assert_eq!(path("KAFKA__OPTIONS__SECURITY_PROTOCOL").as_deref(), Ok("kafka.options.\"security.protocol\""));
        assert_eq!(path("ALERTING__SINKS__1__URL").as_deref(), Ok("alerting.sinks[1].url"));
        assert!(path("AGENT____NAME").unwrap_err().contains("empty path segment"));
        assert!(path("AGENT__").is_err());
    }

    #[test]
    fn values_are_toml_when_they_parse_and_strings_otherwise() {
        let (text, out) = applied(
            "[agent]\nname = \"x\"\n",
            &[
                ("KAUDIT__AGENT__FLUSH_INTERVAL_MS", "10000"),
                ("KAUDIT__STORE", "scylla://db1:9042"),
                ("KAUDIT__TAP__TOPICS", "[\"orders\", \"^pay.*\"]"),
                ("KAUDIT__HTTP__PROTECT_PROBES", "true"),
                ("KAUDIT__AGENT__NAME", "\"true\""),
                ("KAUDIT_API_TOKEN", "not an override"),
            ],
        );
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["agent"]["flush_interval_ms"].as_integer(), Some(10_000), "{text}");
        assert_eq!(v["agent"]["name"].as_str(), Some("true"), "{text}");
        assert_eq!(v["store"].as_str(), Some("scylla://db1:9042"), "{text}");
        assert_eq!(v["tap"]["topics"][1].as_str(), Some("^pay.*"), "{text}");
        assert_eq!(v["http"]["protect_probes"].as_bool(), Some(true), "{text}");
        assert_eq!(out.sources.len(), 5);
    }

    #[test]
    fn a_table_override_lands_first_and_a_key_override_inside_it() {
        let (text, out) = applied(
            "[kafka.options]\n\"client.id\" = \"file\"\n\"acks\" = \"all\"\n",
            &[("KAUDIT__KAFKA__OPTIONS__LINGER_MS", "5"), ("KAUDIT__KAFKA__OPTIONS", "{ \"client.id\" = \"env\" }")],
        );
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let v: toml::Value = toml::from_str(&text).unwrap();
        let options = v["kafka"]["options"].as_table().unwrap();
        assert_eq!(options.len(), 2, "the file's table is replaced: {text}");
        assert_eq!(options["client.id"].as_str(), Some("env"));
        assert_eq!(options["linger.ms"].as_integer(), Some(5));
    }

    #[test]
    fn either_spelling_of_a_duration_replaces_both_and_twice_is_an_error() {
        let (text, out) = applied("[agent]\nflush_interval = \"5s\"\n", &[("KAUDIT__AGENT__FLUSH_INTERVAL_MS", "100")]);
        assert!(out.problems.is_empty());
        assert!(!text.contains("flush_interval ="), "{text}");
        let (_, out) =
            applied("", &[("KAUDIT__AGENT__FLUSH_INTERVAL_MS", "100"), ("KAUDIT__AGENT__FLUSH_INTERVAL", "1s")]);
        assert_eq!(out.sources.len(), 1);
        assert_eq!(out.problems.len(), 1, "{:?}", out.problems);
        assert!(out.problems[0].2.contains("sets the same key"), "{:?}", out.problems);
    }

    #[test]
    fn paths_through_values_and_missing_elements_are_refused() {
        let (_, out) = applied(
            "[agent]\nname = \"x\"\n[[alerting.sinks]]\ntype = \"slack\"\nurl = \"https://h/a\"\n",
            &[
                ("KAUDIT__AGENT__NAME__FIRST", "y"),
                ("KAUDIT__ALERTING__SINKS__3__URL", "https://h/b"),
                ("KAUDIT__ALERTING__SINKS__0__URL", "https://h/c"),
                ("KAUDIT__VERIFIER__PIPELINES__0__TIERS", "[\"producer\"]"),
            ],
        );
        let found: Vec<_> = out.problems.iter().map(|(v, k, r)| (v.as_str(), k.as_str(), r.as_str())).collect();
        assert_eq!(
            found,
            [
                ("KAUDIT__AGENT__NAME__FIRST", "agent.name.first", "`agent.name` is not a table"),
                (
                    "KAUDIT__ALERTING__SINKS__3__URL",
                    "alerting.sinks[3].url",
                    "`alerting.sinks` has 1 element(s); there is no [3]"
                ),
                (
                    "KAUDIT__VERIFIER__PIPELINES__0__TIERS",
                    "verifier.pipelines[0].tiers",
                    "`verifier.pipelines` is not in the file; give the whole array instead, as [{ ... }, ...]"
                ),
            ]
        );
        assert_eq!(out.sources.len(), 1);
    }

    proptest::proptest! {
        /// Whatever the variables and the file, applying them never panics and leaves a document
        /// that parses again (the loader re-parses it on every round).
        #[test]
        fn any_overrides_leave_a_document_that_parses(
            file in proptest::sample::select(vec![
                "", "[agent]\nname = \"x\"\n", "[kafka.options]\n\"a.b\" = 1\n", "agent.name = \"x\"\n",
                "[[alerting.sinks]]\ntype = \"slack\"\n", "tap = { tier = \"b\" }\n", "[ingest.ack]\nmode = \"durable\"\n",
            ]),
            vars in proptest::collection::vec(
                (
                    proptest::collection::vec(
                        proptest::sample::select(vec!["AGENT", "NAME", "KAFKA", "OPTIONS", "LINGER_MS", "ALERTING", "SINKS", "0", "1", "TAP", "TIER", "INGEST", "ACK", "TIMEOUT", "X-Y", ""]),
                        1..5,
                    ),
                    proptest::sample::select(vec!["1", "true", "5s", "[1, 2]", "{ a = 1 }", "[{ type = \"slack\" }]", "\"q\"", "a b", "", "[", "{ \"c.d\" = \"e\" }"]),
                ),
                0..6,
            ),
        ) {
            let mut doc: DocumentMut = file.parse().unwrap();
            let vars: Vec<(String, String)> =
                vars.iter().map(|(path, value)| (format!("{PREFIX}{}", path.join("__")), value.to_string())).collect();
            let _ = apply(&mut doc, &vars);
            let _ = durations::normalize(&mut doc);
            let text = doc.to_string();
            proptest::prop_assert!(text.parse::<DocumentMut>().is_ok(), "{vars:?}\n{text}");
        }
    }

    #[test]
    fn scrub_hides_the_value_in_every_form() {
        let (_, out) = applied("", &[("KAUDIT__SCYLLA__PASSWORD", "123456789"), ("KAUDIT__AGENT__NAME", "hunter2 x")]);
        let source = |v: &str| out.sources.iter().find(|s| s.variable == v).unwrap();
        let password = source("KAUDIT__SCYLLA__PASSWORD");
        let scrubbed = password.scrub(&password.path, "invalid type: integer `123456789`, expected a string");
        assert!(!scrubbed.contains("123456789"), "{scrubbed}");
        let name = source("KAUDIT__AGENT__NAME");
        let scrubbed = name.scrub(&name.path, "\"hunter2 x\" must be non-empty letters");
        assert!(!scrubbed.contains("hunter2"), "{scrubbed}");
    }
}
