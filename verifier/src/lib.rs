//! kaudit's verifier: compares each tier's bucket tallies with its upstream tier's, turns the
//! differences into verdicts, and detects loss, duplicates, content mismatch and delay with
//! thresholds and a CUSUM. It judges an edge only once both tiers have got past the bucket (their
//! progress watermarks), so a tier that is behind is `pending` and raises `lag`, never `loss`; a
//! difference in buckets an agent held open when it crashed is `indeterminate`. `compare`,
//! `evaluate`, `progress`, `hold`, `cusum`, `alerts`, `pipeline` and the engine's core
//! (`EngineCore`) are pure (no I/O); `Engine` drives the core against a store and the alert
//! dispatcher. Several instances share the topics through a Kafka consumer group (`coordination`).

pub mod alerts;
pub mod api;
pub mod compare;
pub mod config;
pub mod coordination;
pub mod cusum;
pub mod engine;
pub mod evaluate;
pub mod hold;
pub mod memory;
pub mod metrics;
pub mod named;
pub mod pipeline;
pub mod progress;
pub mod service;
pub mod watch;

pub use compare::{Side, Verdict, compare, compare_tiers};
pub use config::VerifierConfig;
pub use cusum::{Cusum, CusumParams, Detector, Shift};
pub use engine::{Engine, EngineCore, TickReport, Watermark};
pub use evaluate::{BucketTiers, EdgeVerdict, Thresholds, evaluate_bucket, evaluate_edges, merge_rows};
pub use hold::Hold;
pub use metrics::VerifierMetrics;
pub use pipeline::{Edge, Pipeline, PipelineConfig, pipeline_for};
pub use progress::{Liveness, TierProgress, TopicProgress};
