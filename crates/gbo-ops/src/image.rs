//! The one image builder: Debian 12 with systemd, fixed service uids, and the Debian packages of the chosen roles,
//! imported into LXD with the roles recorded as image properties. Used by `gbo image build` and by xtask for the
//! test image. Rebuilt only when its inputs change: the hash of the inputs is an image property (`gbo.inputs`),
//! so LXD itself is the cache.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lxd_client::Client;
use sha2::{Digest, Sha256};

use crate::events::{Observer, Outcome, Subject};
use crate::runner::{HostCommand, RunError};

/// Bumped whenever the build recipe below changes, so old images are rebuilt.
pub const BUILDER_VERSION: &str = "5";

/// The Debian suite.
pub const SUITE: &str = "bookworm";

/// Vendor units masked in the image: each role runs as a unit named after the role instead.
pub const MASKED_UNITS: &[&str] = &[
    "postgresql.service",
    "redis-server.service",
    "caddy.service",
    "caddy-api.service",
    "apache2.service",
    "nginx.service",
    // Fails in unprivileged containers (no binfmt_misc) and leaves systemd "degraded".
    "systemd-binfmt.service",
];

/// Vendor units left installed but not started at boot: the roles that use them enable them with their own
/// configuration (fail2ban's Debian default sshd jail fails in a container without an sshd log; sshd runs only in
/// `-system`, with gbo's drop-in and a host key made in that container; PHP-FPM only in `-webmail`; Dovecot and
/// Postfix, which only the test image carries for its stand-in mail server, only where a test starts them).
pub const DISABLED_UNITS: &[&str] =
    &["fail2ban.service", "ssh.service", "php8.2-fpm.service", "dovecot.service", "postfix.service"];

/// A service user with a fixed uid/gid, so data on host mounts stays readable across image rebuilds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FixedUser {
    /// User (and group) name.
    pub name: String,
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Alias to import under (e.g. `gbo/debian-12`).
    pub alias: String,
    /// Role names baked in (recorded as the `gbo.roles` property).
    pub roles: Vec<String>,
    /// Debian packages (the catalogue's `image_packages(roles)`: base packages included).
    pub packages: Vec<String>,
    /// Service users with fixed ids.
    pub users: Vec<FixedUser>,
    /// Debian mirror.
    pub mirror: String,
    /// Scratch directory for the root filesystem (removed afterwards).
    pub work_dir: PathBuf,
    /// Rebuild even when an image with the same inputs exists.
    pub force: bool,
}

/// A stage of the build.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "stage", content = "bytes", rename_all = "snake_case")]
pub enum BuildStage {
    /// An image with the same inputs exists; nothing to build.
    Reused,
    /// Running debootstrap (about a minute).
    Bootstrapping,
    /// Fixing uids, masking units, trimming.
    Customising,
    /// Streaming the tarball into LXD: bytes sent so far.
    Importing(u64),
    /// Done.
    Done,
}

/// One event of an image build: the image and the stage its build reached.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageEvent {
    /// The image's alias.
    pub alias: String,
    /// The stage.
    #[serde(flatten)]
    pub stage: BuildStage,
}

impl std::fmt::Display for ImageEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.stage {
            BuildStage::Reused => write!(f, "an image with the same inputs exists: reused"),
            BuildStage::Bootstrapping => write!(f, "debootstrap (about a minute)"),
            BuildStage::Customising => write!(f, "fixing uids, masking vendor units"),
            BuildStage::Importing(bytes) => write!(f, "importing into LXD: {} MiB", bytes / (1024 * 1024)),
            BuildStage::Done => write!(f, "done"),
        }
    }
}

impl Subject for ImageEvent {
    fn subject(&self) -> &str {
        &self.alias
    }

    fn finished(&self) -> Option<Outcome> {
        matches!(self.stage, BuildStage::Reused | BuildStage::Done).then_some(Outcome::Succeeded)
    }
}

/// The result.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// Fingerprint in LXD.
    pub fingerprint: String,
    /// Alias.
    pub alias: String,
    /// Whether an existing image was reused.
    pub reused: bool,
    /// The input hash.
    pub inputs: String,
}

