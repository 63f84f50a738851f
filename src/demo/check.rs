//! Whether the verifier found exactly what the demo injected: every bucket on each of the three
//! edges, the stored verdict beside the ledger's truth, the messages it names beside those the
//! demo injected, and the tables that show both. Pure logic.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use kaudit_schema::{EpochMillis, NamedDifferences, NamedKind, NamedMessage, Outcome, VerdictRow};

use super::faults::{ANALYTICS, BILLING, BROKER, BucketFaults, FaultPlan, Ledger};

/// Named messages shown per edge, bucket and kind; the check covers them all.
const SHOWN: usize = 2;

/// One edge of one bucket: what was injected beside what the verifier concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeCheck {
    pub bucket_start_ms: EpochMillis,
    pub tier: &'static str,
    pub injected: String,
    pub detected: String,
    pub matches: bool,
    /// The messages the verdict names, when a difference was injected or named.
    pub naming: Option<Naming>,
}

impl EdgeCheck {
    /// Whether every difference on this edge was named (or there was none to name).
    pub fn named_whole(&self) -> bool {
        self.naming.as_ref().is_none_or(|n| n.verdict == NamingVerdict::Exact)
    }
}

/// The messages one verdict names, against those injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    pub verdict: NamingVerdict,
    /// The named messages the verdict keeps, each with whether the demo injected it.
    pub messages: Vec<(NamedMessage, bool)>,
    /// Messages named in all (`messages` keeps the first [`NamedDifferences::KEPT`]).
    pub total: u64,
}

/// What the names of one edge and bucket came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamingVerdict {
    /// Every injected message named, and nothing else.
    Exact,
    /// The verdict says it could not name every difference, and those it named were each
    /// injected: past the sketch's `capacity` there were too many; within it, peeling stopped
    /// short (a set of differences sharing all their cells: about one bucket in a thousand at 20
    /// differences, fewer below), honest but rare: the demo's tests allow one per run.
    Partial { differences: usize, capacity: usize },
    /// The names disagree with what was injected.
    Wrong(String),
}

/// A message named on an edge: its kind, fingerprint and, where the tiers recorded it, locator.
type Name = (NamedKind, u64, Option<(i32, i64)>);

/// The differences injected on `tier`'s edge in one bucket.
fn injected_names(tier: &str, faults: &BucketFaults) -> Vec<Name> {
    match tier {
        BROKER => faults.lost.iter().map(|fp| (NamedKind::Lost, *fp, None)).collect(),
        BILLING => {
            let lost =
                faults.billing_lost.iter().map(|m| (NamedKind::Lost, m.fingerprint, Some((m.partition, m.offset))));
            let extra =
                faults.duplicated.iter().map(|m| (NamedKind::Extra, m.fingerprint, Some((m.partition, m.offset))));
            lost.chain(extra).collect()
        }
        _ => Vec::new(),
    }
}

fn name_of(m: &NamedMessage) -> Option<Name> {
    let fp = u64::from_str_radix(&m.fingerprint, 16).ok()?;
    Some((m.kind, fp, m.partition.zip(m.offset)))
}

fn named_of(row: &VerdictRow) -> Option<&NamedDifferences> {
    row.detail.as_ref().and_then(|d| d.named.as_ref())
}

