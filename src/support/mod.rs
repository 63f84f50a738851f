//! What several commands share, each in a room of its own: loading the configuration file,
//! parsing durations, waiting for a stop signal, the metrics every process serves. No command
//! imports another command; they all import from here.

pub mod duration;
pub mod load;
pub mod process_metrics;
pub mod signal;
