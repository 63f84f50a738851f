//! Two-sided tabular CUSUM with a robust online baseline.
//!
//! For each observation `x` the baseline gives `z = (x - center) / sigma`, and
//! `S⁺ = max(0, S⁺ + z - k)`, `S⁻ = max(0, S⁻ - z - k)`; an alarm is raised when either passes `h`.
//! Defaults k = 0.5, h = 5: an in-control average run length of 465 observations between false
//! alarms and about 10 to catch a one-sigma shift (Montgomery, *Introduction to Statistical
//! Quality Control*, two-sided tabular CUSUM). The tests reproduce both by simulation.
//!
//! The baseline is the median and MAD (× 1.4826, the normal-consistent scale) of the last
//! `window` in-control observations, with a floor on sigma so a perfectly clean signal (all zero
//! loss) does not turn the first lost message into an infinite z. It is *frozen* while either
//! statistic is above zero, so a developing shift is not absorbed into the baseline, and both
//! statistics reset after an alarm. Observations made while frozen are held aside and join the
//! baseline when the excursion ends, by a return to zero or by an alarm's reset. Leaving any of
//! them out biases the baseline: learning only at zero keeps values within about ±k sigma and
//! shrinks the MAD; dropping them on (false) alarms drags the center away from high values. Both
//! multiply false alarms. A persistent shift therefore alarms repeatedly until the window has
//! turned over (64 buckets by default), by which time the absolute thresholds have long fired.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

mod stored;

pub use self::stored::{DETECTOR_FORMAT, DecodeError};

/// CUSUM parameters, in units of sigma.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CusumParams {
    /// Allowance (half the shift to detect quickly). Default 0.5.
    pub k: f64,
    /// Decision interval. Default 5.
    pub h: f64,
}

impl Default for CusumParams {
    fn default() -> Self {
        Self { k: 0.5, h: 5.0 }
    }
}

/// Which way the process moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shift {
    Up,
    Down,
}

/// The bare two-sided tabular CUSUM on standardized input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Cusum {
    pub upper: f64,
    pub lower: f64,
}

impl Cusum {
    /// Add one standardized observation; on an alarm both statistics reset.
    pub fn step(&mut self, z: f64, p: CusumParams) -> Option<Shift> {
        self.upper = (self.upper + z - p.k).max(0.0);
        self.lower = (self.lower - z - p.k).max(0.0);
        let alarm = if self.upper > p.h {
            Some(Shift::Up)
        } else if self.lower > p.h {
            Some(Shift::Down)
        } else {
            None
        };
        if alarm.is_some() {
            *self = Cusum::default();
        }
        alarm
    }

    /// The larger of the two statistics (for metrics).
    pub fn statistic(&self) -> f64 {
        self.upper.max(self.lower)
    }
}

/// A CUSUM over raw observations with its own robust baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Detector {
    cusum: Cusum,
    window: VecDeque<f64>,
    /// Observations made while the statistic was above zero, not yet known to be in control.
    held: VecDeque<f64>,
    capacity: usize,
    min_samples: usize,
    sigma_floor: f64,
}

/// What one observation did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub z: f64,
    pub statistic: f64,
    pub alarm: Option<Shift>,
}

impl Detector {
    /// A detector keeping `window` in-control observations, alarming only once it has
    /// `min_samples`, never dividing by less than `sigma_floor`.
    pub fn new(window: usize, min_samples: usize, sigma_floor: f64) -> Self {
        Self {
            cusum: Cusum::default(),
            window: VecDeque::new(),
            held: VecDeque::new(),
            capacity: window.max(1),
            min_samples,
            sigma_floor,
        }
    }

    fn baseline(&self) -> (f64, f64) {
        let mut v: Vec<f64> = self.window.iter().copied().collect();
        let median = median(&mut v);
        let mut dev: Vec<f64> = self.window.iter().map(|x| (x - median).abs()).collect();
        let sigma = (1.4826 * median_or_zero(&mut dev)).max(self.sigma_floor);
        (median, sigma)
    }

    /// Observe `x`.
    pub fn observe(&mut self, x: f64, p: CusumParams) -> Step {
        if self.window.len() < self.min_samples {
            self.learn(x);
            return Step { z: 0.0, statistic: 0.0, alarm: None };
        }
        let (center, sigma) = self.baseline();
        let z = (x - center) / sigma;
        let alarm = self.cusum.step(z, p);
        if self.cusum.statistic() > 0.0 {
            if self.held.len() == self.capacity {
                self.held.pop_front();
            }
            self.held.push_back(x);
        } else {
            // The excursion ended (back to zero, or an alarm reset it): what was held joins the
            // baseline, so no value is left out for being high or low.
            while let Some(h) = self.held.pop_front() {
                self.learn(h);
            }
            self.learn(x);
        }
        Step { z, statistic: self.cusum.statistic(), alarm }
    }

    fn learn(&mut self, x: f64) {
        if self.window.len() == self.capacity {
            self.window.pop_front();
        }
        self.window.push_back(x);
    }
}

fn median(v: &mut [f64]) -> f64 {
    median_or_zero(v)
}

/// Median by selection, O(n); 0 for no values.
fn median_or_zero(v: &mut [f64]) -> f64 {
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    let (below, mid, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
    let upper = *mid;
    if n % 2 == 1 {
        return upper;
    }
    let lower = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lower + upper) / 2.0
}

#[cfg(test)]
mod tests;
