//! Which topics this verifier instance evaluates and notifies about, and the fence that proves it
//! still may.
//!
//! One process alone owns every topic ([`Ownership::sole`]). Several share the topics through the
//! partitions of a coordination topic, assigned by a Kafka consumer group (the verifier's
//! `coordination` module): a topic belongs to shard `shard_of(topic, S)`, and an instance owns the
//! shards the group assigned it. The set only changes under the write side of a lock that every
//! evaluation pass and every delivery round holds for reading ([`Hold`]), so a revoked shard is
//! released only once the pass or delivery using it is over.
//!
//! Fencing: a member the group has already replaced (paused past its session timeout, cut off from
//! the brokers) may still believe it owns its shards. Before it writes verdicts, records alerts or
//! delivers, an instance proves its membership with the fence (an offset commit carrying its group
//! generation, which the group coordinator refuses from a replaced member), and acts only for a
//! lease after a successful fence: shorter than the time the group waits before handing its shards
//! to another member, so two instances never act for one shard at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{RwLock, RwLockReadGuard};

/// The shard of `topic` among `shards`: FNV-1a (64-bit) of its name, modulo `shards`. Fixed for a
/// given `shards`, whatever the number of instances.
pub fn shard_of(topic: &str, shards: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(shards.max(1))) as u32
}

/// The fence: resolves `Ok` when the group still counts this instance as a member of its current
/// generation, `Err(reason)` otherwise.
pub type Fence = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// This instance has lost (or not yet proven) its membership: it must not act for any shard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a member of the verifier group now: {0}")]
pub struct Fenced(pub String);

/// The shards owned, each with its epoch: a number that grows every time the shard changes hands
/// (stored by the group, bumped by each new owner), naming one tenure of one owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    pub epochs: BTreeMap<u32, i64>,
    /// Grows with every change of the set: a pass that sees a new version starts afresh.
    pub version: u64,
}

struct Shared {
    shards: u32,
    owner: String,
    lease: Duration,
    state: RwLock<Owned>,
    fence: Fence,
    /// When the last successful fence was sent.
    fenced_at: Mutex<Option<Instant>>,
    /// A hand-over is waiting for the holds to end: every [`Hold::ensure`] fails until it is done,
    /// so passes and delivery rounds stop at their next write or send instead of running on.
    revoking: std::sync::atomic::AtomicBool,
}

/// Which topics this instance owns; cheap to clone.
#[derive(Clone)]
pub struct Ownership {
    shared: Option<Arc<Shared>>,
    owner: Arc<str>,
}

impl Ownership {
    /// One instance owning every topic, with nothing to fence.
    pub fn sole(owner: impl Into<String>) -> Self {
        Self { shared: None, owner: owner.into().into() }
    }

    /// Topics in `shards` shards, of which this instance (named `owner`) owns none until the
    /// coordinator says so; acting needs a successful `fence` at most `lease` ago.
    pub fn sharded(shards: u32, owner: impl Into<String>, lease: Duration, fence: Fence) -> Self {
        let owner: String = owner.into();
        let shared = Shared {
            shards: shards.max(1),
            owner: owner.clone(),
            lease,
            state: RwLock::new(Owned::default()),
            fence,
            fenced_at: Mutex::new(None),
            revoking: std::sync::atomic::AtomicBool::new(false),
        };
        Self { shared: Some(Arc::new(shared)), owner: owner.into() }
    }

    /// This instance's name (written beside its verdicts).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The number of shards, `None` for a sole instance.
    pub fn shards(&self) -> Option<u32> {
        self.shared.as_ref().map(|s| s.shards)
    }

    /// The owned shards now, `None` for a sole instance (which owns everything) or while a
    /// hand-over holds the set.
    pub fn snapshot(&self) -> Option<Owned> {
        self.shared.as_ref().and_then(|s| s.state.try_read().ok().map(|o| o.clone()))
    }

