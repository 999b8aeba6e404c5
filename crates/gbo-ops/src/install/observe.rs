//! Observing what LXD and the host have: the instance, host directories and files, and one probe exec per
//! running container (websocket exec: no secret in it, no recorded output left behind).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use lxd_client::{Client, ExecRequest, Instance, InstanceName, ObjectName};
use sha2::{Digest, Sha256};

use super::error::InstallError;
use super::plan::{artifact_list, host_id, idmap_base, Desired, FileState, Observed, Probe, UnitState};
use crate::hostfs::{HostDir, Kind};

/// The probe script: paths and unit names come as arguments (`f:`, `c:`, `u:` prefixes), never secrets.
const PROBE_SCRIPT: &str = r#"for a in "$@"; do
  case "$a" in
    f:*) p=${a#f:}
         if [ -L "$p" ]; then echo "L $p"
         elif [ -f "$p" ]; then echo "F $(stat -c '%a %u %g' "$p") $(sha256sum "$p" | cut -d' ' -f1) $p"
         else echo "M $p"; fi;;
    d:*) p=${a#d:}
         if [ -d "$p" ] && [ ! -L "$p" ]; then echo "D $(stat -c '%u %g' "$p") $p"; else echo "DM $p"; fi;;
    c:*) p=${a#c:}; if [ -e "$p" ]; then echo "C1 $p"; else echo "C0 $p"; fi;;
    u:*) u=${a#u:}
         s=$(systemctl is-active "$u" 2>/dev/null | head -n1)
         e=$(systemctl is-enabled "$u" 2>/dev/null | head -n1)
         echo "U ${s:-unknown} ${e:-unknown} $u";;
  esac
done
"#;

/// The most gbo reads of a rendered file on a mount to compare it (no rendered file comes near it; a container
/// that grows one past it gets an error naming the file instead of a host out of memory).
pub const HOST_FILE_LIMIT: u64 = 16 * 1024 * 1024;

/// Read one host file's state below `root` (never following a link), with owner ids shifted back into the
/// container's view. A link, FIFO or anything but a regular file counts as a file to replace.
pub fn host_file_state(root: &HostDir, path: &Path, base: u32) -> Result<Option<FileState>, InstallError> {
    let rel = root.relative(path)?;
    let Some(entry) = root.stat(rel)? else { return Ok(None) };
    match entry.kind {
        Kind::File => {}
        Kind::Dir => {
            return Ok(Some(FileState {
                sha256: String::new(),
                mode: entry.mode,
                uid: u32::MAX,
                gid: u32::MAX,
                symlink: false,
            }))
        }
        _ => return Ok(Some(FileState { sha256: String::new(), mode: 0, uid: 0, gid: 0, symlink: true })),
    }
    let Some(content) = root.read_file(rel, HOST_FILE_LIMIT)? else { return Ok(None) };
    Ok(Some(FileState {
        sha256: hex::encode(Sha256::digest(&content)),
        mode: entry.mode,
        uid: entry.uid.checked_sub(base).unwrap_or(u32::MAX),
        gid: entry.gid.checked_sub(base).unwrap_or(u32::MAX),
        symlink: false,
    }))
}

/// Observe one component. `instance` comes from one list request for the whole tenant.
pub async fn observe(lxd: &Client, desired: &Desired, instance: Option<&Instance>) -> Result<Observed, InstallError> {
    let mut observed = Observed { instance: instance.cloned(), ..Default::default() };
    observed.idmap_base = instance.and_then(idmap_base);
    let on_host = !desired.host_dirs.is_empty() || desired.files.iter().any(|f| f.host_path.is_some());
    let root = if on_host { HostDir::open_root_if_exists(&desired.stack_dir)? } else { None };
    for volume in &desired.volumes {
        let pool = ObjectName::new(volume.pool.as_str()).map_err(InstallError::lxd(format!("pool {}", volume.pool)))?;
        let name =
            ObjectName::new(volume.volume.as_str()).map_err(InstallError::lxd(format!("volume {}", volume.volume)))?;
        let exists = lxd
            .storage_volume(&pool, &name)
            .await
            .map_err(InstallError::lxd(format!("reading volume {} on pool {}", volume.volume, volume.pool)))?
            .is_some();
        observed.volumes.insert(volume.volume.clone(), exists);
    }
    for dir in &desired.host_dirs {
        let state = match &root {
            Some(root) => match root.stat(root.relative(&dir.path)?)? {
                Some(entry) if entry.kind == Kind::Dir => Some((entry.uid, entry.gid)),
                Some(_) => Some((u32::MAX, u32::MAX)),
                None => None,
            },
            None => None,
        };
        observed.host_dirs.insert(dir.path.clone(), state);
    }
    let base = observed.idmap_base.unwrap_or(0);
    for placed in &desired.files {
        if let Some(host) = &placed.host_path {
            let state = match &root {
                Some(root) => host_file_state(root, host, base)?,
                None => None,
            };
            observed.host_files.insert(host.clone(), state);
        }
    }
    if let Some(instance) = instance {
        if instance.is_running() {
            observed.probe = Some(probe(lxd, desired).await?);
        }
    }
    Ok(observed)
}

/// Run the probe exec for a running container.
pub async fn probe(lxd: &Client, desired: &Desired) -> Result<Probe, InstallError> {
    let name = InstanceName::new(desired.instance.clone())
        .map_err(InstallError::lxd(format!("instance name {}", desired.instance)))?;
    let mut argv: Vec<String> = vec!["sh".into(), "-c".into(), PROBE_SCRIPT.into(), "gbo-probe".into()];
    for placed in &desired.files {
        if placed.host_path.is_none() {
            argv.push(format!("f:{}", placed.file.path));
        }
    }
    for artifact in artifact_list(&desired.spec) {
        argv.push(format!("f:{}", artifact.install_path));
    }
    for volume in &desired.volumes {
        argv.push(format!("d:{}", volume.path));
    }
    for init in &desired.spec.init {
        argv.push(format!("c:{}", init.creates));
    }
    for unit in desired.spec.units.iter().chain(desired.spec.masked_units.iter()) {
        argv.push(format!("u:{unit}"));
    }
    let request = ExecRequest::new(argv).timeout(Duration::from_secs(60));
    let output = lxd.exec_output(&name, &request).await.map_err(InstallError::lxd(format!("probing {name}")))?;
    if !output.success() {
        return Err(InstallError::Command {
            instance: desired.instance.clone(),
            command: "sh -c <probe>".into(),
            code: output.exit_code,
            stderr: tail(&output.stderr_text()),
        });
    }
    Ok(parse_probe(&output.stdout_text()))
}

/// Parse the probe's output.
pub fn parse_probe(text: &str) -> Probe {
    let mut probe = Probe::default();
    for line in text.lines() {
        let mut parts = line.splitn(2, ' ');
        let tag = parts.next().unwrap_or_default();
        let rest = parts.next().unwrap_or_default();
        match tag {
            "L" => {
                probe.files.insert(
                    rest.to_string(),
                    Some(FileState { sha256: String::new(), mode: 0, uid: 0, gid: 0, symlink: true }),
                );
            }
            "M" => {
                probe.files.insert(rest.to_string(), None);
            }
            "F" => {
                let fields: Vec<&str> = rest.splitn(5, ' ').collect();
                if fields.len() == 5 {
                    let state = FileState {
                        mode: u32::from_str_radix(fields[0], 8).unwrap_or(0),
                        uid: fields[1].parse().unwrap_or(u32::MAX),
                        gid: fields[2].parse().unwrap_or(u32::MAX),
                        sha256: fields[3].to_string(),
                        symlink: false,
                    };
                    probe.files.insert(fields[4].to_string(), Some(state));
                }
            }
            "D" => {
                let fields: Vec<&str> = rest.splitn(3, ' ').collect();
                if let [uid, gid, path] = fields.as_slice() {
                    let owner = uid.parse().ok().zip(gid.parse().ok());
                    probe.dirs.insert(path.to_string(), owner);
                }
            }
            "DM" => {
                probe.dirs.insert(rest.to_string(), None);
            }
            "C1" => {
                probe.creates.insert(rest.to_string(), true);
            }
            "C0" => {
                probe.creates.insert(rest.to_string(), false);
            }
            "U" => {
                let fields: Vec<&str> = rest.splitn(3, ' ').collect();
                if fields.len() == 3 {
                    probe.units.insert(
                        fields[2].to_string(),
                        UnitState { active: fields[0].to_string(), enabled: fields[1].to_string() },
                    );
                }
            }
            _ => {}
        }
    }
    probe
}

/// The last lines of a command's stderr, for error messages.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(5);
    lines[start..].join(" | ")
}

