//! `gbo ci connect`: the seed's CI path on a stack gbo built. The runner in `-alm-ci` deploys to `-system` over SSH
//! (never through a cross-container disk mount): `-alm-ci` reaches `-system`'s sshd through a `bind=instance` proxy
//! device (its own 127.0.0.1:22 connects to the port `-system` publishes on the host's loopback), the runner's key
//! pair is made inside `-alm-ci` (the private key never leaves it), its public key is authorised for `gbuser` on
//! `-system`, and the runner gets the ssh config alias `system` and `-system`'s host key in its known_hosts.
//!
//! Both keys come out of containers, so both are parsed and checked ([`parse_public_key`]) and written back from
//! the decoded key alone: nothing a container wrote reaches a file of the other container as it was written.

use gbo_components::render::sshd;
use gbo_components::{Role, TenantName};
use lxd_client::{Client, ExecRequest, FileOptions, InstanceName, ProxyDevice};

use crate::inventory::{self, ManagedInstance};

/// The runner's private key inside `-alm-ci` (its public half beside it, `.pub`).
pub const RUNNER_KEY_PATH: &str = "/opt/gbo/.ssh/gbo-system";
/// The runner's ssh directory (gbuser's home is `/opt/gbo`).
pub const RUNNER_SSH_DIR: &str = "/opt/gbo/.ssh";
/// The runner's ssh config.
pub const RUNNER_SSH_CONFIG: &str = "/opt/gbo/.ssh/config";
/// The runner's known_hosts file for `-system` (gbo's own, named by the config's `UserKnownHostsFile`).
pub const RUNNER_KNOWN_HOSTS: &str = "/opt/gbo/.ssh/gbo_known_hosts";
/// Largest public key file read from a container.
const KEY_FILE_LIMIT: usize = 16 * 1024;

/// What `gbo ci connect` asks for.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Forgejo's URL as the runner sees it (default: `http://127.0.0.1:3000`, the alm wire inside `-alm-ci`).
    pub forgejo_url: String,
    /// The runner's labels (the rendered workflows run on `gbo-runner`; `:host` runs jobs in the container).
    pub labels: String,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self { forgejo_url: "http://127.0.0.1:3000".into(), labels: "gbo-runner:host".into() }
    }
}

/// What `gbo ci connect` did (`--output json`: this shape).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Connected {
    /// The tenant.
    pub tenant: String,
    /// The runner's container.
    pub runner: String,
    /// The deploy target.
    pub system: String,
    /// The host port `-system` publishes its sshd on (127.0.0.1).
    pub system_ssh_host_port: u16,
    /// The proxy device in `-alm-ci` that reaches it.
    pub wire_device: String,
    /// Whether the device was added (or corrected) by this run.
    pub wire_changed: bool,
    /// Whether the runner's key pair was made by this run (an existing one is kept).
    pub key_created: bool,
    /// The runner key's fingerprint (`SHA256:...`).
    pub key_fingerprint: String,
    /// `-system`'s host key fingerprint, as recorded in the runner's known_hosts.
    pub host_key_fingerprint: String,
    /// The ssh config alias.
    pub ssh_alias: String,
    /// Files written in `-alm-ci` and `-system` (`container:path`) whose content changed.
    pub changed_files: Vec<String>,
    /// The runner registration command for Forgejo, run inside `-alm-ci` (the token is read from a file the
    /// operator writes; it is never on this command line).
    pub registration: String,
    /// What the workflows' deploy step needs to say (`gbo-ci workflow render --host system`).
    pub workflow_host: String,
}

/// `gbo ci connect` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CiError {
    /// Bad input or a state gbo refuses to work on (exit 2, nothing changed).
    #[error("{0}")]
    BadInput(String),
    /// A key read from a container is not an OpenSSH ed25519 public key.
    #[error("{what}: {reason}")]
    BadKey {
        /// Which key (container and path).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A command inside a container failed.
    #[error("{what} failed in {instance} (exit {code}): {stderr}")]
    Exec {
        /// The container.
        instance: String,
        /// What ran.
        what: String,
        /// Its exit code.
        code: i32,
        /// Its stderr (trimmed, bounded).
        stderr: String,
    },
    /// LXD failed.
    #[error("{context}")]
    Lxd {
        /// What gbo was doing.
        context: String,
        /// The cause.
        #[source]
        source: lxd_client::Error,
    },
}

