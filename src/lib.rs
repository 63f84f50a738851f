//! The `kaudit` command: configuration loading and the subcommands behind the thin `main`.
//!
//! `cli` parses, `cmd` holds one file per subcommand, `support` what several commands share,
//! `exit` the exit codes; `config` is the configuration file, `report` the report's table, `demo`
//! the whole system in one process.

pub mod cli;
pub mod cmd;
pub mod config;
pub mod demo;
pub mod exit;
pub mod report;
pub mod support;