/// Image building failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A host tool failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// LXD refused something.
    #[error(transparent)]
    Lxd(#[from] lxd_client::Error),
    /// Local file work failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The uid table cannot be applied.
    #[error("fixed uid table: {message}")]
    Users {
        /// What collides.
        message: String,
    },
    /// Not running as root.
    #[error("building an image needs root (debootstrap and file ownership); run it as root")]
    NotRoot,
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

impl ImageSpec {
    /// All packages, sorted and deduplicated.
    pub fn all_packages(&self) -> Vec<String> {
        let set: BTreeSet<String> = self.packages.iter().cloned().collect();
        set.into_iter().collect()
    }

    /// The hash of everything that decides the image's content.
    pub fn inputs_hash(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(format!("builder={BUILDER_VERSION}\nsuite={SUITE}\nmirror={}\n", self.mirror));
        for p in self.all_packages() {
            hasher.update(format!("package={p}\n"));
        }
        let mut users = self.users.clone();
        users.sort();
        for u in users {
            hasher.update(format!("user={}:{}:{}:{}:{}\n", u.name, u.uid, u.gid, u.home, u.shell));
        }
        for unit in MASKED_UNITS {
            hasher.update(format!("mask={unit}\n"));
        }
        for unit in DISABLED_UNITS {
            hasher.update(format!("disable={unit}\n"));
        }
        hex::encode(hasher.finalize())[..32].to_string()
    }
}

/// Find an image built from the same inputs.
pub async fn find_image(lxd: &Client, inputs: &str) -> Result<Option<lxd_client::Image>, ImageError> {
    Ok(lxd.images().await?.into_iter().find(|i| i.properties.get("gbo.inputs").map(String::as_str) == Some(inputs)))
}

/// Build (or reuse) the image and point the alias at it.
pub async fn build_image(
    lxd: &Client,
    spec: &ImageSpec,
    events: &dyn Observer<ImageEvent>,
) -> Result<BuiltImage, ImageError> {
    let inputs = spec.inputs_hash();
    if !spec.force {
        if let Some(existing) = find_image(lxd, &inputs).await? {
            lxd.set_image_alias(&spec.alias, &existing.fingerprint, "gbo image").await?;
            events.event(&ImageEvent { alias: spec.alias.clone(), stage: BuildStage::Reused });
            return Ok(BuiltImage {
                fingerprint: existing.fingerprint,
                alias: spec.alias.clone(),
                reused: true,
                inputs,
            });
        }
    }
    if !is_root() {
        return Err(ImageError::NotRoot);
    }
    let dir = spec.work_dir.join(format!("build-{inputs}"));
    if dir.exists() {
        tokio::fs::remove_dir_all(&dir).await.map_err(io(format!("removing stale {}", dir.display())))?;
    }
    tokio::fs::create_dir_all(&dir).await.map_err(io(format!("creating {}", dir.display())))?;
    let result = build_in(lxd, spec, &inputs, &dir, events).await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    result
}

async fn build_in(
    lxd: &Client,
    spec: &ImageSpec,
    inputs: &str,
    dir: &Path,
    events: &dyn Observer<ImageEvent>,
) -> Result<BuiltImage, ImageError> {
    let rootfs = dir.join("rootfs");
    events.event(&ImageEvent { alias: spec.alias.clone(), stage: BuildStage::Bootstrapping });
    HostCommand::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", spec.all_packages().join(",")))
        .arg(SUITE)
        .arg(&rootfs)
        .arg(&spec.mirror)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run_with_retries(3, Duration::from_secs(5))
        .await?;
    events.event(&ImageEvent { alias: spec.alias.clone(), stage: BuildStage::Customising });
    let rootfs_clone = rootfs.clone();
    let users = spec.users.clone();
    tokio::task::spawn_blocking(move || customise(&rootfs_clone, &users)).await.map_err(|e| ImageError::Io {
        context: "customising rootfs".into(),
        source: std::io::Error::other(e.to_string()),
    })??;
    write_metadata(dir, spec, inputs).await?;
    let fingerprint = import_dir(lxd, dir, &spec.alias, events).await?;
    lxd.set_image_alias(&spec.alias, &fingerprint, "gbo image").await?;
    events.event(&ImageEvent { alias: spec.alias.clone(), stage: BuildStage::Done });
    Ok(BuiltImage { fingerprint, alias: spec.alias.clone(), reused: false, inputs: inputs.to_string() })
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false)
}

async fn write_metadata(dir: &Path, spec: &ImageSpec, inputs: &str) -> Result<(), ImageError> {
    let arch = HostCommand::new("uname").arg("-m").run_async().await?.trim().to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let roles = spec.roles.join(",");
    let packages = spec.packages.join(",");
    let metadata = format!(
        "architecture: {arch}\ncreation_date: {now}\nproperties:\n  os: debian\n  release: {SUITE}\n  \
         description: \"gbo Debian 12 ({roles})\"\n  gbo.roles: \"{roles}\"\n  gbo.packages: \"{packages}\"\n  \
         gbo.inputs: \"{inputs}\"\n  gbo.builder: \"{BUILDER_VERSION}\"\n"
    );
    tokio::fs::write(dir.join("metadata.yaml"), metadata).await.map_err(io("writing metadata.yaml"))
}

