//! Rendering of every file the catalogue puts into containers. Each submodule renders one kind of file from plain
//! inputs, so they can be used (and tested) outside [`component`](crate::component) too.

pub mod botserver;
pub mod caddy;
pub mod coredns;
pub mod fail2ban;
pub mod firewall;
pub mod forgejo;
pub mod logs;
pub mod misc;
pub mod postgres;
pub mod redis;
pub mod sshd;
pub mod systemd;

use crate::users::ServiceUser;

/// The first line of every rendered text file that accepts `#` comments.
pub const HEADER: &str = "# Rendered by gbo; local changes are reported as drift and replaced on the next install.";

/// A rendered file owned by `owner`.
pub(crate) fn file(
    path: impl Into<String>,
    content: String,
    mode: u32,
    owner: &ServiceUser,
    restarts: &[&str],
    secret: bool,
) -> crate::RenderedFile {
    crate::RenderedFile {
        path: path.into(),
        content,
        mode,
        uid: owner.uid,
        gid: owner.gid,
        restarts: restarts.iter().map(|s| (*s).to_owned()).collect(),
        secret,
    }
}

/// A root-owned file.
pub(crate) fn root_file(path: impl Into<String>, content: String, mode: u32, restarts: &[&str]) -> crate::RenderedFile {
    crate::RenderedFile {
        path: path.into(),
        content,
        mode,
        uid: 0,
        gid: 0,
        restarts: restarts.iter().map(|s| (*s).to_owned()).collect(),
        secret: false,
    }
}
