use std::path::{Path, PathBuf};

use super::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_example_in_config_dir_loads() {
    // The docker stack reads its tokens from variables that compose passes in.
    // SAFETY: the same values in every test; nothing in this test binary reads them from C.
    unsafe {
        std::env::set_var("KAUDIT_API_TOKEN", "example-api-token-0123456789");
        std::env::set_var("KAUDIT_INGEST_TOKEN", "example-ingest-token-0123456789");
    }
    let mut loaded = 0;
    let dirs = [repo().join("config"), repo().join("docker/stack")];
    for entry in dirs.iter().flat_map(|d| std::fs::read_dir(d).unwrap()) {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let config = KauditConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!config.agent.name.is_empty());
            loaded += 1;
        }
    }
    assert!(loaded >= 7, "expected the example and docker stack configs, found {loaded}");
}

#[test]
fn example_values_are_read() {
    let config = KauditConfig::load(&repo().join("config/kaudit.example.toml")).unwrap();
    assert_eq!(config.agent.name, "checkout-producer");
    assert_eq!(config.agent.topics.len(), 2);
    assert_eq!(config.agent.topics[0].business_id.to_string(), "json:/order_id");
    assert_eq!(config.kafka.options.get("client.id").map(ToString::to_string).as_deref(), Some("kaudit"));
    assert_eq!(config.store_url().unwrap(), StoreUrl::Sqlite(PathBuf::from("kaudit-data/audit.db")));
}

#[test]
fn wrongkey_reports_every_error_with_key_file_and_line() {
    let path = repo().join("config/invalid/wrongkey.toml");
    let err = KauditConfig::load(&path).unwrap_err();
    let found: Vec<(&str, Option<usize>)> = err.problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        found,
        vec![
            ("agent.flush_intervl_ms", Some(4)),
            ("agent.bucket_width_ms", Some(5)),
            ("agent.topics[0].pattern", Some(8)),
            ("agent.topics[1].event_time", Some(12)),
            ("kafka.options.\"bootstrap.servers\"", Some(15)),
        ],
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("wrongkey.toml:4:1: key `agent.flush_intervl_ms`: unknown field `flush_intervl_ms`"),
        "{text}"
    );
    assert!(text.contains("must start with '/'"), "{text}");
    assert!(text.contains("5 configuration errors"), "{text}");
}

#[test]
fn scylla_section_is_read_and_validated() {
    let config = KauditConfig::load(&repo().join("config/kaudit.example.toml")).unwrap();
    assert_eq!(config.scylla.replication.to_cql(), "{'class': 'NetworkTopologyStrategy', 'eu-west': 3, 'us-east': 3}");
    assert_eq!(config.scylla.username.as_deref(), Some("kaudit"));

    let err = KauditConfig::load(&repo().join("config/invalid/bad-scylla.toml")).unwrap_err();
    let found: Vec<(&str, Option<usize>)> = err.problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        found,
        vec![
            ("store", Some(3)),
            ("scylla.keyspace", Some(6)),
            ("scylla.consistency", Some(7)),
            ("scylla.replication.datacenters", Some(11))
        ],
        "{err}"
    );
}

#[test]
fn syntax_errors_point_at_the_line() {
    let err =
        KauditConfig::from_toml("[agent]\nname = \"x\"\nbucket_width_ms = = 5\n", Path::new("bad.toml")).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].line, Some(3));
    assert!(err.to_string().starts_with("bad.toml: 1 configuration error"));
}

#[test]
fn semantic_errors_alone_are_located_too() {
    let text = "store = \"postgres://db\"\n\n[agent]\nbucket_width_ms = 0\n";
    let err = KauditConfig::from_toml(text, Path::new("c.toml")).unwrap_err();
    let found: Vec<_> = err.problems.iter().map(|p| (p.key.clone(), p.line)).collect();
    assert_eq!(found, vec![("store".to_string(), Some(1)), ("agent.bucket_width_ms".to_string(), Some(4))]);
}

