//! Validated names: every call takes these, so a bad name is refused before any request is sent.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $ty(String);

        impl $ty {
            /// Validate `value` against LXD's rules.
            pub fn new(value: impl Into<String>) -> Result<Self> {
                let value = value.into();
                match $check(&value) {
                    Ok(()) => Ok(Self(value)),
                    Err(rule) => Err(Error::InvalidName { kind: $kind, value, rule }),
                }
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = Error;
            fn try_from(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = Error;
            fn try_from(s: String) -> Result<Self> {
                Self::new(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

const INSTANCE_RULE: &str = "instance names are 1-63 characters of ASCII letters, digits and `-`, start with a \
                             letter and do not end with `-` (e.g. `default-tables`)";

fn check_instance(value: &str) -> Result<(), &'static str> {
    let bytes = value.as_bytes();
    let ok = (1..=63).contains(&bytes.len())
        && bytes[0].is_ascii_alphabetic()
        && bytes[bytes.len() - 1] != b'-'
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(INSTANCE_RULE)
    }
}

fn check_snapshot(value: &str) -> Result<(), &'static str> {
    const RULE: &str = "snapshot names are 1-255 characters without `/`, spaces or `*`, and not `.` or `..`";
    let ok = !value.is_empty()
        && value.len() <= 255
        && value != "."
        && value != ".."
        && !value.chars().any(|c| c == '/' || c == '*' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(RULE)
    }
}

fn check_device(value: &str) -> Result<(), &'static str> {
    const RULE: &str = "device names are 1-63 characters of ASCII letters, digits and `/._:-`, not starting with `.`";
    let ok = (1..=63).contains(&value.len())
        && !value.starts_with('.')
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._:-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RULE)
    }
}

fn check_backup(value: &str) -> Result<(), &'static str> {
    const RULE: &str = "backup names are 1-255 characters without `/`, spaces or control characters";
    let ok = !value.is_empty()
        && value.len() <= 255
        && !value.chars().any(|c| c == '/' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(RULE)
    }
}

/// Names of other objects (profiles, pools, volumes, networks, projects, aliases): not empty, no `/`, no spaces.
fn check_object(value: &str) -> Result<(), &'static str> {
    const RULE: &str = "names are 1-255 characters without `/`, spaces or control characters";
    let ok = !value.is_empty()
        && value.len() <= 255
        && !value.chars().any(|c| c == '/' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(RULE)
    }
}

name_type!(
    /// An instance (container or VM) name, checked with LXD 5.0's rules (the stricter of old and new daemons:
    /// a leading digit is refused).
    InstanceName, "instance", check_instance
);
name_type!(
    /// A snapshot name: no `/`, whitespace or `*`; not `.` or `..`.
    SnapshotName, "snapshot", check_snapshot
);
name_type!(
    /// A device name: `[A-Za-z0-9/._:-]`, 1-63 characters, not starting with `.`.
    DeviceName, "device", check_device
);
name_type!(
    /// A backup name: no `/`, whitespace or control characters.
    BackupName, "backup", check_backup
);
name_type!(
    /// The name of a profile, storage pool, volume, network, project or image alias.
    ObjectName, "object", check_object
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_follow_lxd_5_0_rules() {
        for good in ["default-tables", "a", "mycompany-vectordb", "x1-2"] {
            assert!(InstanceName::new(good).is_ok(), "{good}");
        }
        let long = "a".repeat(64);
        for bad in ["", "-system", "vector_db", "1abc", "abc-", "Ab c", long.as_str(), "é"] {
            let err = InstanceName::new(bad).unwrap_err();
            assert!(err.to_string().contains("instance names are"), "{bad}: {err}");
        }
        assert!(InstanceName::new("a".repeat(63)).is_ok());
    }

    #[test]
    fn snapshot_and_device_names() {
        assert!(SnapshotName::new("backup-2024-01-15").is_ok());
        for bad in ["", "a/b", "a b", "a*", "..", "."] {
            assert!(SnapshotName::new(bad).is_err(), "{bad}");
        }
        assert!(BackupName::new("b1").is_ok());
        for bad in ["", "a/b", "a b", "a\nb"] {
            assert!(BackupName::new(bad).is_err(), "{bad}");
        }
        assert!(DeviceName::new("gbo-port-5432").is_ok());
        assert!(DeviceName::new("eth0:1/x.y").is_ok());
        for bad in ["", ".hidden", "a b", "a@b"] {
            assert!(DeviceName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_deserialize_with_validation() {
        let ok: InstanceName = serde_json::from_str("\"web\"").expect("from_str");
        assert_eq!(ok.as_str(), "web");
        assert!(serde_json::from_str::<InstanceName>("\"bad_name\"").is_err());
    }
}
