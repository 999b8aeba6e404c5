//! `gbo backup schedule`: a systemd service and timer that run `gbo backup create` (and optionally prune) for a
//! tenant. The units are rendered here; the CLI writes them.

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
    prune: Option<&str>,
) -> (String, String) {
    let quote =
        |p: &std::path::Path| format!("\"{}\"", p.display().to_string().replace('\\', "\\\\").replace('"', "\\\""));
    let mut service = format!(
        "[Unit]\nDescription=gbo backup of tenant {tenant}\nAfter=network-online.target\n\n[Service]\nType=oneshot\nExecStart={} backup create --tenant {tenant} --repo {} --password-file {}\n",
        quote(gbo),
        quote(repo),
        quote(password_file)
    );
    if let Some(keep) = prune {
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
