//! The demo's command-line arguments and the checks that need the configuration.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::support::duration::parse_or_zero;

/// `--delay-ms` must be at least this far from the delay threshold: the delayed messages' p99 is
/// the delay plus a few ms of pipeline latency and the sketch's 1 % rounding, so a delay right at
/// the threshold would be flagged or not by chance.
pub const DELAY_MARGIN_MS: u64 = 200;

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How long to produce: 90s, 5m...
    #[arg(long, default_value = "60s", value_parser = parse_or_zero)]
    pub duration: Duration,
    /// Messages produced per second.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=500_000))]
    pub rate: u64,
    /// Probability that a message is lost between producer and broker.
    #[arg(long, default_value_t = 0.00005, value_parser = parse_probability, allow_negative_numbers = true)]
    pub loss: f64,
    /// Probability that consumer/billing processes a message twice.
    #[arg(long, default_value_t = 0.00003, value_parser = parse_probability, allow_negative_numbers = true)]
    pub duplicates: f64,
    /// Probability that consumer/billing drops a message it received (its offset moves on, it is
    /// never processed): loss on the same edge, in the same buckets, as its duplicates.
    #[arg(long, default_value_t = 0.00003, value_parser = parse_probability, allow_negative_numbers = true)]
    pub consumer_loss: f64,
    /// How long after its creation consumer/analytics processes each message, ms (0: on time).
    #[arg(long, default_value_t = 2_000, value_parser = parse_delay, allow_negative_numbers = true)]
    pub delay_ms: u64,
    /// Event-time bucket width: 10s, 1m...
    #[arg(long, default_value = "10s", value_parser = parse_or_zero)]
    pub bucket: Duration,
    /// Faults start at the first bucket boundary at least this long after the start.
    #[arg(long, default_value = "10s", value_parser = parse_or_zero)]
    pub faults_after: Duration,
    /// Deliver alerts to this URL as JSON webhooks (as `[[alerting.sinks]] type = "webhook"`), as
    /// well as printing them.
    #[arg(long)]
    pub webhook: Option<String>,
    /// Address of the verifier's API and /metrics while the demo runs (another port if taken).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: String,
    /// Seed of the random fault choices (the same seed picks the same messages).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to keep the SQLite database and spools. Default: the config's `data_dir` when
    /// `--config` is given, else a temporary directory removed on exit.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A configuration file for agent settings (extraction rules, spool...), the store, verifier
    /// thresholds and alert sinks.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Stop consumer/billing from reading for this long at the first faulty bucket, as during a
    /// rebalance, then let it catch up: a `lag` alert (and billing's own delay), never a loss.
    /// At least 10s; 0s: no pause.
    #[arg(long, default_value = "0s", value_parser = parse_or_zero)]
    pub pause_consumer: Duration,
    /// Crash the producer's agent (no final flush) halfway through the first faulty bucket and
    /// start a new instance: the buckets it held are `indeterminate`, never duplicates.
    #[arg(long)]
    pub crash_producer: bool,
    /// Partitions of the demo topic.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub partitions: i32,
}

impl DemoArgs {
    /// Whether these arguments make a run whose outcome can be judged, with `threshold_ms` the
    /// verifier's p99 delay threshold and `sketches` whether the agents keep difference sketches;
    /// the reason when not.
    pub fn check(&self, threshold_ms: u64, sketches: bool) -> Result<(), String> {
        if self.consumer_loss + self.duplicates > 0.5 {
            return Err("--consumer-loss and --duplicates together must be at most 0.5".into());
        }
        if self.consumer_loss > 0.0 && self.duplicates > 0.0 && !sketches {
            return Err("--consumer-loss with --duplicates needs agent.sketch.enabled = true: without the \
                        difference sketches loss and duplicates on one edge net out in the counts"
                .into());
        }
        if self.delay_ms > 0 && self.delay_ms.abs_diff(threshold_ms) < DELAY_MARGIN_MS {
            return Err(format!(
                "--delay-ms {} is too close to the delay threshold ({threshold_ms} ms) to say whether it should \
                 alert; keep it {DELAY_MARGIN_MS} ms away",
                self.delay_ms
            ));
        }
        if !(1_000..=3_600_000).contains(&self.bucket.as_millis()) {
            return Err("--bucket must be from 1s to 1h".into());
        }
        if self.duration < Duration::from_secs(1) || self.duration.as_secs() > 24 * 3600 {
            return Err("--duration must be from 1s to 24h".into());
        }
        if !self.pause_consumer.is_zero() && self.pause_consumer < Duration::from_secs(10) {
            return Err("--pause-consumer must be at least 10s (or 0s for none)".into());
        }
        if let Err(e) = self.listen.parse::<std::net::SocketAddr>() {
            return Err(format!("--listen {:?}: {e} (an address such as 127.0.0.1:9464)", self.listen));
        }
        Ok(())
    }

    /// Whether any fault is to be injected at all.
    pub fn any_fault(&self) -> bool {
        self.loss > 0.0
            || self.duplicates > 0.0
            || self.consumer_loss > 0.0
            || self.delay_ms > 0
            || !self.pause_consumer.is_zero()
            || self.crash_producer
    }
}

fn parse_delay(s: &str) -> Result<u64, String> {
    match s.parse::<i64>() {
        Ok(ms) if (0..=600_000).contains(&ms) => Ok(ms as u64),
        _ => Err(format!("{s:?} must be a whole number of milliseconds from 0 to 600000")),
    }
}

fn parse_probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=0.5).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} must be a probability from 0 to 0.5")),
    }
}
