//! `kaudit check-config FILE`: every problem of a configuration file, with file, line and key.

use std::path::PathBuf;

use clap::Args;

use crate::exit::Exit;

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The TOML file to check.
    pub file: PathBuf,
}

pub async fn run(args: CheckConfigArgs) -> Result<(), Exit> {
    let config = crate::support::load::config(Some(&args.file))?;
    let store = config.store_url().map(|u| u.to_string()).unwrap_or_default();
    println!(
        "{}: ok (agent {:?}, store {store}, {} topic rule(s))",
        args.file.display(),
        config.agent.name,
        config.agent.topics.len()
    );
    Ok(())
}
