//! ZFS snapshot usage, daily snapshots and batched retention on the host pool, through the `zfs` command.
//!
//! OpenZFS destroys many snapshots of one dataset in one call (`pool/ds@a%c,e,g%h`: a comma list whose items may be
//! inclusive ranges), estimates the space a destroy frees (`-n -v -p`, `reclaim <bytes>`), and lists with exact
//! numbers (`-p`). gbo feature-detects that CLI (`zfs version` only exists there) and otherwise falls back to what
//! older ones such as zfs-fuse support: one destroy per snapshot and a `used` sum as the estimate (zfs-fuse does
//! report `createtxg`).
//!
//! Prune destroys only what gbo made (see [`Owner`]): its daily snapshots (`@gbo-daily-YYYY-MM-DD`). Snapshots made
//! by anything else (zfs-auto-snapshot, sanoid, by hand) are kept and listed, unless the caller asks for them too
//! (`--all-unowned`); LXD's own snapshots (`<pool>/containers/<name>@snapshot-*`, image `@readonly`, copy origins)
//! and the host data `gbo snapshot` captures (other `@gbo-...` names) are never destroyed here, whatever is asked:
//! they belong to the LXD API and to `gbo snapshot`.
//!
//! Retention follows sanoid's safe rule: a snapshot goes only when it is older than the window **and** more than
//! the minimum count of that dataset would remain, so a stalled snapshot job never wipes a dataset. "Newest" means
//! the highest `createtxg` (the transaction group that created it): that is the order OpenZFS expands `a%b` ranges
//! in, and unlike `creation` (whole seconds of a clock that can step back) or the name, it never ties or runs
//! backwards within a dataset. Ranges are used only where the dataset's createtxgs are known and strictly increasing,
//! so a range never covers a snapshot that is kept. Batches hold at most [`BATCH`] snapshots (huge single destroys
//! stall every other `zfs` command), are halved on "argument list too long", and per-snapshot failures (held, has
//! clones) are reported while the rest of the batch is retried.

use std::collections::{BTreeMap, BTreeSet};

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

/// Who made a snapshot, judged from its dataset and name: what prune may destroy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Owner {
    /// `gbo zfs snapshot --daily` (`gbo-daily-YYYY-MM-DD`): what prune destroys by default.
    GboDaily,
    /// Host data captured by `gbo snapshot` (any other `gbo-` name): it goes with its LXD snapshot, through
    /// `gbo snapshot`'s own retention, never here.
    GboSnapshot,
    /// LXD's own: instance and volume snapshots (`snapshot-*`), image snapshots (`readonly`), copy, migration and
    /// backup origins (`copy-*`, `migration-*`, `backup-*`) on LXD's datasets, and anything under its `deleted/`.
    /// Destroying them behind LXD's back leaves its database wrong: never here.
    Lxd,
    /// Made by something else (zfs-auto-snapshot, sanoid, by hand): destroyed only when asked (`--all-unowned`).
    Unowned,
}

/// The dataset path components under which LXD keeps its volumes.
const LXD_KINDS: [&str; 6] = ["containers", "virtual-machines", "custom", "images", "deleted", "buckets"];

/// Who made `dataset@name` (see [`Owner`]).
pub fn owner_of(dataset: &str, name: &str) -> Owner {
    let components: Vec<&str> = dataset.split('/').collect();
    let lxd_dataset = components.iter().any(|c| LXD_KINDS.contains(c));
    let lxd_name =
        name == "readonly" || ["snapshot-", "copy-", "migration-", "backup-"].iter().any(|p| name.starts_with(p));
    if components.contains(&"deleted") || (lxd_dataset && lxd_name) {
        Owner::Lxd
    } else if is_daily_name(name) {
        Owner::GboDaily
    } else if name.starts_with("gbo-") {
        Owner::GboSnapshot
    } else {
        Owner::Unowned
    }
}

/// Whether `name` is one of gbo's daily snapshots: exactly `gbo-daily-` and a calendar date. A data capture of a
/// tenant named `daily` (`gbo-daily-tables-...`) is not.
pub fn is_daily_name(name: &str) -> bool {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    name.strip_prefix(DAILY_PREFIX).is_some_and(|date| date.len() == 10 && time::Date::parse(date, &format).is_ok())
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
    /// The transaction group that created it: the order snapshots of one dataset were taken in.
    pub createtxg: u64,
    /// Creation (Unix seconds).
    pub creation: i64,
    /// Space used by the snapshot alone (bytes).
    pub used: u64,
}

