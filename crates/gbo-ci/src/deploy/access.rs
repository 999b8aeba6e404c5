//! How this session reaches root and the service's owner on the remote, and how a root script of
//! [`crate::remote_dir`] is run.

use crate::error::Result;
use crate::remote_dir;
use crate::ssh::{sh_quote, Remote};

/// How this session reaches root and the owner on the remote.
#[derive(Debug, Clone)]
pub(super) struct Access {
    /// The SSH user is root.
    pub(super) root: bool,
    /// The SSH user's name.
    pub(super) user: String,
    /// `runuser` exists on the remote.
    pub(super) runuser: bool,
}

impl Access {
    /// `script` run by root: as it is when the SSH user is root, through `sudo -n` otherwise.
    pub(super) fn root(&self, script: &str) -> String {
        if self.root {
            script.to_string()
        } else {
            format!("sudo -n sh -c {} gbo-ci", sh_quote(script))
        }
    }

    /// A command prefix that runs what follows as `owner` (nothing when the SSH user is the owner).
    pub(super) fn as_owner(&self, owner: &str) -> String {
        let quoted = sh_quote(owner);
        if self.user == owner {
            String::new()
        } else if self.root && self.runuser {
            format!("runuser -u {quoted} -- ")
        } else if self.root {
            format!("su -s /bin/sh {quoted} -c 'exec \"$0\" \"$@\"' ")
        } else {
            format!("sudo -n -u {quoted} -- ")
        }
    }
}

/// Run a root script of [`remote_dir`]; its refusal (exit 3) is an error carrying its message.
pub(super) fn run_root(remote: &Remote, access: &Access, what: &str, script: &str) -> Result<String> {
    let output = remote.exec(&access.root(script))?;
    match output.status {
        0 => Ok(output.stdout),
        remote_dir::REFUSED => Err(remote.refused(output.stderr.trim())),
        _ => Err(remote.failed(what, &output)),
    }
}
