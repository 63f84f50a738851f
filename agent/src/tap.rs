//! Tap mode: consume topics on a cluster as tier T with the tap's own consumer group, and tally
//! every message, exactly once across crashes.
//!
//! Each assigned partition has its own tally table under a *stable* agent id owned by the tap's
//! consumer group (`<group_id>:<topic>:<partition>`), and its own next offset. A flush writes the changed tallies of a
//! partition together with its next offset, in one atomic store write. On assignment the tap reads
//! both back, seeds the table with the stored cumulative tallies and starts reading at the stored
//! offset; so after a crash (even `kill -9`) the tallies resume exactly at the state that matches
//! the offset, and the re-read messages are counted once. The tap never commits offsets to Kafka.
//! On revocation the partition's state is written before the partition is released, so the next
//! owner starts from it: any member of the group, whatever its name, resumes exactly there.
//!
//! Progress and liveness: each flush reports per assigned partition the largest event time read
//! and whether it is caught up (librdkafka's partition EOF, enabled as a tap-owned option, seen
//! since the partition's last message; the EOF arrives as a consumer "error" and is handled as
//! progress), and one heartbeat per topic under the process's own `<name>-<instance>` id with
//! `resumes = true`. Shutdown marks the last heartbeats `stopped`.
//!
//! The poll loop runs on its own thread (librdkafka calls the rebalance callback on it, inside
//! `poll`); store reads and writes from there block on the tokio runtime's handle.
//!
//! [`TapHandle`] starts and stops a tap as one: it replays the spool *before* the consumer
//! subscribes (so a partition's state read back includes what a previous run spooled), and on
//! shutdown stops the consumer (which writes every partition's state) *before* the flusher's final
//! write. The parts, by job:
//!
//! * `config`: [`TapConfig`] and the librdkafka settings the tap owns.
//! * `state`: [`TapShared`], per-partition tallies and offsets, and `TapSource`, the flusher's view.
//! * `context`: `TapContext`, the rebalance callback that loads and releases partitions.
//! * `runner`: `TapRunner`, the poll thread.
//! * `handle`: [`TapHandle`], the two started and stopped in order.

mod config;
mod context;
mod handle;
mod runner;
mod state;

pub use config::{StartFrom, TAP_OWNED_OPTIONS, TapConfig};
pub use handle::{TapHandle, TapHandleOptions, TapStartError};
pub use state::{TapOptions, TapShared, partition_agent_id};
