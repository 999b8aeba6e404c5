//! Forgejo's `app.ini` (alm) and the Forgejo runner's `config.yml` (alm-ci).

/// Forgejo's configuration, in the container's root filesystem (it holds secrets, so not on the conf mount).
pub const APP_INI_PATH: &str = "/etc/gbo/alm/app.ini";
/// The runner's configuration.
pub const RUNNER_CONFIG_PATH: &str = "/opt/gbo/conf/runner.yaml";
/// The runner's registration file.
pub const RUNNER_FILE: &str = "/opt/gbo/data/.runner";

/// `app.ini`: loopback HTTP on `port`, SQLite and repositories on the data mount, install locked, no SSH, no open
/// registration, Actions enabled. `root_url` is the public URL users see.
pub fn app_ini(root_url: &str, port: u16, secret_key: &str, internal_token: &str) -> String {
    format!(
        "; Rendered by gbo; holds secrets. Local changes are reported as drift and replaced on the next install.
APP_NAME = Forgejo
RUN_USER = gbuser
RUN_MODE = prod
WORK_PATH = /opt/gbo/data

[server]
PROTOCOL = http
HTTP_ADDR = 127.0.0.1
HTTP_PORT = {port}
ROOT_URL = {root_url}
DISABLE_SSH = true
START_SSH_SERVER = false
LFS_START_SERVER = false
OFFLINE_MODE = true
APP_DATA_PATH = /opt/gbo/data/data

[database]
DB_TYPE = sqlite3
PATH = /opt/gbo/data/forgejo.db
SQLITE_JOURNAL_MODE = WAL

[repository]
ROOT = /opt/gbo/data/repositories

[log]
MODE = console
LEVEL = Info
ROOT_PATH = /opt/gbo/logs

[security]
INSTALL_LOCK = true
SECRET_KEY = {secret_key}
INTERNAL_TOKEN = {internal_token}

[oauth2]
; Disabled so Forgejo never generates a JWT secret and writes it back into this file.
ENABLED = false

[service]
DISABLE_REGISTRATION = true
REQUIRE_SIGNIN_VIEW = false

[actions]
ENABLED = true
DEFAULT_ACTIONS_URL = self
"
    )
}

/// The runner's `config.yml`: jobs run on the host executor inside the container (no Docker), state on the data
/// mount. The runner reaches Forgejo on its own 127.0.0.1 through a wire, never through a disk mount.
pub fn runner_config(capacity: u32) -> String {
    format!(
        "# Rendered by gbo; local changes are reported as drift and replaced on the next install.
log:
  level: info
runner:
  file: {RUNNER_FILE}
  capacity: {capacity}
  timeout: 3h
  fetch_timeout: 5s
  fetch_interval: 2s
  labels:
    - \"debian-12:host\"
cache:
  enabled: false
host:
  workdir_parent: /opt/gbo/data/work
"
    )
}
