//! Three `kaudit verifier` processes sharing 1,000 topics through a consumer group on the mock
//! cluster, over one in-process CQL store: the shards are spread with none owned twice; a
//! `kill -9`ed instance's topics are taken over and a loss injected in one of them is delivered
//! exactly once, by a survivor; a clean stop hands its shards over within seconds; and the store
//! shows no bucket whose verdicts two instances wrote in one shard epoch.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Proc, free_port, http, now_ms};
use kaudit_alerting::shard_of;
use kaudit_schema::{FlushBatch, StoreUrl, Tally, TallyKey, TallyRow};

const SHARDS: u32 = 16;
const TOPICS: usize = 1_000;
const SESSION_MS: u64 = 6_000;
const GRACE_MS: u64 = 5_000;
const INTERVAL_MS: u64 = 1_000;
const WIDTH_MS: i64 = 60_000;

type Inbox = Arc<Mutex<Vec<(Instant, serde_json::Value)>>>;

async fn webhook_receiver() -> (u16, Inbox) {
    let inbox: Inbox = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(inbox): axum::extract::State<Inbox>, body: axum::body::Bytes| async move {
                    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    inbox.lock().unwrap().push((Instant::now(), value));
                    "ok"
                },
            ),
        )
        .with_state(inbox.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, inbox)
}

fn row(topic: &str, bucket: i64, tier: &str, agent: &str, fps: &[u64]) -> TallyRow {
    let mut tally = Tally::default();
    for fp in fps {
        tally.add(*fp, 100);
        tally.latency.record(5);
    }
    TallyRow {
        key: TallyKey { topic: topic.into(), bucket_start_ms: bucket, tier: tier.into(), agent_id: agent.into() },
        bucket_width_ms: WIDTH_MS,
        version: 1,
        tally,
    }
}

/// The last `n` lines of a log file.
fn tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!("{}:\n{}", path.display(), lines[lines.len().saturating_sub(n)..].join("\n"))
}

/// The shards each instance says it owns on `/readyz` (`None`: not answering or mid hand-over).
fn owned(port: u16) -> Option<BTreeSet<u32>> {
    let (_, body) = http(port, "GET", "/readyz", "")?;
    let line = body.lines().find_map(|l| l.strip_prefix("shards_owned: "))?;
    if line == "changing" {
        return None;
    }
    Some(line.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect())
}

