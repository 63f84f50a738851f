//! `kaudit`: parses arguments, builds the one runtime, runs the command, prints its error once.

use std::process::ExitCode;

use clap::Parser;
use kaudit::cli::{Cli, closing_error, init_tracing};

fn main() -> ExitCode {
    kaudit_verifier::memory::limit_malloc_arenas();
    let Cli { log_format, command } = Cli::parse();
    init_tracing(&command, log_format);
    let name = command.name();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(command.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(exit) => {
            if let Some(message) = exit.message(name) {
                eprint!("{}", closing_error(log_format, &message));
            }
            exit.code()
        }
    }
}
