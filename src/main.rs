//! `kaudit`: parses arguments and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = kaudit::cli::Cli::parse();
    kaudit::cli::init_tracing(&cli);
    kaudit::cli::run(cli)
}
