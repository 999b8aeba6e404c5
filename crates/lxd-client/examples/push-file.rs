//! Push a host file into an instance (streamed), then pull it back and compare sizes:
//! `cargo run -p lxd-client --example push-file -- <instance> <host file> <path in instance>`.

use lxd_client::{Client, FileOptions, InstanceName};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: push-file <instance> <host file> <absolute path in instance>";
    let instance = InstanceName::new(args.next().ok_or(usage)?)?;
    let host_file = args.next().ok_or(usage)?;
    let target = args.next().ok_or(usage)?;
    let lxd = Client::local()?;
    let file = tokio::fs::File::open(&host_file).await?;
    let size = file.metadata().await?.len();
    let started = std::time::Instant::now();
    lxd.push_file(&instance, &target, file, FileOptions::root(0o644)).await?;
    println!("pushed {size} bytes to {instance}:{target} in {:?}", started.elapsed());
    let started = std::time::Instant::now();
    let pulled = lxd.pull_to(&instance, &target, &mut tokio::io::sink()).await?;
    println!("pulled {pulled} bytes back in {:?}", started.elapsed());
    Ok(())
}
