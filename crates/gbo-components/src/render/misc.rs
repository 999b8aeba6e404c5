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

/// Roundcube's configuration (des_key: secret), readable by PHP (`www-data`).
pub const ROUNDCUBE_CONFIG_PATH: &str = "/etc/roundcube/config.inc.php";
/// Roundcube's SQLite database, created by the init step.
pub const ROUNDCUBE_DB: &str = "/opt/gbo/data/roundcube.db";

/// Roundcube's `config.inc.php`: SQLite on the data mount, IMAP/SMTP/Sieve of the email role on loopback wires.
pub fn roundcube_config(des_key: &str, imap_port: u16, smtp_port: u16, sieve_port: u16) -> String {
    format!(
        "<?php
// Rendered by gbo; holds secrets. Local changes are reported as drift and replaced on the next install.
$config = [];
$config['db_dsnw'] = 'sqlite:///{ROUNDCUBE_DB}?mode=0640';
$config['imap_host'] = 'localhost:{imap_port}';
$config['smtp_host'] = 'localhost:{smtp_port}';
$config['smtp_user'] = '%u';
$config['smtp_pass'] = '%p';
$config['managesieve_host'] = 'localhost:{sieve_port}';
$config['support_url'] = '';
$config['product_name'] = 'Webmail';
$config['des_key'] = '{des_key}';
$config['plugins'] = [];
$config['log_dir'] = '/opt/gbo/logs/';
$config['temp_dir'] = '/var/lib/roundcube/temp/';
$config['enable_installer'] = false;
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