#[test]
fn kafka_options_take_scalars_as_librdkafka_strings() {
    let text = "[kafka.options]\n\"batch.num.messages\" = 5\n\"enable.idempotence\" = true\n\"linger.ms\" = 0.5\n\"acks\" = \"all\"\n";
    let config = KauditConfig::from_toml(text, Path::new("k.toml")).unwrap();
    let got: Vec<(String, String)> = config.kafka.options.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
    assert_eq!(
        got,
        [("acks", "all"), ("batch.num.messages", "5"), ("enable.idempotence", "true"), ("linger.ms", "0.5")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    let err = KauditConfig::from_toml("[kafka.options]\n\"a\" = [1]\n", Path::new("k.toml")).unwrap_err();
    assert_eq!((err.problems[0].key.as_str(), err.problems[0].line), ("kafka.options.a", Some(2)), "{err}");
}

#[test]
fn librdkafka_checks_every_pass_through_option_with_its_own_message() {
    let text = "[kafka.options]\n\"client.id\" = \"kaudit\"\n\"sesion.timeout.ms\" = 6000\n\
                \"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanisms\" = \"GSSAPI\"\n\"linger.ms\" = \"soon\"\n";
    let err = KauditConfig::from_toml(text, Path::new("k.toml")).unwrap_err();
    let found: Vec<(&str, Option<usize>)> = err.problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        found,
        [
            ("kafka.options.\"sesion.timeout.ms\"", Some(3)),
            ("kafka.options.\"sasl.mechanisms\"", Some(5)),
            ("kafka.options.\"linger.ms\"", Some(6)),
        ],
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("No such configuration property: \"sesion.timeout.ms\""), "{text}");
    assert!(text.contains("GSSAPI (Kerberos) is not supported"), "{text}");
}

#[test]
fn empty_file_is_all_defaults() {
    let config = KauditConfig::from_toml("", Path::new("empty.toml")).unwrap();
    assert_eq!(config, KauditConfig::default());
}

#[test]
fn key_paths_round_trip() {
    for p in ["agent.topics[1].pattern", "kafka.options.\"bootstrap.servers\"", "store"] {
        assert_eq!(KeyPath::parse(p).to_string(), p);
    }
}

#[test]
fn sink_problems_are_reported_at_their_own_key() {
    let text = "[agent]\nname = \"x\"\n\n[[alerting.sinks]]\ntype = \"slack\"\nurl = \"https://hooks.example/a\"\n\n\
                [[alerting.sinks]]\ntype = \"pagerduty\"\nurl = \"events.pagerduty.com\"\n";
    let err = KauditConfig::from_toml(text, Path::new("s.toml")).unwrap_err();
    let found: Vec<_> = err.problems.iter().map(|p| (p.key.as_str(), p.line, p.message.as_str())).collect();
    assert_eq!(
        found,
        vec![
            // Absent, so at the sink's own table.
            ("alerting.sinks[1].routing_key", Some(8), "set routing_key or routing_key_env"),
            ("alerting.sinks[1].url", Some(10), "must start with http:// or https://"),
        ],
        "{err}"
    );
}

#[test]
fn a_pagerduty_sink_without_a_routing_key_is_reported_at_routing_key() {
    let text = "[[alerting.sinks]]\ntype = \"pagerduty\"\nurl = \"https://events.pagerduty.com\"\n";
    let err = KauditConfig::from_toml(text, Path::new("pd.toml")).unwrap_err();
    let found: Vec<_> = err.problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(found, vec![("alerting.sinks[0].routing_key", Some(1))], "{err}");
    assert!(err.to_string().contains("pd.toml:1:1: key `alerting.sinks[0].routing_key`: set routing_key"), "{err}");
}

#[test]
fn more_than_64_errors_say_how_many_more() {
    let text: String = (0..100).map(|i| format!("unknown_{i} = 1\n")).collect();
    let err = KauditConfig::from_toml(&text, Path::new("many.toml")).unwrap_err();
    assert_eq!(err.problems.len(), 65);
    assert_eq!((err.problems[63].key.as_str(), err.problems[63].line), ("unknown_63", Some(64)));
    assert_eq!(err.problems[64].message, "... and 36 more (fix these and run again)");
    assert!(err.to_string().contains("many.toml: ... and 36 more"), "{err}");
}

#[test]
fn secrets_and_bad_names_are_refused_at_their_key() {
    let text = "store = \"scylla://kaudit:hunter2@db1:9042\"\n";
    let err = KauditConfig::from_toml(text, Path::new("s.toml")).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("key `store`: credentials do not belong in the store url"), "{shown}");

    let text = "store = \"scylla://db1:9042\"\n[scylla]\nusername = \"kaudit\"\n\
                password_env = \"KAUDIT_TEST_SURELY_UNSET_PW\"\n[scylla.replication]\n\
                class = \"NetworkTopologyStrategy\"\ndatacenters = { \"dc1': 1, 'x\" = 3 }\n\
                [tap]\ntier = \"broker\"\ntopics = [\"orders\", \"^([\"]\n";
    let err = KauditConfig::from_toml(text, Path::new("c.toml")).unwrap_err();
    let found: Vec<_> = err.problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        found,
        vec![
            ("scylla.password_env", Some(4)),
            ("scylla.replication.datacenters.dc1': 1, 'x", Some(7)),
            ("tap.topics[1]", Some(10)),
            ("kafka.bootstrap_servers", None),
        ],
        "{err}"
    );
}

