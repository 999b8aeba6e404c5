//! `gbo vault`: initialisation, seal status and unsealing. Keys are never printed. gbo's own Vault is reached with
//! no flags on plain http on the host's loopback, through its container's published port.

use std::io::Read as _;
use std::path::PathBuf;

use gbo_ops::vault::{self, Endpoint, UnsealOutcome};

use crate::output::outln;
use crate::output::{self, Format, Outcome};

/// `gbo vault` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Initialise Vault (sys/init) and write its unseal keys and root token to the tenant's
    /// `<stack-dir>/.secrets/vault-init.json` (mode 0600; never printed). Refuses a Vault that is initialised and an
    /// existing file.
    Init {
        #[command(flatten)]
        target: Target,
        /// Key shares.
        #[arg(long, default_value_t = 5)]
        shares: u64,
        /// Shares needed to unseal.
        #[arg(long, default_value_t = 3)]
        threshold: u64,
        /// Directory to write vault-init.json into (default: the tenant's `<stack-dir>/.secrets`).
        #[arg(long)]
        secrets_dir: Option<PathBuf>,
    },
    /// Seal status and health (exit 1 when sealed or not initialised).
    Status {
        #[command(flatten)]
        target: Target,
        /// Result format.
        #[arg(long, value_enum, default_value_t)]
        output: Format,
    },
    /// Submit distinct unseal keys until the threshold is reached, then confirm through sys/health.
    Unseal {
        #[command(flatten)]
        target: Target,
        /// init.json (either shape; mode 0600 or 0400), or `-` for keys on stdin (JSON or one per line).
        /// Default: the tenant's `<stack-dir>/.secrets/vault-init.json`.
        #[arg(long)]
        keys_file: Option<PathBuf>,
    },
    /// Unseal after every host boot: `--install` writes a host systemd unit that runs `gbo vault unseal` once LXD
    /// has started (keys read by gbo from their 0600 file; none on a command line).
    AutoUnseal {
        /// Write the unit (required: the only action so far).
        #[arg(long, required = true)]
        install: bool,
        /// The tenant whose Vault is unsealed.
        #[arg(long, default_value = "default")]
        tenant: gbo_components::TenantName,
        /// The keys file (mode 0600 or 0400). Default: the tenant's `<stack-dir>/.secrets/vault-init.json`.
        #[arg(long)]
        keys_file: Option<PathBuf>,
        /// Where the unit is written.
        #[arg(long, default_value = gbo_ops::vault_unit::UNIT_DIR)]
        unit_dir: PathBuf,
    },
}

/// Where Vault is.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// Tenant whose Vault to reach through its proxy port (when neither --addr nor VAULT_ADDR is set).
    #[arg(long, default_value = "default")]
    tenant: gbo_components::TenantName,
    /// Vault's address (default: VAULT_ADDR, then the tenant's proxy port).
    #[arg(long)]
    addr: Option<String>,
    /// CA certificate to verify Vault's TLS with (default: VAULT_CACERT, then the tenant's CA).
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Do not verify Vault's TLS certificate (dangerous; explicit only).
    #[arg(long)]
    tls_skip_verify: bool,
}

async fn stack_dir(tenant: &gbo_components::TenantName) -> anyhow::Result<Option<PathBuf>> {
    let lxd = output::lxd_on_host("gbo vault").await?;
    Ok(gbo_ops::inventory::tenant_stack_dir(&lxd, tenant).await?)
}

async fn endpoint(target: &Target) -> anyhow::Result<Endpoint> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let addr = match target.addr.clone().or_else(|| env("VAULT_ADDR")) {
        Some(a) => a,
        None => {
            let lxd = output::lxd_on_host("gbo vault").await?;
            let instances = gbo_ops::inventory::tenant_instances(&lxd, &target.tenant).await?;
            let vault = instances.iter().find(|m| m.role == Some(gbo_components::Role::Vault));
            let port =
                vault.iter().flat_map(|m| m.ports.iter()).find(|p| p.container_port == 8200).ok_or_else(|| {
                    anyhow::anyhow!(
                        "tenant `{}` has no Vault container with a published port 8200; give --addr or set VAULT_ADDR",
                        target.tenant
                    )
                })?;
            // The host port is held by LXD's proxy device only while the container runs: never send keys to a
            // port another process may have taken meanwhile.
            if let Some(m) = vault.filter(|m| !m.instance.is_running()) {
                anyhow::bail!("{} is not running: start it first (gbo start {})", m.name, m.name);
            }
            // gbo's Vault listens on plain http on loopback (docs/operations.md says why).
            format!(
                "http://{}:{}",
                if port.host_address.is_empty() || port.host_address == "0.0.0.0" {
                    "127.0.0.1"
                } else {
                    &port.host_address
                },
                port.host_port
            )
        }
    };
    let ca_cert = match target.ca_cert.clone().or_else(|| env("VAULT_CACERT").map(PathBuf::from)) {
        Some(c) => Some(c),
        None if addr.starts_with("https://")
            && !target.tls_skip_verify
            && target.addr.is_none()
            && env("VAULT_ADDR").is_none() =>
        {
            stack_dir(&target.tenant).await?.map(|d| d.join(vault::CA_FILE)).filter(|p| p.exists())
        }
        None => None,
    };
    Ok(Endpoint { addr, ca_cert, insecure_skip_verify: target.tls_skip_verify })
}

