//! List the local daemon's instances and images: `cargo run -p lxd-client --example list`.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lxd_client::Error> {
    let lxd = lxd_client::Client::local()?;
    let server = lxd.server().await?;
    println!("LXD {} at {}", server.environment.server_version, lxd.endpoint().describe());
    for instance in lxd.instances().await? {
        println!("instance {:<30} {}", instance.name, instance.status);
    }
    for image in lxd.images().await? {
        let aliases: Vec<_> = image.aliases.iter().map(|a| a.name.as_str()).collect();
        println!("image    {:.12} {:>10} bytes {}", image.fingerprint, image.size, aliases.join(","));
    }
    Ok(())
}
