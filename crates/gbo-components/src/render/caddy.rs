//! The proxy role's Caddyfile (at `/opt/gbo/conf/config`) and the site-parsing helpers `gbo proxy apply` needs
//! to refuse a partial config or one without the storage block.

use std::fmt::Write as _;

use crate::error::{Error, Result};

/// Where the proxy's Caddyfile lives inside its container (the seed's path).
pub const CADDYFILE_PATH: &str = "/opt/gbo/conf/config";
/// Caddy's certificate and state storage, on the data mount (the seed's rule: explicit, or certificates are lost).
pub const STORAGE_ROOT: &str = "/opt/gbo/data/caddy";
/// The JSON access log fail2ban reads.
pub const ACCESS_LOG: &str = "/opt/gbo/logs/access.log";

/// One site of the rendered Caddyfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// The site address (a domain name).
    pub address: String,
    /// Where it is proxied: `127.0.0.1:<port>` inside the proxy container (a wire), or `None` when the target
    /// role is not part of the tenant (the site then answers 503 with an explanation).
    pub upstream: Option<String>,
    /// The role name the site belongs to, for the comment above it.
    pub role: &'static str,
}

/// Renders the proxy's Caddyfile: the global block (admin on loopback, explicit file-system storage), a snippet
/// for the JSON access log, one site per domain, and a health answer: `:80` when there is no domain, else
/// `http://localhost` (the prober sends `Host: localhost`).
pub fn caddyfile(tenant: &str, sites: &[Site], tls_internal: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} Tenant {tenant}.", crate::render::HEADER);
    let _ = writeln!(
        out,
        "{{
	admin localhost:2019
	storage file_system {{
		root {STORAGE_ROOT}
	}}
}}

(gbo_access_log) {{
	log {{
		output file {ACCESS_LOG} {{
			roll_size 10MiB
			roll_keep 5
		}}
		format json
	}}
}}
"
    );
    if sites.is_empty() {
        let _ = writeln!(
            out,
            ":80 {{
	import gbo_access_log
	respond /health \"ok\" 200
	respond \"gbo: no domain is configured for tenant {tenant}\" 404
}}"
        );
        return out;
    }
    for site in sites {
        let _ = writeln!(out, "# role: {}", site.role);
        let _ = writeln!(out, "{} {{", site.address);
        out.push_str("\timport gbo_access_log\n");
        if tls_internal {
            out.push_str("\ttls internal\n");
        }
        match &site.upstream {
            Some(upstream) => {
                let _ = writeln!(out, "\treverse_proxy {upstream}");
            }
            None => {
                let _ = writeln!(out, "\trespond \"gbo: role {} is not installed for this tenant\" 503", site.role);
            }
        }
        out.push_str("}\n\n");
    }
    out.push_str("http://localhost {\n\trespond /health \"ok\" 200\n}\n");
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    text: String,
    line: usize,
    quoted: bool,
}

fn tokenize(text: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(&c) = chars.peek() {
        if c == '\n' {
            line += 1;
            chars.next();
        } else if c.is_whitespace() {
            chars.next();
        } else if c == '#' {
            while let Some(&c) = chars.peek() {
                if c == '\n' {
                    break;
                }
                chars.next();
            }
        } else if c == '"' || c == '`' {
            let quote = c;
            let start_line = line;
            chars.next();
            let mut text = String::new();
            let mut closed = false;
            while let Some(c) = chars.next() {
                if c == '\n' {
                    line += 1;
                }
                if quote == '"' && c == '\\' {
                    if let Some(next) = chars.next() {
                        if next == '\n' {
                            line += 1;
                        }
                        text.push(next);
                    }
                    continue;
                }
                if c == quote {
                    closed = true;
                    break;
                }
                text.push(c);
            }
            if !closed {
                return Err(Error::Caddyfile { line: start_line, rule: format!("unterminated {quote} string") });
            }
            tokens.push(Token { text, line: start_line, quoted: true });
        } else {
            let mut text = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                text.push(c);
                chars.next();
            }
            tokens.push(Token { text, line, quoted: false });
        }
    }
    Ok(tokens)
}

/// A top-level block of a Caddyfile.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Block {
    Global { body: Vec<Token> },
    Snippet,
    Site { addresses: Vec<String> },
}

