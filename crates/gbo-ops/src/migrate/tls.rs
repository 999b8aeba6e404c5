//! TLS to a host server, as libpq means it: the `sslmode` and `sslrootcert` keywords taken out of a connection
//! string (tokio-postgres knows only some of their values) or from `PGSSLMODE`/`PGSSLROOTCERT`, and the OpenSSL
//! connector built from them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::error::MigrateError;

/// libpq's `sslmode` (all of it but `allow`, which tries without TLS first and is refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it (libpq's default); the certificate is verified only when a root certificate is
    /// configured.
    Prefer,
    /// TLS or nothing; the certificate is verified only when a root certificate is configured (as libpq does).
    Require,
    /// TLS with the server's certificate chain verified against the root certificate.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, MigrateError> {
        match value {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            "allow" => Err(MigrateError::ConnectionString(
                "sslmode=allow is not supported (it tries without TLS first); use disable, prefer, require, verify-ca or verify-full".into(),
            )),
            other => Err(MigrateError::ConnectionString(format!(
                "sslmode `{}` is not one of disable, prefer, require, verify-ca, verify-full",
                other.escape_debug()
            ))),
        }
    }

    /// libpq's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// Where the CAs that verify a server come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootCert {
    /// A PEM file (`sslrootcert=FILE`).
    File(PathBuf),
    /// The system's trust store (`sslrootcert=system`).
    System,
}

/// TLS settings and the OpenSSL connector built from them (once, when the server is addressed).
#[derive(Clone)]
pub(super) struct Tls {
    mode: SslMode,
    root: Option<RootCert>,
    connector: Option<postgres_openssl::MakeTlsConnector>,
}

impl Tls {
    /// No TLS.
    pub(super) fn disabled() -> Self {
        Self { mode: SslMode::Disable, root: None, connector: None }
    }

    /// The settings of a connection string's own keywords (see [`split_own_keywords`]), else of `PGSSLMODE` and
    /// `PGSSLROOTCERT`, else libpq's defaults: `prefer`, and `~/.postgresql/root.crt` when it exists.
    pub(super) fn from_libpq(own: &BTreeMap<String, String>) -> Result<Self, MigrateError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mode = match own.get("sslmode").cloned().or_else(|| env("PGSSLMODE")) {
            Some(m) => SslMode::parse(&m)?,
            None => SslMode::Prefer,
        };
        let root = match own.get("sslrootcert").cloned().or_else(|| env("PGSSLROOTCERT")) {
            Some(r) if r == "system" => Some(RootCert::System),
            Some(r) => Some(RootCert::File(PathBuf::from(r))),
            None => default_root_cert(),
        };
        Self::new(mode, root)
    }

    /// The mode in force.
    pub(super) fn mode(&self) -> SslMode {
        self.mode
    }

    /// The connector, unless TLS is off.
    pub(super) fn connector(&self) -> Option<&postgres_openssl::MakeTlsConnector> {
        self.connector.as_ref()
    }

    /// The same settings for a libpq tool (`pg_dump`): its environment.
    pub(super) fn libpq_environment(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("PGSSLMODE", self.mode.as_str().to_string())];
        match &self.root {
            Some(RootCert::File(path)) => env.push(("PGSSLROOTCERT", path.display().to_string())),
            Some(RootCert::System) => env.push(("PGSSLROOTCERT", "system".to_string())),
            None => {}
        }
        env
    }

    /// libpq's rules: `verify-*` need a root certificate; with one configured, `prefer` and `require` verify the
    /// chain too; only `verify-full` checks the name.
    fn new(mode: SslMode, root: Option<RootCert>) -> Result<Self, MigrateError> {
        use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
        if mode == SslMode::Disable {
            return Ok(Self { mode, root, connector: None });
        }
        let verifying = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
        if verifying && root.is_none() {
            return Err(MigrateError::ConnectionString(format!(
                "sslmode={} needs the CA that signed the server's certificate: set sslrootcert=FILE (or PGSSLROOTCERT, \
                 or put it in ~/.postgresql/root.crt), or sslrootcert=system for the system's CAs",
                mode.as_str()
            )));
        }
        let openssl_error = |e: openssl::error::ErrorStack| MigrateError::ConnectionString(format!("TLS setup: {e}"));
        let mut builder = SslConnector::builder(SslMethod::tls()).map_err(openssl_error)?;
        match &root {
            Some(RootCert::File(path)) => {
                let pem = std::fs::read(path).map_err(|e| {
                    MigrateError::ConnectionString(format!("cannot read sslrootcert {}: {e}", path.display()))
                })?;
                let certs = openssl::x509::X509::stack_from_pem(&pem).map_err(|e| {
                    MigrateError::ConnectionString(format!(
                        "sslrootcert {} holds no PEM certificate: {e}",
                        path.display()
                    ))
                })?;
                if certs.is_empty() {
                    return Err(MigrateError::ConnectionString(format!(
                        "sslrootcert {} holds no PEM certificate",
                        path.display()
                    )));
                }
                let mut store = openssl::x509::store::X509StoreBuilder::new().map_err(openssl_error)?;
                for cert in certs {
                    store.add_cert(cert).map_err(openssl_error)?;
                }
                builder.set_cert_store(store.build());
                builder.set_verify(SslVerifyMode::PEER);
            }
            Some(RootCert::System) => builder.set_verify(SslVerifyMode::PEER),
            None => builder.set_verify(SslVerifyMode::NONE),
        }
        let mut connector = postgres_openssl::MakeTlsConnector::new(builder.build());
        let check_name = mode == SslMode::VerifyFull;
        connector.set_callback(move |config, _domain| {
            if !check_name {
                config.set_verify_hostname(false);
            }
            Ok(())
        });
        Ok(Self { mode, root, connector: Some(connector) })
    }

    /// The nearest tokio-postgres mode (which verifies nothing itself: the connector does).
    pub(super) fn tokio_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }
}

