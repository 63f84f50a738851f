use std::path::{Path, PathBuf};

use super::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_example_in_config_dir_loads() {
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
    let text = "[kafka.options]\n\"linger.ms\" = 5\n\"enable.idempotence\" = true\n\"x\" = 0.5\n\"acks\" = \"all\"\n";
    let config = KauditConfig::from_toml(text, Path::new("k.toml")).unwrap();
    let got: Vec<(String, String)> = config.kafka.options.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
    assert_eq!(
        got,
        [("acks", "all"), ("enable.idempotence", "true"), ("linger.ms", "5"), ("x", "0.5")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    let err = KauditConfig::from_toml("[kafka.options]\n\"a\" = [1]\n", Path::new("k.toml")).unwrap_err();
    assert_eq!((err.problems[0].key.as_str(), err.problems[0].line), ("kafka.options.a", Some(2)), "{err}");
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
            ("alerting.sinks[1].url", Some(10), "url \"events.pagerduty.com\" must start with http:// or https://"),
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