impl ZfsSnapshot {
    /// Who made it.
    pub fn owner(&self) -> Owner {
        owner_of(&self.dataset, &self.name)
    }

    /// LXD's own (see [`Owner::Lxd`]).
    pub fn is_lxd(&self) -> bool {
        self.owner() == Owner::Lxd
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
    /// Who made it.
    pub owner: Owner,
}

/// One destroy that failed for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    /// `dataset@name`.
    pub snapshot: String,
    /// ZFS's reason (`dataset is busy`, `snapshot has dependent clones`, ...).
    pub reason: String,
}

/// What prune may destroy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PrunePolicy {
    /// The window: only snapshots older than this many days go.
    pub keep_days: u32,
    /// Never fewer than this many candidates per dataset (at least 1).
    pub min_keep: usize,
    /// Snapshots gbo did not make are candidates too ([`Owner::Unowned`]; never LXD's or `gbo snapshot`'s).
    pub all_unowned: bool,
}

/// What prune will do, decided before anything is destroyed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PrunePlan {
    /// Per dataset, in createtxg order: the snapshots to destroy.
    pub doomed: BTreeMap<String, Vec<ZfsSnapshot>>,
    /// Of those, the ones gbo did not make (only with `all_unowned`), `dataset@name` in createtxg order.
    pub doomed_unowned: Vec<String>,
    /// Candidates kept per dataset (inside the window or among the newest `min_keep`).
    pub kept: BTreeMap<String, usize>,
    /// Snapshots gbo did not make, kept because `all_unowned` was not asked for.
    pub kept_unowned: Vec<String>,
    /// LXD's snapshots seen (never destroyed here).
    pub kept_lxd: usize,
    /// `gbo snapshot`'s data captures seen (never destroyed here).
    pub kept_captures: usize,
    /// Whether snapshots gbo did not make were candidates.
    pub all_unowned: bool,
    /// Every snapshot per dataset, in createtxg order: what ranges are built over.
    #[serde(skip)]
    all: BTreeMap<String, Vec<ZfsSnapshot>>,
    /// `zfs` calls the listing took.
    #[serde(skip)]
    list_calls: usize,
}

/// What prune decided and did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PruneReport {
    /// Snapshots gbo did not make among `destroyed` (only with `--all-unowned`).
    pub destroyed_unowned: Vec<String>,
    /// Snapshots destroyed (or, on a dry run, that would be).
    pub destroyed: Vec<String>,
    /// Candidates kept per dataset.
    pub kept: BTreeMap<String, usize>,
    /// Snapshots gbo did not make, kept (`--all-unowned` would include them).
    pub kept_unowned: Vec<String>,
    /// LXD's snapshots, never destroyed here.
    pub kept_lxd: usize,
    /// `gbo snapshot`'s data captures, never destroyed here.
    pub kept_captures: usize,
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
    /// Whether snapshots gbo did not make were candidates.
    pub all_unowned: bool,
}

/// Which snapshots go: candidates (gbo's dailies, and with `all_unowned` the snapshots nobody known made) older than
/// `cutoff` and beyond the newest `min_keep` candidates of their dataset, newest meaning highest createtxg. LXD's
/// snapshots and gbo's data captures are never candidates.
pub fn plan_prune(snapshots: &[ZfsSnapshot], cutoff: i64, min_keep: usize, all_unowned: bool) -> PrunePlan {
    let mut plan = PrunePlan { all_unowned, ..Default::default() };
    let mut seen = BTreeSet::new();
    for s in snapshots {
        if seen.insert(s.full_name.as_str()) {
            plan.all.entry(s.dataset.clone()).or_default().push(s.clone());
        }
    }
    for snaps in plan.all.values_mut() {
        snaps.sort_by(|a, b| a.createtxg.cmp(&b.createtxg).then_with(|| a.name.cmp(&b.name)));
    }
    for (dataset, snaps) in &plan.all {
        let mut candidates = Vec::new();
        for s in snaps {
            match s.owner() {
                Owner::GboDaily => candidates.push(s),
                Owner::Unowned if all_unowned => candidates.push(s),
                Owner::Unowned => plan.kept_unowned.push(s.full_name.clone()),
                Owner::Lxd => plan.kept_lxd += 1,
                Owner::GboSnapshot => plan.kept_captures += 1,
            }
        }
        if candidates.is_empty() {
            continue;
        }
        let removable = candidates.len().saturating_sub(min_keep);
        let going: Vec<ZfsSnapshot> =
            candidates.iter().take(removable).filter(|s| s.creation < cutoff).map(|s| (*s).clone()).collect();
        plan.kept.insert(dataset.clone(), candidates.len() - going.len());
        plan.doomed_unowned.extend(going.iter().filter(|s| s.owner() == Owner::Unowned).map(|s| s.full_name.clone()));
        if !going.is_empty() {
            plan.doomed.insert(dataset.clone(), going);
        }
    }
    plan
}