/// The verdict's names against what was injected on its edge: every named message must be one
/// injected (one copy, at its partition and offset where the tier recorded them); when the
/// verdict says it named them all, every injected one must be named and the counts exact; when it
/// says it could not, those it named must still be injected ones (past `capacity` that is "too
/// many to name"; within it, a rare peeling failure, reported apart). `None`: nothing injected and
/// nothing named, or a verdict that cannot name (the agents keep no sketches, or the producer's
/// crash left the bucket indeterminate).
fn check_names(
    tier: &str,
    faults: &BucketFaults,
    row: &VerdictRow,
    plan: &FaultPlan,
    capacity: usize,
) -> Option<Naming> {
    let injected = injected_names(tier, faults);
    let named = named_of(row);
    if !plan.sketches || row.kind.outcome == Outcome::Indeterminate || (injected.is_empty() && named.is_none()) {
        return None;
    }
    let wanted: BTreeSet<Name> = injected.iter().copied().collect();
    let Some(n) = named else {
        let reason = format!("{} injected, none named", injected.len());
        return Some(Naming { verdict: NamingVerdict::Wrong(reason), messages: Vec::new(), total: 0 });
    };
    let messages: Vec<(NamedMessage, bool)> = n
        .messages
        .iter()
        .map(|m| (m.clone(), m.copies == 1 && name_of(m).is_some_and(|name| wanted.contains(&name))))
        .collect();
    let count = |kind| injected.iter().filter(|(k, _, _)| *k == kind).count() as u64;
    let listed: BTreeSet<Name> = n.messages.iter().filter_map(name_of).collect();
    let verdict = if let Some((m, _)) = messages.iter().find(|(_, ok)| !ok) {
        NamingVerdict::Wrong(format!("names {} {} that was not injected", kind_text(m.kind), m.fingerprint))
    } else if n.complete {
        let all_listed = n.total as usize > NamedDifferences::KEPT || wanted.is_subset(&listed);
        if (n.lost, n.extra, n.altered) == (count(NamedKind::Lost), count(NamedKind::Extra), 0) && all_listed {
            NamingVerdict::Exact
        } else {
            NamingVerdict::Wrong(format!("named {} lost and {} extra, {} injected", n.lost, n.extra, injected.len()))
        }
    } else {
        NamingVerdict::Partial { differences: injected.len(), capacity }
    };
    Some(Naming { verdict, messages, total: n.total })
}

fn kind_text(kind: NamedKind) -> &'static str {
    match kind {
        NamedKind::Lost => "lost",
        NamedKind::Extra => "dup",
        NamedKind::Altered => "altered",
    }
}

/// "lost 3 + dup 2", "lost 3", "dup 2"; "-" for neither.
fn lost_and_dup(lost: u64, dup: u64) -> String {
    let parts: Vec<String> =
        [("lost", lost), ("dup", dup)].iter().filter(|(_, n)| *n > 0).map(|(w, n)| format!("{w} {n}")).collect();
    if parts.is_empty() { "-".into() } else { parts.join(" + ") }
}

fn describe(row: &VerdictRow) -> String {
    let whole = named_of(row).filter(|n| n.complete);
    let mut text = match (row.kind.outcome, whole) {
        (Outcome::Loss | Outcome::Duplicates, Some(n)) => lost_and_dup(n.lost, n.extra),
        (Outcome::Loss, None) => format!("lost {}", row.upstream_count.saturating_sub(row.count)),
        (Outcome::Duplicates, None) => format!("dup {}", row.count.saturating_sub(row.upstream_count)),
        (other, _) => other.as_str().replace('_', " "),
    };
    if row.kind.delayed {
        let _ = write!(text, ", p99 {} ms", row.p99_ms.unwrap_or(0));
    }
    text
}

