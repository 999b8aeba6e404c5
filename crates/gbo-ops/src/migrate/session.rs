//! Who a migration talks as. The source is read through a connection the host makes itself: a host server as given,
//! or a container through its published port as a temporary superuser login created there for the run
//! ([`ContainerLogin`]). The target is restored through a [`Restore`] session: `psql` as `postgres` in a container
//! (the source is the host, which gbo trusts), or on the host a login that is not a superuser (a temporary
//! [`RestoreLogin`], or the operator's own non-superuser) which can only become the owner role. Also the empty
//! database the restore goes into, made before anything is restored.

use super::contents::missing_roles;
use super::dump::without_meta_commands;
use super::endpoint::{ContainerServer, Endpoint, HostServer};
use super::error::MigrateError;
use super::sql::{db_message, quote_ident, quote_literal, single, unreadable};

/// A random password (32 bytes from the OS's CSPRNG, hex) and its SCRAM-SHA-256 verifier: the server is only ever
/// sent the verifier.
fn temporary_password() -> (String, String) {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let password = hex::encode(bytes);
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    (password, verifier)
}

/// A name for a temporary role: `<prefix>_<16 hex digits>`.
fn temporary_role(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}

/// Where the restore's statements run on the target, and the role they run as. On the host: connections logged in
/// as a role that is not a superuser (a temporary login, or the operator's own non-superuser), which first become
/// the owner role; in the container: `psql` as `postgres`, which first becomes the owner role (the source is the
/// host, which gbo trusts).
#[derive(Debug, Clone)]
pub(super) enum Restore {
    /// `psql` in the container.
    Container {
        /// The container's server.
        server: ContainerServer,
        /// The role to become first.
        role: Option<String>,
    },
    /// Connections to the host server.
    Host {
        /// The server, logged in as the restoring role.
        server: HostServer,
        /// The role to become first.
        role: Option<String>,
    },
}

impl Restore {
    /// The restore session on `target`, becoming `owner_role` (None: the source's owners): on a host server, through
    /// a temporary login when gbo connects as a superuser (then returned too, to be finished), else as the operator's
    /// own role. Set up before anything changes: a login that cannot work changes nothing.
    pub(super) async fn open(
        target: &Endpoint,
        owner_role: Option<String>,
    ) -> Result<(Self, Option<RestoreLogin>), MigrateError> {
        let admin = match target {
            Endpoint::Container(c) => return Ok((Restore::Container { server: c.clone(), role: owner_role }, None)),
            Endpoint::Host(admin) => admin,
        };
        let rows =
            admin.rows("postgres", "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user;").await?;
        match single(&rows) {
            Some("t") => {
                let (login, server) = RestoreLogin::create(admin).await?;
                Ok((Restore::Host { server, role: owner_role }, Some(login)))
            }
            Some("f") => {
                let me = admin.user().unwrap_or_default().to_string();
                Ok((Restore::Host { server: admin.clone(), role: owner_role.filter(|r| *r != me) }, None))
            }
            _ => Err(unreadable(&target.describe(), "whether the connecting role is a superuser", &rows)),
        }
    }

    /// How messages name the target.
    pub(super) fn describe(&self) -> String {
        match self {
            Restore::Container { server, .. } => server.describe(),
            Restore::Host { server, .. } => server.side(),
        }
    }

    /// `SET ROLE` to the owner role, when there is one to become.
    pub(super) fn prelude(&self) -> String {
        let role = match self {
            Restore::Container { role, .. } | Restore::Host { role, .. } => role,
        };
        role.as_deref().map(|r| format!("SET ROLE {};\n", quote_ident(r))).unwrap_or_default()
    }

    /// Run a script in one transaction.
    pub(super) async fn script(&self, database: &str, sql: &str) -> Result<(), MigrateError> {
        let prelude = self.prelude();
        match self {
            Restore::Container { server, .. } => server.script(database, &format!("{prelude}{sql}")).await,
            Restore::Host { server, .. } => {
                let client = server.connect(database).await?;
                let wrapped = format!("BEGIN;\n{prelude}{}\nCOMMIT;\n", without_meta_commands(sql));
                client
                    .batch_execute(&wrapped)
                    .await
                    .map_err(|e| MigrateError::Sql { side: self.describe(), message: db_message(&e) })
            }
        }
    }

    /// Rows of a query run as the restoring role.
    pub(super) async fn query(&self, database: &str, sql: &str) -> Result<Vec<Vec<String>>, MigrateError> {
        let sql = format!("{}{sql}", self.prelude());
        match self {
            Restore::Container { server, .. } => server.query(database, &sql).await,
            Restore::Host { server, .. } => server.rows(database, &sql).await,
        }
    }
}

/// A temporary superuser login in a source container, for reading it through its published port; dropped at the end.
pub(super) struct ContainerLogin {
    container: ContainerServer,
    role: String,
    server: HostServer,
}

