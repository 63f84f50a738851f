//! kaudit's alerts: the alert model and lifecycle, the durable outbox, and the sinks that deliver
//! notifications (generic webhook signed with HMAC-SHA256, Slack incoming webhook, PagerDuty
//! Events API v2, Alertmanager v2).
//!
//! Delivery is at least once and in order per sink, from an outbox kept in the store: a receiver
//! outage is retried with exponential backoff and full jitter, a verifier restart resumes from the
//! outbox, and every request carries an idempotency key (`dedup_key:seq`) so a receiver can drop
//! the rare repeat of a request whose acknowledgement was lost.

pub mod alert;
pub mod dispatch;
pub mod link;
pub mod metrics;
pub mod ownership;
pub mod sinks;
pub mod time;

pub use alert::{Alert, AlertKind, AlertNumbers, AlertState, NAMED_IN_ALERT, Severity};
pub use dispatch::{Dispatcher, Notification};
pub use link::PublicUrl;
pub use metrics::AlertMetrics;
pub use ownership::{Fenced, Hold, Ownership, shard_of};
pub use sinks::{Sink, SinkConfig};