/// Compare every bucket of the ledger, on each of the three edges, with the stored verdicts.
///
/// A bucket matches when: the broker's verdict is `loss` of exactly the lost count (naming the
/// fingerprint when one message was lost) or `complete` when none was, or `indeterminate` inside
/// the crash window of `--crash-producer`; billing's carries exactly what it lost and duplicated
/// (both counted when the sketches name every message; otherwise their net count, as a loss,
/// duplicates or, when they balance, a content mismatch); analytics' is `complete`; analytics is
/// flagged late exactly in the buckets whose messages were delayed past the threshold, billing
/// exactly where its pause made it so (either way where it was too close to call), the broker
/// never. Upstream counts must equal what was produced (and, downstream of the broker, produced
/// minus lost). The named messages must be the injected ones (see [`check_names`]), up to
/// `capacity` differences per edge and bucket. A verdict still `pending` at the end matches
/// nothing.
pub fn check(
    ledger: &Ledger,
    verdicts: &[VerdictRow],
    plan: &FaultPlan,
    delay_threshold_ms: u64,
    capacity: usize,
) -> Vec<EdgeCheck> {
    let by_key: BTreeMap<(EpochMillis, &str), &VerdictRow> =
        verdicts.iter().map(|v| ((v.bucket_start_ms, v.tier.as_str()), v)).collect();
    let mut out = Vec::new();
    for (&bucket, faults) in ledger.buckets() {
        for tier in [BROKER, BILLING, ANALYTICS] {
            let (detected, matches, naming) = match by_key.get(&(bucket, tier)) {
                Some(row) => {
                    let naming = check_names(tier, faults, row, plan, capacity);
                    let names_ok = !naming.as_ref().is_some_and(|n| matches!(n.verdict, NamingVerdict::Wrong(_)));
                    let counts_ok = edge_matches(tier, faults, row, plan, delay_threshold_ms);
                    (describe(row), counts_ok && names_ok, naming)
                }
                None => ("not evaluated".to_string(), false, None),
            };
            out.push(EdgeCheck {
                bucket_start_ms: bucket,
                tier,
                injected: injected(tier, faults, plan),
                detected,
                matches,
                naming,
            });
        }
    }
    out
}

fn injected(tier: &str, faults: &BucketFaults, plan: &FaultPlan) -> String {
    match tier {
        BROKER => lost_and_dup(faults.lost.len() as u64, 0),
        BILLING => lost_and_dup(faults.billing_lost.len() as u64, faults.duplicated.len() as u64),
        ANALYTICS if faults.delayed > 0 => format!("+{} ms", plan.delay_ms),
        _ => "-".into(),
    }
}

fn edge_matches(
    tier: &str,
    faults: &BucketFaults,
    row: &VerdictRow,
    plan: &FaultPlan,
    delay_threshold_ms: u64,
) -> bool {
    let lost = faults.lost.len() as u64;
    let at_broker = faults.produced - lost;
    let bucket = row.bucket_start_ms;
    match (tier, row.kind.outcome, row.kind.delayed) {
        (BROKER, Outcome::Indeterminate, false) => plan.in_crash_window(bucket),
        (BROKER, _, _) if row.upstream_count != faults.produced => false,
        _ if tier != BROKER && row.upstream_count != at_broker => false,
        (BROKER, Outcome::Complete, false) => lost == 0,
        (BROKER, Outcome::Loss, false) => {
            let named = lost != 1 || row.lost_fingerprint == Some(faults.lost[0]);
            lost > 0 && row.upstream_count - row.count == lost && named
        }
        (BILLING, outcome, late) => {
            let (l, d) = (faults.billing_lost.len() as u64, faults.duplicated.len() as u64);
            let whole = named_of(row).is_some_and(|n| n.complete);
            let expected = match l.cmp(&d) {
                _ if l + d == 0 => Outcome::Complete,
                _ if whole && l > 0 => Outcome::Loss,
                _ if whole => Outcome::Duplicates,
                Ordering::Greater => Outcome::Loss,
                Ordering::Less => Outcome::Duplicates,
                Ordering::Equal => Outcome::ContentMismatch,
            };
            let count_ok = row.count + l == at_broker + d;
            count_ok && outcome == expected && faults.billing.expected_delay().is_none_or(|x| x == late)
        }
        (ANALYTICS, Outcome::Complete, late) => late == (faults.delayed > 0 && plan.delay_ms > delay_threshold_ms),
        _ => false,
    }
}

