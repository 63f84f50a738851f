//! `kaudit`: parses arguments, builds the one runtime, runs the command, prints its error once.

use std::process::ExitCode;

use clap::Parser;
use kaudit::cli::{Cli, init_tracing};

fn main() -> ExitCode {
    let command = Cli::parse().command;
    init_tracing(&command);
    let name = command.name();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(command.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(exit) => {
            if let Some(message) = exit.message(name) {
                eprint!("{}", if message.ends_with('\n') { message } else { message + "\n" });
            }
            exit.code()
        }
    }
}
