//! The system role: botserver's environment (secret) and the botui settings.

use std::fmt::Write as _;

/// botserver's environment file (holds the database password and MinIO keys).
pub const SYSTEM_ENV_PATH: &str = "/etc/gbo/system.env";
/// botserver's port.
pub const BOTSERVER_PORT: u16 = 5858;
/// botui's port.
pub const BOTUI_PORT: u16 = 5859;
/// What botui must use to reach botserver: loopback HTTP, never the external HTTPS URL (the seed's WebSocket
/// disconnect incident).
pub const BOTSERVER_URL: &str = "http://localhost:5858";

/// Settings for botserver's environment; each optional service is set only when the tenant has it. Every
/// service that takes a credential gets one: loopback is not a trust boundary (every host user reaches the
/// published ports on 127.0.0.1).
#[derive(Clone, PartialEq, Eq)]
pub struct SystemEnv<'a> {
    /// gbuser's PostgreSQL password.
    pub tables_password: &'a str,
    /// MinIO access key.
    pub drive_access_key: &'a str,
    /// MinIO secret key.
    pub drive_secret_key: &'a str,
    /// The cache's `requirepass`, carried by `CACHE_URL`.
    pub cache_password: &'a str,
    /// Whether the tenant has Vault (wired to 127.0.0.1:8200).
    pub vault: bool,
    /// Qdrant's API key when the tenant has Qdrant (wired to 127.0.0.1:6333).
    pub vector_db_api_key: Option<&'a str>,
    /// The llama.cpp servers' API key when the tenant has the llm role (wired to 127.0.0.1:8081/8082).
    pub llm_api_key: Option<&'a str>,
}

impl std::fmt::Debug for SystemEnv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemEnv")
            .field("vault", &self.vault)
            .field("vector_db", &self.vector_db_api_key.is_some())
            .field("llm", &self.llm_api_key.is_some())
            .finish_non_exhaustive()
    }
}

/// botserver's environment file. Every service is on the container's own loopback through wires.
pub fn system_env(env: &SystemEnv<'_>) -> String {
    let mut out = String::new();
    out.push_str(
        "# Rendered by gbo; holds secrets. Every service is reached on 127.0.0.1 through LXD proxy devices.\n",
    );
    let _ = writeln!(out, "DATABASE_URL=postgres://gbuser:{}@localhost:5432/botserver", env.tables_password);
    let _ = writeln!(out, "CACHE_URL=redis://:{}@localhost:6379", env.cache_password);
    out.push_str("DRIVE_SERVER=http://localhost:9000\n");
    let _ = writeln!(out, "DRIVE_ACCESSKEY={}", env.drive_access_key);
    let _ = writeln!(out, "DRIVE_SECRET={}", env.drive_secret_key);
    if env.vault {
        out.push_str("VAULT_ADDR=http://localhost:8200\n");
    }
    if let Some(key) = env.vector_db_api_key {
        out.push_str("VECTORDB_URL=http://localhost:6333\n");
        let _ = writeln!(out, "VECTORDB_API_KEY={key}");
    }
    if let Some(key) = env.llm_api_key {
        out.push_str("LLM_URL=http://localhost:8081\nEMBEDDING_URL=http://localhost:8082\n");
        let _ = writeln!(out, "LLM_KEY={key}");
    }
    let _ = writeln!(out, "PORT={BOTSERVER_PORT}");
    out
}
