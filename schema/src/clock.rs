//! Wall-clock time, injected so tests of lateness, eviction and flushing are deterministic.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::bucket::EpochMillis;

/// A source of the current time in ms since the epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> EpochMillis;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> EpochMillis {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map_or(0, |d| d.as_millis() as EpochMillis)
    }
}

/// A clock that moves only when told to; cheap to clone, all clones share one time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start_ms: EpochMillis) -> Self {
        Self(Arc::new(AtomicI64::new(start_ms)))
    }

    pub fn set(&self, ms: EpochMillis) {
        self.0.store(ms, Ordering::SeqCst);
    }

    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> EpochMillis {
        self.0.load(Ordering::SeqCst)
    }
}
