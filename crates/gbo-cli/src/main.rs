//! `gbo`: deploy and operate the General Bots stack on LXD.
//!
//! Exit codes: 0 success, 1 a check found problems (doctor, verify), 2 bad input or a failed operation.
//! Results go to stdout (tables, or `--output json`), progress and logs to stderr.

mod cmd;
mod output;

use clap::Parser;

/// Deploy and operate the General Bots stack on LXD: one container per service per tenant.
#[derive(Parser, Debug)]
#[command(name = "gbo", version, about, long_about = None, propagate_version = true)]
#[command(after_help = "Exit codes: 0 success, 1 a check found problems, 2 bad input or a failed operation.\n\
Most commands take a container name (`default-tables`) or `--tenant T [ROLE...]`; the default tenant is `default`.")]
struct Cli {
    /// More logs on stderr (-v debug, -vv trace). `RUST_LOG` works too.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: cmd::Command,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    output::init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = runtime.block_on(cmd::run(cli.command));
    // Without waiting for blocking tasks: `gbo exec` relays stdin from a blocking read that only ends at EOF, and a
    // finished command must not wait for its caller to close stdin.
    runtime.shutdown_background();
    match result {
        Ok(outcome) => outcome.into(),
        Err(error) => {
            output::print_error(&error);
            std::process::ExitCode::from(2)
        }
    }
}
