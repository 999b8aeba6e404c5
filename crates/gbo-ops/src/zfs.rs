//! ZFS snapshot usage, daily snapshots and batched retention on the host pool, through the `zfs` command.
//!
//! OpenZFS destroys many snapshots of one dataset in one call (`pool/ds@a%c,e,g%h`: a comma list whose items may be
//! inclusive ranges), estimates the space a destroy frees (`-n -v -p`, `reclaim <bytes>`), and lists with exact
//! numbers (`-p`). gbo feature-detects that CLI (`zfs version` only exists there) and otherwise falls back to what
//! older ones such as zfs-fuse support: one destroy per snapshot and a `used` sum as the estimate.
//!
//! Retention follows sanoid's safe rule: a snapshot goes only when it is older than the window **and** more than
//! the minimum count of that dataset would remain, so a stalled snapshot job never wipes a dataset. Batches hold at
//! most [`BATCH`] snapshots (huge single destroys stall every other `zfs` command), are halved on "argument list too
//! long", and per-snapshot failures (held, has clones) are reported while the rest of the batch is retried. LXD's
//! own snapshots (`<pool>/containers/<name>@snapshot-*`) and the host data gbo snapshots capture (`@gbo-...`) are
//! never touched: they belong to the LXD API and to `gbo snapshot`.

use std::collections::BTreeMap;

use crate::runner::{HostCommand, RunError};
use crate::snapshot::schedule::{Every, TimerJob};

/// At most this many snapshots per destroy call.
pub const BATCH: usize = 100;
/// Prefix of the daily snapshots gbo takes.
pub const DAILY_PREFIX: &str = "gbo-daily-";

/// The `zfs` program to run: `GBO_ZFS` when set (tests point it at a recording stand-in), else `zfs` on PATH.
pub fn zfs_program() -> String {
    std::env::var("GBO_ZFS").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "zfs".to_string())
}

/// A ZFS operation that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZfsError {
    /// The `zfs` command failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Output that does not parse.
    #[error("unexpected `zfs` output: {0}")]
    Parse(String),
    /// A dataset that does not exist.
    #[error("dataset `{0}` does not exist (see `zfs list`)")]
    NoSuchDataset(String),
    /// A dataset name that is not valid.
    #[error("invalid dataset `{0}`: give a pool or dataset name such as `tank/lxd` (no `@`)")]
    InvalidDataset(String),
    /// A minimum that would allow deleting everything.
    #[error("--min-keep 0 would let retention delete every snapshot of a dataset whose snapshot job stalled; keep at least 1")]
    ZeroMinimum,
}

/// What the `zfs` CLI supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Features {
    /// `a,b,c` lists and `a%b` ranges in one destroy, `-n -v -p` dry runs, `list -p`, several snapshots per call.
    pub openzfs: bool,
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ZfsSnapshot {
    /// `dataset@name`.
    pub full_name: String,
    /// Dataset.
    pub dataset: String,
    /// Name after `@`.
    pub name: String,
    /// Creation (Unix seconds).
    pub creation: i64,
    /// Space used by the snapshot alone (bytes).
    pub used: u64,
}

impl ZfsSnapshot {
    /// LXD's own snapshot (`<pool>/containers/<name>@snapshot-*` and the other LXD volume kinds).
    pub fn is_lxd(&self) -> bool {
        self.name.starts_with("snapshot-")
            && self
                .dataset
                .split('/')
                .any(|c| matches!(c, "containers" | "virtual-machines" | "custom" | "images" | "deleted"))
    }

    /// Host data captured by `gbo snapshot` (restored by it; not part of the daily window).
    pub fn is_gbo_capture(&self) -> bool {
        self.name.starts_with("gbo-") && !self.name.starts_with(DAILY_PREFIX)
    }

    /// A CI container's snapshot (the seed's "snapshots of CI container can be huge").
    pub fn is_ci(&self) -> bool {
        self.dataset
            .rsplit('/')
            .next()
            .is_some_and(|leaf| leaf.ends_with("-alm-ci") || leaf == "alm-ci" || leaf.ends_with("-ci"))
    }
}

/// The `zfs` command, feature-detected.
#[derive(Debug, Clone)]
pub struct Zfs {
    program: String,
    features: Features,
}

/// Pool or top dataset totals as ZFS prints them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DatasetTotals {
    /// Name.
    pub name: String,
    /// Used.
    pub used: String,
    /// Available.
    pub available: String,
    /// Referenced.
    pub referenced: String,
}

