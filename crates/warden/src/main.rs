//! The `warden` command: argument parsing and dispatch only.

mod approvals;
mod cli;
mod defaults;
mod demo;
mod identity;
mod inspect;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
