//! `kaudit demo`: the whole system in one process with faults injected; exit 0 when the audit
//! finds exactly what was injected, 3 when not, 4 when alerts could not all be delivered.

use crate::demo::{Conclusion, DemoArgs, console};
use crate::exit::{EXIT_ALERTS_UNDELIVERED, EXIT_AUDIT_MISMATCH, Exit};

pub async fn run(args: DemoArgs) -> Result<(), Exit> {
    let config = crate::support::load::config(args.config.as_deref())?;
    args.check(config.verifier.thresholds.p99_delay_ms, config.agent.sketch.enabled).map_err(Exit::usage)?;
    let temp = tempfile::tempdir()?;
    let data_dir = match (&args.data_dir, &args.config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(_)) => config.data_dir.clone(),
        (None, None) => temp.path().to_path_buf(),
    };
    let kept = if data_dir == temp.path() { " (temporary: pass --data-dir DIR to keep it)" } else { "" };
    let outcome = crate::demo::run(&args, &config, data_dir).await.map_err(|e| Exit::failure(format!("{e:#}")))?;
    console::print_outcome(&outcome, kept);
    match outcome.conclusion() {
        Conclusion::Matches => Ok(()),
        Conclusion::Undelivered => Err(Exit::silent(EXIT_ALERTS_UNDELIVERED)),
        Conclusion::Mismatch => Err(Exit::silent(EXIT_AUDIT_MISMATCH)),
    }
}