#[test]
fn http_section_is_read_and_token_problems_are_located() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "file-token-0123456789abcdef\n").unwrap();
    let token_file = dir.path().join("token");
    let text = format!(
        "[http]\nheader_timeout_ms = 500\nprotect_probes = true\n[[http.tokens]]\nrole = \"write\"\nfile = {:?}\n",
        token_file.display().to_string()
    );
    let config = KauditConfig::from_toml(&text, Path::new("h.toml")).unwrap();
    assert_eq!((config.http.header_timeout_ms, config.http.protect_probes), (500, true));
    let options = config.http.build().unwrap();
    assert!(!format!("{config:?} {options:?}").contains("file-token-0123456789abcdef"));

    let text = "[http]\nmax_connections = 0\n\n[[http.tokens]]\nrole = \"read\"\nenv = \"KAUDIT_TEST_SURELY_UNSET_TOKEN\"\n\
                [[http.tokens]]\nrole = \"reader\"\nenv = \"X\"\n";
    let err = KauditConfig::from_toml(text, Path::new("h.toml")).unwrap_err();
    let found: Vec<_> = err.problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        found,
        vec![
            ("http.max_connections", Some(2)),
            ("http.tokens[0].env", Some(6)),
            ("http.tokens[1]", Some(7)),
            ("http.tokens[1].role", Some(8)),
        ],
        "{err}"
    );
    assert!(err.to_string().contains("KAUDIT_TEST_SURELY_UNSET_TOKEN is not set"), "{err}");
}

#[test]
fn udp_ingest_beyond_loopback_needs_udp_allow_network() {
    let text = "[ingest]\nudp_listen = \"0.0.0.0:9467\"\n";
    let err = KauditConfig::from_toml(text, Path::new("u.toml")).unwrap_err();
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!((err.problems[0].key.as_str(), err.problems[0].line), ("ingest.udp_listen", Some(2)));
    assert!(err.problems[0].message.contains("udp_allow_network"), "{err}");
    let allowed = format!("{text}udp_allow_network = true\n");
    assert!(KauditConfig::from_toml(&allowed, Path::new("u.toml")).unwrap().ingest.unwrap().udp_allow_network);
    for local in ["127.0.0.1:9467", "[::1]:9467"] {
        let text = format!("[ingest]\nudp_listen = \"{local}\"\n");
        assert!(KauditConfig::from_toml(&text, Path::new("u.toml")).is_ok(), "{local}");
    }
}

use proptest::prelude::*;

proptest::proptest! {
    /// Any TOML-ish text: loading never panics, and every problem has a line, and a key unless
    /// the file does not parse as TOML at all (then the line says where) or it is the closing
    /// "... and N more".
    #[test]
    fn any_text_loads_or_every_problem_is_located(
        lines in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::sample::select(vec!["[agent]", "[verifier]", "[scylla]", "[[alerting.sinks]]", "[tap]", "[kafka.options]", "[scylla.replication]", "[[verifier.pipelines]]", "[ingest]", "[[agent.topics]]"]).prop_map(String::from),
                (proptest::sample::select(vec!["name", "bucket_width_ms", "type", "url", "tier", "topics", "store", "keyspace", "class", "datacenters", "pattern", "tiers", "listen", "x", "max_topics", "routing_key_env", "\"linger.ms\""]),
                 proptest::prop_oneof![
                    proptest::strategy::Just("1".to_string()), proptest::strategy::Just("-5".to_string()),
                    proptest::strategy::Just("\"orders.*\"".to_string()), proptest::strategy::Just("[\"a\", 2]".to_string()),
                    proptest::strategy::Just("{ dc1 = 0 }".to_string()), proptest::strategy::Just("true".to_string()),
                    "\"[ -~]{0,12}\"",
                 ]).prop_map(|(k, v)| format!("{k} = {v}")),
                "[ -~]{0,20}",
            ],
            0..12,
        )
    ) {
        let text = lines.join("\n");
        if let Err(err) = KauditConfig::from_toml(&text, Path::new("p.toml")) {
            let syntax = toml_edit::Document::parse(text.as_str()).is_err();
            for p in &err.problems {
                if p.message.starts_with("... and ") {
                    continue;
                }
                prop_assert!(p.line.is_some() || p.key == "kafka.bootstrap_servers", "no line: {p:?}\n{text}");
                prop_assert!(!p.key.is_empty() || syntax, "no key: {p:?}\n{text}");
                prop_assert!(!p.message.is_empty());
            }
            prop_assert!(err.to_string().starts_with("p.toml: "));
        }
    }
}
