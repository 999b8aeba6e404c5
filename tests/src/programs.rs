//! The one list of host programs that gbo's main job and its tests need, with the Debian package of each.
//!
//! `cargo xtask lxd-up` and `cargo xtask up` install the [`Need::Lxd`] packages, `cargo xtask test` all of them, and
//! a test finds a program only through [`require_program`], which refuses a program that is not on this list. So a
//! test that starts using a new program fails on the developer's own machine until the program is added here, and
//! a fresh machine gets everything from this list alone (nothing installed by hand can hide a missing entry).

use std::path::{Path, PathBuf};

/// Who needs a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The LXD daemon and what it needs at run time (bridges need dnsmasq and iptables; image import needs
    /// squashfs-tools and xz), plus the image builder: the main job (`cargo xtask up`) and `lxd-up`.
    Lxd,
    /// The real programs the tests run against.
    Tests,
}

/// One program on the host.
#[derive(Debug, Clone, Copy)]
pub struct HostProgram {
    /// The program's name on PATH, or an absolute path for programs outside PATH.
    pub program: &'static str,
    /// The Debian package that installs it.
    pub package: &'static str,
    /// Who needs it.
    pub need: Need,
}

const fn lxd(program: &'static str, package: &'static str) -> HostProgram {
    HostProgram { program, package, need: Need::Lxd }
}

const fn test(program: &'static str, package: &'static str) -> HostProgram {
    HostProgram { program, package, need: Need::Tests }
}

/// Every host program, with its package.
pub const HOST_PROGRAMS: &[HostProgram] = &[
    lxd("lxd", "lxd"),
    lxd("lxc", "lxd-client"),
    lxd("dnsmasq", "dnsmasq-base"),
    lxd("iptables", "iptables"),
    lxd("mksquashfs", "squashfs-tools"),
    lxd("xz", "xz-utils"),
    lxd("mkfs.btrfs", "btrfs-progs"),
    lxd("btrfs", "btrfs-progs"),
    lxd("debootstrap", "debootstrap"),
    lxd("tar", "tar"),
    lxd("setsid", "util-linux"),
    lxd("runuser", "util-linux"),
    lxd("umount", "mount"),
    test("/usr/lib/postgresql/15/bin/initdb", "postgresql"),
    test("/usr/lib/postgresql/15/bin/pg_ctl", "postgresql"),
    test("psql", "postgresql-client"),
    test("pg_dump", "postgresql-client"),
    test("redis-server", "redis-server"),
    test("redis-cli", "redis-tools"),
    test("caddy", "caddy"),
    test("systemd-analyze", "systemd"),
    test("/usr/sbin/sshd", "openssh-server"),
    test("ssh", "openssh-client"),
    test("scp", "openssh-client"),
    test("ssh-keygen", "openssh-client"),
    test("ssh-agent", "openssh-client"),
    test("ssh-add", "openssh-client"),
    test("fail2ban-regex", "fail2ban"),
    test("fail2ban-client", "fail2ban"),
    test("zfs", "zfs-fuse"),
    test("zpool", "zfs-fuse"),
    test("zfs-fuse", "zfs-fuse"),
    test("git", "git"),
    test("python3", "python3"),
    test("unzip", "unzip"),
    test("openssl", "openssl"),
    test("pgrep", "procps"),
    test("pkill", "procps"),
    test("/usr/bin/time", "time"),
    test("sha256sum", "coreutils"),
    test("minisign", "minisign"),
    test("gpg", "gpg"),
    test("stty", "coreutils"),
    test("mkfifo", "coreutils"),
    test("restic", "restic"),
    // The webmail test's browser (cookies, the proxy's CA) and SMTP client.
    test("curl", "curl"),
];

/// The Debian packages of everything `need` covers (each once, in list order). [`Need::Tests`] includes the
/// [`Need::Lxd`] packages: the tests run against the daemon.
pub fn packages(need: Need) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for entry in HOST_PROGRAMS {
        let wanted = match need {
            Need::Lxd => entry.need == Need::Lxd,
            Need::Tests => true,
        };
        if wanted && !out.contains(&entry.package) {
            out.push(entry.package);
        }
    }
    out
}

/// The path of a host program a test needs. Panics (never skips) when the program is not on [`HOST_PROGRAMS`]
/// (add it there, with its package) or is not installed (`cargo xtask test` installs every package on the list).
pub fn require_program(program: &str) -> PathBuf {
    let name = file_name(program);
    let Some(entry) = HOST_PROGRAMS.iter().find(|p| file_name(p.program) == name) else {
        panic!(
            "{program} is not on the host program list (tests/src/programs.rs): add it there with its Debian \
             package, so that `cargo xtask test` installs it on a fresh machine"
        );
    };
    let found = if program.starts_with('/') {
        Some(PathBuf::from(program)).filter(|p| p.is_file())
    } else if entry.program.starts_with('/') {
        Some(PathBuf::from(entry.program)).filter(|p| p.is_file())
    } else {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file()))
    };
    found.unwrap_or_else(|| {
        panic!(
            "{program} is required by this test and is not installed (Debian package {}): run `cargo xtask test`, \
             which installs every package of the host program list",
            entry.package
        )
    })
}

fn file_name(path: &str) -> &str {
    Path::new(path).file_name().and_then(|n| n.to_str()).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lxd_packages_are_a_subset_of_the_test_packages_and_name_lxds_runtime_needs() {
        let lxd = packages(Need::Lxd);
        let all = packages(Need::Tests);
        assert!(lxd.iter().all(|p| all.contains(p)));
        for runtime in ["lxd", "lxd-client", "dnsmasq-base", "iptables", "btrfs-progs", "debootstrap"] {
            assert!(lxd.contains(&runtime), "{runtime} missing from {lxd:?}");
        }
        assert!(all.contains(&"redis-server"));
    }

    #[test]
    fn a_listed_program_is_found_by_name_or_by_its_absolute_path() {
        assert!(require_program("sha256sum").is_file());
        assert_eq!(require_program("/usr/bin/sha256sum"), PathBuf::from("/usr/bin/sha256sum"));
    }

    #[test]
    #[should_panic(expected = "not on the host program list")]
    fn a_program_not_on_the_list_is_refused() {
        require_program("gbo-no-such-program");
    }
}
