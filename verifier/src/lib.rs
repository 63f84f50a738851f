//! kaudit's verifier. This crate starts with the pure tier comparison (DESIGN.md's verdict
//! table); watermarking, CUSUM detection and the query API build on it.

pub mod compare;

pub use compare::{Side, Verdict, compare, compare_tiers};
