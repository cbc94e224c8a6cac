//! The `rlhf` binary: parse the command line, run the command, map errors to a message and a
//! non-zero exit code.

mod bench;
mod cli;
mod demo;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    if let Err(err) = cli::run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