impl CiError {
    fn lxd(context: impl Into<String>) -> impl FnOnce(lxd_client::Error) -> CiError {
        let context = context.into();
        move |source| CiError::Lxd { context, source }
    }

    /// Whether the error is bad input (exit 2 either way; for messages).
    pub fn is_bad_input(&self) -> bool {
        matches!(self, CiError::BadInput(_) | CiError::BadKey { .. })
    }
}

/// An OpenSSH ed25519 public key, checked: the type is `ssh-ed25519`, the base64 decodes to the wire format
/// `string "ssh-ed25519" || string key` with a 32-byte key and nothing after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The wire-format blob.
    pub blob: Vec<u8>,
}

impl PublicKey {
    /// The key type.
    pub const TYPE: &'static str = "ssh-ed25519";

    /// The base64 text of the blob, as OpenSSH writes it.
    pub fn base64(&self) -> String {
        openssl::base64::encode_block(&self.blob)
    }

    /// `SHA256:<base64 without padding>`, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(&self.blob);
        format!("SHA256:{}", openssl::base64::encode_block(&digest).trim_end_matches('='))
    }
}

/// Parse the first line of a `.pub` file (`ssh-ed25519 BASE64 [comment]`); the comment is dropped. Anything else
/// (another key type, options before the type, bad base64, a blob of another shape, more lines) is an error.
pub fn parse_public_key(text: &str) -> Result<PublicKey, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let line = lines.next().ok_or("empty")?;
    if lines.next().is_some() {
        return Err("more than one line".into());
    }
    let mut fields = line.split_ascii_whitespace();
    let key_type = fields.next().ok_or("empty")?;
    if key_type != PublicKey::TYPE {
        return Err(format!("key type {:?}, expected {}", truncate(key_type), PublicKey::TYPE));
    }
    let encoded = fields.next().ok_or("no key after the type")?;
    if encoded.len() > 200 || !encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
    {
        return Err("the key is not base64".into());
    }
    let blob = openssl::base64::decode_block(encoded).map_err(|_| "the key is not base64".to_string())?;
    let expected_type = PublicKey::TYPE.as_bytes();
    let mut wire = Vec::with_capacity(51);
    wire.extend_from_slice(&u32::try_from(expected_type.len()).unwrap_or(0).to_be_bytes());
    wire.extend_from_slice(expected_type);
    wire.extend_from_slice(&32u32.to_be_bytes());
    if blob.len() != wire.len() + 32 || !blob.starts_with(&wire) {
        return Err("the key blob is not an ed25519 public key".into());
    }
    Ok(PublicKey { blob })
}

fn truncate(text: &str) -> String {
    text.chars().take(40).collect()
}

fn instance_name(name: &str) -> Result<InstanceName, CiError> {
    InstanceName::new(name).map_err(CiError::lxd(format!("instance name {name}")))
}

fn find<'a>(instances: &'a [ManagedInstance], tenant: &TenantName, role: Role) -> Result<&'a ManagedInstance, CiError> {
    let expected = gbo_components::instance_name(tenant, role);
    let m = instances.iter().find(|m| m.role == Some(role)).ok_or_else(|| {
        CiError::BadInput(format!(
            "tenant {tenant} has no {role} container ({expected}): {}",
            if role == Role::System {
                format!("install it first (gbo install --tenant {tenant} system)")
            } else {
                format!("install it first (gbo install --tenant {tenant} alm-ci)")
            }
        ))
    })?;
    if !m.instance.is_running() {
        return Err(CiError::BadInput(format!("{} is not running: start it first (gbo start {})", m.name, m.name)));
    }
    Ok(m)
}

