//! kaudit's agent: counts every message a producer, consumer or tap sees into event-time tallies
//! and writes them, cumulatively and idempotently, to a store.
//!
//! * [`fingerprint`]: `xxh64(payload) XOR (crc32c(business_id) << 16)`.
//! * [`extract`]: business id and event time from key, headers or JSON, never panicking on input.
//! * [`table`]: open tallies per (topic, tier, bucket), closing old buckets and handling late
//!   messages without ever lowering a stored row.
//! * [`Auditor`]: the cheap, shareable handle; [`kafka`] wraps rdkafka producers and consumers.
//!   With every flush an agent also writes one heartbeat per (topic, tier) it feeds and how far
//!   each of its streams has got in event time (its progress), and a clean stop marks its last
//!   heartbeat `stopped`: the verifier tells lag from loss and a crash from a clean stop by them.
//! * [`flusher`] and [`spool`]: periodic cumulative upserts, with an in-memory queue and a
//!   bounded on-disk spool while the store is down.
//! * [`ingest`], [`ingest_server`], [`ack`] and [`idempotency`]: records from apps in other
//!   languages, parsed within bounds, acknowledged once durable, counted once per
//!   `Idempotency-Key`.
//!
//! ```
//! use std::sync::Arc;
//! use kaudit_agent::{Auditor, AuditorOptions, ManualClock};
//!
//! let clock = ManualClock::new(1_700_000_030_000);
//! let auditor = Auditor::new(AuditorOptions { clock: Arc::new(clock.clone()), ..AuditorOptions::named("docs") });
//! auditor.record("orders", "consumer", b"order-1", b"{}", Some(1_700_000_029_000));
//! auditor.record("orders", "consumer", b"order-2", b"{}", None); // no event time: arrival bucket
//! let rows = auditor.snapshot().rows;
//! assert_eq!(rows.len(), 1);
//! assert_eq!((rows[0].tally.count, rows[0].tally.no_time), (2, 1));
//! let p50 = rows[0].tally.latency.quantile(0.5).unwrap();
//! assert!((990..=1010).contains(&p50)); // 1000 ms, within the sketch's 1 %
//! ```

pub mod ack;
pub mod auditor;
/// Wall-clock time, injected (defined in `kaudit-schema` so the verifier shares it).
pub mod clock {
    pub use kaudit_schema::clock::*;
}
pub mod config;
pub mod extract;
pub mod fingerprint;
pub mod flusher;
pub mod idempotency;
pub mod ingest;
pub mod ingest_server;
pub mod kafka;
pub mod metrics;
pub mod rules;
pub mod runtime;
pub mod spool;
pub mod table;
pub mod tap;

pub use ack::AckGate;
pub use auditor::{Auditor, AuditorOptions, PartitionProbe};
pub use clock::{Clock, CoarseClock, ManualClock, SystemClock};
pub use config::{AgentConfig, TopicRuleConfig};
pub use extract::{AuditMessage, EventTime, OwnedMessage};
pub use fingerprint::fingerprint;
pub use flusher::{FlushReport, Flusher, FlusherOptions};
pub use metrics::{AgentMetrics, RefusedReason};
pub use runtime::AgentHandle;
pub use spool::Spool;
pub use table::{PartitionPosition, ProgressBasis};
