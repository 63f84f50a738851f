use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

/// A message as a tier records it.
type Msg = (u64, Option<Locator>);

fn sketch_of<'a>(msgs: impl IntoIterator<Item = &'a Msg>) -> DifferenceSketch {
    let mut s = DifferenceSketch::new(DEFAULT_GEOMETRY);
    msgs.into_iter().for_each(|(fp, loc)| s.insert(*fp, *loc));
    s
}

/// The sketch of `msgs` as `agents` agents would count them (round robin), merged.
fn merged(msgs: &[Msg], agents: usize) -> DifferenceSketch {
    let mut total = DifferenceSketch::new(DEFAULT_GEOMETRY);
    for a in 0..agents {
        let mine: Vec<&Msg> = msgs.iter().skip(a).step_by(agents).collect();
        total.merge(&sketch_of(mine)).unwrap();
    }
    total
}

/// Net copies by fingerprint, upstream minus downstream.
fn net(up: &[Msg], down: &[Msg]) -> BTreeMap<u64, i64> {
    let mut n: BTreeMap<u64, i64> = BTreeMap::new();
    up.iter().for_each(|(fp, _)| *n.entry(*fp).or_default() += 1);
    down.iter().for_each(|(fp, _)| *n.entry(*fp).or_default() -= 1);
    n.retain(|_, c| *c != 0);
    n
}

/// A pipeline's two tiers on one cluster: `base` messages both count, then `lost` only upstream,
/// `dups` extra copies downstream (each at its own new offset, `copies` of it), `replaced`
/// messages altered downstream at the same offset.
#[derive(Debug, Clone)]
struct Case {
    up: Vec<Msg>,
    down: Vec<Msg>,
}

fn case(seed: u64, base: usize, lost: usize, dups: &[u8], replaced: usize) -> Case {
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut offset = [0i64; 4];
    let mut at = |p: usize| {
        offset[p] += 1;
        Some(Locator { partition: p as i32, offset: offset[p] })
    };
    let shared: Vec<Msg> = (0..base + lost + dups.len() + replaced).map(|i| (next(), at(i % 4))).collect();
    let mut up = shared.clone();
    let mut down: Vec<Msg> = shared[..base].to_vec();
    let kept = &shared[base + lost..];
    for (i, copies) in dups.iter().enumerate() {
        down.push(kept[i]);
        for _ in 0..*copies {
            let p = (kept[i].1.unwrap().partition) as usize;
            down.push((kept[i].0, at(p)));
        }
    }
    for m in &kept[dups.len()..] {
        down.push((next(), m.1)); // same offset, other content
    }
    let turn = seed as usize % up.len().max(1);
    up.rotate_left(turn);
    Case { up, down }
}