/// `gbo zfs usage`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Usage {
    /// Snapshots by space used, largest first.
    pub snapshots: Vec<UsageRow>,
    /// Pool totals (top-level datasets).
    pub pools: Vec<DatasetTotals>,
}

/// One line of usage.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UsageRow {
    /// The snapshot.
    #[serde(flatten)]
    pub snapshot: ZfsSnapshot,
    /// A CI container's snapshot.
    pub ci: bool,
    /// Managed by LXD (never pruned here).
    pub lxd: bool,
}

/// One destroy that failed for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    /// `dataset@name`.
    pub snapshot: String,
    /// ZFS's reason (`dataset is busy`, `snapshot has dependent clones`, ...).
    pub reason: String,
}

/// What prune decided and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneReport {
    /// Snapshots destroyed (or, on a dry run, that would be).
    pub destroyed: Vec<String>,
    /// Snapshots kept per dataset.
    pub kept: BTreeMap<String, usize>,
    /// Per-snapshot failures; the rest went on.
    pub failures: Vec<Failure>,
    /// Space freed (dry run: what ZFS says it would reclaim).
    pub reclaim_bytes: u64,
    /// How the figure was obtained: `zfs destroy -nvp` (exact) or `sum of used` (an underestimate).
    pub reclaim_source: String,
    /// `zfs` invocations made.
    pub zfs_calls: usize,
    /// Whether nothing was changed.
    pub dry_run: bool,
}

/// Which snapshots go: older than `cutoff` and beyond the newest `min_keep` of their dataset. LXD's snapshots and
/// gbo's data captures are never candidates. Returns (per dataset, oldest first: the ones to destroy), kept counts.
pub fn plan_prune(
    snapshots: &[ZfsSnapshot],
    cutoff: i64,
    min_keep: usize,
) -> (BTreeMap<String, Vec<ZfsSnapshot>>, BTreeMap<String, usize>) {
    let mut by_dataset: BTreeMap<String, Vec<&ZfsSnapshot>> = BTreeMap::new();
    for s in snapshots.iter().filter(|s| !s.is_lxd() && !s.is_gbo_capture()) {
        by_dataset.entry(s.dataset.clone()).or_default().push(s);
    }
    let mut doomed = BTreeMap::new();
    let mut kept = BTreeMap::new();
    for (dataset, mut snaps) in by_dataset {
        snaps.sort_by(|a, b| a.creation.cmp(&b.creation).then_with(|| a.name.cmp(&b.name)));
        let removable = snaps.len().saturating_sub(min_keep);
        let going: Vec<ZfsSnapshot> =
            snaps.iter().take(removable).filter(|s| s.creation < cutoff).map(|s| (*s).clone()).collect();
        kept.insert(dataset.clone(), snaps.len() - going.len());
        if !going.is_empty() {
            doomed.insert(dataset, going);
        }
    }
    (doomed, kept)
}

/// OpenZFS destroy arguments for one dataset: items in order (`a%c` for runs of consecutive snapshots in the
/// dataset's own order, single names otherwise), each batch covering at most `batch` snapshots.
/// `all` is every snapshot of the dataset in creation order, `going` the ones to destroy.
pub fn batch_arguments(dataset: &str, all: &[String], going: &[String], batch: usize) -> Vec<(String, Vec<String>)> {
    let position: BTreeMap<&str, usize> = all.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let mut indices: Vec<usize> = going.iter().filter_map(|n| position.get(n.as_str()).copied()).collect();
    indices.sort_unstable();
    // Runs of consecutive positions, each cut at `batch`.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for i in indices {
        match runs.last_mut() {
            Some((start, end)) if *end + 1 == i && i - *start < batch => *end = i,
            _ => runs.push((i, i)),
        }
    }
    let mut batches: Vec<(String, Vec<String>)> = Vec::new();
    let mut items: Vec<String> = Vec::new();
    let mut covered: Vec<String> = Vec::new();
    for (start, end) in runs {
        let count = end - start + 1;
        if covered.len() + count > batch && !items.is_empty() {
            batches.push((format!("{dataset}@{}", items.join(",")), std::mem::take(&mut covered)));
            items.clear();
        }
        items.push(if start == end { all[start].clone() } else { format!("{}%{}", all[start], all[end]) });
        covered.extend(all[start..=end].iter().cloned());
    }
    if !items.is_empty() {
        batches.push((format!("{dataset}@{}", items.join(",")), covered));
    }
    batches
}