    /// Hold the owned set for a pass or a delivery round (a hand-over waits for it) after proving
    /// membership.
    pub async fn hold(&self) -> Result<Hold<'_>, Fenced> {
        let owned = match &self.shared {
            Some(s) => Some(s.state.read().await),
            None => None,
        };
        let hold = Hold { owned, shared: self.shared.as_deref() };
        if hold.owned.as_ref().is_some_and(|o| !o.epochs.is_empty()) {
            hold.ensure().await?;
        }
        Ok(hold)
    }

    /// Change the owned set: waits for every [`Hold`] to end. For the coordinator's thread, which
    /// runs outside the async runtime. No effect on a sole instance.
    pub fn blocking_update(&self, change: impl FnOnce(&mut BTreeMap<u32, i64>)) {
        if let Some(s) = &self.shared {
            s.revoking.store(true, std::sync::atomic::Ordering::SeqCst);
            let mut owned = s.state.blocking_write();
            change(&mut owned.epochs);
            owned.version += 1;
            if owned.epochs.is_empty() {
                *s.fenced_at.lock().expect("fence time lock") = None;
            }
            s.revoking.store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Forget the last fence: the next action fences again (after a failed commit, say).
    pub fn unfence(&self) {
        if let Some(s) = &self.shared {
            *s.fenced_at.lock().expect("fence time lock") = None;
        }
    }
}

/// The owned set, unchanged while this lives.
pub struct Hold<'a> {
    owned: Option<RwLockReadGuard<'a, Owned>>,
    shared: Option<&'a Shared>,
}