/// libpq's default root certificate, `~/.postgresql/root.crt`, when it exists.
fn default_root_cert() -> Option<RootCert> {
    let home = std::env::var_os("HOME")?;
    let path = PathBuf::from(home).join(".postgresql").join("root.crt");
    path.is_file().then_some(RootCert::File(path))
}

/// Connection-string keywords gbo reads itself (tokio-postgres knows only some of their values).
const OWN_KEYWORDS: [&str; 2] = ["sslmode", "sslrootcert"];

/// Split gbo's own keywords out of a connection string (URL or `key=value`), returning the rest for tokio-postgres.
pub(super) fn split_own_keywords(s: &str) -> Result<(String, BTreeMap<String, String>), MigrateError> {
    let mut own = BTreeMap::new();
    if s.starts_with("postgresql://") || s.starts_with("postgres://") {
        let Some((base, query)) = s.split_once('?') else {
            return Ok((s.to_string(), own));
        };
        let decode = |part: &str| {
            percent_encoding::percent_decode_str(part).decode_utf8().map(|c| c.into_owned()).map_err(|_| {
                MigrateError::ConnectionString("a URL parameter is not valid percent-encoded UTF-8".into())
            })
        };
        let mut kept = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = param.split_once('=').ok_or_else(|| {
                MigrateError::ConnectionString(format!("URL parameter `{}` has no value", param.escape_debug()))
            })?;
            let key = decode(key)?;
            if OWN_KEYWORDS.contains(&key.as_str()) {
                own.insert(key, decode(value)?);
            } else {
                kept.push(param);
            }
        }
        let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        return Ok((rest, own));
    }
    let mut rest = String::new();
    for (key, value) in keyword_values(s)? {
        if OWN_KEYWORDS.contains(&key.as_str()) {
            own.insert(key, value);
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            rest.push_str(&format!("{key}='{quoted}' "));
        }
    }
    Ok((rest.trim_end().to_string(), own))
}

/// libpq's `key = value` form: whitespace around `=`, values bare or in single quotes, backslash escapes.
/// Messages name keys, never values (a value may be a password).
fn keyword_values(s: &str) -> Result<Vec<(String, String)>, MigrateError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    let skip_space = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
    };
    loop {
        skip_space(&mut chars);
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        skip_space(&mut chars);
        if chars.next() != Some('=') {
            return Err(MigrateError::ConnectionString(format!("`{}` is missing `=` and a value", key.escape_debug())));
        }
        skip_space(&mut chars);
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => break,
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(MigrateError::ConnectionString(format!(
                            "the value of `{}` has no closing quote",
                            key.escape_debug()
                        )))
                    }
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        value.push(next);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_connection_keywords_are_split_out_of_both_forms() {
        let (rest, own) = split_own_keywords(
            "postgresql://u:p%40ss@127.0.0.1:5433/db?application_name=x&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca%20dir%2Fca.crt",
        )
        .expect("url");
        assert_eq!(rest, "postgresql://u:p%40ss@127.0.0.1:5433/db?application_name=x");
        assert_eq!(own.get("sslmode").map(String::as_str), Some("verify-full"));
        assert_eq!(own.get("sslrootcert").map(String::as_str), Some("/tmp/ca dir/ca.crt"));
        let (rest, own) = split_own_keywords("postgresql://u@h/db").expect("plain url");
        assert_eq!((rest.as_str(), own.len()), ("postgresql://u@h/db", 0));

        let (rest, own) =
            split_own_keywords("host=/tmp  port = 7000 password='it\\'s \\\\ x' sslmode=require sslrootcert='/a b/c'")
                .expect("key=value");
        assert_eq!(own.get("sslmode").map(String::as_str), Some("require"));
        assert_eq!(own.get("sslrootcert").map(String::as_str), Some("/a b/c"));
        let config: tokio_postgres::Config = rest.parse().expect("the rest still parses");
        assert_eq!(config.get_password(), Some(&b"it's \\ x"[..]));
        assert_eq!(config.get_ports(), &[7000]);
        for bad in ["host", "password='unterminated", "postgresql://h/db?sslmode"] {
            let err = split_own_keywords(bad).expect_err(bad).to_string();
            assert!(!err.contains("unterminated"), "values are never echoed: {err}");
        }
    }
}
