//! A small reader for OpenSSH client config files (`~/.ssh/config`).
//!
//! It understands what a deploy needs: `Host` blocks with patterns (`*`, `?`, `!negation`), and the keywords
//! `HostName`, `Port`, `User`, `IdentityFile` and `UserKnownHostsFile`. As in OpenSSH, the first value obtained for
//! a keyword wins, except `IdentityFile`, which accumulates. `~` and the tokens `%h`, `%p`, `%r`, `%u`, `%d` and `%%`
//! are expanded. Other keywords are ignored, except those that would send the connection elsewhere or change the
//! host key looked up (`ProxyJump`, `ProxyCommand`, `HostKeyAlias`) or hold settings this reader does not read
//! (`Include`): where they apply, resolving is an error naming the line, because ignoring them would silently
//! connect somewhere else. `Match` blocks are not evaluated; one that sets any of those keywords, or any keyword
//! this reader honours, is an error too (it might apply to the host).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The settings that apply to one host alias.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSettings {
    /// `HostName`: the real host to connect to.
    pub hostname: Option<String>,
    /// `Port`.
    pub port: Option<u16>,
    /// `User`.
    pub user: Option<String>,
    /// `IdentityFile` entries, in order (unexpanded).
    pub identity_files: Vec<String>,
    /// `UserKnownHostsFile` entries (unexpanded; OpenSSH allows several on one line).
    pub user_known_hosts_files: Vec<String>,
    /// The line of the first `Host` block naming the host other than a catch-all `Host *`: the host is an alias
    /// defined there. `None` when only catch-all blocks (or none) matched.
    pub alias_line: Option<usize>,
}

/// Keywords that would make OpenSSH connect elsewhere, check another host key, or read settings from elsewhere;
/// this reader cannot honour them, so it refuses them where they apply rather than ignore them.
const UNHONOURED: &[&str] = &["proxyjump", "proxycommand", "hostkeyalias", "include"];

/// Keywords this reader honours: a `Match` block setting one of them (or an unhonoured one) might change the target.
const HONOURED: &[&str] = &["hostname", "port", "user", "identityfile", "userknownhostsfile"];

/// A keyword as OpenSSH's manual spells it (the reader keeps them lower-cased).
fn spelled(keyword: &str) -> &str {
    match keyword {
        "hostname" => "HostName",
        "port" => "Port",
        "user" => "User",
        "identityfile" => "IdentityFile",
        "userknownhostsfile" => "UserKnownHostsFile",
        "proxyjump" => "ProxyJump",
        "proxycommand" => "ProxyCommand",
        "hostkeyalias" => "HostKeyAlias",
        "include" => "Include",
        other => other,
    }
}

/// A parsed config: the blocks in file order.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    blocks: Vec<Block>,
}

#[derive(Debug, Clone)]
struct Block {
    /// The line of its `Host` or `Match` keyword (0 for the settings before the first block).
    line: usize,
    /// `None` for the settings before the first `Host` (they apply to every host); patterns otherwise.
    patterns: Option<Vec<String>>,
    /// `Match` blocks never apply.
    is_match: bool,
    settings: Vec<(String, Vec<String>, usize)>,
}

