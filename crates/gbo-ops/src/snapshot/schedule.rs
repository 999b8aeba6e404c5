//! Recurring jobs: gbo's own data-inclusive snapshot and prune (or ZFS's daily window) as a systemd timer, or a
//! cron file where systemd is not running; and LXD's native `snapshots.schedule`, which covers the container only.

use std::path::{Path, PathBuf};

use lxd_client::Client;

use super::{RetentionPolicy, SnapshotError, Span};
use crate::inventory::ManagedInstance;

/// How often a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Every {
    /// `@hourly`.
    Hourly,
    /// `@daily`.
    Daily,
    /// `@weekly`.
    Weekly,
    /// `@monthly`.
    Monthly,
}

/// A schedule that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule `{0}`: use @hourly, @daily, @weekly or @monthly")]
pub struct EveryError(pub String);

impl std::str::FromStr for Every {
    type Err = EveryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim_start_matches('@') {
            "hourly" => Ok(Every::Hourly),
            "daily" => Ok(Every::Daily),
            "weekly" => Ok(Every::Weekly),
            "monthly" => Ok(Every::Monthly),
            _ => Err(EveryError(s.to_string())),
        }
    }
}

impl Every {
    /// The cron (and LXD `snapshots.schedule`) spelling.
    pub fn cron(self) -> &'static str {
        match self {
            Every::Hourly => "@hourly",
            Every::Daily => "@daily",
            Every::Weekly => "@weekly",
            Every::Monthly => "@monthly",
        }
    }

    /// The systemd `OnCalendar=` spelling.
    pub fn on_calendar(self) -> &'static str {
        &self.cron()[1..]
    }
}

/// Which timer mechanism the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TimerKind {
    /// systemd is PID 1: a `.service` and a `.timer`.
    Systemd,
    /// No systemd: a file in `/etc/cron.d`.
    Cron,
}

impl TimerKind {
    /// systemd when `/run/systemd/system` exists (systemd's own test), cron otherwise.
    pub fn detect() -> Self {
        if Path::new("/run/systemd/system").is_dir() {
            TimerKind::Systemd
        } else {
            TimerKind::Cron
        }
    }
}

/// A recurring job: a name (unit and file stem) and the commands it runs, in order, stopping at the first failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerJob {
    /// `gbo-snapshot-acme` and the like: letters, digits and `-` only.
    pub name: String,
    /// When.
    pub every: Every,
    /// argv of each command (no secrets: these are visible in the files).
    pub commands: Vec<Vec<String>>,
    /// A sentence for the unit's description.
    pub description: String,
}

/// The files a job needs, relative to the filesystem root.
pub fn render(job: &TimerJob, kind: TimerKind) -> Vec<(PathBuf, String)> {
    let line = |argv: &Vec<String>| argv.iter().map(|a| shell_word(a)).collect::<Vec<_>>().join(" ");
    match kind {
        TimerKind::Systemd => {
            let mut service =
                format!("# Written by gbo.\n[Unit]\nDescription={}\n\n[Service]\nType=oneshot\n", job.description);
            for argv in &job.commands {
                service.push_str(&format!("ExecStart={}\n", line(argv)));
            }
            let timer = format!(
                "# Written by gbo.\n[Unit]\nDescription={} (timer)\n\n[Timer]\nOnCalendar={}\nPersistent=true\nRandomizedDelaySec=300\n\n[Install]\nWantedBy=timers.target\n",
                job.description,
                job.every.on_calendar()
            );
            vec![
                (PathBuf::from(format!("etc/systemd/system/{}.service", job.name)), service),
                (PathBuf::from(format!("etc/systemd/system/{}.timer", job.name)), timer),
            ]
        }
        TimerKind::Cron => {
            let commands = job.commands.iter().map(line).collect::<Vec<_>>().join(" && ");
            let text = format!(
                "# Written by gbo: {}.\nSHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n{} root {}\n",
                job.description,
                job.every.cron(),
                commands
            );
            vec![(PathBuf::from(format!("etc/cron.d/{}", job.name)), text)]
        }
    }
}

