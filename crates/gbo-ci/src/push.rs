//! The runbook's git workflow as one checked command: push a submodule to both remotes (`origin` and `alm`), update
//! the root repository's submodule pointer, commit, push the root to `alm`, and confirm that every remote has the
//! commit ("Failure to push the root `gb` repo will not trigger CI/CD pipelines").
//!
//! Every precondition is checked before the first push: clean trees, and no remote branch that has commits the local
//! one lacks (diverged). Git runs through its CLI, so the user's credentials, hooks and config apply.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::event::Observer;

/// What to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// The root repository's work tree.
    pub root: PathBuf,
    /// The submodule's path inside the root.
    pub submodule: String,
    /// Branch pushed in both repositories.
    pub branch: String,
    /// Remotes of the submodule to push to, in order.
    pub submodule_remotes: Vec<String>,
    /// Remotes of the root to push to.
    pub root_remotes: Vec<String>,
    /// Commit message for the pointer update; default `Update submodule <name> to <short sha>`.
    pub message: Option<String>,
}

/// Which of the two repositories; `"submodule"` or `"root"` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Repository {
    /// The submodule.
    Submodule,
    /// The root repository.
    Root,
}

impl Repository {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Repository::Submodule => "submodule",
            Repository::Root => "root",
        }
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.pad(self.as_str())
    }
}

/// Progress a push reports while it runs; the CLI renders it on stderr.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum PushEvent {
    /// Both trees are clean and no remote branch has commits the local one lacks; the pushes start.
    Checked {
        /// The submodule path.
        submodule: String,
        /// The submodule commit to push.
        commit: String,
    },
    /// The branch was pushed to a remote.
    Pushed {
        /// Which repository.
        repository: Repository,
        /// The remote.
        remote: String,
    },
    /// The root's submodule pointer was committed.
    PointerCommitted {
        /// The new root commit.
        commit: String,
    },
}

/// One remote branch confirmed after the push.
#[derive(Debug, Clone, Serialize)]
pub struct Confirmed {
    /// `submodule` or `root`.
    pub repository: Repository,
    /// Remote name.
    pub remote: String,
    /// Commit the remote branch now points at.
    pub commit: String,
}

/// The result of a push (`--output json` prints this shape).
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// The submodule path.
    pub submodule: String,
    /// The submodule commit pushed.
    pub submodule_commit: String,
    /// The root commit pushed.
    pub root_commit: String,
    /// Whether a pointer-update commit was made (false when the root already pointed at the commit).
    pub root_committed: bool,
    /// Every remote, confirmed.
    pub confirmed: Vec<Confirmed>,
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    Ok(git_raw(dir, args)?.trim().to_string())
}