async fn exec_checked(lxd: &Client, name: &InstanceName, what: &str, request: ExecRequest) -> Result<(), CiError> {
    let out = lxd.exec_output(name, &request).await.map_err(CiError::lxd(format!("{what} in {name}")))?;
    if out.success() {
        return Ok(());
    }
    let stderr: String = String::from_utf8_lossy(&out.stderr).trim().chars().take(500).collect();
    Err(CiError::Exec { instance: name.to_string(), what: what.to_string(), code: out.exit_code, stderr })
}

async fn read_key(lxd: &Client, name: &InstanceName, path: &str) -> Result<Option<PublicKey>, CiError> {
    let what = format!("{name}:{path}");
    let Some(stat) = lxd.stat(name, path).await.map_err(CiError::lxd(format!("reading {what}")))? else {
        return Ok(None);
    };
    if !matches!(stat.content, lxd_client::FileContent::File(_)) {
        return Err(CiError::BadKey { what, reason: "not a regular file".into() });
    }
    let bytes = lxd.read_file(name, path).await.map_err(CiError::lxd(format!("reading {what}")))?;
    if bytes.len() > KEY_FILE_LIMIT {
        return Err(CiError::BadKey { what, reason: format!("larger than {KEY_FILE_LIMIT} bytes") });
    }
    let text =
        String::from_utf8(bytes).map_err(|_| CiError::BadKey { what: what.clone(), reason: "not UTF-8".into() })?;
    parse_public_key(&text).map(Some).map_err(|reason| CiError::BadKey { what, reason })
}

/// Write `content` at `path` in `name` unless it is already there; `true` when it was written.
async fn write_if_changed(
    lxd: &Client,
    name: &InstanceName,
    path: &str,
    content: &str,
    options: FileOptions,
) -> Result<bool, CiError> {
    let context = format!("writing {name}:{path}");
    if let Some(existing) = lxd.stat(name, path).await.map_err(CiError::lxd(context.clone()))? {
        let same_owner =
            (existing.uid, existing.gid, existing.mode & 0o7777) == (options.uid, options.gid, options.mode);
        if same_owner && matches!(existing.content, lxd_client::FileContent::File(_)) {
            let bytes = lxd.read_file(name, path).await.map_err(CiError::lxd(context.clone()))?;
            if bytes == content.as_bytes() {
                return Ok(false);
            }
        }
    }
    lxd.push_bytes(name, path, content.as_bytes().to_vec(), options).await.map_err(CiError::lxd(context))?;
    Ok(true)
}

/// The wire device in `-alm-ci` for `-system`'s sshd published on the host at 127.0.0.1:`host_port`.
fn wire_device(host_port: u16) -> Result<(String, lxd_client::DeviceConfig), CiError> {
    let name = format!("gbo-wire-{}-{}", Role::System.container_suffix(), sshd::SSH_PORT);
    let proxy = ProxyDevice::new(
        lxd_client::ProxyAddress::tcp("127.0.0.1", sshd::SSH_PORT),
        lxd_client::ProxyAddress::tcp("127.0.0.1", host_port),
    )
    .bind_instance();
    let device = lxd_client::DeviceName::new(name.clone()).map_err(CiError::lxd(format!("device {name}")))?;
    let config = proxy.to_config(&device).map_err(CiError::lxd(format!("device {name}")))?;
    Ok((name, config))
}