/// Host owner of a container id, for messages.
pub fn describe_owner(base: Option<u32>, uid: u32) -> String {
    match base {
        Some(b) => host_id(b, uid).to_string(),
        None => format!("base+{uid}"),
    }
}

/// Group the tenant's instances by name.
pub fn by_name(instances: &[crate::inventory::ManagedInstance]) -> BTreeMap<String, Instance> {
    instances.iter().map(|m| (m.name.to_string(), m.instance.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_is_parsed() {
        let text = "F 644 0 0 abc /etc/systemd/system/tables.service\nM /etc/gbo/x y\nL /usr/local/bin/valkey-cli\nC1 /opt/gbo/data/pgdata/PG_VERSION\nD 101 102 /opt/gbo/data\nDM /opt/gbo/logs\nU active enabled tables.service\nU inactive masked postgresql.service\n";
        let probe = parse_probe(text);
        assert_eq!(
            probe.files["/etc/systemd/system/tables.service"].as_ref().map(|s| (s.mode, s.sha256.as_str())),
            Some((0o644, "abc"))
        );
        assert_eq!(probe.files["/etc/gbo/x y"], None);
        assert!(probe.files["/usr/local/bin/valkey-cli"].as_ref().is_some_and(|s| s.symlink));
        assert!(probe.creates["/opt/gbo/data/pgdata/PG_VERSION"]);
        assert_eq!(probe.units["postgresql.service"].enabled, "masked");
        assert_eq!((probe.dirs["/opt/gbo/data"], probe.dirs["/opt/gbo/logs"]), (Some((101, 102)), None));
    }
}
