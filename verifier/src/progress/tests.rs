use super::*;

const L: Liveness = Liveness { agent_timeout_ms: 20_000, window_ms: 3_600_000 };
const NOW: i64 = 10_000_000;

pub(crate) fn stream(tier: &str, stream: StreamId, agent: &str, watermark_ms: i64, caught_up: bool) -> ProgressRow {
    ProgressRow {
        topic: "orders".into(),
        tier: tier.into(),
        stream,
        agent_id: agent.into(),
        watermark_ms,
        caught_up,
        reported_at_ms: NOW - 1_000,
        version: 1,
    }
}

pub(crate) fn beat(tier: &str, agent: &str, heartbeat_ms: i64, stopped: bool, resumes: bool) -> HeartbeatRow {
    HeartbeatRow {
        topic: "orders".into(),
        tier: tier.into(),
        agent_id: agent.into(),
        started_at_ms: 0,
        heartbeat_ms,
        open_from_ms: Some(heartbeat_ms - 60_000),
        stopped,
        resumes,
        version: 1,
    }
}

#[test]
fn the_watermark_is_the_slowest_counted_stream() {
    let progress = [
        stream("consumer", StreamId::Partition(0), "c1", 5_000_000, false),
        stream("consumer", StreamId::Partition(1), "c-dead", 4_000_000, false),
        stream("consumer", StreamId::Partition(2), "c1", 1_000, true),
        stream("producer", StreamId::Agent("p-live".into()), "p-live", 9_000_000, false),
        stream("producer", StreamId::Agent("p-dead".into()), "p-dead", 2_000_000, false),
        stream("producer", StreamId::Agent("p-unknown".into()), "p-unknown", 8_000_000, false),
    ];
    let beats = [
        beat("consumer", "c1", NOW, false, false),
        beat("consumer", "c-dead", NOW - 30_000, false, false),
        beat("producer", "p-live", NOW, false, false),
        beat("producer", "p-dead", NOW - 30_000, false, false),
    ];
    let p = TopicProgress::new(&progress, &beats, NOW, L);
    assert_eq!(p.watermark("consumer"), Some(4_000_000), "a dead owner's partition still holds the tier back");
    assert_eq!(
        p.watermark("producer"),
        Some(8_000_000),
        "a dead producer instance does not; one without heartbeat does"
    );
    assert_eq!(p.watermark("broker"), None, "no progress rows: no watermark");
    let lag = p.lag("producer", "consumer").unwrap();
    assert_eq!((lag.lag_ms, lag.behind_since_ms), (4_000_000, 4_000_000));
    assert_eq!(p.lag("broker", "consumer").unwrap().lag_ms, NOW - 4_000_000, "no upstream watermark: the clock");
    assert_eq!(p.lag("consumer", "broker"), None);
}

#[test]
fn a_tier_whose_instances_all_stopped_cleanly_is_finished_and_holds_nothing_back() {
    let progress = [
        stream("producer", StreamId::Agent("a".into()), "a", 3_000, false),
        stream("producer", StreamId::Agent("b".into()), "b", 7_000, false),
    ];
    let beats = [beat("producer", "a", NOW - 100_000, true, false), beat("producer", "b", NOW, true, false)];
    let p = TopicProgress::new(&progress, &beats, NOW, L);
    assert_eq!(p.watermark("producer"), None, "everything they will ever report is reported");
    let t = p.tier("producer").unwrap();
    assert_eq!((t.live, t.down_since_ms, t.last_stopped_cleanly), (0, None, true), "stopped cleanly: not down");
    assert!(t.vanished.is_empty());
}

#[test]
fn vanished_instances_hold_their_open_buckets_and_a_tier_without_live_ones_is_down() {
    let mut crashed = beat("producer", "p-1", NOW - 30_000, false, false);
    crashed.open_from_ms = Some(NOW - 120_000);
    let tap = beat("broker", "tap", NOW - 30_000, false, true);
    let mut quiet = beat("producer", "p-0", NOW - 40_000, false, false);
    quiet.open_from_ms = None;
    let p = TopicProgress::new(&[], &[crashed, tap, quiet], NOW, L);
    let names = |b: i64| p.vanished_at(["producer", "broker"], b).into_iter().map(|v| v.agent_id).collect::<Vec<_>>();
    assert_eq!(names(NOW - 120_000), ["p-1"]);
    assert_eq!(names(NOW - 30_000), ["p-1"]);
    let died_by = NOW - 30_000 + L.agent_timeout_ms;
    assert_eq!(names(died_by), ["p-1"], "it may have counted into buckets until it was taken for dead");
    assert!(names(NOW - 120_001).is_empty() && names(died_by + 1).is_empty(), "outside what it held open");
    assert_eq!(p.vanished_at(["producer", "x"], NOW - 60_000)[0].last_heartbeat_ms, NOW - 30_000);
    assert_eq!(p.tier("producer").unwrap().down_since_ms, Some(NOW - 30_000));
    assert_eq!(p.tier("broker").unwrap().down_since_ms, Some(NOW - 30_000), "a dead tap is down, not indeterminate");
    assert!(p.tier("broker").unwrap().vanished.is_empty());

    let revived = [beat("producer", "p-1", NOW - 30_000, false, false), beat("producer", "p-2", NOW, false, false)];
    assert_eq!(TopicProgress::new(&[], &revived, NOW, L).tier("producer").unwrap().down_since_ms, None);
    let old = [beat("producer", "p-1", NOW - 3_700_000, false, false)];
    let t = TopicProgress::new(&[], &old, NOW, L).tier("producer").unwrap().clone();
    assert_eq!((t.down_since_ms, t.vanished.len()), (None, 1), "past the window: retired, not down");
}

#[test]
fn a_crashed_instance_holds_its_tier_until_a_successor_reports() {
    let progress = [stream("producer", StreamId::Agent("crashed".into()), "crashed", 5_000, false)];
    let beats = [beat("producer", "crashed", NOW - 100_000, false, false)];
    assert_eq!(TopicProgress::new(&progress, &beats, NOW, L).watermark("producer"), Some(5_000));
    let mut with_successor = progress.to_vec();
    with_successor.push(stream("producer", StreamId::Agent("next".into()), "next", 9_000, false));
    let mut beats = beats.to_vec();
    beats.push(beat("producer", "next", NOW, false, false));
    assert_eq!(TopicProgress::new(&with_successor, &beats, NOW, L).watermark("producer"), Some(9_000));
}

#[test]
fn a_crashed_instance_followed_by_a_cleanly_stopped_successor_holds_nothing_back() {
    let progress = [
        stream("producer", StreamId::Agent("crashed".into()), "crashed", 5_000, false),
        stream("producer", StreamId::Agent("successor".into()), "successor", 9_000, false),
    ];
    let beats =
        [beat("producer", "crashed", NOW - 100_000, false, false), beat("producer", "successor", NOW, true, false)];
    assert_eq!(TopicProgress::new(&progress, &beats, NOW, L).watermark("producer"), None);
}