/// Write a job's files under `root` (`/` in production). Returns the paths written.
pub fn install(job: &TimerJob, kind: TimerKind, root: &Path) -> Result<Vec<PathBuf>, SnapshotError> {
    let mut written = Vec::new();
    for (relative, text) in render(job, kind) {
        let path = root.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|source| SnapshotError::Io { path: parent.to_path_buf(), source })?;
        }
        let tmp = path.with_extension("gbo-tmp");
        std::fs::write(&tmp, text).map_err(|source| SnapshotError::Io { path: tmp.clone(), source })?;
        std::fs::rename(&tmp, &path).map_err(|source| SnapshotError::Io { path: path.clone(), source })?;
        written.push(path);
    }
    Ok(written)
}

fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=@:%+,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// What to snapshot on a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleTarget {
    /// One container.
    Container(String),
    /// Every container of a tenant.
    Tenant(String),
}

/// The job `gbo snapshot schedule` installs: gbo's own snapshot, then prune when a policy is given.
pub fn snapshot_job(
    gbo: &Path,
    target: &ScheduleTarget,
    every: Every,
    expires: Option<Span>,
    policy: Option<RetentionPolicy>,
) -> TimerJob {
    let gbo = gbo.display().to_string();
    let (selector, stem): (Vec<String>, String) = match target {
        ScheduleTarget::Container(c) => (vec![c.clone()], c.clone()),
        ScheduleTarget::Tenant(t) => (vec!["--tenant".into(), t.clone()], format!("tenant-{t}")),
    };
    let mut create = vec![gbo.clone(), "snapshot".into(), "create".into()];
    create.extend(selector.clone());
    if let Some(expires) = expires {
        create.extend(["--expires".to_string(), expires.to_string()]);
    }
    let mut commands = vec![create];
    if let Some(p) = policy {
        let mut prune = vec![gbo, "snapshot".into(), "prune".into()];
        prune.extend(selector);
        prune.extend([
            "--keep-last".into(),
            p.keep_last.to_string(),
            "--keep-daily".into(),
            p.keep_daily.to_string(),
            "--keep-weekly".into(),
            p.keep_weekly.to_string(),
        ]);
        commands.push(prune);
    }
    let stem: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    TimerJob {
        name: format!("gbo-snapshot-{stem}"),
        every,
        commands,
        description: format!("gbo snapshots (container and host data) of {}", stem),
    }
}

/// `--lxd-native`: set LXD's own schedule on each container. Those snapshots cover the container only.
pub async fn set_lxd_native(
    lxd: &Client,
    containers: &[ManagedInstance],
    every: Every,
    expires: Option<Span>,
) -> Result<(), SnapshotError> {
    for container in containers {
        let name = container.name.clone();
        let mut config = serde_json::Map::new();
        config.insert("snapshots.schedule".into(), every.cron().into());
        config.insert("snapshots.pattern".into(), "auto-%d".into());
        config.insert("snapshots.expiry".into(), expires.map(|e| e.to_lxd_expiry()).unwrap_or_default().into());
        lxd.patch_instance(&name, &serde_json::json!({ "config": config })).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_systemd_and_cron_jobs() {
        let policy = RetentionPolicy { keep_last: 3, keep_daily: 7, keep_weekly: 4 };
        let job = snapshot_job(
            Path::new("/usr/local/bin/gbo"),
            &ScheduleTarget::Tenant("acme".into()),
            Every::Daily,
            "7d".parse().ok(),
            Some(policy),
        );
        assert_eq!(job.name, "gbo-snapshot-tenant-acme");
        let systemd = render(&job, TimerKind::Systemd);
        assert_eq!(systemd[0].0, PathBuf::from("etc/systemd/system/gbo-snapshot-tenant-acme.service"));
        assert!(
            systemd[0].1.contains("ExecStart=/usr/local/bin/gbo snapshot create --tenant acme --expires 7d\n"),
            "{}",
            systemd[0].1
        );
        assert!(systemd[0].1.contains(
            "ExecStart=/usr/local/bin/gbo snapshot prune --tenant acme --keep-last 3 --keep-daily 7 --keep-weekly 4\n"
        ));
        assert!(systemd[1].1.contains("OnCalendar=daily\n"));
        let cron = render(&job, TimerKind::Cron);
        assert_eq!(cron[0].0, PathBuf::from("etc/cron.d/gbo-snapshot-tenant-acme"));
        assert!(cron[0].1.contains("@daily root /usr/local/bin/gbo snapshot create --tenant acme --expires 7d && /usr/local/bin/gbo snapshot prune"), "{}", cron[0].1);
        assert_eq!("@weekly".parse::<Every>(), Ok(Every::Weekly));
        assert!("@yearly".parse::<Every>().is_err());
    }
}
