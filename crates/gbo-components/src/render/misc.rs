//! Smaller configuration files: MinIO's environment, Vault's HCL, Qdrant's YAML, Stalwart's TOML, NocoDB's
//! environment, Roundcube's PHP config and the webmail Caddyfile.

use std::fmt::Write as _;

/// MinIO's environment file (root credentials: secret).
pub const DRIVE_ENV_PATH: &str = "/etc/gbo/drive.env";

/// MinIO's environment: root credentials and the data volume.
pub fn minio_env(access_key: &str, secret_key: &str) -> String {
    format!(
        "# Rendered by gbo; holds secrets.
MINIO_ROOT_USER={access_key}
MINIO_ROOT_PASSWORD={secret_key}
MINIO_VOLUMES=/opt/gbo/data
MINIO_BROWSER=on
"
    )
}

/// Vault's configuration path.
pub const VAULT_HCL_PATH: &str = "/opt/gbo/conf/vault.hcl";

/// Vault's server configuration: file storage on the data mount, a loopback listener.
///
/// TLS is off on the listener because it is reachable only on the container's loopback and, through LXD proxy
/// devices, on the host's 127.0.0.1; clients never need to switch verification off (the upstream installer's
/// `VAULT_SKIP_VERIFY=true` habit). `disable_mlock`: an unprivileged container cannot lock memory.
pub fn vault_hcl(port: u16) -> String {
    format!(
        "{}
storage \"file\" {{
  path = \"/opt/gbo/data/vault\"
}}

listener \"tcp\" {{
  address     = \"127.0.0.1:{port}\"
  tls_disable = true
}}

api_addr      = \"http://127.0.0.1:{port}\"
disable_mlock = true
ui            = false
log_level     = \"info\"
",
        super::HEADER
    )
}

/// Qdrant's configuration path: it holds the API key, so it is a secret file in the container's own `/etc/gbo`
/// (never on the conf mount).
pub const QDRANT_CONFIG_PATH: &str = "/etc/gbo/qdrant.yaml";

/// Qdrant's configuration: storage and snapshots on the data mount, loopback listeners, no telemetry, and
/// `service.api_key`: every host user reaches the published port on 127.0.0.1, so every request but the health
/// endpoints (`/healthz`, `/livez`, `/readyz`, which Qdrant leaves open) must carry the key.
pub fn qdrant_yaml(http_port: u16, grpc_port: u16, api_key: &str) -> String {
    format!(
        "# Rendered by gbo; holds secrets. Local changes are reported as drift and replaced on the next install.
log_level: INFO
storage:
  storage_path: /opt/gbo/data/storage
  snapshots_path: /opt/gbo/data/snapshots
service:
  host: 127.0.0.1
  http_port: {http_port}
  grpc_port: {grpc_port}
  enable_cors: false
  api_key: {api_key}
telemetry_disabled: true
"
    )
}

/// The file the llama.cpp servers read their API key from (`--api-key-file`; secret, owned by `gbuser`).
pub const LLM_API_KEY_PATH: &str = "/etc/gbo/llm-api-key";

/// The content of [`LLM_API_KEY_PATH`]: one key per line, as `llama-server --api-key-file` reads it. Its
/// `/health` endpoint stays open for the health check; every other request needs the key.
pub fn llm_api_key_file(api_key: &str) -> String {
    format!("{api_key}\n")
}

/// Stalwart's configuration (holds the fallback admin password: secret, kept off the conf mount).
pub const STALWART_CONFIG_PATH: &str = "/etc/gbo/email/config.toml";
/// Stalwart's log file prefix on the logs mount (it appends the date).
pub const STALWART_LOG_GLOB: &str = "/opt/gbo/logs/stalwart.log*";

/// One mail listener: id, port, protocol, implicit TLS.
pub const MAIL_LISTENERS: &[(&str, u16, &str, bool)] = &[
    ("smtp", 25, "smtp", false),
    ("submissions", 465, "smtp", true),
    ("submission", 587, "smtp", false),
    ("imaps", 993, "imap", true),
    ("pop3s", 995, "pop3", true),
    ("imap", 143, "imap", false),
    ("pop3", 110, "pop3", false),
    ("sieve", 4190, "managesieve", false),
    ("http", 8080, "http", false),
];