impl SshConfig {
    /// Read and parse a config file. A missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(error) => Err(Error::io("reading ssh config", path, error)),
        }
    }

    /// Parse config text; `path` is used in error messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut blocks = vec![Block { line: 0, patterns: None, is_match: false, settings: Vec::new() }];
        for (index, raw_line) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = raw_line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_keyword(line);
            let values = split_args(rest).map_err(|message| Error::SshConfig {
                path: path.to_path_buf(),
                line: line_number,
                message,
            })?;
            let keyword = keyword.to_ascii_lowercase();
            match keyword.as_str() {
                "host" => {
                    if values.is_empty() {
                        return Err(Error::SshConfig {
                            path: path.to_path_buf(),
                            line: line_number,
                            message: "`Host` needs at least one pattern".into(),
                        });
                    }
                    blocks.push(Block {
                        line: line_number,
                        patterns: Some(values),
                        is_match: false,
                        settings: Vec::new(),
                    });
                }
                "match" => {
                    blocks.push(Block { line: line_number, patterns: None, is_match: true, settings: Vec::new() })
                }
                _ => {
                    if let Some(block) = blocks.last_mut() {
                        block.settings.push((keyword, values, line_number));
                    }
                }
            }
        }
        Ok(Self { blocks })
    }

    /// The settings for `alias`, with OpenSSH's first-value-wins rule. Errors name the offending line.
    pub fn resolve(&self, alias: &str, path: &Path) -> Result<HostSettings> {
        let mut settings = HostSettings::default();
        let mut known_hosts_seen = false;
        for block in &self.blocks {
            if block.is_match {
                if let Some((keyword, _, line)) = block.settings.iter().find(|(keyword, _, _)| {
                    HONOURED.contains(&keyword.as_str()) || UNHONOURED.contains(&keyword.as_str())
                }) {
                    return Err(Error::SshConfig {
                        path: path.to_path_buf(),
                        line: *line,
                        message: format!(
                            "`{}` in the `Match` block of line {}: gbo-ci does not evaluate Match blocks, so it \
                             cannot tell whether this applies to `{alias}` (and would connect without it); move it \
                             into a Host block",
                            spelled(keyword),
                            block.line
                        ),
                    });
                }
                continue;
            }
            if let Some(patterns) = &block.patterns {
                if !host_matches(alias, patterns) {
                    continue;
                }
                if settings.alias_line.is_none() && patterns.iter().any(|pattern| pattern != "*") {
                    settings.alias_line = Some(block.line);
                }
            }
            for (keyword, values, line) in &block.settings {
                let first = values.first().cloned();
                let bad = |message: String| Error::SshConfig { path: path.to_path_buf(), line: *line, message };
                if UNHONOURED.contains(&keyword.as_str())
                    && !first.as_deref().is_some_and(|v| v.eq_ignore_ascii_case("none"))
                {
                    return Err(bad(format!(
                        "`{}` applies to `{alias}`, and gbo-ci cannot honour it: ignoring it would connect \
                         somewhere else (directly, or checking another host key, or without the included settings); \
                         give gbo-ci a config without it (--ssh-config)",
                        spelled(keyword)
                    )));
                }
                match keyword.as_str() {
                    "hostname" if settings.hostname.is_none() => settings.hostname = first,
                    "user" if settings.user.is_none() => settings.user = first,
                    "port" if settings.port.is_none() => {
                        let value = first.unwrap_or_default();
                        let port = value
                            .parse::<u16>()
                            .ok()
                            .filter(|port| *port != 0)
                            .ok_or_else(|| bad(format!("`Port {value}` is not a port number (1-65535)")))?;
                        settings.port = Some(port);
                    }
                    "identityfile" => settings.identity_files.extend(first),
                    "userknownhostsfile" if !known_hosts_seen => {
                        known_hosts_seen = true;
                        settings.user_known_hosts_files = values.clone();
                    }
                    _ => {}
                }
            }
        }
        Ok(settings)
    }
}

/// Does `host` match a `Host` line's patterns? Any negated match excludes; otherwise one positive match includes.
pub fn host_matches(host: &str, patterns: &[String]) -> bool {
    let mut matched = false;
    for pattern in patterns {
        for item in pattern.split(',') {
            if let Some(negated) = item.strip_prefix('!') {
                if glob_match(negated, host) {
                    return false;
                }
            } else if glob_match(item, host) {
                matched = true;
            }
        }
    }
    matched
}

/// OpenSSH's pattern language: `*` any run, `?` one character; case-insensitive like host names.
fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let text: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == '*' {
        p += 1;
    }
    p == pattern.len()
}

fn split_keyword(line: &str) -> (&str, &str) {
    let end = line.find(|c: char| c.is_whitespace() || c == '=').unwrap_or(line.len());
    let keyword = &line[..end];
    let rest = line[end..].trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    (keyword, rest)
}

fn split_args(rest: &str) -> std::result::Result<Vec<String>, String> {
    let mut values = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut has_token = false;
    for character in rest.chars() {
        match character {
            '"' => {
                in_quotes = !in_quotes;
                has_token = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_token {
                    values.push(std::mem::take(&mut current));
                    has_token = false;
                }
            }
            c => {
                current.push(c);
                has_token = true;
            }
        }
    }
    if in_quotes {
        return Err("unterminated quote".into());
    }
    if has_token {
        values.push(current);
    }
    Ok(values)
}

