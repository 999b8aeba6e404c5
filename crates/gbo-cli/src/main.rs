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
    /// The LXD daemon or cluster to work on: a remote of the `lxc` CLI (`lxc remote list`; its client
    /// certificate and pinned server certificate are used). Default: the local daemon's socket (`LXD_SOCKET`,
    /// `LXD_DIR`). A remote that is unknown or does not answer is an error naming it, never a fallback.
    #[arg(long, global = true, env = "GBO_REMOTE", value_name = "NAME")]
    remote: Option<String>,
    /// The LXD project to work in (default: the daemon's `default` project).
    #[arg(long, global = true, env = "GBO_PROJECT", value_name = "PROJECT")]
    project: Option<String>,
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
    let result = runtime.block_on(async {
        output::connect(cli.remote.as_deref(), cli.project.as_deref()).await?;
        cmd::run(cli.command).await
    });
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
