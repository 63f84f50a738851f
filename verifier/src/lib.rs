//! kaudit's verifier: compares each tier's bucket tallies with its upstream tier's, turns the
//! differences into verdicts, and detects loss, duplicates, content mismatch and delay with
//! thresholds and a CUSUM. `compare`, `evaluate`, `cusum`, `alerts`, `pipeline` and the engine's
//! core (`EngineCore`) are pure (no I/O); `Engine` drives the core against a store and the alert
//! dispatcher.

pub mod alerts;
pub mod api;
pub mod compare;
pub mod config;
pub mod cusum;
pub mod engine;
pub mod evaluate;
pub mod metrics;
pub mod pipeline;
pub mod service;

pub use compare::{Side, Verdict, compare, compare_tiers};
pub use config::VerifierConfig;
pub use cusum::{Cusum, CusumParams, Detector, Shift};
pub use engine::{Engine, EngineCore, TickReport, Watermark};
pub use evaluate::{BucketTiers, EdgeVerdict, Thresholds, evaluate_bucket, evaluate_edges, merge_rows};
pub use metrics::VerifierMetrics;
pub use pipeline::{Edge, Pipeline, PipelineConfig, pipeline_for};