/// Per-snapshot failures in `zfs destroy` output: `cannot destroy snapshot pool/ds@x: dataset is busy` and
/// `cannot destroy 'pool/ds@x': snapshot has dependent clones`.
pub fn parse_failures(stderr: &str) -> Vec<Failure> {
    stderr
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("cannot destroy ")?;
            let rest = rest.strip_prefix("snapshot ").unwrap_or(rest);
            let (name, reason) = rest.split_once(": ")?;
            let name = name.trim().trim_matches('\'');
            name.contains('@').then(|| Failure { snapshot: name.to_string(), reason: reason.trim().to_string() })
        })
        .collect()
}

/// The `reclaim <bytes>` figure of `zfs destroy -n -v -p`.
pub fn parse_reclaim(stdout: &str) -> Option<u64> {
    stdout.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next() == Some("reclaim")).then(|| parts.next()?.parse().ok()).flatten()
    })
}

fn too_long(e: &RunError) -> bool {
    match e {
        RunError::Failed { stderr, .. } => stderr.to_ascii_lowercase().contains("argument list too long"),
        RunError::Spawn { source, .. } => {
            source.raw_os_error() == Some(7)
                || source.to_string().to_ascii_lowercase().contains("argument list too long")
        }
        _ => false,
    }
}

/// Check a dataset name.
pub fn dataset_name(value: &str) -> Result<String, ZfsError> {
    let ok = !value.is_empty()
        && !value.contains('@')
        && !value.starts_with('/')
        && !value.ends_with('/')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c));
    if ok {
        Ok(value.to_string())
    } else {
        Err(ZfsError::InvalidDataset(value.to_string()))
    }
}

impl Zfs {
    /// Detect what the `zfs` program (see [`zfs_program`]) supports.
    pub fn detect() -> Result<Self, ZfsError> {
        Self::detect_program(&zfs_program())
    }

