//! systemd service units: no shell syntax in `ExecStart=`, a real `User=`, `Restart=on-failure`.

use std::fmt::Write as _;

/// The unit's `Type=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    /// `Type=simple`: the process is the service.
    Simple,
    /// `Type=exec`: like simple, but start fails if the binary cannot be executed.
    Exec,
    /// `Type=notify`: the service tells systemd when it is ready (PostgreSQL, Redis).
    Notify,
    /// `Type=oneshot` with `RemainAfterExit=yes` (firewall rules).
    Oneshot,
}

/// A systemd service unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The unit name, `tables.service`.
    pub name: String,
    /// `Description=`.
    pub description: String,
    /// Units ordered before this one (`After=`), and pulled in when `wants` is set.
    pub after: Vec<String>,
    /// `Wants=`.
    pub wants: Vec<String>,
    /// `Before=` (for the firewall).
    pub before: Vec<String>,
    /// `Type=`.
    pub service_type: ServiceType,
    /// `User=` and `Group=`.
    pub user: String,
    /// `WorkingDirectory=`.
    pub working_directory: Option<String>,
    /// `Environment=` pairs (never secrets: those go in `environment_file`).
    pub environment: Vec<(String, String)>,
    /// `EnvironmentFile=` (a 0600 rendered secret file).
    pub environment_file: Option<String>,
    /// `ExecStart=` program and arguments, quoted for systemd, no shell.
    pub exec_start: Vec<String>,
    /// `ExecReload=` program and arguments.
    pub exec_reload: Option<Vec<String>>,
    /// `AmbientCapabilities=CAP_NET_BIND_SERVICE` for services on ports below 1024 that run unprivileged.
    pub bind_low_ports: bool,
    /// `RuntimeDirectory=` (created owned by `user` under `/run`).
    pub runtime_directory: Option<String>,
    /// `KillMode=mixed` + `KillSignal=SIGINT` (PostgreSQL's fast shutdown).
    pub postgres_style_stop: bool,
    /// `LimitNOFILE=`.
    pub limit_nofile: Option<u32>,
}

impl Unit {
    /// A simple service with the defaults gbo uses.
    pub fn new(name: impl Into<String>, description: impl Into<String>, user: &str, exec_start: &[&str]) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            after: vec!["network.target".to_owned()],
            wants: Vec::new(),
            before: Vec::new(),
            service_type: ServiceType::Exec,
            user: user.to_owned(),
            working_directory: None,
            environment: Vec::new(),
            environment_file: None,
            exec_start: exec_start.iter().map(|s| (*s).to_owned()).collect(),
            exec_reload: None,
            bind_low_ports: false,
            runtime_directory: None,
            postgres_style_stop: false,
            limit_nofile: None,
        }
    }

    /// The path of the unit file.
    pub fn path(&self) -> String {
        format!("/etc/systemd/system/{}", self.name)
    }

    /// Renders the unit file.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", super::HEADER);
        out.push_str("[Unit]\n");
        let _ = writeln!(out, "Description={}", self.description);
        if !self.wants.is_empty() {
            let _ = writeln!(out, "Wants={}", self.wants.join(" "));
        }
        if !self.after.is_empty() {
            let _ = writeln!(out, "After={}", self.after.join(" "));
        }
        if !self.before.is_empty() {
            let _ = writeln!(out, "Before={}", self.before.join(" "));
        }
        out.push_str("\n[Service]\n");
        let kind = match self.service_type {
            ServiceType::Simple => "simple",
            ServiceType::Exec => "exec",
            ServiceType::Notify => "notify",
            ServiceType::Oneshot => "oneshot",
        };
        let _ = writeln!(out, "Type={kind}");
        if self.service_type == ServiceType::Oneshot {
            out.push_str("RemainAfterExit=yes\n");
        }
        let _ = writeln!(out, "User={}", self.user);
        let _ = writeln!(out, "Group={}", self.user);
        if let Some(dir) = &self.working_directory {
            let _ = writeln!(out, "WorkingDirectory={dir}");
        }
        if let Some(dir) = &self.runtime_directory {
            let _ = writeln!(out, "RuntimeDirectory={dir}");
            out.push_str("RuntimeDirectoryMode=2775\nRuntimeDirectoryPreserve=yes\n");
        }
        for (key, value) in &self.environment {
            let _ = writeln!(out, "Environment={}", quote(&format!("{key}={value}")));
        }
        if let Some(path) = &self.environment_file {
            let _ = writeln!(out, "EnvironmentFile={path}");
        }
        let _ = writeln!(out, "ExecStart={}", command_line(&self.exec_start));
        if let Some(reload) = &self.exec_reload {
            let _ = writeln!(out, "ExecReload={}", command_line(reload));
        }
        if self.bind_low_ports {
            out.push_str("AmbientCapabilities=CAP_NET_BIND_SERVICE\n");
        }
        if self.postgres_style_stop {
            out.push_str("KillMode=mixed\nKillSignal=SIGINT\nTimeoutStopSec=120\n");
        }
        if let Some(n) = self.limit_nofile {
            let _ = writeln!(out, "LimitNOFILE={n}");
        }
        if self.service_type != ServiceType::Oneshot {
            out.push_str("Restart=on-failure\nRestartSec=2\n");
        }
        out.push_str("\n[Install]\nWantedBy=multi-user.target\n");
        out
    }
}

/// Joins arguments into a systemd command line, quoting each where needed.
pub fn command_line(args: &[String]) -> String {
    args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ")
}

/// Quotes one argument for systemd: `%` becomes `%%` (specifiers), `$` becomes `$$` (no variable expansion), and
/// an argument with whitespace, quotes, backslashes or `;` is put in double quotes with `\` and `"` escaped.
/// `$MAINPID` is kept as is: it is the one variable gbo uses on purpose (in `ExecReload=`).
pub fn quote(arg: &str) -> String {
    let escaped = if arg == "$MAINPID" { arg.to_owned() } else { arg.replace('%', "%%").replace('$', "$$") };
    let needs_quotes =
        escaped.is_empty() || escaped.chars().any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'));
    if needs_quotes {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        escaped
    }
}
