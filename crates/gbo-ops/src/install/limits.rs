//! `gbo limits`: LXD's `limits.cpu` and `limits.memory` on one container, validated like the tenant file's
//! `[limits.ROLE]` (a later install names a limit that is not in the file as drift).

use lxd_client::{Client, InstanceName};

use super::error::InstallError;

/// The most CPUs `limits.cpu` may name.
pub const MAX_CPUS: u32 = 1024;

/// Check `cpu` and `memory` before anything changes: at least one, CPUs 1 to [`MAX_CPUS`], memory as the tenant
/// file takes it (`4GB`, `512MiB`, `50%`).
pub fn validate(cpu: Option<u32>, memory: Option<&str>) -> Result<(), InstallError> {
    if cpu.is_none() && memory.is_none() {
        return Err(InstallError::BadInput("give --cpu N and/or --memory SIZE".into()));
    }
    if let Some(c) = cpu {
        if c == 0 || c > MAX_CPUS {
            return Err(InstallError::BadInput(format!("--cpu {c}: expected 1 to {MAX_CPUS}")));
        }
    }
    if let Some(m) = memory {
        gbo_components::tenant_file::validate_memory("--memory", m)?;
    }
    Ok(())
}

/// Set the limits (validated first); whether anything changed.
pub async fn set(
    lxd: &Client,
    name: &InstanceName,
    cpu: Option<u32>,
    memory: Option<&str>,
) -> Result<bool, InstallError> {
    validate(cpu, memory)?;
    lxd.update_instance(name, |put| {
        if let Some(c) = cpu {
            put.config.insert("limits.cpu".into(), c.to_string());
        }
        if let Some(m) = memory {
            put.config.insert("limits.memory".into(), m.to_string());
        }
    })
    .await
    .map_err(InstallError::lxd(format!("setting the limits of {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_limits_are_refused_naming_the_value() {
        assert!(validate(None, None).is_err());
        assert!(validate(Some(0), None).unwrap_err().to_string().contains("--cpu 0"));
        assert!(validate(Some(MAX_CPUS + 1), None).is_err());
        assert!(validate(None, Some("lots")).unwrap_err().to_string().contains("lots"));
        validate(Some(2), Some("4GB")).expect("valid");
    }
}