/// Run a `gbo vault` subcommand.
pub async fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Init { target, shares, threshold, secrets_dir } => {
            let dir = match secrets_dir {
                Some(dir) => dir,
                None => {
                    let stack = stack_dir(&target.tenant).await?.ok_or_else(|| {
                        anyhow::anyhow!("tenant `{}` records no stack dir; give --secrets-dir DIR", target.tenant)
                    })?;
                    stack.join(vault::INIT_FILE).parent().map(PathBuf::from).unwrap_or(stack)
                }
            };
            let endpoint = endpoint(&target).await?;
            let done = vault::init(&endpoint, shares, threshold, &dir).await?;
            outln!(
                "Vault at {} is initialised: {} key share(s), {} unseal it; the keys and root token are in {} (0600, not printed). Next: gbo vault unseal --tenant {}",
                endpoint.addr,
                done.shares,
                done.threshold,
                done.path.display(),
                target.tenant
            );
            Ok(Outcome::Ok)
        }
        Command::Status { target, output } => {
            let endpoint = endpoint(&target).await?;
            let status = vault::status(&endpoint).await?;
            match output {
                Format::Json => output::print_json(&status)?,
                Format::Table => {
                    let s = &status.seal;
                    output::print_table(
                        &["ADDRESS", "INITIALISED", "SEALED", "THRESHOLD", "SHARES", "PROGRESS", "HEALTH", "VERSION"],
                        &[vec![
                            status.addr.clone(),
                            s.initialized.to_string(),
                            s.sealed.to_string(),
                            s.t.to_string(),
                            s.n.to_string(),
                            s.progress.to_string(),
                            format!("{} {}", status.health_code, status.health),
                            s.version.clone(),
                        ]],
                    );
                }
            }
            Ok(if status.seal.initialized && !status.seal.sealed { Outcome::Ok } else { Outcome::Problems })
        }
        Command::AutoUnseal { install: _, tenant, keys_file, unit_dir } => {
            let keys_file = match keys_file {
                Some(p) => gbo_ops::install::absolute(&p)?,
                None => stack_dir(&tenant)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("tenant `{tenant}` records no stack dir; give --keys-file PATH"))?
                    .join(vault::INIT_FILE),
            };
            let gbo = std::env::current_exe()?;
            let path = gbo_ops::vault_unit::install(&unit_dir, &gbo, &tenant, &keys_file)?;
            let unit = gbo_ops::vault_unit::unit_name(&tenant);
            outln!("wrote {}", path.display());
            outln!("enable it: systemctl daemon-reload && systemctl enable {unit}");
            Ok(Outcome::Ok)
        }
        Command::Unseal { target, keys_file } => {
            let keys = match keys_file.as_deref() {
                Some(p) if p.as_os_str() == "-" => {
                    let mut text = String::new();
                    std::io::stdin().read_to_string(&mut text)?;
                    vault::parse_keys(&text, "stdin")?
                }
                Some(p) => vault::read_keys_file(p)?,
                None => {
                    let dir = stack_dir(&target.tenant).await?.ok_or_else(|| {
                        anyhow::anyhow!(
                            "tenant `{}` records no stack dir; give --keys-file PATH (or `-` for stdin)",
                            target.tenant
                        )
                    })?;
                    vault::read_keys_file(&dir.join(vault::INIT_FILE))?
                }
            };
            let endpoint = endpoint(&target).await?;
            match vault::unseal(&endpoint, &keys).await? {
                UnsealOutcome::AlreadyUnsealed => {
                    outln!("Vault at {} is already unsealed; nothing sent", endpoint.addr)
                }
                UnsealOutcome::Unsealed {
                    keys_submitted,
                    duplicates_skipped: repeated,
                    rejected,
                    health_code,
                    reset_stale_progress,
                } => {
                    if reset_stale_progress {
                        eprintln!("an earlier partial unseal was reset first");
                    }
                    if repeated > 0 {
                        eprintln!("{repeated} duplicate key(s) in the input were not submitted again");
                    }
                    if !rejected.is_empty() {
                        eprintln!(
                            "Vault rejected key number(s) {}",
                            rejected.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
                        );
                    }
                    outln!("Vault at {} is unsealed ({keys_submitted} distinct key(s) submitted; sys/health {health_code} {})", endpoint.addr, vault::health_meaning(health_code));
                }
            }
            Ok(Outcome::Ok)
        }
    }
}
