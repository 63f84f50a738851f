//! Loading the configuration file for a command, with the exit code of a bad one.

use std::path::Path;

use crate::config::KauditConfig;
use crate::exit::Exit;

/// The configuration at `path`, or the defaults without one. A bad file is an [`Exit`] with
/// `EXIT_CONFIG` whose report names the file, line and key of every problem.
pub fn config(path: Option<&Path>) -> Result<KauditConfig, Exit> {
    match path {
        None => Ok(KauditConfig::default()),
        Some(path) => KauditConfig::load(path).map_err(Exit::config_report),
    }
}