/// Stalwart's local configuration: listeners on loopback (published by proxy devices), RocksDB on the data mount,
/// logs on the logs mount, the fallback administrator.
pub fn stalwart_toml(hostname: &str, admin_password: &str) -> String {
    let mut out = String::new();
    out.push_str(
        "# Rendered by gbo; holds secrets. Local changes are reported as drift and replaced on the next install.\n",
    );
    let _ = writeln!(out, "server.hostname = \"{hostname}\"");
    for (id, port, protocol, implicit_tls) in MAIL_LISTENERS {
        let _ = writeln!(out, "server.listener.{id}.bind = [\"127.0.0.1:{port}\"]");
        let _ = writeln!(out, "server.listener.{id}.protocol = \"{protocol}\"");
        if *implicit_tls {
            let _ = writeln!(out, "server.listener.{id}.tls.implicit = true");
        }
    }
    out.push_str(
        "storage.data = \"rocksdb\"
storage.fts = \"rocksdb\"
storage.blob = \"rocksdb\"
storage.lookup = \"rocksdb\"
storage.directory = \"internal\"
store.rocksdb.type = \"rocksdb\"
store.rocksdb.path = \"/opt/gbo/data/rocksdb\"
store.rocksdb.compression = \"lz4\"
directory.internal.type = \"internal\"
directory.internal.store = \"rocksdb\"
tracer.log.type = \"log\"
tracer.log.level = \"info\"
tracer.log.path = \"/opt/gbo/logs\"
tracer.log.prefix = \"stalwart.log\"
tracer.log.rotate = \"daily\"
tracer.log.ansi = false
tracer.log.enable = true
authentication.fallback-admin.user = \"admin\"
",
    );
    let _ = writeln!(out, "authentication.fallback-admin.secret = \"{admin_password}\"");
    out
}

/// NocoDB's environment file (JWT secret: secret).
pub const TABLE_EDITOR_ENV_PATH: &str = "/etc/gbo/table-editor.env";

/// NocoDB's environment: port, JWT secret, no telemetry. Its metadata stays in SQLite (`noco.db`) in its working
/// directory on the data mount; PostgreSQL is at 127.0.0.1:5432 inside the container, to add as a data source.
pub fn nocodb_env(port: u16, jwt_secret: &str) -> String {
    format!(
        "# Rendered by gbo; holds secrets.
PORT={port}
NC_AUTH_JWT_SECRET={jwt_secret}
NC_DISABLE_TELE=true
NC_TOOL_DIR=/opt/gbo/data
"
    )
}

/// Roundcube's configuration (des_key and database password: secret), readable by PHP (`www-data`).
pub const ROUNDCUBE_CONFIG_PATH: &str = "/etc/roundcube/config.inc.php";
/// Left on webmail's data mount once Roundcube's schema is in its database.
pub const ROUNDCUBE_SCHEMA_MARKER: &str = "/opt/gbo/data/.gbo-roundcube-schema";
/// A piece of Roundcube's login page (the id of its user field): what webmail's health check looks for.
pub const ROUNDCUBE_LOGIN_MARKER: &str = "id=\"rcmloginuser\"";

/// What Roundcube's `config.inc.php` holds: secrets and the loopback ports of its wires (the tenant's tables,
/// and the email role or the tenant file's mail server).
#[derive(Debug, Clone, Copy)]
pub struct RoundcubeConfig<'a> {
    /// `des_key` (secret).
    pub des_key: &'a str,
    /// The password of the `roundcube` PostgreSQL role (secret, alphanumeric).
    pub db_password: &'a str,
    /// PostgreSQL's wire port.
    pub db_port: u16,
    /// IMAP's wire port.
    pub imap_port: u16,
    /// SMTP submission's wire port.
    pub smtp_port: u16,
    /// ManageSieve's wire port, when the mail server is gbo's email role.
    pub sieve_port: Option<u16>,
}

