//! Cluster placement of new containers: `--target` for one run, else the tenant file's `[placement]` (a member or
//! `@group`), else LXD's own scheduler. A placement is checked against the members' state before anything is
//! created: a member that is not `Online` (offline, evacuated, blocked) is refused by name, and so is a group with
//! no online member. LXD's scheduler itself never picks an offline or evacuated member.

use std::collections::BTreeMap;

use gbo_components::{Placement, Role};
use lxd_client::{Client, ClusterMember};

use super::error::InstallError;
use crate::inventory::ManagedInstance;

/// Where each component is or goes.
#[derive(Debug, Clone, Default)]
pub struct Placements {
    /// `target=` of each instance to create (by instance name); absent: LXD's scheduler.
    pub targets: BTreeMap<String, String>,
    /// The member shown for each instance: its location when it exists, the placement when it does not.
    pub shown: BTreeMap<String, String>,
    /// The cluster's members (empty off a cluster).
    pub members: Vec<ClusterMember>,
}

/// Why `placement` cannot take a new container, from the members' state; `None` when it can.
pub fn refusal(placement: &Placement, members: &[ClusterMember]) -> Option<String> {
    match placement {
        Placement::Member(name) => match members.iter().find(|m| &m.server_name == name) {
            None => Some(format!(
                "member {name} is not in the cluster (members: {})",
                members.iter().map(|m| m.server_name.as_str()).collect::<Vec<_>>().join(", ")
            )),
            Some(m) if !m.is_online() => {
                Some(format!("member {name} is {} ({}): nothing is placed on it", m.status, m.message))
            }
            Some(_) => None,
        },
        Placement::Group(group) => {
            let in_group: Vec<&ClusterMember> = members.iter().filter(|m| m.groups.contains(group)).collect();
            if in_group.is_empty() {
                Some(format!("cluster group {group} has no member"))
            } else if !in_group.iter().any(|m| m.is_online()) {
                Some(format!("cluster group {group} has no online member"))
            } else {
                None
            }
        }
    }
}

/// The placement of every component in `wanted` (instance name and role): `target` (from `--target`) first, then
/// the tenant file's `placement`. Refused (bad input) when a placement names a member that is not there or not
/// online, or when `target` is given to a daemon that is no cluster.
pub(super) async fn resolve(
    lxd: &Client,
    target: Option<&Placement>,
    placement: &BTreeMap<Role, Placement>,
    wanted: &[(String, Role)],
    instances: &[ManagedInstance],
    notes: &mut Vec<String>,
) -> Result<Placements, InstallError> {
    let info = lxd.cluster().await.map_err(InstallError::lxd("reading the cluster state"))?;
    if !info.enabled {
        if let Some(t) = target {
            return Err(InstallError::BadInput(format!(
                "--target {t}: {} is not a cluster; placement needs one",
                lxd.endpoint().describe()
            )));
        }
        if !placement.is_empty() {
            notes.push("[placement] is ignored: this daemon is not a cluster".to_string());
        }
        return Ok(Placements::default());
    }
    let members = lxd.cluster_members().await.map_err(InstallError::lxd("listing the cluster's members"))?;
    let mut out = Placements { members: members.clone(), ..Placements::default() };
    for (instance, role) in wanted {
        let chosen = target.or_else(|| placement.get(role));
        if let Some(existing) = instances.iter().find(|m| m.name.as_str() == instance) {
            let location = existing.instance.location.clone();
            if let Some(p) = chosen {
                let differs = match p {
                    Placement::Member(m) => m != &location,
                    Placement::Group(g) => !members.iter().any(|m| m.server_name == location && m.groups.contains(g)),
                };
                if differs {
                    notes.push(format!(
                        "{instance} is on {location}, its placement says {p}: `gbo move --tenant T {role} --to MEMBER` \
                         moves it (install never moves a container)"
                    ));
                }
            }
            out.shown.insert(instance.clone(), location);
            continue;
        }
        match chosen {
            Some(p) => {
                if let Some(why) = refusal(p, &members) {
                    let source = if target.is_some() { "--target".to_string() } else { format!("placement.{role}") };
                    return Err(InstallError::BadInput(format!("{source} = {p}: {why}; {instance} cannot go there")));
                }
                out.targets.insert(instance.clone(), p.target());
                out.shown.insert(instance.clone(), p.target());
            }
            None => {
                out.shown.insert(instance.clone(), "(LXD's scheduler)".to_string());
            }
        }
    }
    Ok(out)
}