    /// Detect what `program` supports.
    pub fn detect_program(program: &str) -> Result<Self, ZfsError> {
        let cmd = HostCommand::new(program)
            .arg("version")
            .install_hint("install OpenZFS (`apt-get install zfsutils-linux`) or zfs-fuse");
        let openzfs = match cmd.run_output() {
            Ok((out, _)) => out.starts_with("zfs-"),
            Err(e @ RunError::Missing { .. }) => return Err(e.into()),
            Err(RunError::Failed { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        Ok(Self { program: program.to_string(), features: Features { openzfs } })
    }

    /// The detected features.
    pub fn features(&self) -> Features {
        self.features
    }

    fn cmd(&self) -> HostCommand {
        HostCommand::new(&self.program)
    }

    /// Every snapshot (of `datasets` and their children when given), oldest first. Returns the call count too.
    pub fn snapshots(&self, datasets: &[String]) -> Result<(Vec<ZfsSnapshot>, usize), ZfsError> {
        let mut calls = 0;
        let mut snaps = Vec::new();
        if self.features.openzfs {
            let mut cmd =
                self.cmd().args(["list", "-H", "-p", "-t", "snapshot", "-o", "name,creation,used", "-s", "creation"]);
            if !datasets.is_empty() {
                cmd = cmd.arg("-r").args(datasets);
            }
            calls += 1;
            let out = self.run_dataset_cmd(&cmd, datasets)?;
            for line in out.lines().filter(|l| !l.is_empty()) {
                let cols: Vec<&str> = line.split('\t').collect();
                let [name, creation, used] = cols[..] else { return Err(ZfsError::Parse(line.to_string())) };
                snaps.push(snapshot_row(name, creation, used)?);
            }
        } else {
            let mut cmd = self.cmd().args(["list", "-H", "-t", "snapshot", "-o", "name"]);
            if !datasets.is_empty() {
                cmd = cmd.arg("-r").args(datasets);
            }
            calls += 1;
            let names: Vec<String> =
                self.run_dataset_cmd(&cmd, datasets)?.lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
            for chunk in names.chunks(BATCH) {
                calls += 1;
                let out = self
                    .cmd()
                    .args(["get", "-H", "-p", "-o", "name,property,value", "creation,used"])
                    .args(chunk)
                    .run()?;
                let mut props: BTreeMap<String, (String, String)> = BTreeMap::new();
                for line in out.lines() {
                    let cols: Vec<&str> = line.split('\t').collect();
                    if let [name, prop, value] = cols[..] {
                        let entry = props.entry(name.to_string()).or_default();
                        if prop == "creation" {
                            entry.0 = value.to_string();
                        } else if prop == "used" {
                            entry.1 = value.to_string();
                        }
                    }
                }
                for name in chunk {
                    let (creation, used) = props.get(name).cloned().unwrap_or_default();
                    snaps.push(snapshot_row(name, &creation, &used)?);
                }
            }
        }
        snaps.sort_by(|a, b| a.creation.cmp(&b.creation).then_with(|| a.full_name.cmp(&b.full_name)));
        Ok((snaps, calls))
    }

    fn run_dataset_cmd(&self, cmd: &HostCommand, datasets: &[String]) -> Result<String, ZfsError> {
        cmd.run().map_err(|e| {
            if let RunError::Failed { stderr, .. } = &e {
                if stderr.contains("does not exist") {
                    let missing = datasets
                        .iter()
                        .find(|d| stderr.contains(d.as_str()))
                        .cloned()
                        .unwrap_or_else(|| datasets.join(" "));
                    return ZfsError::NoSuchDataset(missing);
                }
            }
            e.into()
        })
    }

    /// Snapshots by space used and the pools' totals.
    pub fn usage(&self, datasets: &[String]) -> Result<Usage, ZfsError> {
        let (snaps, _) = self.snapshots(datasets)?;
        let mut rows: Vec<UsageRow> =
            snaps.into_iter().map(|s| UsageRow { ci: s.is_ci(), lxd: s.is_lxd(), snapshot: s }).collect();
        rows.sort_by(|a, b| {
            b.snapshot.used.cmp(&a.snapshot.used).then_with(|| a.snapshot.full_name.cmp(&b.snapshot.full_name))
        });
        let out = self.cmd().args(["list", "-H", "-o", "name,used,avail,refer", "-d", "0"]).run()?;
        let pools = out
            .lines()
            .filter_map(|l| {
                let c: Vec<&str> = l.split('\t').collect();
                match c[..] {
                    [name, used, available, referenced] => Some(DatasetTotals {
                        name: name.into(),
                        used: used.into(),
                        available: available.into(),
                        referenced: referenced.into(),
                    }),
                    _ => None,
                }
            })
            .collect();
        Ok(Usage { snapshots: rows, pools })
    }

    /// Take `<dataset>@gbo-daily-<date>` of each dataset (one call on OpenZFS, atomic; one per dataset otherwise).
    /// Returns the snapshots taken.
    pub fn snapshot_daily(&self, datasets: &[String], date: time::Date) -> Result<Vec<String>, ZfsError> {
        let tag = format!("{DAILY_PREFIX}{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day());
        let names: Vec<String> = datasets.iter().map(|d| format!("{d}@{tag}")).collect();
        if self.features.openzfs {
            self.cmd().arg("snapshot").args(&names).run()?;
        } else {
            for n in &names {
                self.cmd().arg("snapshot").arg(n).run()?;
            }
        }
        Ok(names)
    }

    /// Apply the window: destroy snapshots older than `keep_days` beyond the newest `min_keep` per dataset.
    pub fn prune(
        &self,
        datasets: &[String],
        keep_days: u32,
        min_keep: usize,
        now: i64,
        dry_run: bool,
    ) -> Result<PruneReport, ZfsError> {
        if min_keep == 0 {
            return Err(ZfsError::ZeroMinimum);
        }
        let (snaps, list_calls) = self.snapshots(datasets)?;
        let cutoff = now - i64::from(keep_days) * 86_400;
        let (doomed, kept) = plan_prune(&snaps, cutoff, min_keep);
        let mut report = PruneReport { kept, dry_run, zfs_calls: list_calls, ..Default::default() };
        report.reclaim_source = if self.features.openzfs {
            "zfs destroy -nvp".into()
        } else {
            "sum of used (an underestimate; this zfs has no -n)".into()
        };
        for (dataset, going) in doomed {
            if self.features.openzfs {
                let all: Vec<String> = snaps.iter().filter(|s| s.dataset == dataset).map(|s| s.name.clone()).collect();
                let names: Vec<String> = going.iter().map(|s| s.name.clone()).collect();
                for (arg, covered) in batch_arguments(&dataset, &all, &names, BATCH) {
                    self.destroy_batch(&dataset, &all, arg, covered, dry_run, &mut report);
                }
            } else {
                for s in going {
                    if dry_run {
                        report.reclaim_bytes += s.used;
                        report.destroyed.push(s.full_name.clone());
                        continue;
                    }
                    report.zfs_calls += 1;
                    match self.cmd().arg("destroy").arg(&s.full_name).run() {
                        Ok(_) => {
                            report.reclaim_bytes += s.used;
                            report.destroyed.push(s.full_name.clone());
                        }
                        Err(e) => report
                            .failures
                            .push(Failure { snapshot: s.full_name.clone(), reason: failure_reason(&e, &s.full_name) }),
                    }
                }
            }
        }
        Ok(report)
    }

    fn destroy_batch(
        &self,
        dataset: &str,
        all: &[String],
        arg: String,
        covered: Vec<String>,
        dry_run: bool,
        report: &mut PruneReport,
    ) {
        let mut cmd = self.cmd().arg("destroy");
        if dry_run {
            cmd = cmd.args(["-n", "-v", "-p"]);
        } else {
            // Report the bytes actually freed the same way.
            cmd = cmd.args(["-v", "-p"]);
        }
        report.zfs_calls += 1;
        match cmd.arg(&arg).run() {
            Ok(out) => {
                report.reclaim_bytes += parse_reclaim(&out).unwrap_or(0);
                report.destroyed.extend(covered.iter().map(|n| format!("{dataset}@{n}")));
            }
            Err(e) if too_long(&e) && covered.len() > 1 => {
                let half = covered.len() / 2;
                let (a, b) = covered.split_at(half);
                for part in [a, b] {
                    for (arg, covered) in batch_arguments(dataset, all, part, part.len()) {
                        self.destroy_batch(dataset, all, arg, covered, dry_run, report);
                    }
                }
            }
            Err(e) => {
                let stderr = match &e {
                    RunError::Failed { stderr, .. } => stderr.clone(),
                    other => other.to_string(),
                };
                let failures: Vec<Failure> = parse_failures(&stderr)
                    .into_iter()
                    .filter(|f| covered.iter().any(|c| f.snapshot == format!("{dataset}@{c}")))
                    .collect();
                if failures.is_empty() {
                    // Nothing names a snapshot: report the whole batch and go on with the next.
                    report.failures.extend(
                        covered
                            .iter()
                            .map(|c| Failure { snapshot: format!("{dataset}@{c}"), reason: stderr.trim().to_string() }),
                    );
                    return;
                }
                // OpenZFS destroys a list all or nothing: retry without the ones that cannot go.
                let rest: Vec<String> = covered
                    .iter()
                    .filter(|c| !failures.iter().any(|f| f.snapshot == format!("{dataset}@{c}")))
                    .cloned()
                    .collect();
                report.failures.extend(failures);
                if !rest.is_empty() {
                    for (arg, covered) in batch_arguments(dataset, all, &rest, BATCH) {
                        self.destroy_batch(dataset, all, arg, covered, dry_run, report);
                    }
                }
            }
        }
    }
}

fn failure_reason(e: &RunError, name: &str) -> String {
    match e {
        RunError::Failed { stderr, .. } => parse_failures(stderr)
            .into_iter()
            .find(|f| f.snapshot == name)
            .map(|f| f.reason)
            .unwrap_or_else(|| stderr.trim().to_string()),
        other => other.to_string(),
    }
}

fn snapshot_row(full: &str, creation: &str, used: &str) -> Result<ZfsSnapshot, ZfsError> {
    let (dataset, name) = full.split_once('@').ok_or_else(|| ZfsError::Parse(full.to_string()))?;
    Ok(ZfsSnapshot {
        full_name: full.to_string(),
        dataset: dataset.to_string(),
        name: name.to_string(),
        creation: creation.trim().parse().map_err(|_| ZfsError::Parse(format!("{full}: creation `{creation}`")))?,
        used: used.trim().parse().map_err(|_| ZfsError::Parse(format!("{full}: used `{used}`")))?,
    })
}

/// The daily job `gbo zfs install-timer` writes: snapshot each dataset, then keep the rolling window.
pub fn daily_job(gbo: &std::path::Path, datasets: &[String], keep_days: u32, min_keep: usize) -> TimerJob {
    let gbo = gbo.display().to_string();
    let mut snapshot = vec![gbo.clone(), "zfs".into(), "snapshot".into(), "--daily".into()];
    snapshot.extend(datasets.iter().cloned());
    let mut prune = vec![
        gbo,
        "zfs".into(),
        "prune".into(),
        "--keep-days".into(),
        keep_days.to_string(),
        "--min-keep".into(),
        min_keep.to_string(),
    ];
    prune.extend(datasets.iter().cloned());
    TimerJob {
        name: "gbo-zfs-daily".into(),
        every: Every::Daily,
        commands: vec![snapshot, prune],
        description: format!("gbo ZFS daily snapshots with a {keep_days}-day window"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s{i:04}")).collect()
    }

    #[test]
    fn ranges_for_runs_lists_for_gaps_and_batches_of_at_most_100() {
        let all = names(10);
        let going: Vec<String> =
            ["s0000", "s0001", "s0002", "s0004", "s0006", "s0007"].iter().map(|s| s.to_string()).collect();
        let b = batch_arguments("tank/ds", &all, &going, BATCH);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].0, "tank/ds@s0000%s0002,s0004,s0006%s0007");
        assert_eq!(b[0].1.len(), 6);
        let all = names(250);
        let b = batch_arguments("tank/ds", &all, &all, BATCH);
        let args: Vec<&str> = b.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(args, ["tank/ds@s0000%s0099", "tank/ds@s0100%s0199", "tank/ds@s0200%s0249"]);
        // Every other snapshot: lists of 100.
        let odd: Vec<String> = all.iter().skip(1).step_by(2).cloned().collect();
        let b = batch_arguments("tank/ds", &all, &odd, BATCH);
        assert_eq!(b.iter().map(|x| x.1.len()).collect::<Vec<_>>(), [100, 25]);
        assert!(b[0].0.starts_with("tank/ds@s0001,s0003,"));
    }

    #[test]
    fn parses_openzfs_failures_and_reclaim() {
        let stderr = "cannot destroy snapshot tank/ds@a: dataset is busy\ncannot destroy 'tank/ds@b': snapshot has dependent clones\nuse '-R' to destroy the following datasets:\ntank/clone\n";
        assert_eq!(
            parse_failures(stderr),
            vec![
                Failure { snapshot: "tank/ds@a".into(), reason: "dataset is busy".into() },
                Failure { snapshot: "tank/ds@b".into(), reason: "snapshot has dependent clones".into() }
            ]
        );
        // Captured from OpenZFS 2.1 `zfs destroy -nvp tank/ds@a%c`.
        let out = "destroy\ttank/ds@a\ndestroy\ttank/ds@b\ndestroy\ttank/ds@c\nreclaim\t3145728\n";
        assert_eq!(parse_reclaim(out), Some(3_145_728));
        assert_eq!(parse_reclaim("nothing"), None);
    }

    #[test]
    fn the_window_keeps_the_minimum_and_never_touches_lxd_or_gbo_captures() {
        let snap = |full: &str, creation: i64| {
            let (dataset, name) = full.split_once('@').expect("@");
            ZfsSnapshot { full_name: full.into(), dataset: dataset.into(), name: name.into(), creation, used: 10 }
        };
        let day = 86_400;
        let snaps = vec![
            snap("tank/ds@d1", day),
            snap("tank/ds@d2", 2 * day),
            snap("tank/ds@d3", 3 * day),
            snap("tank/lxd/containers/web@snapshot-x", day),
            snap("tank/data@gbo-web-s1", day),
            snap("tank/old@d1", day),
        ];
        // Everything is older than the window (a stalled job): the minimum per dataset still stays.
        let (doomed, kept) = plan_prune(&snaps, 100 * day, 2);
        assert_eq!(doomed.keys().collect::<Vec<_>>(), ["tank/ds"]);
        assert_eq!(doomed["tank/ds"].iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["d1"]);
        assert_eq!(kept["tank/ds"], 2);
        assert_eq!(kept["tank/old"], 1);
        assert!(!kept.contains_key("tank/lxd/containers/web"));
        assert!(snaps[3].is_lxd() && !snaps[0].is_lxd());
        assert!(ZfsSnapshot { dataset: "tank/lxd/containers/default-alm-ci".into(), ..snaps[3].clone() }.is_ci());
        assert!(dataset_name("tank/lxd").is_ok());
        for bad in ["", "tank@x", "/tank", "tank/", "ta nk"] {
            assert!(dataset_name(bad).is_err(), "{bad}");
        }
    }
}
