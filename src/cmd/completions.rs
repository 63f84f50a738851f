//! `kaudit completions SHELL`: the shell completion script for every command and flag (clap_complete).

use std::io::Write;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::exit::Exit;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell. For bash, `source <(kaudit completions
    /// bash)`, or save it as /usr/share/bash-completion/completions/kaudit.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub async fn run(args: CompletionsArgs) -> Result<(), Exit> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut crate::cli::Cli::command(), "kaudit", &mut script);
    std::io::stdout().write_all(&script)?;
    Ok(())
}
