//! The agent's metrics, encoded from a fresh registry and checked by Prometheus's own `promtool`.

use std::sync::Arc;

use kaudit_agent::{AgentMetrics, Auditor, AuditorOptions, Flusher, FlusherOptions, ManualClock, OwnedMessage};
use kaudit_schema::SqliteStore;
use kaudit_schema::sqlite::SqliteOptions;
use kaudit_testkit::promtool_check;
use prometheus::{Registry, TextEncoder};

#[tokio::test]
async fn agent_metrics_are_counted_per_flush_and_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("a.db"), &SqliteOptions::default()).unwrap();
    let registry = Registry::new();
    let metrics = AgentMetrics::register(&registry).unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let auditor = Auditor::new(AuditorOptions { clock: Arc::new(clock.clone()), ..AuditorOptions::named("m") });
    for i in 0..3u8 {
        let msg = OwnedMessage {
            key: Some(vec![i]),
            payload: vec![i; 10],
            timestamp_ms: Some(1_700_000_000_000),
            headers: vec![],
        };
        auditor.record_message("orders", "producer", &msg);
    }
    auditor.record("orders", "producer", b"k", b"12345", None);
    auditor.record_failure("orders", "producer");
    let mut flusher = Flusher::new(auditor, Arc::new(store), None, FlusherOptions::default(), metrics);
    flusher.flush_once().await;

    let text = TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
    for line in [
        r#"kaudit_agent_messages_total{tier="producer",topic="orders"} 4"#,
        r#"kaudit_agent_bytes_total{tier="producer",topic="orders"} 35"#,
        r#"kaudit_agent_no_time_messages_total{tier="producer",topic="orders"} 1"#,
        r#"kaudit_agent_delivery_failures_total{tier="producer",topic="orders"} 1"#,
        "kaudit_agent_flushes_total 1",
        "kaudit_agent_flush_failures_total 0",
        "kaudit_agent_rows_written_total 1",
        "kaudit_agent_flush_duration_seconds_count 1",
        "kaudit_agent_spool_batches 0",
        "kaudit_agent_open_buckets 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    let (ok, report) = promtool_check(&text);
    assert!(ok && report.trim().is_empty(), "promtool check metrics failed:\n{report}");
}

#[test]
fn promtool_rejects_what_breaks_the_conventions() {
    // Proves the check above can fail: a counter without the _total suffix is a lint error.
    let (ok, report) = promtool_check("# HELP bad_counter x\n# TYPE bad_counter counter\nbad_counter 1\n");
    assert!(!ok, "promtool accepted a malformed exposition: {report}");
}

/// Two agents of one process in one registry, told apart by an `agent` label: each counts its own
/// messages, the exposition has one HELP and TYPE per family and passes promtool, and a second
/// agent with the same labels is refused rather than merged.
#[tokio::test]
async fn agents_sharing_a_registry_keep_their_series_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("a.db"), &SqliteOptions::default()).unwrap());
    let registry = Registry::new();
    let clock = ManualClock::new(1_700_000_000_000);
    for (agent, tier, n) in [("producer", "producer", 3u8), ("consumer/billing", "consumer/billing", 2)] {
        let metrics = AgentMetrics::register_labelled(&registry, &[("agent", agent)]).unwrap();
        let auditor = Auditor::new(AuditorOptions { clock: Arc::new(clock.clone()), ..AuditorOptions::named(agent) });
        for i in 0..n {
            auditor.record("orders", tier, &[i], b"12345", Some(1_700_000_000_000));
        }
        Flusher::new(auditor, store.clone(), None, FlusherOptions::default(), metrics).flush_once().await;
    }
    assert!(AgentMetrics::register_labelled(&registry, &[("agent", "producer")]).is_err(), "same labels twice");

    let text = TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
    for line in [
        r#"kaudit_agent_messages_total{agent="consumer/billing",tier="consumer/billing",topic="orders"} 2"#,
        r#"kaudit_agent_messages_total{agent="producer",tier="producer",topic="orders"} 3"#,
        r#"kaudit_agent_flushes_total{agent="consumer/billing"} 1"#,
        r#"kaudit_agent_flushes_total{agent="producer"} 1"#,
        r#"kaudit_agent_flush_duration_seconds_count{agent="producer"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert_eq!(text.matches("# TYPE kaudit_agent_flushes_total counter").count(), 1, "{text}");
    let (ok, report) = promtool_check(&text);
    assert!(ok && report.trim().is_empty(), "promtool check metrics failed:\n{report}");
}
