//! Run a command in an instance and relay its output and exit code:
//! `cargo run -p lxd-client --example exec -- <instance> <command> [args...]`.

use lxd_client::{Client, ExecRequest, InstanceName};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let instance = InstanceName::new(args.next().ok_or("usage: exec <instance> <command> [args...]")?)?;
    let command: Vec<String> = args.collect();
    if command.is_empty() {
        return Err("usage: exec <instance> <command> [args...]".into());
    }
    let lxd = Client::local()?;
    // Streamed as it comes, with this process's stdin piped in; `exec_output` collects short outputs instead.
    let session = lxd.exec(&instance, &ExecRequest::new(command).stdin_piped()).await?;
    let code = session.relay(Some(tokio::io::stdin()), tokio::io::stdout(), tokio::io::stderr()).await?;
    std::process::exit(code);
}
