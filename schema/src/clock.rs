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

/// The wall clock as of the kernel's last tick: cheap enough to read for every message (Linux's
/// `CLOCK_REALTIME_COARSE`, read from the vDSO without a system call: 4.6 ns here against 25.8 ns
/// for the precise clock), behind the precise clock by less than its resolution, one scheduler
/// tick ([`CoarseClock::resolution_ms`]: 4 ms on this project's machines, 1 ms on kernels built
/// with `HZ=1000`; a few ms more when a loaded VM delays a tick). The agents' hot paths read it; a
/// latency they measure is low by about one tick. Elsewhere than Linux it is the system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoarseClock;

impl CoarseClock {
    /// How far the coarse clock may lag the precise one, ms (rounded up; 0 where it is the
    /// precise clock).
    #[allow(clippy::unnecessary_cast)] // time_t and c_long are 32 bits on some targets
    pub fn resolution_ms() -> i64 {
        #[cfg(target_os = "linux")]
        {
            let mut res = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: clock_getres writes the timespec it is given and nothing else.
            if unsafe { libc::clock_getres(libc::CLOCK_REALTIME_COARSE, &mut res) } == 0 {
                return res.tv_sec as i64 * 1_000 + (res.tv_nsec as i64 + 999_999) / 1_000_000;
            }
        }
        0
    }
}

impl Clock for CoarseClock {
    #[inline]
    #[allow(clippy::unnecessary_cast)] // time_t and c_long are 32 bits on some targets
    fn now_ms(&self) -> EpochMillis {
        #[cfg(target_os = "linux")]
        {
            let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: clock_gettime writes the timespec it is given and nothing else.
            if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) } == 0 {
                return now.tv_sec as i64 * 1_000 + now.tv_nsec as i64 / 1_000_000;
            }
        }
        SystemClock.now_ms()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The coarse clock never runs ahead of the precise one, trails it by about one tick, and
    /// by no more than a few ticks even on a loaded machine (a tick can come late on a busy VM).
    #[test]
    fn the_coarse_clock_trails_the_system_clock_by_about_its_resolution() {
        let resolution = CoarseClock::resolution_ms();
        assert!((0..=100).contains(&resolution), "{resolution} ms");
        let mut lags = Vec::new();
        for _ in 0..10_000 {
            let before = SystemClock.now_ms();
            let coarse = CoarseClock.now_ms();
            let after = SystemClock.now_ms();
            assert!(coarse <= after, "ahead: {coarse} > {after}");
            assert!(before - coarse <= 10 * resolution + 50, "{before} {coarse} ({resolution} ms)");
            lags.push(before - coarse);
        }
        lags.sort_unstable();
        // Truncated to ms on both sides: one ms of slack.
        assert!(lags[lags.len() / 2] <= resolution + 1, "median lag {} ms ({resolution} ms)", lags[lags.len() / 2]);
    }
}
