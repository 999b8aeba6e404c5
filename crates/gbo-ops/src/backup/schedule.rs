//! `gbo backup schedule`: a systemd service and timer that run `gbo backup create` (and optionally prune) for a
//! tenant. The units are rendered here; the CLI writes them. The calendar expression and the prune options are
//! checked first and rendered from what was parsed, so nothing given can add a line (a directive) to a unit.

use super::{BackupError, Retention};

/// Check a systemd calendar expression: letters, digits, spaces and `*-:/.,~` only (what `OnCalendar=` uses), so
/// it cannot end the line it is written on.
pub fn check_calendar(text: &str) -> Result<(), BackupError> {
    let ok = !text.trim().is_empty()
        && text.len() <= 200
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ' || "*-:/.,~".contains(c));
    if ok {
        Ok(())
    } else {
        Err(BackupError::BadInput(format!(
            "invalid --on-calendar `{}`: a systemd calendar expression (letters, digits, spaces and `*-:/.,~`), e.g. `daily` or `*-*-* 03:00`",
            text.escape_debug()
        )))
    }
}

/// Check a path written into a unit: absolute, UTF-8, no control character (a newline would end the line).
pub fn check_path(what: &str, path: &std::path::Path) -> Result<(), BackupError> {
    match path.to_str() {
        Some(text) if path.is_absolute() && !text.chars().any(char::is_control) => Ok(()),
        _ => Err(BackupError::BadInput(format!(
            "{what} `{}` cannot go into a systemd unit: it must be an absolute UTF-8 path without control characters",
            path.display().to_string().escape_debug()
        ))),
    }
}

/// Parse `--prune` ("--keep-daily 7 --keep-weekly 4", `=` allowed) into a retention.
pub fn parse_prune(text: &str) -> Result<Retention, BackupError> {
    let bad = |why: String| {
        BackupError::BadInput(format!(
            "invalid --prune `{}`: {why}; allowed: --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, each with a number",
            text.escape_debug()
        ))
    };
    let mut retention = Retention::default();
    let mut words = text.split_whitespace().flat_map(|w| match w.split_once('=') {
        Some((k, v)) => vec![k, v],
        None => vec![w],
    });
    while let Some(flag) = words.next() {
        let slot = match flag {
            "--keep-last" => &mut retention.last,
            "--keep-hourly" => &mut retention.hourly,
            "--keep-daily" => &mut retention.daily,
            "--keep-weekly" => &mut retention.weekly,
            "--keep-monthly" => &mut retention.monthly,
            "--keep-yearly" => &mut retention.yearly,
            other => return Err(bad(format!("unknown option `{}`", other.escape_debug()))),
        };
        let value = words.next().ok_or_else(|| bad(format!("{flag} needs a number")))?;
        let n: u32 = value.parse().map_err(|_| bad(format!("`{}` is not a number", value.escape_debug())))?;
        *slot = Some(n);
    }
    if retention.is_empty() {
        return Err(bad("it keeps nothing".into()));
    }
    Ok(retention)
}

/// The retention as `gbo backup prune` options.
pub fn prune_args(retention: &Retention) -> String {
    [
        ("--keep-last", retention.last),
        ("--keep-hourly", retention.hourly),
        ("--keep-daily", retention.daily),
        ("--keep-weekly", retention.weekly),
        ("--keep-monthly", retention.monthly),
        ("--keep-yearly", retention.yearly),
    ]
    .iter()
    .filter_map(|(flag, n)| n.map(|n| format!("{flag} {n}")))
    .collect::<Vec<_>>()
    .join(" ")
}

/// The unit names for a tenant.
pub fn unit_name(tenant: &str) -> String {
    format!("gbo-backup-{tenant}")
}

/// The service and timer text.
pub fn render(
    gbo: &std::path::Path,
    tenant: &str,
    repo: &std::path::Path,
    password_file: &std::path::Path,
    on_calendar: &str,
    prune: Option<&Retention>,
) -> (String, String) {
    let quote = |p: &std::path::Path| {
        format!("\"{}\"", p.display().to_string().replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%"))
    };
    let mut service = format!(
        "[Unit]\nDescription=gbo backup of tenant {tenant}\nAfter=network-online.target\n\n[Service]\nType=oneshot\nExecStart={} backup create --tenant {tenant} --repo {} --password-file {}\n",
        quote(gbo),
        quote(repo),
        quote(password_file)
    );
    if let Some(keep) = prune.map(prune_args) {
        service.push_str(&format!(
            "ExecStartPost={} backup prune --tenant {tenant} --repo {} --password-file {} {keep}\n",
            quote(gbo),
            quote(repo),
            quote(password_file)
        ));
    }
    let timer = format!(
        "[Unit]\nDescription=gbo backup of tenant {tenant} ({on_calendar})\n\n[Timer]\nOnCalendar={on_calendar}\nPersistent=true\nRandomizedDelaySec=300\n\n[Install]\nWantedBy=timers.target\n"
    );
    (service, timer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_given_adds_a_line_to_a_unit() {
        for bad in ["daily\nExecStartPre=/bin/sh -c id", "daily;reboot", ""] {
            assert!(check_calendar(bad).is_err(), "{bad:?}");
        }
        check_calendar("*-*-* 03:00").expect("calendar");
        for bad in ["--keep-daily 7\nExecStartPre=/bin/sh", "--keep-daily x", "--keep-daily", "--rm 1", "--keep-last 0"]
        {
            let err = parse_prune(bad).expect_err(bad).to_string();
            assert!(err.contains("invalid --prune"), "{err}");
        }
        let keep = parse_prune("--keep-daily 7 --keep-weekly=4").expect("prune");
        let (service, timer) =
            render("/usr/bin/gbo".as_ref(), "acme", "/r".as_ref(), "/p".as_ref(), "daily", Some(&keep));
        assert!(service
            .contains("prune --tenant acme --repo \"/r\" --password-file \"/p\" --keep-daily 7 --keep-weekly 4\n"));
        assert_eq!(service.lines().filter(|l| l.starts_with("Exec")).count(), 2, "{service}");
        assert!(timer.contains("OnCalendar=daily\n"));
    }
}