/// Wait until the instances on `ports` own every shard exactly once, each some; returns who owns
/// what.
fn wait_spread(ports: &[u16], limit: Duration) -> HashMap<u16, BTreeSet<u32>> {
    let started = Instant::now();
    loop {
        let all: Option<HashMap<u16, BTreeSet<u32>>> = ports.iter().map(|p| owned(*p).map(|o| (*p, o))).collect();
        if let Some(all) = all {
            let total: usize = all.values().map(BTreeSet::len).sum();
            let union: BTreeSet<u32> = all.values().flatten().copied().collect();
            let balanced = all.values().all(|s| !s.is_empty());
            if total == SHARDS as usize && union.len() == SHARDS as usize && balanced {
                return all;
            }
        }
        if started.elapsed() > limit {
            let seen: Vec<_> = ports.iter().map(|p| (p, http(*p, "GET", "/readyz", ""))).collect();
            let logs = std::env::var("SHARDS_E2E_LOGS").unwrap_or_default();
            let tails: Vec<String> = logs.split(',').filter(|l| !l.is_empty()).map(|l| tail(l.as_ref(), 30)).collect();
            panic!("shards not spread over {ports:?} within {limit:?}: {seen:?}\n{}", tails.join("\n-----\n"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifiers_share_topics_by_consumer_group_and_take_over_from_a_killed_one() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = kaudit_testkit::QuickMockCluster::new(1).unwrap();
    cluster.create_topic("kaudit-verifier-shards", SHARDS as i32).unwrap();
    let cql = kaudit_testkit::CqlServer::start();
    let (hook_port, inbox) = webhook_receiver().await;

    // Every instance: the same store, group and sink; its own API port and name.
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let config = |i: usize| {
        let path = dir.path().join(format!("v{i}.toml"));
        std::fs::write(
            &path,
            format!(
                "store = \"scylla://{cql}\"\ndata_dir = \"{data}\"\n\
                 [scylla]\nkeyspace = \"shards_e2e\"\nawait_schema_agreement = false\n\
                 [kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
                 [verifier]\nlisten = \"127.0.0.1:{port}\"\nevaluate_interval_ms = {INTERVAL_MS}\ngrace_ms = {GRACE_MS}\n\
                 max_new_topics_per_pass = 2000\n\
                 [[verifier.pipelines]]\ntopics = [\"t-*\"]\ntiers = [\"producer\"]\nconsumers = [\"consumer/billing\"]\n\
                 [verifier.coordination]\nshards = {SHARDS}\nsession_timeout_ms = {SESSION_MS}\nreplication_factor = 1\n\
                 instance = \"v{i}\"\n\
                 [[alerting.sinks]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\nsecret = \"s\"\n",
                cql = cql.addr(),
                data = dir.path().display(),
                bootstrap = cluster.bootstrap_servers(),
                port = ports[i],
            ),
        )
        .unwrap();
        path
    };
    let configs: Vec<_> = (0..3).map(config).collect();
    let migrate = std::process::Command::new(env!("CARGO_BIN_EXE_kaudit"))
        .args(["migrate", "--config", configs[0].to_str().unwrap()])
        .output()
        .unwrap();
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));
    assert!(String::from_utf8_lossy(&migrate.stdout).contains("coordination topic kaudit-verifier-shards ready"));

    let logs: Vec<_> = (0..3).map(|i| dir.path().join(format!("v{i}.log"))).collect();
    let joined: Vec<String> = logs.iter().map(|l| l.display().to_string()).collect();
    // SAFETY: set before any thread of this test reads the environment.
    unsafe { std::env::set_var("SHARDS_E2E_LOGS", joined.join(",")) };
    let verifier = |i: usize| {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_kaudit"))
            .args(["verifier", "--config", configs[i].to_str().unwrap()])
            // The in-process CQL server has no peers table: the driver's complaints drown the rest.
            .env("RUST_LOG", "info,scylla=off")
            .stderr(std::fs::File::create(&logs[i]).unwrap())
            .spawn()
            .unwrap();
        Some(Proc(child))
    };
    let mut procs: Vec<Option<Proc>> = (0..3).map(verifier).collect();
    let spread = tokio::task::spawn_blocking({
        let ports = ports.clone();
        move || wait_spread(&ports, Duration::from_secs(60))
    })
    .await
    .unwrap();
    assert!(spread.values().all(|s| !s.is_empty()), "every instance owns shards: {spread:?}");
    // Once the group is stable: 1,000 topics with one complete bucket each, well past the grace
    // period, so each is evaluated by the owner of its shard.
    let url: StoreUrl = format!("scylla://{}", cql.addr()).parse().unwrap();
    let options = kaudit_schema::ScyllaOptions {
        keyspace: "shards_e2e".into(),
        await_schema_agreement: false,
        ..Default::default()
    };
    let store = kaudit_schema::open_store(&url, &options).await.unwrap();
    let old = (now_ms() / WIDTH_MS - 5) * WIDTH_MS;
    let topics: Vec<String> = (0..TOPICS).map(|i| format!("t-{i:04}")).collect();
    for chunk in topics.chunks(100) {
        let mut batch = FlushBatch::default();
        for t in chunk {
            batch.rows.push(row(t, old, "producer", "p1", &[1, 2, 3]));
            batch.rows.push(row(t, old, "consumer/billing", "c1", &[1, 2, 3]));
        }
        store.write(&batch).await.unwrap();
    }

    // Every topic is evaluated, by the instance owning its shard.
    let owner_of = |topic: &str, spread: &HashMap<u16, BTreeSet<u32>>| -> usize {
        let port = spread.iter().find(|(_, s)| s.contains(&shard_of(topic, SHARDS))).map(|(p, _)| *p).unwrap();
        ports.iter().position(|p| *p == port).unwrap()
    };
    let started = Instant::now();
    loop {
        let rows = store.read_verdict_owners(None).await.unwrap();
        let evaluated: BTreeMap<&str, BTreeSet<&str>> = rows.iter().fold(BTreeMap::new(), |mut m, r| {
            m.entry(r.topic.as_str()).or_default().insert(r.owner.as_str());
            m
        });
        if evaluated.len() == TOPICS {
            eprintln!("first evaluation of {TOPICS} topics by 3 instances: {:?}", started.elapsed());
            for (topic, owners) in &evaluated {
                let expected = format!("v{}", owner_of(topic, &spread));
                assert_eq!(owners, &BTreeSet::from([expected.as_str()]), "{topic}");
            }
            break;
        }
        // The in-process CQL server is single-threaded: two partition reads per bucket (tallies and
        // their sketches) at its pace, 46-58 s here.
        assert!(started.elapsed() < Duration::from_secs(120), "{} of {TOPICS} topics evaluated", evaluated.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(inbox.lock().unwrap().is_empty(), "complete buckets page no one: {:#?}", inbox.lock().unwrap());
    // Each topic's gauges come from its owner alone (an instance that handed a shard over dropped
    // the series of its topics).
    let mut exported: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for port in &ports {
        let (_, metrics) = http(*port, "GET", "/metrics", "").unwrap();
        let topics: BTreeSet<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("kaudit_verifier_latency_seconds{"))
            .filter_map(|l| l.split("topic=\"").nth(1)?.split('"').next())
            .collect();
        topics.into_iter().for_each(|t| exported.entry(t.to_string()).or_default().push(*port));
    }
    assert_eq!(exported.len(), TOPICS, "every topic's latency is exported");
    let twice: Vec<_> = exported.iter().filter(|(_, p)| p.len() > 1).collect();
    assert!(twice.is_empty(), "exported by two instances: {twice:?}");

    // kill -9 one instance, then lose a message in one of its topics.
    let victim = 0;
    let topic = topics.iter().find(|t| owner_of(t, &spread) == victim).unwrap().clone();
    let killed_at = Instant::now();
    procs[victim].take().unwrap().0.kill().unwrap();
    let recent = (now_ms() / WIDTH_MS - 1) * WIDTH_MS;
    let mut batch = FlushBatch::default();
    batch.rows.push(row(&topic, recent, "producer", "p1", &[11, 12, 13]));
    batch.rows.push(row(&topic, recent, "consumer/billing", "c1", &[11, 12]));
    store.write(&batch).await.unwrap();
    let due_after = Duration::from_millis((recent + WIDTH_MS + GRACE_MS as i64 - now_ms()).max(0) as u64);

    let survivors = [ports[1], ports[2]];
    let victim_shard = shard_of(&topic, SHARDS);
    let mut taken_at = None;
    let delivered_at = loop {
        let hit = inbox.lock().unwrap().iter().find(|(_, v)| v["alert"]["topic"] == topic.as_str()).map(|(t, _)| *t);
        if let Some(at) = hit {
            break at;
        }
        if taken_at.is_none() && survivors.iter().any(|p| owned(*p).is_some_and(|s| s.contains(&victim_shard))) {
            taken_at = Some(Instant::now());
        }
        if killed_at.elapsed() > Duration::from_secs(60) {
            let mut tails: Vec<String> = logs.iter().map(|l| tail(l, 40)).collect();
            for p in &survivors {
                let metrics = http(*p, "GET", "/metrics", "").map(|(_, b)| b).unwrap_or_default();
                let lines: Vec<&str> = metrics
                    .lines()
                    .filter(|l| {
                        l.starts_with("kaudit_verifier_evaluation")
                            || l.starts_with("kaudit_verifier_full_reads")
                            || l.starts_with("kaudit_verifier_buckets_evaluated")
                    })
                    .collect();
                tails.push(format!("metrics of {p}:\n{}", lines.join("\n")));
            }
            panic!("no alert for {topic} within 60 s of the kill; logs:\n{}", tails.join("\n-----\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let failover = delivered_at - killed_at;
    // Kafka notices the death after the session timeout (the survivors hear of it at their next
    // heartbeat, every session / 5); the mock cluster then waits its fixed rebalance delay (session
    // timeout − 1 s; a real group coordinator moves on once the survivors rejoin); then one
    // evaluation pass, which reads the topics that changed first, and the dispatcher's next poll
    // (1 s). Plus 3 s for a loaded machine. Under load a survivor can rejoin after the first
    // round has ended, and the group goes through a second round (the mock waits its delay again;
    // seen once: shards assigned 10.5 s after the kill, fences refused for 5 s more): allow two.
    let rebalance_ms = SESSION_MS - 1_000;
    let parts_ms = SESSION_MS + SESSION_MS / 5 + 2 * rebalance_ms + INTERVAL_MS + 1_000;
    let bound = Duration::from_millis(parts_ms).max(due_after) + Duration::from_secs(3);
    let taken = taken_at.map(|t| t - killed_at);
    eprintln!(
        "failover: kill to shard taken over {taken:?}, to alert delivered {failover:?} (session {SESSION_MS} ms, \
         bucket due after {due_after:?})"
    );
    if failover > bound {
        let tails: Vec<String> = logs.iter().map(|l| tail(l, 25)).collect();
        panic!("alert after {failover:?}, bound {bound:?}; logs:\n{}", tails.join("\n-----\n"));
    }
    let after = tokio::task::spawn_blocking(move || wait_spread(&survivors, Duration::from_secs(30))).await.unwrap();
    assert!(after.values().any(|s| s.contains(&shard_of(&topic, SHARDS))));

    // Exactly once: no second delivery while the survivors keep evaluating.
    tokio::time::sleep(Duration::from_millis(5 * INTERVAL_MS)).await;
    let alerts: Vec<serde_json::Value> = inbox
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, v)| v["alert"]["topic"] == topic.as_str())
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["alert"]["kind"], "loss", "{alerts:#?}");
    assert_eq!(inbox.lock().unwrap().len(), 1, "only the injected loss pages");

    // A clean stop hands the shards over within seconds (well under the session timeout).
    let stopping = Instant::now();
    let status = procs[1].take().unwrap().terminate();
    assert!(status.success(), "{status:?}");
    let exited = stopping.elapsed();
    let last = [ports[2]];
    let handed = tokio::task::spawn_blocking(move || wait_spread(&last, Duration::from_secs(30))).await.unwrap();
    let hand_over = stopping.elapsed();
    eprintln!("clean stop: exited after {exited:?}, all shards with the last instance after {hand_over:?}");
    assert_eq!(handed[&ports[2]].len(), SHARDS as usize);
    // Left, not timed out: a member that only stopped heartbeating would cost the session timeout
    // and then the mock's rebalance delay (session − 1 s), 11 s here. Leaving costs the stop of a
    // pass in progress and that delay alone (a real coordinator ends it once the others rejoin).
    let timed_out = Duration::from_millis(SESSION_MS + rebalance_ms);
    if hand_over >= timed_out - Duration::from_secs(1) {
        let tails: Vec<String> = logs[1..].iter().map(|l| tail(l, 15)).collect();
        panic!(
            "hand-over took {hand_over:?} (the stopped instance exited after {exited:?}), a timeout costs \
             {timed_out:?}; logs:\n{}",
            tails.join("\n-----\n")
        );
    }

    // The store: no (topic, bucket) written by two instances in one epoch of its shard.
    let rows = store.read_verdict_owners(None).await.unwrap();
    let mut writers: BTreeMap<(&str, i64, i64), BTreeSet<&str>> = BTreeMap::new();
    for r in &rows {
        writers.entry((r.topic.as_str(), r.bucket_start_ms, r.epoch)).or_default().insert(r.owner.as_str());
    }
    let doubled: Vec<_> = writers.iter().filter(|(_, w)| w.len() > 1).collect();
    assert!(doubled.is_empty(), "written by two owners in one epoch: {doubled:?}");
    // A later epoch's owner took over for good: no earlier epoch's owner wrote after it.
    let mut last_write: BTreeMap<(&str, i64), BTreeMap<i64, i64>> = BTreeMap::new();
    for r in &rows {
        let by_epoch = last_write.entry((r.topic.as_str(), r.bucket_start_ms)).or_default();
        let at = by_epoch.entry(r.epoch).or_default();
        *at = (*at).max(r.written_ms);
    }
    for (bucket, by_epoch) in &last_write {
        let times: Vec<i64> = by_epoch.values().copied().collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{bucket:?}: an older epoch wrote last: {by_epoch:?}");
    }
    let of_topic: BTreeSet<(i64, &str)> =
        rows.iter().filter(|r| r.topic == topic).map(|r| (r.bucket_start_ms, r.owner.as_str())).collect();
    assert!(of_topic.contains(&(old, "v0")), "{of_topic:?}");
    assert!(of_topic.iter().any(|(b, o)| *b == recent && *o != "v0"), "{of_topic:?}");
    if std::env::var_os("SHARDS_E2E_VERBOSE").is_some() {
        logs.iter().for_each(|l| eprintln!("{}", tail(l, 60)));
    }
    drop(procs);
}