impl Hold<'_> {
    /// Whether `topic` is this instance's to evaluate and notify about.
    pub fn owns(&self, topic: &str) -> bool {
        self.epoch(topic).is_some()
    }

    /// The epoch of `topic`'s shard if owned (0 for a sole instance).
    pub fn epoch(&self, topic: &str) -> Option<i64> {
        match (&self.owned, self.shared) {
            (Some(owned), Some(s)) => owned.epochs.get(&shard_of(topic, s.shards)).copied(),
            _ => Some(0),
        }
    }

    /// The version of the owned set (0 for a sole instance).
    pub fn version(&self) -> u64 {
        self.owned.as_ref().map_or(0, |o| o.version)
    }

    /// The owned shards with their epochs (`None`: a sole instance, owning everything).
    pub fn epochs(&self) -> Option<&BTreeMap<u32, i64>> {
        self.owned.as_ref().map(|o| &o.epochs)
    }

    /// The owned shards' count (`None`: a sole instance, owning everything).
    pub fn owned_shards(&self) -> Option<usize> {
        self.owned.as_ref().map(|o| o.epochs.len())
    }

    /// Prove membership again if the last proof is older than half the lease; `Err` if the group
    /// has replaced this instance. Call before every write or delivery. Owning nothing, there is
    /// nothing to prove.
    pub async fn ensure(&self) -> Result<(), Fenced> {
        let Some(s) = self.shared else { return Ok(()) };
        if self.owned.as_ref().is_some_and(|o| o.epochs.is_empty()) {
            // Nothing owned: nothing this instance could act for.
            return Ok(());
        }
        if self.handing_over() {
            return Err(Fenced("shards are being handed over".into()));
        }
        let fresh = s.fenced_at.lock().expect("fence time lock").is_some_and(|t| t.elapsed() < s.lease / 2);
        if fresh {
            return Ok(());
        }
        let sent = Instant::now();
        match (s.fence)().await {
            Ok(()) => {
                *s.fenced_at.lock().expect("fence time lock") = Some(sent);
                Ok(())
            }
            Err(reason) => {
                *s.fenced_at.lock().expect("fence time lock") = None;
                Err(Fenced(reason))
            }
        }
    }

    /// How long from now an action may still run under the last fence (`None`: no limit, a sole
    /// instance; zero when not fenced). A delivery is cut off at this deadline.
    pub fn remaining(&self) -> Option<Duration> {
        let s = self.shared?;
        let at = *s.fenced_at.lock().expect("fence time lock");
        Some(at.map_or(Duration::ZERO, |at| s.lease.saturating_sub(at.elapsed())))
    }

    /// Whether a hand-over waits for this hold to end: a pass should stop at the next topic.
    pub fn handing_over(&self) -> bool {
        self.shared.is_some_and(|s| s.revoking.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// This instance's name.
    pub fn owner(&self) -> &str {
        self.shared.map_or("", |s| s.owner.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("orders", 64), shard_of("orders", 64));
        let mut counts = vec![0usize; 16];
        for i in 0..16_000 {
            counts[shard_of(&format!("topic-{i}"), 16) as usize] += 1;
        }
        assert!(counts.iter().all(|&n| (800..1200).contains(&n)), "{counts:?}");
        // FNV-1a of the empty string is its offset basis.
        assert_eq!(shard_of("", 1_000_000_007), (0xcbf2_9ce4_8422_2325u64 % 1_000_000_007) as u32);
    }

    fn counting_fence(ok: Arc<std::sync::atomic::AtomicBool>, calls: Arc<AtomicUsize>) -> Fence {
        Arc::new(move || {
            let ok = ok.load(Ordering::SeqCst);
            calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { if ok { Ok(()) } else { Err("ILLEGAL_GENERATION".to_string()) } })
        })
    }

    #[tokio::test]
    async fn a_sole_instance_owns_everything_without_fencing() {
        let o = Ownership::sole("v1");
        let hold = o.hold().await.unwrap();
        assert!(hold.owns("anything"));
        assert_eq!((hold.epoch("x"), hold.remaining(), hold.owned_shards()), (Some(0), None, None));
        assert!(o.snapshot().is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sharded_instance_owns_what_it_was_given_and_acts_only_while_fenced() {
        let ok = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let calls = Arc::new(AtomicUsize::new(0));
        let o = Ownership::sharded(4, "v1", Duration::from_secs(60), counting_fence(ok.clone(), calls.clone()));
        {
            let hold = o.hold().await.unwrap();
            assert!(!hold.owns("orders"), "nothing owned before the group assigns");
            assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing owned: nothing to fence");
        }
        let shard = shard_of("orders", 4);
        let o2 = o.clone();
        tokio::task::spawn_blocking(move || {
            o2.blocking_update(|e| {
                e.insert(shard, 7);
            })
        })
        .await
        .unwrap();
        let hold = o.hold().await.unwrap();
        assert_eq!((hold.epoch("orders"), hold.version(), hold.owned_shards()), (Some(7), 1, Some(1)));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "owning something: fenced once");
        hold.ensure().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a fresh fence is reused");
        assert!(hold.remaining().unwrap() > Duration::from_secs(59));
        o.unfence();
        assert_eq!(hold.remaining(), Some(Duration::ZERO), "unfenced: no time left to act");
        drop(hold);
        ok.store(false, Ordering::SeqCst);
        assert_eq!(o.hold().await.err(), Some(Fenced("ILLEGAL_GENERATION".into())));
    }

    /// A hand-over waits for the pass holding the set, and the pass sees the set unchanged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hand_over_waits_for_the_pass_in_progress() {
        let ok = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let o = Ownership::sharded(2, "v1", Duration::from_secs(60), counting_fence(ok, Arc::default()));
        let o2 = o.clone();
        tokio::task::spawn_blocking(move || {
            o2.blocking_update(|e| {
                e.insert(0, 1);
            })
        })
        .await
        .unwrap();
        let hold = o.hold().await.unwrap();
        let o3 = o.clone();
        let revoke = tokio::task::spawn_blocking(move || o3.blocking_update(|e| e.clear()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!revoke.is_finished(), "the revocation waits for the pass");
        assert_eq!(hold.owned_shards(), Some(1));
        assert!(hold.handing_over(), "the pass is told to stop");
        assert!(hold.ensure().await.is_err(), "no write or send while a hand-over waits");
        drop(hold);
        revoke.await.unwrap();
        assert_eq!(o.snapshot().unwrap().epochs.len(), 0);
    }
}