/// The injected-versus-detected table, one line per bucket.
pub fn render(ledger: &Ledger, checks: &[EdgeCheck], utc: impl Fn(EpochMillis) -> String) -> String {
    let mut out = String::new();
    let first = format!(
        "{:<19} {:>9}  {:<40}  {:<40}  {}",
        "", "", "broker vs producer", "consumer/billing vs broker", "consumer/analytics vs broker"
    );
    let head = format!("{:<17} {:<22}", "injected", "detected");
    let _ = writeln!(out, "{}", first.trim_end());
    let _ = writeln!(out, "{:<19} {:>9}  {head}  {head}  {}", "bucket (UTC)", "produced", head.trim_end());
    for (bucket, faults) in ledger.buckets() {
        let _ = write!(out, "{:<19} {:>9}", utc(*bucket), faults.produced);
        for c in checks.iter().filter(|c| c.bucket_start_ms == *bucket) {
            let mark = if c.matches { "" } else { " ✗" };
            let _ = write!(out, "  {:<17} {:<22}", c.injected, format!("{}{mark}", c.detected));
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    out
}

/// The messages the verdicts name, per bucket and edge: the first few of each kind, marked `✓` when
/// the demo injected that very message (at that partition and offset) and `✗` when not, then how
/// many more; "too many to name" where there were more than the sketch names whole. Empty when
/// nothing was named or injected.
pub fn render_names(checks: &[EdgeCheck], utc: impl Fn(EpochMillis) -> String) -> String {
    let mut out = String::new();
    let mut last_bucket = None;
    for c in checks {
        let Some(naming) = &c.naming else { continue };
        let when = if last_bucket == Some(c.bucket_start_ms) { String::new() } else { utc(c.bucket_start_ms) };
        last_bucket = Some(c.bucket_start_ms);
        let lead = format!("{when:<19}  {:<18}", c.tier);
        let blank = " ".repeat(lead.chars().count());
        let mut lines = Vec::new();
        match &naming.verdict {
            NamingVerdict::Partial { differences, capacity } => {
                let why = if differences > capacity {
                    format!("too many to name: {differences} differences, the sketch names about {capacity} whole")
                } else {
                    format!(
                        "could not name all {differences} differences (peeling stopped short: rare within the \
                         capacity of {capacity}, about one bucket in a thousand at {capacity})"
                    )
                };
                let named = match naming.total {
                    0 => "it named none".to_string(),
                    n => format!("the {n} it named were each injected"),
                };
                lines.push(format!("{why}; {named} ✓"));
            }
            NamingVerdict::Wrong(reason) => lines.push(format!("✗ {reason}")),
            NamingVerdict::Exact => {}
        }
        let mut shown: Vec<&(NamedMessage, bool)> = naming.messages.iter().filter(|(_, ok)| !ok).collect();
        for kind in [NamedKind::Altered, NamedKind::Lost, NamedKind::Extra] {
            shown.extend(naming.messages.iter().filter(|(m, ok)| *ok && m.kind == kind).take(SHOWN));
        }
        for (m, ok) in &shown {
            let place = match (m.partition, m.offset) {
                (Some(p), Some(o)) => format!("partition {p} offset {o}"),
                _ if c.tier == BROKER => "no offset: it never reached the broker".into(),
                _ => "no offset".into(),
            };
            let mark = if *ok { "✓ injected" } else { "✗ not injected" };
            lines.push(format!("{:<4} {}  {place:<28}  {mark}", kind_text(m.kind), m.fingerprint));
        }
        let more = naming.total.saturating_sub(shown.len() as u64);
        if more > 0 && naming.verdict == NamingVerdict::Exact {
            lines.push(format!("… and {more} more, each injected"));
        }
        for (i, line) in lines.iter().enumerate() {
            let _ = writeln!(out, "{}{line}", if i == 0 { &lead } else { &blank });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::faults::{Injected, PRODUCER, TOPIC};

    fn row(bucket: i64, tier: &str, kind: &str, upstream: u64, count: u64) -> VerdictRow {
        VerdictRow {
            topic: TOPIC.into(),
            bucket_start_ms: bucket,
            tier: tier.into(),
            upstream_tier: if tier == BROKER { PRODUCER.into() } else { BROKER.into() },
            kind: kind.parse().unwrap(),
            upstream_count: upstream,
            count,
            lost_fingerprint: None,
            p99_ms: kind.ends_with("+delay").then_some(2_010),
            evaluated_at_ms: 0,
            detail: None,
        }
    }

    fn plan() -> FaultPlan {
        FaultPlan {
            loss: 0.01,
            duplicates: 0.01,
            consumer_loss: 0.0,
            sketches: false,
            delay_ms: 2_000,
            from_ms: 10_000,
            pause_ms: 0,
            crash_at_ms: None,
            crash_window: None,
        }
    }

    /// Bucket 0 clean, bucket 10000 with 2 lost, 3 duplicated and every message delayed.
    fn ledger() -> Ledger {
        let mut l = Ledger::default();
        for _ in 0..100 {
            l.produced(0);
            l.produced(10_000);
        }
        l.lost(10_000, 0xaa);
        l.lost(10_000, 0xbb);
        for i in 0..3 {
            l.duplicated(10_000, Injected { fingerprint: 0xd0 + i, partition: 0, offset: i as i64 });
        }
        for _ in 0..98 {
            l.delayed(10_000);
        }
        l
    }

    fn exact() -> Vec<VerdictRow> {
        vec![
            row(0, BROKER, "complete", 100, 100),
            row(0, BILLING, "complete", 100, 100),
            row(0, ANALYTICS, "complete", 100, 100),
            row(10_000, BROKER, "loss", 100, 98),
            row(10_000, BILLING, "duplicates", 98, 101),
            row(10_000, ANALYTICS, "complete+delay", 98, 98),
        ]
    }

    #[test]
    fn exact_detection_matches_every_edge() {
        let checks = check(&ledger(), &exact(), &plan(), 1_000, 20);
        assert_eq!(checks.len(), 6);
        assert!(checks.iter().all(|c| c.matches), "{checks:#?}");
        let table = render(&ledger(), &checks, |ms| ms.to_string());
        assert!(table.contains("lost 2"), "{table}");
        assert!(table.contains("p99 2010 ms"), "{table}");
        assert!(!table.contains('✗'), "{table}");
    }

    #[test]
    fn every_kind_of_disagreement_is_a_mismatch() {
        let cases: Vec<(usize, VerdictRow)> = vec![
            (3, row(10_000, BROKER, "loss", 100, 97)),       // wrong count
            (3, row(10_000, BROKER, "loss+delay", 100, 98)), // broker flagged late
            (3, row(10_000, BROKER, "loss", 101, 99)),       // upstream count off
            (0, row(0, BROKER, "loss", 100, 99)),            // loss where none was injected
            (4, row(10_000, BILLING, "complete", 98, 98)),   // duplicates missed
            (4, row(10_000, BILLING, "duplicates+delay", 98, 101)),
            (5, row(10_000, ANALYTICS, "complete", 98, 98)), // delay missed
            (2, row(0, ANALYTICS, "complete+delay", 100, 100)), // delay where none was injected
            (2, row(0, ANALYTICS, "loss", 100, 99)),
        ];
        for (i, wrong) in cases {
            let mut rows = exact();
            rows[i] = wrong.clone();
            let checks = check(&ledger(), &rows, &plan(), 1_000, 20);
            let bad: Vec<_> = checks.iter().filter(|c| !c.matches).collect();
            assert_eq!(bad.len(), 1, "{wrong:?} → {checks:#?}");
            assert_eq!(
                (bad[0].bucket_start_ms, bad[0].tier),
                (wrong.bucket_start_ms, [BROKER, BILLING, ANALYTICS][i % 3])
            );
        }
        let mut missing = exact();
        missing.pop();
        let checks = check(&ledger(), &missing, &plan(), 1_000, 20);
        assert_eq!(checks.iter().filter(|c| !c.matches).count(), 1);
        assert!(checks.iter().any(|c| c.detected == "not evaluated"));
    }

    #[test]
    fn a_single_loss_must_be_named() {
        let mut l = Ledger::default();
        for _ in 0..10 {
            l.produced(0);
        }
        l.lost(0, 0x1234);
        let mut rows =
            vec![row(0, BROKER, "loss", 10, 9), row(0, BILLING, "complete", 9, 9), row(0, ANALYTICS, "complete", 9, 9)];
        assert!(!check(&l, &rows, &plan(), 1_000, 20)[0].matches, "no fingerprint named");
        rows[0].lost_fingerprint = Some(0x9999);
        assert!(!check(&l, &rows, &plan(), 1_000, 20)[0].matches, "the wrong fingerprint");
        rows[0].lost_fingerprint = Some(0x1234);
        assert!(check(&l, &rows, &plan(), 1_000, 20).iter().all(|c| c.matches));
    }

    #[test]
    fn a_delay_under_the_threshold_is_not_expected_to_alert() {
        let l = ledger();
        let (must, may) = l.expected_alerts(&plan(), 1_000, |_| false);
        assert_eq!(
            must.into_iter().collect::<Vec<_>>(),
            ["delay/orders/consumer/analytics", "duplicates/orders/consumer/billing", "loss/orders/broker"]
        );
        assert!(may.is_empty());
        let quiet = FaultPlan { delay_ms: 500, ..plan() };
        assert!(!l.expected_alerts(&quiet, 1_000, |_| false).0.contains("delay/orders/consumer/analytics"));
        let mut rows = exact();
        rows[5] = row(10_000, ANALYTICS, "complete", 98, 98);
        assert!(check(&l, &rows, &quiet, 1_000, 20).iter().all(|c| c.matches));
        assert_eq!(Ledger::default().expected_alerts(&plan(), 1_000, |_| false).0.len(), 0);
    }

    #[test]
    fn a_crash_window_allows_indeterminate_and_makes_its_loss_alert_optional() {
        let l = ledger();
        let crashed = FaultPlan { crash_at_ms: Some(12_000), crash_window: Some((10_000, 10_000)), ..plan() };
        let mut rows = exact();
        rows[3] = row(10_000, BROKER, "indeterminate", 100, 101);
        assert!(!check(&l, &rows, &plan(), 1_000, 20)[3].matches, "indeterminate outside a crash window");
        assert!(check(&l, &rows, &crashed, 1_000, 20).iter().all(|c| c.matches));
        let (must, may) = l.expected_alerts(&crashed, 1_000, |_| false);
        assert!(!must.contains("loss/orders/broker") && may.contains("loss/orders/broker"));
        rows[0] = row(0, BROKER, "indeterminate", 100, 101);
        assert!(!check(&l, &rows, &crashed, 1_000, 20)[0].matches, "before the window");
        rows[0] = row(0, BROKER, "pending", 100, 100);
        assert!(!check(&l, &rows, &crashed, 1_000, 20)[0].matches, "pending is no verdict");
    }

    #[test]
    fn a_paused_consumer_expects_lag_and_its_own_delay_where_the_pause_made_it_late() {
        let mut l = ledger();
        for latency in (0..100).map(|i| if i < 50 { 20_000 } else { 10 }) {
            l.billing_latency(10_000, latency, 1_000);
        }
        for _ in 0..100 {
            l.billing_latency(0, 10, 1_000);
        }
        let paused = FaultPlan { pause_ms: 20_000, ..plan() };
        let (must, _) = l.expected_alerts(&paused, 1_000, |_| false);
        assert!(must.contains("lag/orders/consumer/billing") && must.contains("delay/orders/consumer/billing"));
        let mut rows = exact();
        assert!(!check(&l, &rows, &paused, 1_000, 20)[4].matches, "billing's late bucket must be flagged");
        rows[4] = row(10_000, BILLING, "duplicates+delay", 98, 101);
        assert!(check(&l, &rows, &paused, 1_000, 20).iter().all(|c| c.matches));
        rows[1] = row(0, BILLING, "complete+delay", 100, 100);
        assert!(!check(&l, &rows, &paused, 1_000, 20)[1].matches, "on time: not late");
    }

    fn message(kind: NamedKind, fingerprint: u64, at: Option<(i32, i64)>) -> NamedMessage {
        NamedMessage {
            kind,
            fingerprint: format!("{fingerprint:016x}"),
            copies: 1,
            partition: at.map(|a| a.0),
            offset: at.map(|a| a.1),
            replaced_by: None,
        }
    }

    fn with_names(mut row: VerdictRow, messages: Vec<NamedMessage>, complete: bool) -> VerdictRow {
        let count = |kind| messages.iter().filter(|m| m.kind == kind).count() as u64;
        let named = NamedDifferences {
            complete,
            lost: count(NamedKind::Lost),
            extra: count(NamedKind::Extra),
            altered: count(NamedKind::Altered),
            total: messages.len() as u64,
            messages,
        };
        row.detail = Some(kaudit_schema::VerdictDetail { named: Some(named), ..Default::default() });
        row
    }

    /// [`ledger`] plus two messages billing dropped in the bucket where it duplicated three: its
    /// count (99) is 98 − 2 + 3.
    fn billing_ledger() -> Ledger {
        let mut l = ledger();
        l.billing_lost(10_000, Injected { fingerprint: 0xe1, partition: 2, offset: 40 });
        l.billing_lost(10_000, Injected { fingerprint: 0xe2, partition: 3, offset: 41 });
        l
    }

    fn broker_names() -> Vec<NamedMessage> {
        vec![message(NamedKind::Lost, 0xaa, None), message(NamedKind::Lost, 0xbb, None)]
    }

    fn billing_names() -> Vec<NamedMessage> {
        let mut names =
            vec![message(NamedKind::Lost, 0xe1, Some((2, 40))), message(NamedKind::Lost, 0xe2, Some((3, 41)))];
        names.extend((0..3).map(|i| message(NamedKind::Extra, 0xd0 + i, Some((0, i as i64)))));
        names
    }

    fn named_rows(billing: Vec<NamedMessage>, complete: bool, kind: &str) -> Vec<VerdictRow> {
        let mut rows = exact();
        rows[3] = with_names(rows[3].clone(), broker_names(), true);
        rows[4] = with_names(row(10_000, BILLING, kind, 98, 99), billing, complete);
        rows
    }

    fn sketched() -> FaultPlan {
        FaultPlan { sketches: true, consumer_loss: 0.01, ..plan() }
    }

    #[test]
    fn loss_and_duplicates_on_one_edge_are_both_counted_and_every_name_checked() {
        let l = billing_ledger();
        let checks = check(&l, &named_rows(billing_names(), true, "loss"), &sketched(), 1_000, 20);
        assert!(checks.iter().all(|c| c.matches), "{checks:#?}");
        assert_eq!((checks[4].injected.as_str(), checks[4].detected.as_str()), ("lost 2 + dup 3", "lost 2 + dup 3"));
        assert!(checks.iter().all(EdgeCheck::named_whole));
        let names = render_names(&checks, |ms| ms.to_string());
        assert!(names.contains("lost 00000000000000e1  partition 2 offset 40"), "{names}");
        assert!(names.contains("no offset: it never reached the broker"), "{names}");
        assert!(names.contains("dup  00000000000000d0  partition 0 offset 0"), "{names}");
        assert!(names.contains("… and 1 more, each injected"), "{names}");
        assert!(!names.contains('✗'), "{names}");

        let short = check(&l, &named_rows(billing_names()[..2].to_vec(), false, "duplicates"), &sketched(), 1_000, 20);
        assert!(short.iter().all(|c| c.matches), "{short:#?}");
        assert_eq!(short[4].naming.as_ref().unwrap().verdict, NamingVerdict::Partial { differences: 5, capacity: 20 });
        assert!(render_names(&short, |ms| ms.to_string()).contains("could not name all 5 differences"));
        let wrong: Vec<(&str, Vec<NamedMessage>, bool, &str)> = vec![
            ("a message not injected", swap(4, message(NamedKind::Extra, 0xd9, Some((0, 2))))),
            ("the right message at another offset", swap(0, message(NamedKind::Lost, 0xe1, Some((2, 41))))),
            ("an injected loss named as a copy", swap(0, message(NamedKind::Extra, 0xe1, Some((2, 40))))),
            ("one copy too many", {
                let mut n = billing_names();
                n[2].copies = 2;
                n
            }),
            ("an altered message", swap(1, NamedKind::Altered)),
            ("a name missing from a whole list", billing_names()[1..].to_vec()),
        ]
        .into_iter()
        .map(|(why, names)| (why, names, true, "loss"))
        .chain([
            (
                "a wrong name in a partial list",
                swap(0, message(NamedKind::Lost, 0xe9, Some((2, 40))))[..2].to_vec(),
                false,
                "duplicates",
            ),
            ("whole names, but the verdict by net counts", billing_names(), true, "duplicates"),
        ])
        .collect();
        for (why, names, complete, kind) in wrong {
            let checks = check(&l, &named_rows(names, complete, kind), &sketched(), 1_000, 20);
            let bad: Vec<_> = checks.iter().filter(|c| !c.matches).collect();
            assert_eq!(bad.len(), 1, "{why}: {checks:#?}");
            assert_eq!((bad[0].bucket_start_ms, bad[0].tier), (10_000, BILLING), "{why}");
        }
        let mut unnamed = named_rows(billing_names(), true, "loss");
        unnamed[3].detail = None;
        assert!(!check(&l, &unnamed, &sketched(), 1_000, 20)[3].matches, "the broker's losses were not named");
        assert!(check(&l, &unnamed, &plan(), 1_000, 20)[3].matches, "without sketches nothing is named");
    }

    /// `names` with the message at `i` replaced (or its kind changed).
    fn swap(i: usize, with: impl Into<Replacement>) -> Vec<NamedMessage> {
        let mut names = billing_names();
        match with.into() {
            Replacement::Message(m) => names[i] = m,
            Replacement::Kind(k) => names[i].kind = k,
        }
        names
    }

    enum Replacement {
        Message(NamedMessage),
        Kind(NamedKind),
    }

    impl From<NamedMessage> for Replacement {
        fn from(m: NamedMessage) -> Self {
            Self::Message(m)
        }
    }

    impl From<NamedKind> for Replacement {
        fn from(k: NamedKind) -> Self {
            Self::Kind(k)
        }
    }

    #[test]
    fn past_the_capacity_the_verdict_says_too_many_to_name() {
        let l = billing_ledger();
        // Five differences, a sketch that names four whole: two named, the net count a duplicate.
        let rows = named_rows(billing_names()[..2].to_vec(), false, "duplicates");
        let checks = check(&l, &rows, &sketched(), 1_000, 4);
        assert!(checks.iter().all(|c| c.matches), "{checks:#?}");
        assert_eq!(checks[4].naming.as_ref().unwrap().verdict, NamingVerdict::Partial { differences: 5, capacity: 4 });
        assert_eq!(checks[4].detected, "dup 1");
        assert!(!checks[4].named_whole());
        let names = render_names(&checks, |ms| ms.to_string());
        assert!(
            names.contains("too many to name: 5 differences, the sketch names about 4 whole; the 2 it named"),
            "{names}"
        );
        // The net count alone raises duplicates; the loss may or may not show.
        let (must, may) = l.expected_alerts(&sketched(), 1_000, |b| b == 10_000);
        assert!(must.contains("duplicates/orders/consumer/billing"), "{must:?}");
        assert!(may.contains("loss/orders/consumer/billing") && !must.contains("loss/orders/consumer/billing"));
        let (must, _) = l.expected_alerts(&sketched(), 1_000, |_| false);
        assert!(must.contains("loss/orders/consumer/billing") && must.contains("duplicates/orders/consumer/billing"));

        // A wrong name stays wrong past the capacity.
        let wrong = named_rows(vec![message(NamedKind::Lost, 0x77, Some((2, 40)))], false, "duplicates");
        assert!(!check(&l, &wrong, &sketched(), 1_000, 4)[4].matches);
    }
}