async fn import_dir(
    lxd: &Client,
    dir: &Path,
    alias: &str,
    events: &dyn Observer<ImageEvent>,
) -> Result<String, ImageError> {
    let (tar, stdout) = HostCommand::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(dir)
        .args(["-cf", "-", "metadata.yaml", "rootfs"])
        .spawn_stdout()?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let reporter = std::sync::Arc::new(move |sent: u64| {
        let _ = tx.send(sent);
    });
    let options = lxd_client::ImageImportOptions::new().progress(reporter);
    let import = lxd.import_image(stdout, &options);
    tokio::pin!(import);
    let mut last_reported = 0u64;
    let fingerprint = loop {
        tokio::select! {
            result = &mut import => break result?,
            Some(sent) = rx.recv() => {
                if sent - last_reported >= 16 * 1024 * 1024 {
                    last_reported = sent;
                    events.event(&ImageEvent { alias: alias.to_string(), stage: BuildStage::Importing(sent) });
                }
            }
        }
    };
    tar.finish().await?;
    Ok(fingerprint)
}

/// Apply the fixed uid table, mask vendor units, add the `/opt/gbo` skeleton and trim caches.
fn customise(rootfs: &Path, users: &[FixedUser]) -> Result<(), ImageError> {
    let (uid_map, gid_map) = apply_users(rootfs, users)?;
    if !uid_map.is_empty() || !gid_map.is_empty() {
        renumber_tree(rootfs, &uid_map, &gid_map)?;
    }
    let systemd = rootfs.join("etc/systemd/system");
    std::fs::create_dir_all(&systemd).map_err(io("creating etc/systemd/system"))?;
    for unit in MASKED_UNITS {
        let link = systemd.join(unit);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link).map_err(io(format!("masking {unit}")))?;
    }
    for unit in DISABLED_UNITS {
        let _ = std::fs::remove_file(systemd.join("multi-user.target.wants").join(unit));
    }
    // The Debian postgresql package creates a `main` cluster; gbo's tables role keeps its cluster on the data mount.
    let _ = std::fs::remove_dir_all(rootfs.join("var/lib/postgresql/15/main"));
    let _ = std::fs::remove_dir_all(rootfs.join("etc/postgresql/15/main"));
    let createcluster = rootfs.join("etc/postgresql-common/createcluster.conf");
    if createcluster.exists() {
        let text = std::fs::read_to_string(&createcluster).map_err(io("reading createcluster.conf"))?;
        let text = text.replace("#create_main_cluster = true", "create_main_cluster = false");
        std::fs::write(&createcluster, text).map_err(io("writing createcluster.conf"))?;
    }
    // Valkey is not packaged for Debian 12: Redis 7 is the provider; keep the seed's `valkey-cli ping` working.
    if rootfs.join("usr/bin/redis-cli").exists() {
        for (name, target) in [("valkey-cli", "/usr/bin/redis-cli"), ("valkey-server", "/usr/bin/redis-server")] {
            let link = rootfs.join("usr/local/bin").join(name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(target, &link).map_err(io(format!("linking {name}")))?;
        }
    }
    let gbuser = users.iter().find(|u| u.name == "gbuser");
    for sub in ["opt/gbo", "opt/gbo/bin", "opt/gbo/data", "opt/gbo/conf", "opt/gbo/logs"] {
        let path = rootfs.join(sub);
        std::fs::create_dir_all(&path).map_err(io(format!("creating {sub}")))?;
        if let Some(u) = gbuser {
            std::os::unix::fs::lchown(&path, Some(u.uid), Some(u.gid)).map_err(io(format!("chown {sub}")))?;
        }
    }
    // Each container makes its own SSH host key (the system role's init step): never one shared by every
    // container of the image.
    if let Ok(entries) = std::fs::read_dir(rootfs.join("etc/ssh")) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    // Each container gets its own machine id at first boot.
    std::fs::write(rootfs.join("etc/machine-id"), b"").map_err(io("clearing machine-id"))?;
    let _ = std::fs::remove_file(rootfs.join("var/lib/dbus/machine-id"));
    for dir in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        if let Ok(entries) = std::fs::read_dir(rootfs.join(dir)) {
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
    Ok(())
}

type IdMap = HashMap<u32, u32>;

/// Rewrite passwd/group/shadow/gshadow so every fixed user has its uid/gid; return old->new maps.
fn apply_users(rootfs: &Path, users: &[FixedUser]) -> Result<(IdMap, IdMap), ImageError> {
    let read =
        |name: &str| std::fs::read_to_string(rootfs.join("etc").join(name)).map_err(io(format!("reading /etc/{name}")));
    let mut passwd: Vec<Vec<String>> =
        read("passwd")?.lines().map(|l| l.split(':').map(str::to_string).collect()).collect();
    let mut group: Vec<Vec<String>> =
        read("group")?.lines().map(|l| l.split(':').map(str::to_string).collect()).collect();
    let mut shadow = read("shadow").unwrap_or_default();
    let mut gshadow = read("gshadow").unwrap_or_default();
    let mut uid_map = IdMap::new();
    let mut gid_map = IdMap::new();
    for user in users {
        let uid = user.uid.to_string();
        let gid = user.gid.to_string();
        if let Some(other) = passwd.iter().find(|f| f.len() > 2 && f[2] == uid && f[0] != user.name) {
            return Err(ImageError::Users {
                message: format!("uid {} for {} is taken by {} in the base system", user.uid, user.name, other[0]),
            });
        }
        if let Some(other) = group.iter().find(|f| f.len() > 2 && f[2] == gid && f[0] != user.name) {
            return Err(ImageError::Users {
                message: format!(
                    "gid {} for {} is taken by group {} in the base system",
                    user.gid, user.name, other[0]
                ),
            });
        }
        match group.iter_mut().find(|f| f[0] == user.name) {
            Some(entry) if entry.len() > 2 => {
                if let Ok(old) = entry[2].parse::<u32>() {
                    if old != user.gid {
                        gid_map.insert(old, user.gid);
                    }
                }
                entry[2] = gid.clone();
            }
            _ => {
                group.push(vec![user.name.clone(), "x".into(), gid.clone(), String::new()]);
                gshadow.push_str(&format!("{}:!::\n", user.name));
            }
        }
        match passwd.iter_mut().find(|f| f[0] == user.name) {
            Some(entry) if entry.len() > 3 => {
                if let Ok(old) = entry[2].parse::<u32>() {
                    if old != user.uid {
                        uid_map.insert(old, user.uid);
                    }
                }
                entry[2] = uid.clone();
                entry[3] = gid.clone();
            }
            _ => {
                passwd.push(vec![
                    user.name.clone(),
                    "x".into(),
                    uid.clone(),
                    gid.clone(),
                    "gbo service user".into(),
                    user.home.clone(),
                    user.shell.clone(),
                ]);
                shadow.push_str(&format!("{}:!:19700:0:99999:7:::\n", user.name));
            }
        }
    }
    let join = |rows: &[Vec<String>]| rows.iter().map(|r| r.join(":")).collect::<Vec<_>>().join("\n") + "\n";
    let write = |name: &str, text: String, mode: u32| -> Result<(), ImageError> {
        use std::os::unix::fs::PermissionsExt;
        let path = rootfs.join("etc").join(name);
        let existing_mode = std::fs::metadata(&path).map(|m| m.permissions().mode()).unwrap_or(mode);
        std::fs::write(&path, text).map_err(io(format!("writing /etc/{name}")))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(existing_mode))
            .map_err(io(format!("chmod /etc/{name}")))
    };
    write("passwd", join(&passwd), 0o644)?;
    write("group", join(&group), 0o644)?;
    write("shadow", shadow, 0o640)?;
    write("gshadow", gshadow, 0o640)?;
    Ok((uid_map, gid_map))
}

