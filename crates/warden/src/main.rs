//! The `warden` command: argument parsing and dispatch only.

mod approvals;
mod cli;
mod defaults;
mod demo;
mod identity;
mod inspect;
mod policy_test;
mod replay;
mod tools;

use clap::Parser;

fn main() -> std::process::ExitCode {
    exit_quietly_on_closed_stdout();
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Makes `warden ... | head` end quietly: printing to a closed pipe panics
/// in Rust, so that one panic exits with the status a shell reports for
/// SIGPIPE (141) instead of printing a backtrace.
fn exit_quietly_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