/// Like [`git`], without trimming (porcelain output starts with significant spaces).
fn git_raw(dir: &Path, args: &[&str]) -> Result<String> {
    let output = duct::cmd("git", args)
        .dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdout_capture()
        .stderr_capture()
        .unchecked()
        .run()
        .map_err(|error| Error::Git { message: format!("cannot run git: {error}") })?;
    if !output.status.success() {
        return Err(Error::Git {
            message: format!(
                "`git {}` in {} failed: {}",
                args.join(" "),
                dir.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn remote_head(dir: &Path, remote: &str, branch: &str) -> Result<Option<String>> {
    let listing = git(dir, &["ls-remote", "--heads", remote, &format!("refs/heads/{branch}")])?;
    Ok(listing.split_whitespace().next().map(str::to_string))
}

/// Refuse when `remote`'s branch has commits that `local` lacks.
fn check_not_diverged(dir: &Path, what: &str, remote: &str, branch: &str, local: &str) -> Result<()> {
    let Some(remote_commit) = remote_head(dir, remote, branch)? else { return Ok(()) };
    if remote_commit == local {
        return Ok(());
    }
    git(dir, &["fetch", "--quiet", remote, &format!("refs/heads/{branch}")])?;
    let ancestor = duct::cmd("git", ["merge-base", "--is-ancestor", &remote_commit, local])
        .dir(dir)
        .stdout_null()
        .stderr_null()
        .unchecked()
        .run()
        .map_err(|error| Error::Git { message: format!("cannot run git: {error}") })?;
    if !ancestor.status.success() {
        return Err(Error::Git {
            message: format!(
                "{what}: {remote}/{branch} is at {} which is not in the local history (diverged); pull and merge or \
                 rebase first; nothing was pushed",
                short(&remote_commit)
            ),
        });
    }
    Ok(())
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn dirty_lines(dir: &Path) -> Result<Vec<String>> {
    Ok(git_raw(dir, &["status", "--porcelain", "--ignore-submodules=none"])?
        .lines()
        .map(str::to_string)
        .filter(|line| !line.is_empty())
        .collect())
}

/// Push the submodule and the root as described in the module docs.
pub fn push(options: &PushOptions, observer: &mut dyn Observer<PushEvent>) -> Result<PushReport> {
    if options.submodule_remotes.is_empty() || options.root_remotes.is_empty() {
        return Err(Error::invalid("remotes", "(none)", "at least one submodule remote and one root remote"));
    }
    let root = &options.root;
    git(root, &["rev-parse", "--show-toplevel"]).map_err(|_| {
        Error::invalid("--root", root.display().to_string(), "the work tree of the root git repository")
    })?;
    let submodule_path = options.submodule.trim_end_matches('/');
    let submodule_dir = root.join(submodule_path);
    let listed = git(root, &["submodule", "status", "--", submodule_path]).unwrap_or_default();
    if listed.is_empty() || !submodule_dir.join(".git").exists() {
        return Err(Error::invalid(
            "--submodule",
            submodule_path,
            format!("a checked-out submodule of {}", root.display()),
        ));
    }

    // Clean trees: the submodule entirely, the root except the submodule's own pointer.
    let dirty = dirty_lines(&submodule_dir)?;
    if !dirty.is_empty() {
        return Err(Error::Git {
            message: format!(
                "submodule {submodule_path} has uncommitted changes ({}); commit them first; nothing was pushed",
                dirty.join(", ")
            ),
        });
    }
    let root_dirty: Vec<String> =
        dirty_lines(root)?.into_iter().filter(|line| line.get(3..).map(str::trim) != Some(submodule_path)).collect();
    if !root_dirty.is_empty() {
        return Err(Error::Git {
            message: format!(
                "the root repository has uncommitted changes besides {submodule_path} ({}); commit or revert them \
                 first; nothing was pushed",
                root_dirty.join(", ")
            ),
        });
    }

    let commit = git(&submodule_dir, &["rev-parse", "HEAD"])?;
    let root_head = git(root, &["rev-parse", "HEAD"])?;
    for remote in &options.submodule_remotes {
        check_not_diverged(&submodule_dir, &format!("submodule {submodule_path}"), remote, &options.branch, &commit)?;
    }
    for remote in &options.root_remotes {
        check_not_diverged(root, "root repository", remote, &options.branch, &root_head)?;
    }

    observer.on_event(&PushEvent::Checked { submodule: submodule_path.to_string(), commit: commit.clone() });

    let refspec = format!("HEAD:refs/heads/{}", options.branch);
    for remote in &options.submodule_remotes {
        git(&submodule_dir, &["push", "--quiet", remote, &refspec])?;
        observer.on_event(&PushEvent::Pushed { repository: Repository::Submodule, remote: remote.clone() });
    }

    git(root, &["add", "--", submodule_path])?;
    let staged = duct::cmd("git", ["diff", "--cached", "--quiet", "--", submodule_path])
        .dir(root)
        .unchecked()
        .run()
        .map_err(|error| Error::Git { message: format!("cannot run git: {error}") })?;
    let root_committed = !staged.status.success();
    if root_committed {
        let message = options
            .message
            .clone()
            .unwrap_or_else(|| format!("Update submodule {submodule_path} to {}", short(&commit)));
        git(root, &["commit", "--quiet", "-m", &message, "--", submodule_path])?;
    }
    let root_commit = git(root, &["rev-parse", "HEAD"])?;
    if root_committed {
        observer.on_event(&PushEvent::PointerCommitted { commit: root_commit.clone() });
    }
    for remote in &options.root_remotes {
        git(root, &["push", "--quiet", remote, &refspec])?;
        observer.on_event(&PushEvent::Pushed { repository: Repository::Root, remote: remote.clone() });
    }

    let mut confirmed = Vec::new();
    let targets = options
        .submodule_remotes
        .iter()
        .map(|remote| (Repository::Submodule, submodule_dir.as_path(), remote, &commit))
        .chain(options.root_remotes.iter().map(|remote| (Repository::Root, root.as_path(), remote, &root_commit)));
    for (repository, dir, remote, expected) in targets {
        let actual = remote_head(dir, remote, &options.branch)?.unwrap_or_default();
        if actual != *expected {
            return Err(Error::Git {
                message: format!(
                    "{repository} remote {remote} has {} on {} after the push, expected {}",
                    if actual.is_empty() { "nothing" } else { short(&actual) },
                    options.branch,
                    short(expected)
                ),
            });
        }
        confirmed.push(Confirmed { repository, remote: remote.clone(), commit: actual });
    }
    Ok(PushReport {
        submodule: submodule_path.to_string(),
        submodule_commit: commit,
        root_commit,
        root_committed,
        confirmed,
    })
}