/// The server a migration reads from `source`, and the temporary login in a source container that it reads through
/// (to be dropped at the end). A migration runs between the host and a container.
pub(super) async fn reader(
    source: &Endpoint,
    target: &Endpoint,
) -> Result<(HostServer, Option<ContainerLogin>), MigrateError> {
    match (source, target) {
        (Endpoint::Host(h), Endpoint::Container(_)) => Ok((h.clone(), None)),
        (Endpoint::Container(c), Endpoint::Host(_)) => {
            let login = ContainerLogin::create(c).await?;
            Ok((login.server.clone(), Some(login)))
        }
        _ => Err(MigrateError::Container("a migration runs between the host and a container".into())),
    }
}

/// Terminate a temporary role's sessions and drop it.
fn drop_login_sql(role: &str) -> String {
    format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = {};\nDROP ROLE IF EXISTS {};",
        quote_literal(role),
        quote_ident(role)
    )
}

impl ContainerLogin {
    async fn create(container: &ContainerServer) -> Result<Self, MigrateError> {
        let Some((address, port)) = container.published.clone() else {
            return Err(MigrateError::NoPublishedPort {
                container: container.instance.to_string(),
                port: container.port,
            });
        };
        let role = temporary_role("gbo_migrate");
        let (password, verifier) = temporary_password();
        // The container's own server: a superuser there gives nothing the container's root does not have already.
        container
            .query(
                "postgres",
                &format!("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {};", quote_ident(&role), quote_literal(&verifier)),
            )
            .await?;
        let label = format!("container {} (through {address}:{port})", container.instance);
        let server = HostServer::published(&address, port, &role, password.as_bytes(), label);
        let login = Self { container: container.clone(), role, server };
        if let Err(e) = login.server.connect("postgres").await {
            login.drop_role().await;
            return Err(e);
        }
        Ok(login)
    }

    /// Drop the login (a warning when that fails: the run's outcome stands).
    pub(super) async fn drop_role(&self) {
        if let Err(e) = self.container.query("postgres", &drop_login_sql(&self.role)).await {
            tracing::warn!(role = %self.role, error = %e, "could not drop the temporary migration role in the container");
        }
    }
}

/// A temporary login on a host target that is not a superuser and may only become the owner role(s): the restore
/// runs through it, so SQL from the source runs with no more rights than those roles have.
pub(super) struct RestoreLogin {
    admin: HostServer,
    role: String,
}

impl RestoreLogin {
    async fn create(admin: &HostServer) -> Result<(Self, HostServer), MigrateError> {
        let role = temporary_role("gbo_restore");
        let (password, verifier) = temporary_password();
        admin
            .rows(
                "postgres",
                &format!(
                    "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT PASSWORD {};",
                    quote_ident(&role),
                    quote_literal(&verifier)
                ),
            )
            .await?;
        let login = Self { admin: admin.clone(), role: role.clone() };
        let server = admin.as_login(&role, password.as_bytes());
        if let Err(e) = server.connect("postgres").await {
            login.finish(None, None).await;
            let message = match e {
                MigrateError::Unreachable { message, .. } => message,
                other => other.to_string(),
            };
            return Err(MigrateError::RestoreLogin { target: admin.describe(), role, message });
        }
        Ok((login, server))
    }

    /// Give what the login may own in `database` to `owner`, then drop it.
    pub(super) async fn finish(&self, database: Option<&str>, owner: Option<&str>) -> Option<MigrateError> {
        let mut first = None;
        if let (Some(db), Some(owner)) = (database, owner) {
            let sql = format!(
                "REASSIGN OWNED BY {role} TO {owner}; DROP OWNED BY {role};",
                role = quote_ident(&self.role),
                owner = quote_ident(owner)
            );
            match self.admin.rows(db, &sql).await {
                Ok(_) | Err(MigrateError::NoSuchDatabase { .. }) => {}
                Err(e) => first = Some(e),
            }
        }
        if let Err(e) = self.admin.rows("postgres", &drop_login_sql(&self.role)).await {
            tracing::warn!(role = %self.role, error = %e, "could not drop the temporary restore role");
            first.get_or_insert(e);
        }
        first
    }
}

/// Make the empty database the restore goes into, on `target` (the previous one, when there is one, is dropped: it
/// was found empty, or saved first): the roles it lacks of `wanted` (created without login, password or superuser:
/// a source superuser that owns objects becomes a plain owner role), the temporary `login`'s membership in the
/// owner roles (`owners`: it may become them, nothing else), and the database owned by `database_owner`. Returns the
/// roles created.
pub(super) async fn prepare_target(
    target: &Endpoint,
    database: &str,
    exists: bool,
    wanted: &[String],
    owners: &[String],
    login: Option<&RestoreLogin>,
    database_owner: &str,
) -> Result<Vec<String>, MigrateError> {
    if exists {
        target.query("postgres", &format!("DROP DATABASE {} WITH (FORCE);", quote_ident(database))).await?;
    }
    let created = missing_roles(target, wanted).await?;
    for role in &created {
        target.query("postgres", &format!("CREATE ROLE {} NOLOGIN;", quote_ident(role))).await?;
    }
    if let Some(login) = login {
        for role in owners {
            target.query("postgres", &format!("GRANT {} TO {};", quote_ident(role), quote_ident(&login.role))).await?;
        }
    }
    target
        .query("postgres", &format!("CREATE DATABASE {} OWNER {};", quote_ident(database), quote_ident(database_owner)))
        .await?;
    Ok(created)
}
