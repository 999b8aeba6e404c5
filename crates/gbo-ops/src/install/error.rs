//! The install engine's error type.

use std::path::PathBuf;

/// Everything that can stop install, plan, uninstall or status.
///
/// Variants that describe bad input ([`InstallError::is_bad_input`]) are raised before anything is changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The catalogue refused the input (a name, the tenant file, a secret).
    #[error(transparent)]
    Catalogue(#[from] gbo_components::Error),
    /// LXD refused a request or could not be reached (the cause is the source, printed once by an error chain).
    #[error("LXD: {context}")]
    Lxd {
        /// What was being done (names the instance).
        context: String,
        /// The cause.
        #[source]
        source: lxd_client::Error,
    },
    /// Host file work failed (the cause is the source).
    #[error("{context}")]
    Io {
        /// What was being done (names the path).
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Host file work under the stack dir was refused (something planted at a name gbo uses) or failed.
    #[error(transparent)]
    HostFs(#[from] crate::hostfs::HostFsError),
    /// The stack dir cannot be used.
    #[error("stack dir {path}: {reason}")]
    StackDir {
        /// The path.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The image alias does not exist.
    #[error("image {alias:?} not found in LXD; build it with `{fix}`, or pass an existing alias (or REMOTE:ALIAS, e.g. images:debian/12) with --image")]
    MissingImage {
        /// The alias asked for.
        alias: String,
        /// The command that builds it.
        fix: String,
    },
    /// The image lacks the packages of some roles.
    #[error(
        "image {alias:?} does not carry the packages of {roles} (it has: {has}){removed}; rebuild it with `{fix}`"
    )]
    ImageLacksRoles {
        /// The alias.
        alias: String,
        /// The roles it cannot serve, comma separated.
        roles: String,
        /// The roles it has.
        has: String,
        /// The command that fixes it.
        fix: String,
        /// What was cleaned up (`" (the container ... was removed: ...)"`), or empty.
        removed: String,
    },
    /// A container from an image gbo did not build lacks its role's Debian packages and has no network to
    /// install them.
    #[error(
        "{instance}: image {image} was not built by gbo and lacks the Debian packages of {role} ({packages}), and the container has no network to install them with apt-get{removed}; build an offline image with `{}` (then install without --image), or give containers a network with `gbo setup --network`",
        super::packages::offline_image_fix()
    )]
    NoNetwork {
        /// The instance (or `tenant-role` before it exists).
        instance: String,
        /// The image, as given (`images:debian/12`).
        image: String,
        /// The role.
        role: String,
        /// The missing packages, space separated.
        packages: String,
        /// What was cleaned up (`" (the container ... was removed: ...)"`), or empty.
        removed: String,
    },
    /// apt-get could not install a role's packages in a container.
    #[error(
        "{instance}: installing {packages} with apt-get failed{removed}: {reason}; check the container's network (`gbo setup --network`) or build an offline image with `{}`",
        super::packages::offline_image_fix()
    )]
    Packages {
        /// The instance.
        instance: String,
        /// The packages, space separated.
        packages: String,
        /// The end of apt-get's output.
        reason: String,
        /// What was cleaned up, or empty.
        removed: String,
    },
    /// Some requested roles need artifacts that cannot be obtained here; nothing was changed.
    #[error("cannot install {}: nothing was changed; pass --skip-unavailable to install the others\n{}\nOffline: put the artifacts into the artifact cache (--artifact-cache; they are verified there as on download) or serve them from a loopback mirror ([versions.<role>] url, [trust] key); docs/artifacts.md lists each vendor's files", .roles.join(", "), .details.join("\n"))]
    Unavailable {
        /// The roles.
        roles: Vec<String>,
        /// One line per artifact: why.
        details: Vec<String>,
    },
    /// A host port is taken.
    #[error("host port {address}:{port} for {role} ({name}) is already in use{holder}; free it or choose another with --port {role}.{name}=PORT")]
    PortInUse {
        /// The role.
        role: String,
        /// The port's name.
        name: String,
        /// Host address.
        address: String,
        /// Host port.
        port: u16,
        /// Who holds it, when known (`, by instance acme-tables`).
        holder: String,
    },
    /// No free port left in the allocator's range.
    #[error("no free host port for {role} ({name}) in {range}")]
    PortsExhausted {
        /// The role.
        role: String,
        /// The port's name.
        name: String,
        /// The range searched.
        range: String,
    },
    /// Another gbo run holds the tenant's lock.
    #[error("tenant {tenant} is locked by {holder} (lock file {path}); waited {waited_secs} s")]
    Locked {
        /// The tenant.
        tenant: String,
        /// What the lock file says about the holder.
        holder: String,
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited_secs: u64,
    },
    /// A command inside a container failed.
    #[error("{instance}: `{command}` exited with {code}: {stderr}")]
    Command {
        /// The instance.
        instance: String,
        /// The command line (never holds a secret).
        command: String,
        /// Exit code.
        code: i32,
        /// The end of its stderr.
        stderr: String,
    },
    /// A component did not become healthy in time.
    #[error("{instance}: not healthy after {waited_secs} s: {reason}")]
    Unhealthy {
        /// The instance.
        instance: String,
        /// Seconds waited.
        waited_secs: u64,
        /// The last probe's answer.
        reason: String,
    },
    /// An artifact could not be downloaded (no network, the server refused): nothing about its integrity is known.
    #[error("artifact {name} {version}: {reason}")]
    Download {
        /// Artifact name.
        name: String,
        /// Version.
        version: String,
        /// What went wrong.
        reason: String,
    },
    /// An artifact failed to download or verify.
    #[error("artifact {name} {version}: {reason}")]
    Artifact {
        /// Artifact name.
        name: String,
        /// Version.
        version: String,
        /// What went wrong.
        reason: String,
    },
    /// A dependency of a role failed, so the role was not installed.
    #[error("{role}: not installed because its dependency {dependency} failed")]
    DependencyFailed {
        /// The role left out.
        role: String,
        /// The failed dependency.
        dependency: String,
    },
    /// Several components failed.
    #[error("{} component(s) failed:\n{}", .0.len(), .0.iter().map(|e| format!("  - {}", with_causes(e))).collect::<Vec<_>>().join("\n"))]
    Several(Vec<InstallError>),
    /// Something the user asked for does not make sense here.
    #[error("{0}")]
    BadInput(String),
}

/// An error and its causes on one line (`what: why: root cause`), for where errors are flattened into text.
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

impl InstallError {
    /// Whether the error is the user's input (exit 2 before any change) rather than a failed operation.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            InstallError::Catalogue(_)
                | InstallError::StackDir { .. }
                | InstallError::MissingImage { .. }
                | InstallError::ImageLacksRoles { .. }
                | InstallError::Unavailable { .. }
                | InstallError::PortInUse { .. }
                | InstallError::BadInput(_)
        )
    }

    pub(crate) fn lxd(context: impl Into<String>) -> impl FnOnce(lxd_client::Error) -> InstallError {
        let context = context.into();
        move |source| InstallError::Lxd { context, source }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> InstallError {
        let context = context.into();
        move |source| InstallError::Io { context, source }
    }
}