impl RoundcubeConfig<'_> {
    /// Roundcube's `config.inc.php`: PostgreSQL in the tenant's tables, IMAP/SMTP (and Sieve) on loopback wires
    /// (`127.0.0.1`, never `localhost`, which may resolve to `::1` where no wire listens).
    pub fn render(&self) -> String {
        let RoundcubeConfig { des_key, db_password, db_port, imap_port, smtp_port, sieve_port } = *self;
        let db_user = super::postgres::WEBMAIL_USER;
        let db_name = super::postgres::WEBMAIL_DATABASE;
        let sieve = sieve_port.map(|p| format!("$config['managesieve_host'] = '127.0.0.1:{p}';\n")).unwrap_or_default();
        format!(
            "<?php
// Rendered by gbo; holds secrets. Local changes are reported as drift and replaced on the next install.
$config = [];
$config['db_dsnw'] = 'pgsql://{db_user}:{db_password}@127.0.0.1:{db_port}/{db_name}';
$config['imap_host'] = '127.0.0.1:{imap_port}';
$config['smtp_host'] = '127.0.0.1:{smtp_port}';
$config['smtp_user'] = '%u';
$config['smtp_pass'] = '%p';
{sieve}$config['support_url'] = '';
$config['product_name'] = 'Webmail';
$config['des_key'] = '{des_key}';
$config['plugins'] = [];
$config['log_dir'] = '/opt/gbo/logs/';
$config['temp_dir'] = '/var/lib/roundcube/temp/';
$config['enable_installer'] = false;
"
        )
    }
}

/// Webmail's schema script, run by PHP as `www-data` (Debian ships no `initdb.sh`).
pub const ROUNDCUBE_SCHEMA_SCRIPT_PATH: &str = "/opt/gbo/conf/roundcube-schema.php";

/// The schema script: through Roundcube's own library (which reads the DSN from its config file, so no secret is
/// on a command line), create the schema in an empty database, or bring an existing one up to this Roundcube's
/// version; then leave [`ROUNDCUBE_SCHEMA_MARKER`]. Any error ends it with a non-zero status.
pub fn roundcube_schema_script() -> String {
    format!(
        "<?php
// Rendered by gbo: Roundcube's schema in its PostgreSQL database (the tenant's tables).
define('INSTALL_PATH', '/var/lib/roundcube/');
require_once INSTALL_PATH . 'program/include/clisetup.php';
$db = rcmail_utils::db();
if (!in_array($db->table_name('system'), (array) $db->list_tables())) {{
    rcmail_utils::db_init('/usr/share/roundcube/SQL');
}} else {{
    rcmail_utils::db_update('/usr/share/roundcube/SQL', 'roundcube', null, ['errors' => true]);
}}
if (!touch('{ROUNDCUBE_SCHEMA_MARKER}')) {{
    fwrite(STDERR, \"cannot create {ROUNDCUBE_SCHEMA_MARKER}\\n\");
    exit(1);
}}
"
    )
}

/// The webmail's own Caddyfile (Caddy serving Roundcube through PHP-FPM on loopback port `port`).
pub const WEBMAIL_CADDYFILE_PATH: &str = "/opt/gbo/conf/Caddyfile";

/// The webmail Caddyfile: no automatic HTTPS (the proxy role terminates TLS), PHP through Debian's PHP-FPM socket.
pub fn webmail_caddyfile(port: u16) -> String {
    format!(
        "{}
{{
	admin off
	auto_https off
	storage file_system {{
		root /opt/gbo/data/caddy
	}}
}}

:{port} {{
	bind 127.0.0.1
	root * /var/lib/roundcube/public_html
	php_fastcgi unix//run/php/php8.2-fpm.sock
	file_server
	log {{
		output file /opt/gbo/logs/access.log
		format json
	}}
}}
",
        super::HEADER
    )
}