fn top_level_blocks(text: &str) -> Result<Vec<Block>> {
    let tokens = tokenize(text)?;
    let mut blocks = Vec::new();
    let mut depth = 0usize;
    let mut header: Vec<Token> = Vec::new();
    let mut body: Vec<Token> = Vec::new();
    let mut current_is_global = false;
    let mut loose_lines: Vec<Vec<Token>> = Vec::new();
    for token in tokens {
        let is_open = !token.quoted && token.text == "{";
        let is_close = !token.quoted && token.text == "}";
        if depth == 0 {
            if is_close {
                return Err(Error::Caddyfile { line: token.line, rule: "'}' without a matching '{'".to_owned() });
            }
            if is_open {
                // The header is the tokens on the brace's line, plus earlier lines continued with a trailing ','.
                let (site_header, loose) = split_header(std::mem::take(&mut header), token.line);
                loose_lines.extend(loose);
                depth = 1;
                current_is_global = false;
                if site_header.is_empty() {
                    if !blocks.is_empty() {
                        return Err(Error::Caddyfile {
                            line: token.line,
                            rule: "a block without addresses is only allowed first (the global options block)"
                                .to_owned(),
                        });
                    }
                    current_is_global = true;
                    body.clear();
                } else if site_header.len() == 1
                    && ((site_header[0].text.starts_with('(') && site_header[0].text.ends_with(')'))
                        || site_header[0].text.starts_with("&("))
                {
                    blocks.push(Block::Snippet);
                } else {
                    let addresses: Vec<String> = site_header
                        .iter()
                        .flat_map(|t| t.text.split(','))
                        .map(str::trim)
                        .filter(|a| !a.is_empty())
                        .map(str::to_owned)
                        .collect();
                    blocks.push(Block::Site { addresses });
                }
                continue;
            }
            header.push(token);
        } else {
            if is_open {
                depth += 1;
            } else if is_close {
                depth -= 1;
                if depth == 0 {
                    if current_is_global {
                        blocks.insert(0, Block::Global { body: std::mem::take(&mut body) });
                        current_is_global = false;
                    }
                    continue;
                }
            }
            if current_is_global {
                body.push(token);
            }
        }
    }
    if depth != 0 {
        return Err(Error::Caddyfile { line: text.lines().count().max(1), rule: "a '{' is never closed".to_owned() });
    }
    loose_lines.extend(group_by_line(header));
    let loose: Vec<Vec<Token>> = loose_lines
        .into_iter()
        .flat_map(group_by_line)
        .filter(|line| line.first().is_some_and(|t| t.quoted || t.text != "import"))
        .collect();
    if let Some(first) = loose.first() {
        let has_sites = blocks.iter().any(|b| matches!(b, Block::Site { .. }));
        if has_sites {
            return Err(Error::Caddyfile {
                line: first[0].line,
                rule: format!(
                    "{:?} is outside any block; a Caddyfile with site blocks needs braces around every site",
                    first[0].text
                ),
            });
        }
        // A single site without braces: its first line holds the addresses.
        let addresses = first.iter().flat_map(|t| t.text.split(',')).map(str::trim).filter(|a| !a.is_empty());
        blocks.push(Block::Site { addresses: addresses.map(str::to_owned).collect() });
    }
    Ok(blocks)
}

fn group_by_line(tokens: Vec<Token>) -> Vec<Vec<Token>> {
    let mut lines: Vec<Vec<Token>> = Vec::new();
    for token in tokens {
        match lines.last_mut() {
            Some(line) if line.last().is_some_and(|t| t.line == token.line) => line.push(token),
            _ => lines.push(vec![token]),
        }
    }
    lines
}

/// Splits depth-0 tokens before a `{` on `brace_line` into the block's header and earlier loose lines.
fn split_header(tokens: Vec<Token>, brace_line: usize) -> (Vec<Token>, Vec<Vec<Token>>) {
    let mut lines = group_by_line(tokens);
    let mut header: Vec<Token> = Vec::new();
    if lines.last().is_some_and(|l| l.last().is_some_and(|t| t.line == brace_line)) {
        if let Some(line) = lines.pop() {
            header = line;
        }
        while lines.last().is_some_and(|l| l.last().is_some_and(|t| t.text.ends_with(','))) {
            if let Some(mut line) = lines.pop() {
                line.extend(header);
                header = line;
            }
        }
    }
    (header, lines)
}

/// The addresses of the top-level site blocks of a Caddyfile, in order, ignoring the global options block, snippets
/// (`(name) { ... }`), named routes and top-level `import` lines. Comma- and space-separated addresses are split.
///
/// ```
/// let text = "{\n\tadmin off\n}\n(common) {\n\tencode gzip\n}\na.example.com, b.example.com {\n\trespond ok\n}\n";
/// assert_eq!(
///     gbo_components::caddyfile::site_addresses(text).expect("a valid Caddyfile"),
///     vec!["a.example.com", "b.example.com"],
/// );
/// ```
pub fn site_addresses(text: &str) -> Result<Vec<String>> {
    Ok(top_level_blocks(text)?
        .into_iter()
        .filter_map(|b| match b {
            Block::Site { addresses } => Some(addresses),
            _ => None,
        })
        .flatten()
        .collect())
}

/// Whether the Caddyfile's global options block sets `storage` (the seed's rule: without it Caddy keeps
/// certificates under the service user's home and loses them). A Caddyfile that does not parse has none.
pub fn has_storage_block(text: &str) -> bool {
    let Ok(blocks) = top_level_blocks(text) else {
        return false;
    };
    blocks.iter().any(|b| match b {
        Block::Global { body } => {
            // Only directives at the global block's own level count (not a word inside a nested block).
            let mut depth = 0usize;
            let mut line_start = true;
            let mut last_line = 0;
            for token in body {
                if token.line != last_line {
                    line_start = true;
                    last_line = token.line;
                }
                if !token.quoted && token.text == "{" {
                    depth += 1;
                } else if !token.quoted && token.text == "}" {
                    depth = depth.saturating_sub(1);
                } else if depth == 0 && line_start && !token.quoted && token.text == "storage" {
                    return true;
                }
                line_start = false;
            }
            false
        }
        _ => false,
    })
}
