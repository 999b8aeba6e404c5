//! Logs that never fill the disk, in every container: a cap on the journal (journald's own limits) and a timer
//! that keeps every file under `/opt/gbo/logs` under a size cap (copy-and-truncate, so a writer that keeps its file
//! open, such as Redis, goes on writing at the start of the emptied file). Caddy rolls its access log itself
//! (`roll_size` in its log block); the cap is the backstop for everything else.

/// Where gbo's own helper units live (systemd's search path for local units), apart from the role's units in
/// `/etc/systemd/system`.
pub const AUX_UNIT_DIR: &str = "/usr/local/lib/systemd/system";
/// The journald drop-in.
pub const JOURNALD_CONF_PATH: &str = "/etc/systemd/journald.conf.d/50-gbo.conf";
/// Most the journal keeps on disk.
pub const JOURNAL_MAX: &str = "64M";
/// The script that caps the files under the logs mount.
pub const LOGCAP_PATH: &str = "/usr/local/sbin/gbo-logcap";
/// Its service.
pub const LOGCAP_SERVICE: &str = "gbo-logcap.service";
/// Its timer.
pub const LOGCAP_TIMER: &str = "gbo-logcap.timer";
/// Most one log file under `/opt/gbo/logs` grows to (MiB) before it is cut.
pub const LOG_FILE_CAP_MIB: u32 = 16;
/// What is kept of a cut file (MiB), as `<file>.1`.
pub const LOG_FILE_KEEP_MIB: u32 = 4;

/// `journald.conf.d/50-gbo.conf`.
pub fn journald_conf() -> String {
    format!(
        "# Rendered by gbo: the journal never fills the disk.\n[Journal]\nSystemMaxUse={JOURNAL_MAX}\n\
         SystemMaxFileSize=8M\nRuntimeMaxUse=32M\nRuntimeMaxFileSize=8M\nMaxRetentionSec=1month\n"
    )
}

/// The cap script: every regular file under `/opt/gbo/logs` (not a `.1`, never following a link, never leaving the
/// mount) larger than the cap keeps its last [`LOG_FILE_KEEP_MIB`] as `<file>.1` and is truncated in place.
pub fn logcap_script() -> String {
    format!(
        r#"#!/bin/sh
# Rendered by gbo: keeps every log file under /opt/gbo/logs under {cap} MiB. A larger file keeps its last {keep} MiB
# as <file>.1 and is emptied in place (its writer keeps its open file and goes on at the start).
set -u
find /opt/gbo/logs -xdev -type f ! -name '*.1' -size +{cap_k}k -exec sh -c '
  for f in "$@"; do
    tail -c {keep_bytes} -- "$f" > "$f.1.gbo-tmp" && mv -f -- "$f.1.gbo-tmp" "$f.1" && : > "$f"
  done' sh {{}} +
"#,
        cap = LOG_FILE_CAP_MIB,
        keep = LOG_FILE_KEEP_MIB,
        cap_k = LOG_FILE_CAP_MIB * 1024,
        keep_bytes = LOG_FILE_KEEP_MIB * 1024 * 1024,
    )
}

/// `gbo-logcap.service`.
pub fn logcap_service() -> String {
    format!(
        "# Rendered by gbo.\n[Unit]\nDescription=gbo: cap the log files under /opt/gbo/logs\n\n[Service]\n\
         Type=oneshot\nExecStart={LOGCAP_PATH}\n"
    )
}

/// `gbo-logcap.timer`: every five minutes.
pub fn logcap_timer() -> String {
    "# Rendered by gbo.\n[Unit]\nDescription=gbo: cap the log files under /opt/gbo/logs every five minutes\n\n\
     [Timer]\nOnBootSec=5min\nOnUnitActiveSec=5min\n\n[Install]\nWantedBy=timers.target\n"
        .to_string()
}