/// Every named difference is a true one: its net copies exact, its locator (if any) where the
/// message is.
fn assert_true(c: &Case, d: &Decoded) {
    let truth = net(&c.up, &c.down);
    for x in &d.differences {
        assert_eq!(truth.get(&x.fingerprint), Some(&x.copies), "{x:?} is not a difference");
        if let Some(loc) = x.locator {
            let side = if x.copies > 0 { &c.up } else { &c.down };
            assert!(side.contains(&(x.fingerprint, Some(loc))), "{x:?}: wrong locator");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Up to 12 differences of every kind at once, counted by 1 to 3 agents per tier, decode
    /// exactly: every loss and every extra copy, each single copy with its locator.
    #[test]
    fn differences_within_capacity_decode_exactly(
        seed in any::<u64>(), base in 0usize..300, lost in 0usize..5,
        dups in prop::collection::vec(1u8..3, 0..3), replaced in 0usize..3, agents in 1usize..4,
    ) {
        let c = case(seed, base, lost, &dups, replaced);
        let diff = merged(&c.up, agents).subtract(&merged(&c.down, 1 + agents % 2)).unwrap();
        let d = diff.decode();
        prop_assert!(d.complete, "{:?}", c);
        assert_true(&c, &d);
        let named: BTreeMap<u64, i64> = d.differences.iter().map(|x| (x.fingerprint, x.copies)).collect();
        prop_assert_eq!(named, net(&c.up, &c.down));
        prop_assert_eq!(d.differences.iter().filter(|x| x.copies > 0).map(|x| x.copies).sum::<i64>() as usize, lost + replaced);
        // Several extra copies of one message cannot be told apart by locator, and leave their
        // locator sums in their cells; without them, every single copy is located.
        if dups.iter().all(|copies| *copies == 1) {
            for x in &d.differences {
                prop_assert!(x.locator.is_some(), "one cluster: every single copy located, {:?}", x);
            }
        }
    }

    /// Past capacity: never a wrong message; complete only when exact.
    #[test]
    fn beyond_capacity_names_only_true_messages(seed in any::<u64>(), lost in 40usize..200, n in 0u8..40) {
        let dups: Vec<u8> = (0..n).map(|i| 1 + i % 3).collect();
        let c = case(seed, 50, lost, &dups, 5);
        let d = sketch_of(&c.up).subtract(&sketch_of(&c.down)).unwrap().decode();
        assert_true(&c, &d);
        if d.complete {
            prop_assert_eq!(d.differences.len(), net(&c.up, &c.down).len());
        }
    }

    /// Merge commutes and associates, with the empty sketch as identity.
    #[test]
    fn merge_commutes_and_associates(seed in any::<u64>(), a in 0usize..50, b in 0usize..50) {
        let x = case(seed, a, 0, &[], 0).up;
        let y = case(seed ^ 1, b, 0, &[], 0).up;
        let z = case(seed ^ 2, 7, 0, &[], 0).up;
        let (sx, sy, sz) = (sketch_of(&x), sketch_of(&y), sketch_of(&z));
        let mut xy = sx.clone(); xy.merge(&sy).unwrap();
        let mut yx = sy.clone(); yx.merge(&sx).unwrap();
        prop_assert_eq!(&xy, &yx);
        let mut left = xy.clone(); left.merge(&sz).unwrap();
        let mut yz = sy.clone(); yz.merge(&sz).unwrap();
        let mut right = sx.clone(); right.merge(&yz).unwrap();
        prop_assert_eq!(&left, &right);
        let mut with_empty = left.clone(); with_empty.merge(&DifferenceSketch::new(DEFAULT_GEOMETRY)).unwrap();
        prop_assert_eq!(&with_empty, &left);
        prop_assert_eq!(merged(&x, 3), sx);
    }

    /// Rows are cumulative per agent: keeping each agent's latest and summing agents is the same
    /// whatever was delivered twice or out of order.
    #[test]
    fn latest_per_agent_then_sum_is_idempotent(seed in any::<u64>(), n in 1usize..60, cut in 0usize..60) {
        let msgs = case(seed, n, 0, &[], 0).up;
        let cut = cut.min(msgs.len());
        // Agent a flushes twice (cumulative), agent b once; the first flush of a is delivered again late.
        let a_early = sketch_of(&msgs[..cut / 2]);
        let a_late = sketch_of(&msgs[..cut]);
        let b = sketch_of(&msgs[cut..]);
        let mut latest: BTreeMap<&str, (u32, DifferenceSketch)> = BTreeMap::new();
        for (agent, version, s) in [("a", 1, &a_early), ("a", 2, &a_late), ("b", 1, &b), ("a", 1, &a_early)] {
            let e = latest.entry(agent).or_insert((version, s.clone()));
            if version >= e.0 { *e = (version, s.clone()); }
        }
        let mut total = DifferenceSketch::new(DEFAULT_GEOMETRY);
        latest.values().for_each(|(_, s)| total.merge(s).unwrap());
        prop_assert_eq!(total, sketch_of(&msgs));
    }

    /// Any bytes decode to a sketch or a clear error, never a panic; a sketch round-trips.
    #[test]
    fn bytes_round_trip_and_garbage_is_refused(seed in any::<u64>(), garbage in prop::collection::vec(any::<u8>(), 0..400)) {
        let s = sketch_of(&case(seed, 20, 0, &[], 0).up);
        let bytes = s.to_bytes();
        prop_assert_eq!(bytes.len(), DEFAULT_GEOMETRY.bytes());
        prop_assert_eq!(DifferenceSketch::from_bytes(&bytes).unwrap(), s);
        let _ = DifferenceSketch::from_bytes(&garbage);
        prop_assert!(DifferenceSketch::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    }
}

#[test]
fn corrupt_bytes_say_what_is_wrong() {
    let bytes = DifferenceSketch::new(DEFAULT_GEOMETRY).to_bytes();
    let mut v2 = bytes.clone();
    v2[0] = 2;
    assert!(DifferenceSketch::from_bytes(&v2).unwrap_err().to_string().contains("format version 2"));
    assert!(DifferenceSketch::from_bytes(&[1, 2]).unwrap_err().to_string().contains("shorter than the header"));
    let mut bad = bytes.clone();
    bad[1] = 9;
    assert!(DifferenceSketch::from_bytes(&bad).unwrap_err().to_string().contains("hashes must be 3 to 8"));
    let other = DifferenceSketch::new(Geometry { cells: 60, hashes: 5 });
    assert!(matches!(DifferenceSketch::new(DEFAULT_GEOMETRY).merge(&other), Err(DifferenceError::Mismatch(..))));
    assert!(Geometry { cells: 81, hashes: 4 }.checked().is_err());
}

/// Loss and duplicates in one bucket both come out, where counts alone would net to nothing.
#[test]
fn three_lost_and_three_duplicated_do_not_cancel() {
    let c = case(7, 100, 3, &[1, 1, 1], 0);
    assert_eq!(c.up.len(), c.down.len(), "equal counts");
    let d = sketch_of(&c.up).subtract(&sketch_of(&c.down)).unwrap().decode();
    assert!(d.complete);
    let lost: i64 = d.differences.iter().filter(|x| x.copies > 0).map(|x| x.copies).sum();
    let extra: i64 = -d.differences.iter().filter(|x| x.copies < 0).map(|x| x.copies).sum::<i64>();
    assert_eq!((lost, extra), (3, 3));
    assert!(d.differences.iter().all(|x| x.locator.is_some()));
}

/// Tiers on different clusters: one message at different offsets cancels in count but not in
/// locator sums; a lost message sharing a cell with it is named without a locator, never a wrong one.
#[test]
fn locators_from_another_cluster_are_withheld_not_wrong() {
    let mut withheld = 0;
    for seed in 1..200u64 {
        let c = case(seed, 40, 2, &[], 0);
        // Downstream re-numbers every offset (a mirror).
        let down: Vec<Msg> =
            c.down.iter().map(|(fp, l)| (*fp, l.map(|l| Locator { offset: l.offset + 1_000, ..l }))).collect();
        let moved = Case { up: c.up.clone(), down };
        let d = sketch_of(&moved.up).subtract(&sketch_of(&moved.down)).unwrap().decode();
        assert_true(&moved, &d);
        assert_eq!(d.differences.len(), 2, "seed {seed}: the two losses are named by fingerprint");
        withheld += d.differences.iter().filter(|x| x.locator.is_none()).count();
    }
    assert!(withheld > 300, "with 40 moved messages nearly every cell is polluted: {withheld}");
}

#[test]
fn many_copies_of_one_message_decode() {
    for copies in 1..=20u8 {
        let c = case(u64::from(copies), 30, 0, &[copies], 0);
        let d = sketch_of(&c.up).subtract(&sketch_of(&c.down)).unwrap().decode();
        assert_true(&c, &d);
        if copies <= 16 && copies.trailing_zeros() <= 4 {
            assert!(d.complete, "{copies} copies");
            assert_eq!(d.differences[0].copies, -i64::from(copies));
        }
    }
}

/// Partition and offset are hashed apart: a locator whose bits, combined naively, equal another's
/// (partition 1 offset 0 and partition 0 offset 2^40) has its own check hash.
#[test]
fn locator_checks_do_not_alias_across_partitions() {
    for fp in [0u64, 7, u64::MAX] {
        assert_ne!(locator_check(fp, 1, 1), locator_check(fp, 0, (1 << 40) + 1));
        assert_ne!(locator_check(fp, 2, 5), locator_check(fp, 5, 2));
    }
}

/// Millions of copies of one payload (identical messages share a fingerprint) decode at once.
#[test]
fn a_huge_number_of_copies_is_removed_in_one_step() {
    let mut up = DifferenceSketch::new(DEFAULT_GEOMETRY);
    let down = DifferenceSketch::new(DEFAULT_GEOMETRY);
    up.add(10_000_001, 42, None);
    let started = std::time::Instant::now();
    let d = up.subtract(&down).unwrap().decode();
    assert!(d.complete);
    assert_eq!(d.differences[0].copies, 10_000_001);
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
}