/// Connect the tenant's runner to its system container (idempotent: a second run changes nothing).
pub async fn connect(lxd: &Client, tenant: &TenantName, options: &ConnectOptions) -> Result<Connected, CiError> {
    if !options.forgejo_url.starts_with("http://") && !options.forgejo_url.starts_with("https://") {
        return Err(CiError::BadInput(format!(
            "--forgejo-url {:?}: expected an http:// or https:// URL",
            options.forgejo_url
        )));
    }
    if options
        .forgejo_url
        .chars()
        .chain(options.labels.chars())
        .any(|c| c.is_whitespace() || "'\"\\$`;&|<>".contains(c))
    {
        return Err(CiError::BadInput(
            "--forgejo-url and --labels take no spaces, quotes or shell characters".to_string(),
        ));
    }
    let instances = inventory::tenant_instances(lxd, tenant).await.map_err(CiError::lxd("listing instances"))?;
    let system = find(&instances, tenant, Role::System)?;
    let runner = find(&instances, tenant, Role::AlmCi)?;
    let system_name = instance_name(system.name.as_str())?;
    let runner_name = instance_name(runner.name.as_str())?;
    let host_port = system
        .ports
        .iter()
        .find(|p| p.device == "gbo-port-ssh" && p.container_port == sshd::SSH_PORT)
        .map(|p| p.host_port)
        .ok_or_else(|| {
            CiError::BadInput(format!(
                "{} publishes no sshd port (device gbo-port-ssh): run gbo install --tenant {tenant} system first",
                system.name
            ))
        })?;

    // -system's host key: made by the system role's init step; read through LXD, checked.
    let host_key = read_key(lxd, &system_name, sshd::HOST_PUBLIC_KEY_PATH).await?.ok_or_else(|| {
        CiError::BadInput(format!(
            "{} has no SSH host key ({}): run gbo install --tenant {tenant} system first",
            system.name,
            sshd::HOST_PUBLIC_KEY_PATH
        ))
    })?;

    // The wire: -alm-ci's 127.0.0.1:22 connects to -system's published sshd.
    let (device, config) = wire_device(host_port)?;
    let current = runner.instance.devices.get(&device);
    let wire_changed = current != Some(&config);
    if wire_changed {
        lxd.update_instance(&runner_name, |put| {
            put.devices.insert(device.clone(), config.clone());
        })
        .await
        .map_err(CiError::lxd(format!("adding device {device} to {runner_name}")))?;
    }

    // The runner's key pair, made inside -alm-ci as gbuser: the private key never leaves the container.
    let gbuser = gbo_components::users::GBUSER;
    let as_gbuser = |argv: &[&str]| {
        ExecRequest::new(argv.iter().copied())
            .user(gbuser.uid, gbuser.gid)
            .env("HOME", gbuser.home)
            .cwd(gbuser.home)
            .timeout(std::time::Duration::from_secs(60))
    };
    exec_checked(lxd, &runner_name, "mkdir ~/.ssh", as_gbuser(&["mkdir", "-p", "-m", "0700", RUNNER_SSH_DIR])).await?;
    let public_path = format!("{RUNNER_KEY_PATH}.pub");
    let mut key_created = false;
    let runner_key = match read_key(lxd, &runner_name, &public_path).await? {
        Some(key) => key,
        None => {
            let comment = format!("gbo-ci@{runner_name}");
            exec_checked(
                lxd,
                &runner_name,
                "ssh-keygen",
                as_gbuser(&["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", &comment, "-f", RUNNER_KEY_PATH]),
            )
            .await?;
            key_created = true;
            read_key(lxd, &runner_name, &public_path).await?.ok_or_else(|| CiError::BadKey {
                what: format!("{runner_name}:{public_path}"),
                reason: "ssh-keygen left no public key".into(),
            })?
        }
    };

    let mut changed_files = Vec::new();
    let mut note = |changed: bool, name: &InstanceName, path: &str| {
        if changed {
            changed_files.push(format!("{name}:{path}"));
        }
    };
    // -system: the runner's key for gbuser, restricted; gbo-ci's root steps through sudo.
    let keys = sshd::authorized_keys(PublicKey::TYPE, &runner_key.base64(), &format!("gbo-ci@{runner_name}"));
    let changed =
        write_if_changed(lxd, &system_name, sshd::AUTHORIZED_KEYS_PATH, &keys, FileOptions::root(0o644)).await?;
    note(changed, &system_name, sshd::AUTHORIZED_KEYS_PATH);
    let changed =
        write_if_changed(lxd, &system_name, sshd::SUDOERS_PATH, &sshd::sudoers(), FileOptions::root(0o440)).await?;
    note(changed, &system_name, sshd::SUDOERS_PATH);

    // -alm-ci: the alias and the host key. An ssh config gbo did not write is the operator's: left alone, refused.
    let owned = FileOptions::owned(gbuser.uid, gbuser.gid, 0o600);
    if lxd
        .stat(&runner_name, RUNNER_SSH_CONFIG)
        .await
        .map_err(CiError::lxd("reading the runner's ssh config"))?
        .is_some()
    {
        let existing = lxd
            .read_file(&runner_name, RUNNER_SSH_CONFIG)
            .await
            .map_err(CiError::lxd("reading the runner's ssh config"))?;
        if !existing.starts_with(sshd::CLIENT_CONFIG_HEADER.as_bytes()) {
            return Err(CiError::BadInput(format!(
                "{runner_name}:{RUNNER_SSH_CONFIG} exists and was not written by gbo: move it aside (gbo writes the \
                 alias `{}` there) and run gbo ci connect again",
                sshd::SSH_ALIAS
            )));
        }
    }
    let config =
        sshd::client_config(system.name.as_str(), sshd::SSH_PORT, "~/.ssh/gbo-system", "~/.ssh/gbo_known_hosts");
    let changed = write_if_changed(lxd, &runner_name, RUNNER_SSH_CONFIG, &config, owned).await?;
    note(changed, &runner_name, RUNNER_SSH_CONFIG);
    let known = sshd::known_hosts(sshd::SSH_PORT, PublicKey::TYPE, &host_key.base64());
    let changed = write_if_changed(lxd, &runner_name, RUNNER_KNOWN_HOSTS, &known, owned).await?;
    note(changed, &runner_name, RUNNER_KNOWN_HOSTS);

    let registration = format!(
        "lxc exec {runner_name} --user {uid} --group {gid} --env HOME={home} --cwd /opt/gbo/data -- \
         sh -c 'exec /opt/gbo/bin/forgejo-runner register --no-interactive --instance {url} --name {runner_name} \
         --labels {labels} --token \"$(cat /opt/gbo/data/registration-token)\"'",
        uid = gbuser.uid,
        gid = gbuser.gid,
        home = gbuser.home,
        url = options.forgejo_url,
        labels = options.labels,
    );
    Ok(Connected {
        tenant: tenant.to_string(),
        runner: runner_name.to_string(),
        system: system_name.to_string(),
        system_ssh_host_port: host_port,
        wire_device: device,
        wire_changed,
        key_created,
        key_fingerprint: runner_key.fingerprint(),
        host_key_fingerprint: host_key.fingerprint(),
        ssh_alias: sshd::SSH_ALIAS.to_string(),
        changed_files,
        registration,
        workflow_host: sshd::SSH_ALIAS.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICg9vjpvdmV8knVG6hsSDfx6JkQMYiDGFt/CRKeuLwui user@host\n";

    #[test]
    fn an_ed25519_key_parses_and_keeps_only_the_key() {
        let key = parse_public_key(KEY).expect("a key");
        assert_eq!(key.base64(), "AAAAC3NzaC1lZDI1NTE5AAAAICg9vjpvdmV8knVG6hsSDfx6JkQMYiDGFt/CRKeuLwui");
        assert!(key.fingerprint().starts_with("SHA256:") && !key.fingerprint().ends_with('='));
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ user",
            "command=\"x\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICg9vjpvdmV8knVG6hsSDfx6JkQMYiDGFt/CRKeuLwui",
            "ssh-ed25519",
            "ssh-ed25519 !!!!",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICg9vjpvdmV8knVG6hsSDfx6JkQMYiDGFt/CRKeuLw",
            "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ",
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICg9vjpvdmV8knVG6hsSDfx6JkQMYiDGFt/CRKeuLwui\nssh-ed25519 AAAA",
        ] {
            assert!(parse_public_key(bad).is_err(), "{bad:?} is refused");
        }
    }
}

#[cfg(test)]
#[path = "ci_properties.rs"]
mod properties;
