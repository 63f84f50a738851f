//! `kaudit check-config FILE`: every problem of a configuration file, with file, line and key,
//! after the `KAUDIT__*` environment overrides every command applies; it lists those it applied
//! (variable and key, never the value: it may be a secret).

use std::path::PathBuf;

use clap::Args;

use crate::exit::Exit;

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The TOML file to check.
    pub file: PathBuf,
}

pub async fn run(args: CheckConfigArgs) -> Result<(), Exit> {
    let loaded = crate::support::load::loaded(Some(&args.file))?;
    let config = &loaded.config;
    let store = config.store_url().map(|u| u.to_string()).unwrap_or_default();
    println!(
        "{}: ok (agent {:?}, store {store}, {} topic rule(s))",
        args.file.display(),
        config.agent.name,
        config.agent.topics.len()
    );
    for o in &loaded.overrides {
        println!("  {} set by the environment ({})", o.key, o.variable);
    }
    Ok(())
}
