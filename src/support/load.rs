//! Loading the configuration file for a command, with the exit code of a bad one.

use std::path::Path;

use crate::config::{KauditConfig, Loaded, env};
use crate::exit::Exit;

/// The configuration at `path`, or the defaults without one, with the process's `KAUDIT__*`
/// environment overrides applied either way. A bad file is an [`Exit`] with `EXIT_CONFIG` whose
/// report names the file, line and key of every problem.
pub fn config(path: Option<&Path>) -> Result<KauditConfig, Exit> {
    loaded(path).map(|loaded| loaded.config)
}

/// As [`config`], with the overrides that were applied.
pub fn loaded(path: Option<&Path>) -> Result<Loaded, Exit> {
    let vars = env::from_process();
    if path.is_none() && vars.is_empty() {
        return Ok(Loaded { config: KauditConfig::default(), overrides: Vec::new() });
    }
    let span =
        tracing::info_span!("config", file = %path.map_or(crate::config::NO_FILE.into(), |p| p.display().to_string()));
    let _entered = span.enter();
    let loaded = KauditConfig::load_with(path, &vars).map_err(Exit::config_report)?;
    for o in &loaded.overrides {
        tracing::info!(variable = %o.variable, key = %o.key, "configuration key set from the environment");
    }
    Ok(loaded)
}