/// OpenZFS destroy arguments for one dataset: items in order (`a%c` for runs of consecutive snapshots, single names
/// otherwise), each batch covering at most `batch` snapshots. `all` is every snapshot of the dataset in createtxg
/// order (OpenZFS expands `a%c` to every snapshot whose createtxg lies between a's and c's), `going` the names to
/// destroy. When the createtxgs are not all known and strictly increasing, no ranges are built: only lists, so a
/// range can never take a snapshot that is kept.
pub fn batch_arguments(
    dataset: &str,
    all: &[ZfsSnapshot],
    going: &[String],
    batch: usize,
) -> Vec<(String, Vec<String>)> {
    let batch = batch.max(1);
    let ranges =
        all.first().is_some_and(|s| s.createtxg > 0) && all.windows(2).all(|w| w[0].createtxg < w[1].createtxg);
    let position: BTreeMap<&str, usize> = all.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    let mut indices: Vec<usize> = going.iter().filter_map(|n| position.get(n.as_str()).copied()).collect();
    indices.sort_unstable();
    indices.dedup();
    // Runs of consecutive positions, each cut at `batch`.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for i in indices {
        match runs.last_mut() {
            Some((start, end)) if ranges && *end + 1 == i && i - *start < batch => *end = i,
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
        items.push(if start == end {
            all[start].name.clone()
        } else {
            format!("{}%{}", all[start].name, all[end].name)
        });
        covered.extend(all[start..=end].iter().map(|s| s.name.clone()));
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

    /// Every snapshot (of `datasets` and their children when given), grouped by dataset, each dataset's in
    /// createtxg order (oldest first). Returns the call count too.
    pub fn snapshots(&self, datasets: &[String]) -> Result<(Vec<ZfsSnapshot>, usize), ZfsError> {
        let mut calls = 0;
        let mut snaps = Vec::new();
        if self.features.openzfs {
            let mut cmd = self.cmd().args([
                "list",
                "-H",
                "-p",
                "-t",
                "snapshot",
                "-o",
                "name,createtxg,creation,used",
                "-s",
                "createtxg",
            ]);
            if !datasets.is_empty() {
                cmd = cmd.arg("-r").args(datasets);
            }
            calls += 1;
            snaps = parse_snapshot_list(&self.run_dataset_cmd(&cmd, datasets)?)?;
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
                    .args(["get", "-H", "-p", "-o", "name,property,value", "createtxg,creation,used"])
                    .args(chunk)
                    .run()?;
                let props = parse_properties(&out);
                for name in chunk {
                    let value = |p: &str| props.get(&(name.clone(), p.to_string())).map(String::as_str).unwrap_or("");
                    snaps.push(snapshot_row(name, value("createtxg"), value("creation"), value("used"))?);
                }
            }
        }
        // `-r` over a dataset and its child lists the child's snapshots twice.
        snaps.sort_by(|a, b| {
            (a.dataset.as_str(), a.createtxg, a.name.as_str()).cmp(&(b.dataset.as_str(), b.createtxg, b.name.as_str()))
        });
        snaps.dedup_by(|a, b| a.full_name == b.full_name);
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
        let mut rows: Vec<UsageRow> = snaps
            .into_iter()
            .map(|s| UsageRow { ci: s.is_ci(), lxd: s.is_lxd(), owner: s.owner(), snapshot: s })
            .collect();
        rows.sort_by(|a, b| {
            b.snapshot.used.cmp(&a.snapshot.used).then_with(|| a.snapshot.full_name.cmp(&b.snapshot.full_name))
        });
        let out = self.cmd().args(["list", "-H", "-o", "name,used,avail,refer", "-d", "0"]).run()?;
        Ok(Usage { snapshots: rows, pools: parse_totals(&out) })
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

    /// Apply the window to gbo's own snapshots: [`Zfs::plan`] without `all_unowned`, then [`Zfs::execute`].
    pub fn prune(
        &self,
        datasets: &[String],
        keep_days: u32,
        min_keep: usize,
        now: i64,
        dry_run: bool,
    ) -> Result<PruneReport, ZfsError> {
        let plan = self.plan(datasets, &PrunePolicy { keep_days, min_keep, all_unowned: false }, now)?;
        Ok(self.execute(&plan, dry_run))
    }

    /// Decide what goes, changing nothing: snapshots older than `keep_days` beyond the newest `min_keep`
    /// candidates per dataset (see [`plan_prune`]).
    pub fn plan(&self, datasets: &[String], policy: &PrunePolicy, now: i64) -> Result<PrunePlan, ZfsError> {
        if policy.min_keep == 0 {
            return Err(ZfsError::ZeroMinimum);
        }
        let (snaps, list_calls) = self.snapshots(datasets)?;
        let cutoff = now.saturating_sub(i64::from(policy.keep_days) * 86_400);
        let mut plan = plan_prune(&snaps, cutoff, policy.min_keep, policy.all_unowned);
        plan.list_calls = list_calls;
        Ok(plan)
    }

    /// Destroy what `plan` says (on a dry run: ask ZFS what that would reclaim, where it can tell).
    pub fn execute(&self, plan: &PrunePlan, dry_run: bool) -> PruneReport {
        let mut report = PruneReport {
            kept: plan.kept.clone(),
            kept_unowned: plan.kept_unowned.clone(),
            kept_lxd: plan.kept_lxd,
            kept_captures: plan.kept_captures,
            dry_run,
            zfs_calls: plan.list_calls,
            all_unowned: plan.all_unowned,
            ..Default::default()
        };
        report.reclaim_source = if self.features.openzfs {
            "zfs destroy -nvp".into()
        } else {
            "sum of used (an underestimate; this zfs has no -n)".into()
        };
        for (dataset, going) in &plan.doomed {
            let all = plan.all.get(dataset).map(Vec::as_slice).unwrap_or_default();
            if self.features.openzfs {
                let names: Vec<String> = going.iter().map(|s| s.name.clone()).collect();
                for (arg, covered) in batch_arguments(dataset, all, &names, BATCH) {
                    self.destroy_batch(dataset, all, arg, covered, dry_run, &mut report);
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
        let unowned: BTreeSet<&str> = plan.doomed_unowned.iter().map(String::as_str).collect();
        report.destroyed_unowned = report.destroyed.iter().filter(|d| unowned.contains(d.as_str())).cloned().collect();
        report
    }

    fn destroy_batch(
        &self,
        dataset: &str,
        all: &[ZfsSnapshot],
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

/// `zfs list -H -p -t snapshot -o name,createtxg,creation,used` output, one snapshot per line.
pub fn parse_snapshot_list(out: &str) -> Result<Vec<ZfsSnapshot>, ZfsError> {
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let [name, createtxg, creation, used] = cols[..] else { return Err(ZfsError::Parse(line.to_string())) };
            snapshot_row(name, createtxg, creation, used)
        })
        .collect()
}

/// `zfs get -H -p -o name,property,value` output: (name, property) to value. Lines of another shape are skipped.
pub fn parse_properties(out: &str) -> BTreeMap<(String, String), String> {
    out.lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            match cols[..] {
                [name, prop, value] => Some(((name.to_string(), prop.to_string()), value.to_string())),
                _ => None,
            }
        })
        .collect()
}

/// `zfs list -H -o name,used,avail,refer` output. Lines of another shape are skipped.
pub fn parse_totals(out: &str) -> Vec<DatasetTotals> {
    out.lines()
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
        .collect()
}

fn snapshot_row(full: &str, createtxg: &str, creation: &str, used: &str) -> Result<ZfsSnapshot, ZfsError> {
    let (dataset, name) = full.split_once('@').ok_or_else(|| ZfsError::Parse(full.to_string()))?;
    if dataset.is_empty() || name.is_empty() {
        return Err(ZfsError::Parse(full.to_string()));
    }
    let number = |what: &str, value: &str| ZfsError::Parse(format!("{full}: {what} `{value}`"));
    Ok(ZfsSnapshot {
        full_name: full.to_string(),
        dataset: dataset.to_string(),
        name: name.to_string(),
        createtxg: createtxg.trim().parse().map_err(|_| number("createtxg", createtxg))?,
        creation: creation.trim().parse().map_err(|_| number("creation", creation))?,
        used: used.trim().parse().map_err(|_| number("used", used))?,
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
    use proptest::prelude::*;

    fn snap(full: &str, createtxg: u64, creation: i64) -> ZfsSnapshot {
        let (dataset, name) = full.split_once('@').expect("@");
        ZfsSnapshot {
            full_name: full.into(),
            dataset: dataset.into(),
            name: name.into(),
            createtxg,
            creation,
            used: 10,
        }
    }

    /// `n` snapshots of tank/ds named s0000.. in createtxg order.
    fn series(n: usize) -> Vec<ZfsSnapshot> {
        (0..n).map(|i| snap(&format!("tank/ds@s{i:04}"), 10 + i as u64, 0)).collect()
    }

    fn names(all: &[ZfsSnapshot]) -> Vec<String> {
        all.iter().map(|s| s.name.clone()).collect()
    }

    #[test]
    fn ranges_for_runs_lists_for_gaps_and_batches_of_at_most_100() {
        let all = series(10);
        let going: Vec<String> =
            ["s0000", "s0001", "s0002", "s0004", "s0006", "s0007"].iter().map(|s| s.to_string()).collect();
        let b = batch_arguments("tank/ds", &all, &going, BATCH);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].0, "tank/ds@s0000%s0002,s0004,s0006%s0007");
        assert_eq!(b[0].1.len(), 6);
        let all = series(250);
        let b = batch_arguments("tank/ds", &all, &names(&all), BATCH);
        let args: Vec<&str> = b.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(args, ["tank/ds@s0000%s0099", "tank/ds@s0100%s0199", "tank/ds@s0200%s0249"]);
        // Every other snapshot: lists of 100.
        let odd: Vec<String> = names(&all).into_iter().skip(1).step_by(2).collect();
        let b = batch_arguments("tank/ds", &all, &odd, BATCH);
        assert_eq!(b.iter().map(|x| x.1.len()).collect::<Vec<_>>(), [100, 25]);
        assert!(b[0].0.starts_with("tank/ds@s0001,s0003,"));
    }

    #[test]
    fn no_ranges_when_createtxg_is_unknown_or_ties() {
        let mut all = series(4);
        all[2].createtxg = all[1].createtxg;
        let going = names(&all);
        assert_eq!(batch_arguments("tank/ds", &all, &going, BATCH)[0].0, "tank/ds@s0000,s0001,s0002,s0003");
        let all: Vec<ZfsSnapshot> = series(3).into_iter().map(|s| ZfsSnapshot { createtxg: 0, ..s }).collect();
        assert_eq!(batch_arguments("tank/ds", &all, &names(&all), BATCH)[0].0, "tank/ds@s0000,s0001,s0002");
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
    fn who_made_a_snapshot() {
        assert_eq!(owner_of("tank/data", "gbo-daily-2024-01-15"), Owner::GboDaily);
        // A data capture of tenant `daily`'s tables container, and names that only look like a daily.
        for name in ["gbo-daily-tables-s1", "gbo-daily-2024-13-01", "gbo-daily-2024-01-15x", "gbo-web-s1"] {
            assert_eq!(owner_of("tank/data", name), Owner::GboSnapshot, "{name}");
        }
        for name in ["zfs-auto-snap_daily-2024-01-15-0000", "manual", "snapshot-x", "readonly", "autosnap_x"] {
            assert_eq!(owner_of("tank/data", name), Owner::Unowned, "{name}");
        }
        for (dataset, name) in [
            ("tank/lxd/containers/web", "snapshot-a"),
            ("tank/lxd/containers/web", "copy-6f1c"),
            ("tank/lxd/virtual-machines/vm", "migration-1"),
            ("tank/lxd/custom/default_vol", "snapshot-b"),
            ("tank/lxd/images/abcdef", "readonly"),
            ("tank/lxd/deleted/images/abcdef", "anything"),
        ] {
            assert_eq!(owner_of(dataset, name), Owner::Lxd, "{dataset}@{name}");
        }
        // Another tool's snapshot of an LXD container is not LXD's; a daily gbo took of one is gbo's.
        assert_eq!(owner_of("tank/lxd/containers/web", "zfs-auto-snap_daily-x"), Owner::Unowned);
        assert_eq!(owner_of("tank/lxd/containers/web", "gbo-daily-2024-01-15"), Owner::GboDaily);
    }

    #[test]
    fn the_window_keeps_the_minimum_and_never_touches_lxd_or_gbo_captures() {
        let day = 86_400;
        let snaps = vec![
            snap("tank/ds@gbo-daily-2024-01-01", 1, day),
            snap("tank/ds@gbo-daily-2024-01-02", 2, 2 * day),
            snap("tank/ds@gbo-daily-2024-01-03", 3, 3 * day),
            snap("tank/ds@manual", 4, day),
            snap("tank/lxd/containers/web@snapshot-x", 5, day),
            snap("tank/data@gbo-web-s1", 6, day),
            snap("tank/old@gbo-daily-2024-01-01", 7, day),
        ];
        // Everything is older than the window (a stalled job): the minimum per dataset still stays.
        let plan = plan_prune(&snaps, 100 * day, 2, false);
        assert_eq!(plan.doomed.keys().collect::<Vec<_>>(), ["tank/ds"]);
        assert_eq!(
            plan.doomed["tank/ds"].iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["gbo-daily-2024-01-01"]
        );
        assert_eq!(plan.kept["tank/ds"], 2);
        assert_eq!(plan.kept["tank/old"], 1);
        assert_eq!(plan.kept_unowned, ["tank/ds@manual"]);
        assert_eq!((plan.kept_lxd, plan.kept_captures), (1, 1));
        assert!(plan.doomed_unowned.is_empty());
        assert!(!plan.kept.contains_key("tank/lxd/containers/web"));
        // With all_unowned the hand-made one counts as a candidate; LXD's and the capture still never do.
        let plan = plan_prune(&snaps, 100 * day, 2, true);
        let doomed: Vec<&str> = plan.doomed["tank/ds"].iter().map(|s| s.name.as_str()).collect();
        assert_eq!(doomed, ["gbo-daily-2024-01-01", "gbo-daily-2024-01-02"]);
        assert!(plan.doomed_unowned.is_empty(), "manual is among the newest two");
        assert!(snaps[4].is_lxd() && !snaps[0].is_lxd());
        assert!(ZfsSnapshot { dataset: "tank/lxd/containers/default-alm-ci".into(), ..snaps[4].clone() }.is_ci());
        assert!(dataset_name("tank/lxd").is_ok());
        for bad in ["", "tank@x", "/tank", "tank/", "ta nk"] {
            assert!(dataset_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn zfs_output_parsers() {
        let list = "tank/a@x\t12\t1700000000\t1024\ntank/a@y\t13\t1700000001\t0\n";
        let snaps = parse_snapshot_list(list).expect("list");
        assert_eq!(snaps[1], ZfsSnapshot { used: 0, ..snap("tank/a@y", 13, 1_700_000_001) });
        for bad in
            ["tank/a@x\t12\t1700000000", "tank/a\t1\t2\t3", "tank/a@x\t-\t1\t2", "@x\t1\t2\t3", "tank/a@\t1\t2\t3"]
        {
            assert!(parse_snapshot_list(bad).is_err(), "{bad:?}");
        }
        let props = parse_properties("tank/a@x\tcreatetxg\t12\ntank/a@x\tcreation\t1700000000\nnoise\n");
        assert_eq!(props[&("tank/a@x".to_string(), "createtxg".to_string())], "12");
        assert_eq!(props.len(), 2);
        assert_eq!(parse_totals("tank\t1.5G\t8.2G\t96K\nshort\tline\n").len(), 1);
    }

    /// Snapshots of one dataset in createtxg order, each either kept or to go.
    fn dataset_with_verdicts() -> impl Strategy<Value = (Vec<ZfsSnapshot>, Vec<bool>)> {
        proptest::collection::vec((1u64..4, any::<bool>()), 0..300).prop_map(|steps| {
            let mut txg = 0;
            let mut all = Vec::new();
            let mut going = Vec::new();
            for (i, (step, goes)) in steps.into_iter().enumerate() {
                txg += step;
                all.push(snap(&format!("tank/ds@n{}", (i * 7919) % 1000), txg, 0));
                going.push(goes);
            }
            // Names must be unique within a dataset.
            let mut seen = BTreeSet::new();
            let keep: Vec<bool> = all.iter().map(|s| seen.insert(s.name.clone())).collect();
            let all: Vec<ZfsSnapshot> = all.into_iter().zip(&keep).filter(|(_, k)| **k).map(|(s, _)| s).collect();
            let going: Vec<bool> = going.into_iter().zip(&keep).filter(|(_, k)| **k).map(|(g, _)| g).collect();
            (all, going)
        })
    }

    /// What OpenZFS destroys for one argument: ranges expanded over createtxg.
    fn expand(arg: &str, all: &[ZfsSnapshot]) -> BTreeSet<String> {
        let txg = |n: &str| all.iter().find(|s| s.name == n).expect("named snapshot exists").createtxg;
        let (_, items) = arg.split_once('@').expect("@");
        let mut out = BTreeSet::new();
        for item in items.split(',') {
            match item.split_once('%') {
                Some((a, b)) => {
                    let (lo, hi) = (txg(a), txg(b));
                    assert!(lo <= hi, "{a} is newer than {b}");
                    out.extend(all.iter().filter(|s| (lo..=hi).contains(&s.createtxg)).map(|s| s.name.clone()));
                }
                None => {
                    out.insert(item.to_string());
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever mix of kept and doomed snapshots: the batches destroy exactly the doomed ones (no range takes a
        /// kept one), each batch covers at most `batch`, and what gbo says a batch covers is what ZFS destroys.
        #[test]
        fn batches_destroy_exactly_what_goes((all, verdicts) in dataset_with_verdicts(), batch in 1usize..120) {
            let going: Vec<String> =
                all.iter().zip(&verdicts).filter(|(_, g)| **g).map(|(s, _)| s.name.clone()).collect();
            let mut destroyed = BTreeSet::new();
            for (arg, covered) in batch_arguments("tank/ds", &all, &going, batch) {
                prop_assert!(covered.len() <= batch);
                let expanded = expand(&arg, &all);
                prop_assert_eq!(&expanded, &covered.iter().cloned().collect::<BTreeSet<_>>());
                destroyed.extend(expanded);
            }
            prop_assert_eq!(destroyed, going.into_iter().collect::<BTreeSet<_>>());
        }

        /// `zfs list` and `zfs get` output parsers never panic, whatever the text.
        #[test]
        fn zfs_output_parsers_never_panic(text in "\\PC*", lines in proptest::collection::vec("[a-z/@%,-]{0,8}(\t[-0-9a-z]{0,6}){0,4}", 0..8)) {
            let joined = lines.join("\n");
            for input in [text.as_str(), joined.as_str()] {
                let _ = parse_snapshot_list(input);
                let _ = parse_properties(input);
                let _ = parse_totals(input);
                let _ = parse_failures(input);
                let _ = parse_reclaim(input);
                if let Ok(snaps) = parse_snapshot_list(input) {
                    for s in snaps {
                        prop_assert_eq!(format!("{}@{}", s.dataset, s.name), s.full_name.clone());
                        let _ = s.owner();
                    }
                }
            }
        }

        /// Arbitrary names and datasets: an owner, never a panic; only exact dailies are gbo's.
        #[test]
        fn owner_never_panics(dataset in "\\PC{0,20}", name in "\\PC{0,30}") {
            let owner = owner_of(&dataset, &name);
            if owner == Owner::GboDaily {
                prop_assert!(name.starts_with(DAILY_PREFIX) && name.len() == DAILY_PREFIX.len() + 10);
            }
        }
    }
}
