//! `gbo-ci`: the library behind the `gbo-ci` command.
//!
//! - [`deploy`]: replace a running binary over SSH with an atomic swap, numbered releases, restart through systemd
//!   or by exact executable path, health polling through the SSH connection, and automatic rollback.
//! - [`remote_dir`]: the scripts of root's steps in the target's directory, which the service user owns: nothing
//!   there is opened, chowned or written through a name that user controls.
//! - [`workflow`]: render Forgejo workflow files per submodule and lint existing ones for the runbook's pitfalls.
//! - [`push`]: push a submodule to both remotes, update and push the root repository, confirm every remote.
//! - [`cache`]: prune the runner's sccache and cargo registry caches, install the daily timer.
//! - [`runs`]: list recent workflow runs through the Forgejo API.
//! - [`event`]: the one shape of progress: each long operation reports typed events to an [`event::Observer`].
//!
//! The library never prints and never exits; the `gbo-ci` binary renders its events and results and maps errors to
//! exit codes.

pub mod cache;
pub mod deploy;
pub mod error;
pub mod event;
pub mod names;
pub mod push;
pub mod remote_dir;
pub mod runs;
pub mod size;
pub mod ssh;
pub mod ssh_config;
pub mod workflow;

pub use error::{Error, Result};
