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
    // Collected here for brevity; `exec_io` streams outputs of any size into writers instead.
    let out = lxd.exec(&instance, &ExecRequest::new(command)).await?;
    use std::io::Write;
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stderr().write_all(&out.stderr)?;
    std::process::exit(out.exit_code);
}
