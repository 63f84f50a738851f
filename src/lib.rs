//! The `kaudit` command: configuration loading and the subcommands behind the thin `main`.

pub mod agent_cmd;
pub mod cli;
pub mod config;
pub mod demo;
pub mod migrate;
pub mod report;
pub mod report_cmd;
pub mod serve;
