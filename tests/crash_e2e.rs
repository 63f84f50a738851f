//! Crashes that are not faults of the pipeline must never page as loss or duplicates. Every
//! application runs in its own process against a mock cluster in another, audited with the agent
//! library (`kaudit-sample-app`) or the tap (`kaudit agent`), all flushing to one SQLite file; the
//! verifier's engine runs here on the wall clock, and its alerts are checked after every pass.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Proc, free_port, kaudit, mock_cluster, now_ms, wait_ok};
use kaudit_alerting::{AlertKind, AlertState};
use kaudit_schema::sqlite::SqliteOptions;
use kaudit_schema::{Outcome, SqliteStore, Store, SystemClock, VerdictRow};
use kaudit_verifier::{Engine, PipelineConfig, VerifierConfig, VerifierMetrics};

/// Bucket width of every agent here, ms.
const WIDTH: i64 = 5_000;

/// A kaudit configuration file for one process: the shared store, a name, a flush interval, the
/// sample app's `event-time` header, the cluster, and `extra` TOML (a `[tap]` section).
fn config_file(dir: &Path, name: &str, flush_ms: u64, bootstrap: &str, extra: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "store = \"sqlite://{db}\"\ndata_dir = \"{data}\"\nagent_listen = \"127.0.0.1:{port}\"\n\
         [agent]\nname = \"{name}\"\nflush_interval_ms = {flush_ms}\nbucket_width_ms = {WIDTH}\n\
         [[agent.topics]]\npattern = \"*\"\nevent_time = \"header:event-time\"\n\
         [kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
         [kafka.options]\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 500\n{extra}",
        db = dir.join("audit.db").display(),
        data = dir.join(name).display(),
        port = free_port(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `kaudit-sample-app ROLE --config FILE ARGS...`, stderr to `<dir>/<name>.log`.
fn sample_app(dir: &Path, name: &str, role: &str, config: &Path, args: &[&str]) -> Proc {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Proc(
        Command::new(env!("CARGO_BIN_EXE_kaudit-sample-app"))
            .arg(role)
            .args(["--config", config.to_str().unwrap(), "--topic", "orders"])
            .args(args)
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    )
}

/// A tap counting `orders` as tier `broker`, ready once it has partitions.
fn start_tap(dir: &Path, bootstrap: &str) -> Proc {
    let tap = "[tap]\ntier = \"broker\"\ntopics = [\"orders\"]\n";
    let config = config_file(dir, "tap", 200, bootstrap, tap);
    let port: u16 = std::fs::read_to_string(&config).unwrap().split("127.0.0.1:").nth(1).unwrap()[..5]
        .trim_end_matches('"')
        .parse()
        .unwrap();
    let proc = kaudit("agent", &config, Some(&dir.join("tap.log")));
    wait_ok(port, "/readyz", "tap", Duration::from_secs(60));
    proc
}

/// The verifier's engine over the shared store: 5-s buckets judged 3 s after their end, every
/// alert threshold at zero tolerance, agents presumed gone after 3 s of silence.
fn engine(store: Arc<dyn Store>, consumers: &[&str]) -> Engine {
    let mut config = VerifierConfig {
        pipelines: vec![PipelineConfig {
            topics: vec!["orders".into()],
            tiers: vec!["producer".into(), "broker".into()],
            consumers: consumers.iter().map(|c| c.to_string()).collect(),
        }],
        grace_ms: Some(3_000),
        evaluate_interval_ms: 1_000,
        baseline_min_samples: usize::MAX,
        agent_timeout_ms: Some(3_000),
        ..VerifierConfig::default()
    };
    config.thresholds.loss_ratio = 0.0;
    config.thresholds.duplicate_ratio = 0.0;
    config.thresholds.max_lag_ms = 60_000;
    let metrics = VerifierMetrics::register(&prometheus::Registry::new()).unwrap();
    Engine::new(store, None, config, 500, Arc::new(SystemClock), metrics)
}

/// Run passes every second until `done` holds (or `limit`), failing as soon as an alert of a
/// kind in `never` is firing.
async fn watch(engine: &mut Engine, never: &[AlertKind], limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    loop {
        engine.tick().await.unwrap();
        let paged: Vec<&String> = engine
            .alerts()
            .values()
            .filter(|a| a.state == AlertState::Firing && never.contains(&a.kind))
            .map(|a| &a.dedup_key)
            .collect();
        assert!(paged.is_empty(), "paged for {paged:?} at {} ms", started.elapsed().as_millis());
        if done() || started.elapsed() > limit {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Verdicts of `tier` for every bucket from `from_ms`, once none is pending any more.
async fn final_verdicts(store: &dyn Store, tier: &str, from_ms: i64) -> Vec<VerdictRow> {
    let verdicts = store.read_verdicts("orders", from_ms, now_ms() + 60_000).await.unwrap();
    verdicts.into_iter().filter(|v| v.tier == tier).collect()
}

/// `<partition> <offset> <event_ms>` lines of a consumer's processing log.
fn processed(path: &Path) -> Vec<(i32, i64, i64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(' ').map(|x| x.parse::<i64>());
            Some((f.next()?.ok()? as i32, f.next()?.ok()?, f.next()?.ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_group_member_never_pages_as_loss() {
    let dir = tempfile::tempdir().unwrap();
    let (_cluster, _stdin, bootstrap) = mock_cluster("orders:4");
    let started_ms = now_ms();
    let _tap = start_tap(dir.path(), &bootstrap);
    let consumer_args = |name: &str| {
        let log = dir.path().join(format!("{name}.processed"));
        let config = config_file(dir.path(), name, 500, &bootstrap, "");
        let extra = ["--group", "billing", "--tier", "consumer/billing", "--log", log.to_str().unwrap()];
        sample_app(dir.path(), name, "consume", &config, &extra)
    };
    let mut doomed = consumer_args("billing-a");
    let _survivor = consumer_args("billing-b");
    let producer_config = config_file(dir.path(), "checkout", 500, &bootstrap, "");
    let mut producer = sample_app(
        dir.path(),
        "checkout",
        "produce",
        &producer_config,
        &["--tier", "producer", "--rate", "500", "--duration", "20s"],
    );

    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("audit.db"), &SqliteOptions::default()).unwrap());
    let mut engine = engine(store.clone(), &["consumer/billing"]);
    let never = [AlertKind::Loss, AlertKind::MissingTier, AlertKind::TierDown];
    let killed_at = Instant::now() + Duration::from_secs(8);
    watch(&mut engine, &never, Duration::from_secs(10), || Instant::now() >= killed_at).await;
    doomed.0.kill().unwrap(); // SIGKILL mid-stream: no final flush, uncommitted offsets re-read
    doomed.0.wait().unwrap();
    let mut producer_done = false;
    watch(&mut engine, &never, Duration::from_secs(60), || {
        producer_done = producer_done || producer.0.try_wait().unwrap().is_some();
        producer_done
    })
    .await;
    assert!(producer_done, "the producer ran to its end");
    // Every bucket judged: past its end + grace, and no pending verdict left.
    let settle = Instant::now() + Duration::from_secs(WIDTH as u64 / 1000 + 10);
    watch(&mut engine, &never, Duration::from_secs(60), || Instant::now() >= settle).await;

    let a = processed(&dir.path().join("billing-a.processed"));
    let b = processed(&dir.path().join("billing-b.processed"));
    // Processed more than once, by either member (after the kill, or at the first rebalance
    // before the first offset commit): real duplicates, per event-time bucket.
    let mut times: BTreeMap<(i32, i64), (u64, i64)> = BTreeMap::new();
    for (p, o, event_ms) in a.iter().chain(&b) {
        times.entry((*p, *o)).or_insert((0, *event_ms)).0 += 1;
    }
    let mut reread: BTreeMap<i64, u64> = BTreeMap::new();
    for (n, event_ms) in times.values().filter(|(n, _)| *n > 1) {
        *reread.entry(event_ms.div_euclid(WIDTH) * WIDTH).or_default() += n - 1;
    }
    let verdicts = final_verdicts(&*store, "consumer/billing", started_ms - WIDTH).await;
    assert!(verdicts.len() >= 3, "{verdicts:?}");
    let mut indeterminate = 0;
    for v in &verdicts {
        match v.kind.outcome {
            Outcome::Complete => {}
            Outcome::Duplicates => {
                let extra = v.count - v.upstream_count;
                assert_eq!(Some(&extra), reread.get(&v.bucket_start_ms), "duplicates are the re-read messages: {v:?}");
            }
            Outcome::Indeterminate => {
                let detail = v.detail.as_ref().expect("an indeterminate verdict says why");
                assert!(detail.vanished.iter().any(|a| a.agent_id.starts_with("billing-a-")), "{v:?}");
                indeterminate += 1;
            }
            other => panic!("{other:?} for a pipeline that lost nothing: {v:?}"),
        }
    }
    assert!(!a.is_empty() && !b.is_empty(), "both members processed messages");
    eprintln!("verdicts: {} ({indeterminate} indeterminate), re-read: {reread:?}", verdicts.len());
    let broker = final_verdicts(&*store, "broker", started_ms - WIDTH).await;
    assert!(broker.iter().all(|v| v.kind.outcome == Outcome::Complete), "{broker:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_producer_is_indeterminate_and_a_stopped_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (_cluster, _stdin, bootstrap) = mock_cluster("orders:2");
    let started_ms = now_ms();
    let _tap = start_tap(dir.path(), &bootstrap);
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("audit.db"), &SqliteOptions::default()).unwrap());
    let mut engine = engine(store.clone(), &[]);
    let never = [AlertKind::Loss, AlertKind::Duplicates, AlertKind::MissingTier];
    // A producer whose agent flushes every 3 s, killed 7 s in: up to 3 s of its tallies die with it.
    let first = config_file(dir.path(), "checkout-1", 3_000, &bootstrap, "");
    let mut killed = sample_app(
        dir.path(),
        "checkout-1",
        "produce",
        &first,
        &["--tier", "producer", "--rate", "400", "--duration", "60s"],
    );
    let kill_at = Instant::now() + Duration::from_secs(7);
    watch(&mut engine, &never, Duration::from_secs(10), || Instant::now() >= kill_at).await;
    killed.0.kill().unwrap();
    killed.0.wait().unwrap();
    let crashed_ms = now_ms();
    // Its successor (a new instance) produces new orders for 8 s and stops cleanly.
    let second = config_file(dir.path(), "checkout-2", 500, &bootstrap, "");
    let successor = ["--tier", "producer", "--rate", "400", "--duration", "8s", "--first", "1000000"];
    let mut successor = sample_app(dir.path(), "checkout-2", "produce", &second, &successor);
    let mut done = false;
    watch(&mut engine, &never, Duration::from_secs(40), || {
        done = done || successor.0.try_wait().unwrap().is_some();
        done
    })
    .await;
    assert!(done, "the successor ran to its end");
    let settle = Instant::now() + Duration::from_secs(WIDTH as u64 / 1000 + 8);
    watch(&mut engine, &never, Duration::from_secs(60), || Instant::now() >= settle).await;

    let verdicts = final_verdicts(&*store, "broker", started_ms - WIDTH).await;
    let indeterminate: Vec<&VerdictRow> =
        verdicts.iter().filter(|v| v.kind.outcome == Outcome::Indeterminate).collect();
    for v in &verdicts {
        assert!(matches!(v.kind.outcome, Outcome::Complete | Outcome::Indeterminate), "{v:?}");
    }
    assert!(!indeterminate.is_empty(), "the buckets the killed producer held are indeterminate: {verdicts:?}");
    for v in &indeterminate {
        let vanished = &v.detail.as_ref().expect("detail").vanished;
        assert!(vanished.iter().all(|a| a.agent_id.starts_with("checkout-1-")), "{v:?}");
        assert!(v.bucket_start_ms <= crashed_ms, "only buckets it held: {v:?}");
    }
    let clean_from = WIDTH * (crashed_ms / WIDTH + 1);
    assert!(
        verdicts.iter().filter(|v| v.bucket_start_ms >= clean_from).all(|v| v.kind.outcome == Outcome::Complete),
        "the cleanly stopped successor leaves nothing indeterminate: {verdicts:?}"
    );
}
