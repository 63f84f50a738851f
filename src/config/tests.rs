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
        [("kafka.options.\"sesion.timeout.ms\"", Some(3)), ("kafka.options.\"linger.ms\"", Some(6)),],
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("No such configuration property: \"sesion.timeout.ms\""), "{text}");
}

#[test]
fn a_librdkafka_message_names_a_property_as_a_whole_word() {
    let message = "ssl.key.location failed: no such file. Check ssl.ca.location.";
    assert!(super::mentions(message, "ssl.key.location"));
    assert!(super::mentions(message, "ssl.ca.location"), "before the closing full stop");
    assert!(!super::mentions(message, "ssl.key"), "part of a longer name");
    assert!(!super::mentions(message, "key.location"), "the tail of a longer name");
}

/// Options librdkafka accepts one by one but not together are found by building a client from
/// them (no bootstrap servers: nothing connects); Kerberos (GSSAPI) is built in.
#[test]
fn librdkafka_checks_the_options_together() {
    let config = |options: &str| KauditConfig::from_toml(&format!("[kafka.options]\n{options}"), Path::new("k.toml"));
    let kerberos = "\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanisms\" = \"GSSAPI\"\n\
                    \"sasl.kerberos.service.name\" = \"kafka\"\n";
    assert!(config(kerberos).is_ok(), "{:?}", config(kerberos).err());
    let err = config("\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanisms\" = \"PLAN\"\n").unwrap_err();
    let found: Vec<(&str, Option<usize>)> = err.problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(found, [("kafka.options.\"sasl.mechanisms\"", Some(3))], "{err}");
    assert!(err.to_string().contains("PLAN"), "{err}");
    let err = config("\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"/no/such/ca.pem\"\n").unwrap_err();
    assert_eq!(err.problems[0].key, "kafka.options.\"ssl.ca.location\"", "{err}");
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

/// A tier or topic name no agent could report (the ingest API refuses it) is refused in the tap's
/// and the verifier's configuration too, at its key and line, not found out as a silent mismatch.
#[test]
fn tier_and_topic_names_are_checked_as_the_ingest_api_checks_them() {
    let text = "[kafka]\nbootstrap_servers = \"127.0.0.1:9092\"\n\
                [tap]\ntier = \"broker tier\"\ntopics = [\"orders\", \"pay ments\", \"^pay.*\"]\n\
                [[verifier.pipelines]]\ntopics = [\"orders*\"]\ntiers = [\"producer\", \"bröker\"]\n\
                consumers = [\"consumer/billing\", \"consumer billing\"]\n";
    let err = KauditConfig::from_toml(text, Path::new("n.toml")).unwrap_err();
    let found: Vec<_> = err.problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        found,
        vec![
            ("tap.tier", Some(4)),
            ("tap.topics[1]", Some(5)),
            ("verifier.pipelines[0].tiers[1]", Some(8)),
            ("verifier.pipelines[0].consumers[1]", Some(9)),
        ],
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("n.toml"), "{text}");
    assert!(text.contains("\"broker tier\" is not a tier name"), "{text}");
    assert!(text.contains("\"pay ments\" is not a Kafka topic name"), "{text}");

    let good = "[kafka]\nbootstrap_servers = \"127.0.0.1:9092\"\n\
                [tap]\ntier = \"mirror.eu-west_1\"\ntopics = [\"orders\", \"^pay.*\"]\n\
                [[verifier.pipelines]]\ntopics = [\"orders*\"]\ntiers = [\"producer\", \"broker\"]\n\
                consumers = [\"consumer/billing\"]\n";
    KauditConfig::from_toml(good, Path::new("n.toml")).unwrap();
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

#[test]
fn durations_may_be_strings_and_are_located_as_written() {
    let config = KauditConfig::load(&repo().join("config/kaudit.example.toml")).unwrap();
    assert_eq!((config.agent.bucket_width_ms, config.agent.flush_interval_ms), (60_000, 5_000));
    let config = KauditConfig::load(&repo().join("config/verifier.example.toml")).unwrap();
    assert_eq!((config.verifier.lateness_ms, config.verifier.thresholds.max_lag_ms), (3_600_000, 300_000));

    let text = "[agent]\nflush_interval = \"1m30s\"\n[[alerting.sinks]]\ntype = \"alertmanager\"\n\
                url = \"http://am:9093\"\nrepost_interval = \"2m\"\n[verifier]\ngrace = \"250ms\"\n";
    let config = KauditConfig::from_toml(text, Path::new("d.toml")).unwrap();
    assert_eq!((config.agent.flush_interval_ms, config.verifier.grace_ms), (90_000, Some(250)));
    assert!(format!("{:?}", config.alerting.sinks[0]).contains("repost_interval_ms: 120000"));

    let text = "[agent]\nflush_interval_ms = 5000\nflush_interval = \"5s\"\nclose_after = \"ten minutes\"\n\
                bucket_width_ms = \"1m\"\nshutdown_timeout = 10000\nmax_future = \"5ms\"\n\n[http]\nidle_timeout = \"1x\"\n";
    let err = KauditConfig::from_toml(text, Path::new("d.toml")).unwrap_err();
    let found: Vec<_> = err.problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert_eq!(
        found,
        [
            ("agent.flush_interval", Some(3)),
            ("agent.close_after", Some(4)),
            ("agent.bucket_width_ms", Some(5)),
            ("agent.shutdown_timeout", Some(6)),
            ("http.idle_timeout", Some(10)),
        ],
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("d.toml:3:1: key `agent.flush_interval`: `flush_interval` and `flush_interval_ms`"),
        "{text}"
    );
    assert!(text.contains("d.toml:4:1: key `agent.close_after`: \"ten minutes\" is not a duration"), "{text}");
    assert!(text.contains("units ms, s, m, h, d"), "{text}");
    assert!(text.contains("write a duration string as `bucket_width = \"5s\"`"), "{text}");
    assert!(text.contains("a number of milliseconds goes in `shutdown_timeout_ms`"), "{text}");

    // A finding of validation at a rewritten key is at the key as written.
    let err = KauditConfig::from_toml("[agent]\n\nflush_interval = \"5ms\"\n", Path::new("d.toml")).unwrap_err();
    assert_eq!((err.problems[0].key.as_str(), err.problems[0].line), ("agent.flush_interval", Some(3)), "{err}");
    assert!(err.problems[0].message.contains("at least 10 ms"), "{err}");
    // An unknown key is named as written too: a Slack sink has no repost_interval (serde locates
    // errors inside a sink at the sink).
    let text = "[[alerting.sinks]]\ntype = \"slack\"\nurl = \"https://hooks.example/a\"\nrepost_interval = \"1m\"\n";
    let err = KauditConfig::from_toml(text, Path::new("d.toml")).unwrap_err();
    assert_eq!((err.problems[0].key.as_str(), err.problems[0].line), ("alerting.sinks[0]", Some(1)), "{err}");
    assert!(err.problems[0].message.contains("unknown field `repost_interval`"), "{err}");
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn environment_overrides_apply_before_validation_and_are_listed() {
    let text = "store = \"sqlite:///tmp/a.db\"\n[agent]\nname = \"file\"\nflush_interval_ms = 5000\n";
    let env = vars(&[
        ("KAUDIT__AGENT__FLUSH_INTERVAL", "10s"),
        ("KAUDIT__STORE", "sqlite:///tmp/b.db"),
        ("KAUDIT__KAFKA__OPTIONS__CLIENT_ID", "from-env"),
        ("KAUDIT__VERIFIER__THRESHOLDS__LOSS_RATIO", "0.5"),
        ("KAUDIT_API_TOKEN", "single underscore: not an override"),
    ]);
    let loaded = KauditConfig::from_toml_with(text, Path::new("e.toml"), &env).unwrap();
    let config = &loaded.config;
    assert_eq!((config.agent.name.as_str(), config.agent.flush_interval_ms), ("file", 10_000));
    assert_eq!(config.store.as_deref(), Some("sqlite:///tmp/b.db"));
    assert_eq!(config.kafka.options["client.id"].to_string(), "from-env");
    assert_eq!(config.verifier.thresholds.loss_ratio, 0.5);
    let listed: Vec<_> = loaded.overrides.iter().map(|o| (o.variable.as_str(), o.key.as_str())).collect();
    assert_eq!(
        listed,
        [
            ("KAUDIT__STORE", "store"),
            ("KAUDIT__AGENT__FLUSH_INTERVAL", "agent.flush_interval"),
            ("KAUDIT__KAFKA__OPTIONS__CLIENT_ID", "kafka.options.\"client.id\""),
            ("KAUDIT__VERIFIER__THRESHOLDS__LOSS_RATIO", "verifier.thresholds.loss_ratio"),
        ]
    );
    // Without a file, the environment alone.
    let loaded = KauditConfig::load_with(None, &vars(&[("KAUDIT__AGENT__NAME", "env-only")])).unwrap();
    assert_eq!(loaded.config.agent.name, "env-only");
}

#[test]
fn problems_of_overridden_keys_name_the_variable_and_hide_the_value() {
    let text = "[agent]\nname = \"x\"\n";
    let env = vars(&[
        ("KAUDIT__AGENT__FLUSH_INTERVL_MS", "100"),
        ("KAUDIT__SCYLLA__USERNAME", "31415926"),
        ("KAUDIT__AGENT__BUCKET_WIDTH", "soon"),
        ("KAUDIT__AGENT____NAME", "y"),
        ("KAUDIT__ALERTING__SINKS__0__URL", "https://hooks.example/secret-path"),
    ]);
    let err = KauditConfig::from_toml_with(text, Path::new("e.toml"), &env).unwrap_err();
    let found: Vec<_> = err.problems.iter().map(|p| (p.env.as_deref().unwrap_or(""), p.key.as_str(), p.line)).collect();
    assert_eq!(
        found,
        [
            ("KAUDIT__AGENT____NAME", "", None),
            ("KAUDIT__ALERTING__SINKS__0__URL", "alerting.sinks[0].url", None),
            ("KAUDIT__AGENT__BUCKET_WIDTH", "agent.bucket_width", None),
            ("KAUDIT__AGENT__FLUSH_INTERVL_MS", "agent.flush_intervl_ms", None),
            ("KAUDIT__SCYLLA__USERNAME", "scylla.username", None),
        ],
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("  environment KAUDIT__AGENT__FLUSH_INTERVL_MS: key `agent.flush_intervl_ms`: unknown field"),
        "{text}"
    );
    assert!(text.contains("\"soon\" is not a duration"), "durations are no secret: {text}");
    assert!(text.contains("invalid type: integer"), "{text}");
    assert!(!text.contains("31415926") && !text.contains("secret-path"), "{text}");

    // A value serde reports one level up (at the tagged sink, not at its key) is hidden too.
    let text = "[[alerting.sinks]]\ntype = \"webhook\"\nurl = \"http://hooks.example/\"\n";
    let env = vars(&[("KAUDIT__ALERTING__SINKS__0__SECRET", "12345678")]);
    let err = KauditConfig::from_toml_with(text, Path::new("e.toml"), &env).unwrap_err();
    assert!(!err.to_string().contains("12345678"), "{err}");
    assert_eq!(err.problems[0].env.as_deref(), Some("KAUDIT__ALERTING__SINKS__0__SECRET"), "{err}");

    // A `*_env` secret set through an override still names its own variable when unset.
    let text = "store = \"scylla://db1:9042\"\n[scylla]\nusername = \"kaudit\"\n";
    let env = vars(&[("KAUDIT__SCYLLA__PASSWORD_ENV", "KAUDIT_TEST_SURELY_UNSET_PW")]);
    let err = KauditConfig::from_toml_with(text, Path::new("e.toml"), &env).unwrap_err();
    assert_eq!(err.problems[0].env.as_deref(), Some("KAUDIT__SCYLLA__PASSWORD_ENV"), "{err}");
    assert!(err.to_string().contains("KAUDIT_TEST_SURELY_UNSET_PW"), "{err}");
}

#[test]
fn alerting_public_url_is_an_absolute_http_url() {
    let ok = KauditConfig::from_toml("[alerting]\npublic_url = \"https://kaudit.example/ops\"\n", Path::new("u.toml"));
    assert_eq!(ok.unwrap().alerting.public_url.as_deref(), Some("https://kaudit.example/ops"));
    assert_eq!(KauditConfig::default().alerting.public_url, None, "default: the verifier's listen address");
    for bad in ["verifier:9464", "/kaudit", "http://kaudit.example/?x=1"] {
        let text = format!("[agent]\nname = \"x\"\n\n[alerting]\npublic_url = \"{bad}\"\n");
        let err = KauditConfig::from_toml(&text, Path::new("u.toml")).unwrap_err();
        let found: Vec<_> = err.problems.iter().map(|p| (p.key.as_str(), p.line)).collect();
        assert_eq!(found, vec![("alerting.public_url", Some(5))], "{err}");
        assert!(err.to_string().contains(bad), "{err}");
    }
}