/// Expand `~` and the `%` tokens OpenSSH allows in `IdentityFile` and `UserKnownHostsFile`.
pub fn expand_path(value: &str, home: &Path, host: &str, port: u16, remote_user: &str) -> PathBuf {
    let with_home = if value == "~" {
        home.display().to_string()
    } else if let Some(rest) = value.strip_prefix("~/") {
        format!("{}/{rest}", home.display())
    } else {
        value.to_string()
    };
    let mut out = String::new();
    let mut chars = with_home.chars();
    while let Some(character) = chars.next() {
        if character != '%' {
            out.push(character);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(host),
            Some('p') => out.push_str(&port.to_string()),
            Some('r') => out.push_str(remote_user),
            Some('u') => out.push_str(&local_user_name()),
            Some('d') => out.push_str(&home.display().to_string()),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    PathBuf::from(out)
}

fn local_user_name() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "root".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
# The seed's runner config.
Host pragmatismo-system
    HostName 127.0.0.1
    Port=2222
    User root
    IdentityFile ~/.ssh/deploy_ed25519
    UserKnownHostsFile "~/.ssh/known hosts" /etc/ssh/ssh_known_hosts

Host *.internal !secret.internal
    User gbuser
    IdentityFile ~/.ssh/id_%h

Match host foo
    ForwardAgent no

Host *
    User fallback
    Port 22
    IdentityFile ~/.ssh/id_ed25519
"#;

    fn config() -> SshConfig {
        SshConfig::parse(SAMPLE, Path::new("config")).expect("parse")
    }

    #[test]
    fn alias_takes_first_values_and_accumulates_identities() {
        let settings = config().resolve("pragmatismo-system", Path::new("config")).expect("resolve");
        assert_eq!(settings.hostname.as_deref(), Some("127.0.0.1"));
        assert_eq!(settings.port, Some(2222));
        assert_eq!(settings.user.as_deref(), Some("root"));
        assert_eq!(settings.identity_files, vec!["~/.ssh/deploy_ed25519", "~/.ssh/id_ed25519"]);
        assert_eq!(settings.user_known_hosts_files, vec!["~/.ssh/known hosts", "/etc/ssh/ssh_known_hosts"]);
    }

    #[test]
    fn negated_patterns_exclude_and_match_blocks_are_skipped() {
        let cfg = config();
        let internal = cfg.resolve("db.internal", Path::new("config")).expect("resolve");
        assert_eq!(internal.user.as_deref(), Some("gbuser"));
        let secret = cfg.resolve("secret.internal", Path::new("config")).expect("resolve");
        assert_eq!(secret.user.as_deref(), Some("fallback"));
        let foo = cfg.resolve("foo", Path::new("config")).expect("resolve");
        assert_eq!(foo.user.as_deref(), Some("fallback"));
        assert_eq!(foo.hostname, None);
    }

    #[test]
    fn settings_that_would_connect_elsewhere_are_refused_where_they_apply() {
        let config =
            "Host a\n  HostName 10.0.0.1\n  ProxyJump bastion\nHost b\n  HostName 10.0.0.2\n  ProxyJump none\n\
                      Host c\n  HostName 10.0.0.3\n";
        let cfg = SshConfig::parse(config, Path::new("cfg")).expect("parse");
        let error = cfg.resolve("a", Path::new("cfg")).unwrap_err().to_string();
        assert!(error.contains("cfg:3") && error.contains("ProxyJump"), "{error}");
        assert!(cfg.resolve("b", Path::new("cfg")).is_ok(), "`none` is no proxy");
        assert!(cfg.resolve("c", Path::new("cfg")).is_ok(), "another host's proxy does not matter");
        for keyword in ["ProxyCommand nc %h %p", "HostKeyAlias other", "Include other.conf"] {
            let cfg = SshConfig::parse(&format!("Host a\n  {keyword}\n"), Path::new("cfg")).expect("parse");
            let error = cfg.resolve("a", Path::new("cfg")).unwrap_err().to_string();
            assert!(error.contains("cfg:2") && error.contains(keyword.split(' ').next().unwrap()), "{error}");
        }
        let cfg = SshConfig::parse("Include other.conf\nHost a\n  HostName x.example\n", Path::new("cfg")).unwrap();
        assert!(cfg.resolve("a", Path::new("cfg")).is_err(), "a global Include applies to every host");
    }

    #[test]
    fn match_blocks_that_could_change_the_target_are_refused() {
        let cfg = SshConfig::parse("Host a\n  HostName 10.0.0.1\nMatch host a\n  User other\n", Path::new("cfg"))
            .expect("parse");
        let error = cfg.resolve("a", Path::new("cfg")).unwrap_err().to_string();
        assert!(error.contains("cfg:4") && error.contains("User") && error.contains("line 3"), "{error}");
    }

    #[test]
    fn the_alias_line_is_the_first_specific_host_block() {
        let cfg = config();
        assert_eq!(cfg.resolve("pragmatismo-system", Path::new("c")).expect("resolve").alias_line, Some(3));
        assert_eq!(cfg.resolve("db.internal", Path::new("c")).expect("resolve").alias_line, Some(10));
        assert_eq!(cfg.resolve("elsewhere", Path::new("c")).expect("resolve").alias_line, None, "only `Host *`");
    }

    #[test]
    fn bad_port_names_the_line() {
        let cfg = SshConfig::parse("Host a\n  Port seventy\n", Path::new("cfg")).expect("parse");
        let error = cfg.resolve("a", Path::new("cfg")).unwrap_err().to_string();
        assert!(error.contains("cfg:2"), "{error}");
        assert!(error.contains("seventy"), "{error}");
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        let error = SshConfig::parse("Host a\n IdentityFile \"oops\n", Path::new("cfg")).unwrap_err();
        assert!(error.to_string().contains("unterminated quote"));
    }

    #[test]
    fn glob_patterns() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("web?", "web1"));
        assert!(!glob_match("web?", "web12"));
        assert!(glob_match("*.EXAMPLE.com", "a.b.example.com"));
        assert!(!glob_match("a*c", "abd"));
    }

    #[test]
    fn tokens_expand() {
        let path = expand_path("~/.ssh/%h-%p-%r-%%", Path::new("/home/x"), "h", 22, "root");
        assert_eq!(path, PathBuf::from("/home/x/.ssh/h-22-root-%"));
    }
}