fn renumber_tree(rootfs: &Path, uid_map: &IdMap, gid_map: &IdMap) -> Result<(), ImageError> {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![rootfs.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(_) => continue,
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            let new_uid = uid_map.get(&meta.uid()).copied();
            let new_gid = gid_map.get(&meta.gid()).copied();
            if new_uid.is_some() || new_gid.is_some() {
                // chown clears setuid/setgid bits: restore the mode afterwards for non-links.
                let mode = meta.mode();
                std::os::unix::fs::lchown(&path, new_uid, new_gid).map_err(io(format!("chown {}", path.display())))?;
                if !meta.file_type().is_symlink() && mode & 0o6000 != 0 {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777));
                }
            }
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(())
}

/// The image property that records the roles baked into a gbo image (LXD copies it into each instance as
/// `image.gbo.roles`). Its absence means the image was not built by gbo.
pub const ROLES_PROPERTY: &str = "gbo.roles";

/// The roles of a [`ROLES_PROPERTY`] value.
pub fn parse_roles(value: &str) -> Vec<String> {
    value.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// An image gbo built, as `gbo image list` shows it (`--output json`: this shape).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GboImage {
    /// Fingerprint.
    pub fingerprint: String,
    /// Aliases.
    pub aliases: Vec<String>,
    /// Roles whose packages it carries (its `gbo.roles` property).
    pub roles: Vec<String>,
    /// Size in bytes.
    pub size: i64,
    /// When it was imported.
    pub uploaded_at: String,
}

