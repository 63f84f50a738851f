//! kaudit's verifier: compares each tier's bucket tallies with its upstream tier's, turns the
//! differences into verdicts, and detects loss, duplicates, content mismatch and delay with
//! thresholds and a CUSUM. The modules here are pure (no I/O); the streaming engine drives them.

pub mod compare;
pub mod cusum;
pub mod evaluate;
pub mod pipeline;

pub use compare::{Side, Verdict, compare, compare_tiers};
pub use cusum::{Cusum, CusumParams, Detector, Shift};
pub use evaluate::{BucketTiers, EdgeVerdict, Thresholds, evaluate_bucket};
pub use pipeline::{Edge, Pipeline, PipelineConfig, pipeline_for};
