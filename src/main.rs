//! `kaudit`: parses arguments and hands over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    kaudit::cli::init_tracing();
    let cli = kaudit::cli::Cli::parse();
    kaudit::cli::run(cli)
}
