//! `kaudit man [COMMAND]`: the roff manual page of kaudit, or of one of its commands
//! (`kaudit-agent(1)`), on stdout; `--out-dir DIR` writes them all (clap_mangen).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, CommandFactory};

use crate::exit::Exit;

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The command whose page to print (`agent` prints kaudit-agent(1)); kaudit(1) without one.
    pub command: Option<String>,
    /// Write every page (kaudit.1, kaudit-agent.1, ...) into DIR instead of printing one.
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub out_dir: Option<PathBuf>,
}

pub async fn run(args: ManArgs) -> Result<(), Exit> {
    // As clap_mangen's generate_to: built, so subcommands know their `kaudit-<name>` page names.
    let mut kaudit = crate::cli::Cli::command().disable_help_subcommand(true);
    kaudit.build();
    if let Some(dir) = args.out_dir {
        std::fs::create_dir_all(&dir)?;
        return clap_mangen::generate_to(kaudit, &dir).map_err(|e| Exit::failure(format!("{}: {e}", dir.display())));
    }
    let page = match args.command {
        None => kaudit,
        Some(name) => match kaudit.find_subcommand(&name) {
            Some(command) => command.clone(),
            None => {
                let names: Vec<&str> = kaudit.get_subcommands().map(|c| c.get_name()).collect();
                return Err(Exit::usage(format!("no command {name:?}; one of {}", names.join(", "))));
            }
        },
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page).source(concat!("kaudit ", env!("CARGO_PKG_VERSION"))).render(&mut roff)?;
    std::io::stdout().write_all(&roff)?;
    Ok(())
}