/// The images gbo built (those with a `gbo.roles` property).
pub async fn gbo_images(lxd: &Client) -> Result<Vec<GboImage>, lxd_client::Error> {
    Ok(lxd
        .images()
        .await?
        .into_iter()
        .filter_map(|i| {
            let roles = parse_roles(i.properties.get(ROLES_PROPERTY)?);
            Some(GboImage {
                fingerprint: i.fingerprint,
                aliases: i.aliases.into_iter().map(|a| a.name).collect(),
                roles,
                size: i.size,
                uploaded_at: i.uploaded_at,
            })
        })
        .collect())
}

/// Roles baked into an image, from its `gbo.roles` property.
pub fn image_roles(image: &lxd_client::Image) -> BTreeSet<String> {
    image.properties.get(ROLES_PROPERTY).map(|r| parse_roles(r).into_iter().collect()).unwrap_or_default()
}

/// Properties recorded on gbo images, for display.
pub fn image_summary(image: &lxd_client::Image) -> BTreeMap<String, String> {
    image
        .properties
        .iter()
        .filter(|(k, _)| k.starts_with("gbo.") || *k == "description")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, uid: u32) -> FixedUser {
        FixedUser { name: name.into(), uid, gid: uid, home: "/opt/gbo".into(), shell: "/bin/bash".into() }
    }

    #[test]
    fn inputs_hash_changes_with_inputs_only() {
        let spec = ImageSpec {
            alias: "a".into(),
            roles: vec!["tables".into()],
            packages: vec!["postgresql".into()],
            users: vec![user("gbuser", 1000)],
            mirror: "http://deb.debian.org/debian".into(),
            work_dir: "/tmp".into(),
            force: false,
        };
        let mut same = spec.clone();
        same.alias = "other".into();
        same.work_dir = "/var/tmp".into();
        assert_eq!(spec.inputs_hash(), same.inputs_hash());
        let mut more = spec.clone();
        more.packages.push("redis-server".into());
        assert_ne!(spec.inputs_hash(), more.inputs_hash());
        let mut renumbered = spec.clone();
        renumbered.users[0].uid = 1001;
        assert_ne!(spec.inputs_hash(), renumbered.inputs_hash());
    }

    #[test]
    fn users_are_renumbered_in_a_real_tree() {
        let root = tempfile::tempdir().expect("tempdir");
        let etc = root.path().join("etc");
        std::fs::create_dir_all(&etc).expect("create_dir_all");
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0:root:/root:/bin/bash\npostgres:x:105:110::/var/lib/postgresql:/bin/bash\n",
        )
        .expect("write");
        std::fs::write(etc.join("group"), "root:x:0:\npostgres:x:110:\n").expect("write");
        std::fs::write(etc.join("shadow"), "root:*:1::::::\npostgres:*:1::::::\n").expect("write");
        std::fs::write(etc.join("gshadow"), "root:*::\npostgres:!::\n").expect("write");
        let data = root.path().join("var/lib/postgresql");
        std::fs::create_dir_all(&data).expect("create_dir_all");
        std::os::unix::fs::lchown(&data, Some(105), Some(110)).expect("lchown");
        let (uids, gids) =
            apply_users(root.path(), &[user("postgres", 2001), user("gbuser", 2000)]).expect("apply_users");
        assert_eq!(uids.get(&105), Some(&2001));
        assert_eq!(gids.get(&110), Some(&2001));
        renumber_tree(root.path(), &uids, &gids).expect("renumber_tree");
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&data).expect("metadata");
        assert_eq!((meta.uid(), meta.gid()), (2001, 2001));
        let passwd = std::fs::read_to_string(etc.join("passwd")).expect("read_to_string");
        assert!(passwd.contains("postgres:x:2001:2001:"), "{passwd}");
        assert!(passwd.contains("gbuser:x:2000:2000:gbo service user:/opt/gbo:/bin/bash"), "{passwd}");
        assert!(std::fs::read_to_string(etc.join("shadow")).expect("read_to_string").contains("gbuser:!:"));
        let clash = apply_users(root.path(), &[user("other", 2001)]).unwrap_err();
        assert!(clash.to_string().contains("taken by postgres"), "{clash}");
    }
}
