//! Validated values used at the command-line boundary: remote paths, Unix user names, health URLs, systemd units.
//! Each serialises as the text it was parsed from.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::error::Error;

/// An absolute path on the remote host naming a file (not ending in `/`, no NUL or newline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct RemotePath(String);

impl RemotePath {
    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The directory holding the file (`/` for a top-level file).
    pub fn parent(&self) -> &str {
        match self.0.rfind('/') {
            Some(0) | None => "/",
            Some(index) => &self.0[..index],
        }
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl FromStr for RemotePath {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Error> {
        let allowed = "an absolute file path such as /opt/gbo/bin/botserver (no trailing `/`, no `//`, `.` or `..` \
                       component, no newline or NUL): the remote side compares it with the directory's real path";
        let normalised = value.trim_end_matches('/');
        if !value.starts_with('/')
            || normalised.is_empty()
            || value.ends_with('/')
            || value.contains(['\n', '\0', '\r'])
            || value.split('/').skip(1).any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(Error::invalid("remote path", value, allowed));
        }
        Ok(RemotePath(value.to_string()))
    }
}

impl fmt::Display for RemotePath {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// A Unix user name as `useradd` accepts it: `[a-z_][a-z0-9_-]*`, at most 32 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct UnixUser(String);

impl UnixUser {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UnixUser {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Error> {
        let mut chars = value.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !first_ok || !rest_ok || value.len() > 32 {
            return Err(Error::invalid(
                "user name",
                value,
                "a Unix user name: lowercase letters, digits, `_` and `-`, starting with a letter or `_`",
            ));
        }
        Ok(UnixUser(value.to_string()))
    }
}

impl fmt::Display for UnixUser {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// An `http://host[:port]/path` URL as seen from the remote host. Probes travel through the SSH connection, so
/// only plain HTTP is supported (the service listens on the remote's loopback, as botserver's 5858 does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthUrl {
    raw: String,
    host: String,
    port: u16,
    path: String,
}

impl HealthUrl {
    /// Host part (name or address, without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Port (80 when not given).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Path and query, starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl FromStr for HealthUrl {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Error> {
        let bad = || {
            Error::invalid(
                "health URL",
                value,
                "an http:// URL as seen from the remote host, e.g. http://localhost:5858/api/health (https is not \
                 supported: the probe is tunnelled through SSH to the remote's own loopback)",
            )
        };
        let rest = value.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(index) => (&rest[..index], &rest[index..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') || path.contains(char::is_whitespace) {
            return Err(bad());
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let end = bracketed.find(']').ok_or_else(bad)?;
            let host = &bracketed[..end];
            let after = &bracketed[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(port) => port.parse::<u16>().map_err(|_| bad())?,
                None if after.is_empty() => 80,
                None => return Err(bad()),
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), port.parse::<u16>().map_err(|_| bad())?),
                None => (authority.to_string(), 80),
            }
        };
        let host_ok = !host.is_empty()
            && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == ':' || c == '_');
        if !host_ok || port == 0 {
            return Err(bad());
        }
        Ok(HealthUrl { raw: value.to_string(), host, port, path: path.to_string() })
    }
}

impl fmt::Display for HealthUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.raw)
    }
}

impl Serialize for HealthUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

/// A systemd service name as `--unit` accepts it: `name.service`, the name of letters, digits and `-_.@:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SystemdUnit(String);

impl SystemdUnit {
    /// The unit name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SystemdUnit {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Error> {
        validate_unit(value)?;
        Ok(SystemdUnit(value.to_string()))
    }
}

impl fmt::Display for SystemdUnit {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

fn validate_unit(unit: &str) -> Result<(), Error> {
    let ok = unit.ends_with(".service")
        && unit.len() > ".service".len()
        && unit.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("--unit", unit, "a systemd service name such as system.service"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths() {
        let path: RemotePath = "/opt/gbo/bin/botserver".parse().expect("parse");
        assert_eq!(path.parent(), "/opt/gbo/bin");
        assert_eq!(path.file_name(), "botserver");
        let top: RemotePath = "/botserver".parse().expect("parse");
        assert_eq!(top.parent(), "/");
        for bad in
            ["relative/path", "/opt/gbo/bin/", "/", "/opt/../etc/passwd", "/a\nb", "", "/opt//gbo/x", "/opt/./gbo/x"]
        {
            assert!(bad.parse::<RemotePath>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn user_names() {
        assert!("gbuser".parse::<UnixUser>().is_ok());
        assert!("_apt".parse::<UnixUser>().is_ok());
        for bad in ["", "Root", "1user", "a b", "x;rm", &"a".repeat(33)] {
            assert!(bad.parse::<UnixUser>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn health_urls() {
        let url: HealthUrl = "http://localhost:5858/api/health".parse().expect("parse");
        assert_eq!((url.host(), url.port(), url.path()), ("localhost", 5858, "/api/health"));
        let url: HealthUrl = "http://127.0.0.1".parse().expect("parse");
        assert_eq!((url.host(), url.port(), url.path()), ("127.0.0.1", 80, "/"));
        let url: HealthUrl = "http://[::1]:8080/h?x=1".parse().expect("parse");
        assert_eq!((url.host(), url.port(), url.path()), ("::1", 8080, "/h?x=1"));
        for bad in ["not a url", "https://localhost/api", "http://", "http://host:99999/", "http://u@h/", "ftp://x/"] {
            let error = bad.parse::<HealthUrl>().unwrap_err().to_string();
            assert!(error.contains("health URL"), "{error}");
        }
    }

    #[test]
    fn unit_names_are_validated() {
        assert!(validate_unit("system.service").is_ok());
        assert!(validate_unit("getty@tty1.service").is_ok());
        assert!(validate_unit("system").is_err());
        assert!(validate_unit("a;b.service").is_err());
    }
}
