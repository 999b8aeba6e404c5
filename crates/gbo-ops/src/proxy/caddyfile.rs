//! Just enough of the Caddyfile grammar to list site blocks with their positions, find the global `storage`
//! option and remove sites: what `gbo proxy apply` needs to refuse a partial config, and `prune-dead-domains`
//! needs to cut dead sites out of the text. Caddy itself (`caddy validate`) stays the authority on validity.
//!
//! Why not `gbo_components::caddyfile::site_addresses`: removing a site needs the byte span of its block and of
//! each address in the header, which the catalogue's helper does not expose.

use std::fmt;

/// The Caddyfile could not be split into blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

#[derive(Debug, Clone)]
struct Token {
    text: String,
    start: usize,
    end: usize,
    line: usize,
    quoted: bool,
}

impl Token {
    fn is(&self, s: &str) -> bool {
        !self.quoted && self.text == s
    }
}

fn tokenize(text: &str) -> Result<Vec<Token>, ParseError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut line = 1;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if c == b'"' || c == b'`' {
            let (start, start_line) = (i, line);
            i += 1;
            let mut closed = false;
            while i < bytes.len() {
                if bytes[i] == b'\n' {
                    line += 1;
                }
                if c == b'"' && bytes[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if bytes[i] == c {
                    closed = true;
                    i += 1;
                    break;
                }
                i += 1;
            }
            if !closed {
                return Err(ParseError { line: start_line, message: format!("unterminated {} string", c as char) });
            }
            let end = i.min(bytes.len());
            tokens.push(Token {
                text: text[start + 1..end - 1].to_string(),
                start,
                end,
                line: start_line,
                quoted: true,
            });
        } else {
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            tokens.push(Token { text: text[start..i].to_string(), start, end: i, line, quoted: false });
        }
    }
    Ok(tokens)
}

/// One address of a site block header, with its byte span in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteAddress {
    /// As written (`https://a.example.com:443`, `b.example.com`).
    pub address: String,
    /// Byte span of the address in the text (without a trailing comma).
    pub span: (usize, usize),
}

impl SiteAddress {
    /// The host part: scheme, port and path removed, lower-cased (`None` for `:80` and the like).
    pub fn host(&self) -> Option<String> {
        address_host(&self.address)
    }

    /// Whether the address is served over plain HTTP (an `http://` scheme or port 80).
    pub fn is_http(&self) -> bool {
        let a = self.address.to_ascii_lowercase();
        a.starts_with("http://") || a.trim_end_matches('/').ends_with(":80")
    }
}

/// The host of a Caddy site address.
pub fn address_host(address: &str) -> Option<String> {
    let rest = address.split_once("://").map(|(_, r)| r).unwrap_or(address);
    let rest = rest.split('/').next().unwrap_or("");
    let host = if let Some(stripped) = rest.strip_prefix('[') {
        stripped.split(']').next().unwrap_or("").to_string()
    } else {
        rest.rsplit_once(':').map(|(h, _)| h).unwrap_or(rest).to_string()
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// A top-level site block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteBlock {
    /// Its addresses, in order.
    pub addresses: Vec<SiteAddress>,
    /// 1-based line of the header.
    pub line: usize,
    /// Byte span from the start of the header's first line to the end of the closing brace's line (including
    /// comment lines directly above the header).
    pub span: (usize, usize),
}

/// A Caddyfile split into its global options and site blocks.
#[derive(Debug, Clone)]
pub struct Caddyfile {
    text: String,
    sites: Vec<SiteBlock>,
    storage: bool,
}

impl Caddyfile {
    /// Split `text` into blocks.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let tokens = tokenize(text)?;
        let mut sites = Vec::new();
        let mut storage = false;
        let mut depth = 0usize;
        let mut header: Vec<Token> = Vec::new();
        let mut block_kind = BlockKind::Other;
        let mut global_line_start = true;
        let mut last_line = 0;
        let mut block_first_token = 0usize;
        let mut block_header: Vec<Token> = Vec::new();
        let mut seen_block = false;
        for token in &tokens {
            if depth == 0 {
                if token.is("}") {
                    return Err(ParseError { line: token.line, message: "'}' without a matching '{'".into() });
                }
                if token.is("{") {
                    // The header: tokens on the brace's line plus earlier lines ending with ','.
                    let (head, loose) = split_header(std::mem::take(&mut header), token.line);
                    if let Some(t) =
                        loose.iter().find(|l| !l.first().is_some_and(|f| f.is("import"))).and_then(|l| l.first())
                    {
                        return Err(ParseError { line: t.line, message: format!("{:?} is outside any block", t.text) });
                    }
                    header.clear();
                    depth = 1;
                    block_kind = if head.is_empty() {
                        if seen_block {
                            return Err(ParseError {
                                line: token.line,
                                message: "a block without addresses is only allowed first (the global options block)"
                                    .into(),
                            });
                        }
                        BlockKind::Global
                    } else if head.len() == 1
                        && ((head[0].text.starts_with('(') && head[0].text.ends_with(')'))
                            || head[0].text.starts_with("&("))
                    {
                        BlockKind::Other
                    } else {
                        BlockKind::Site
                    };
                    seen_block = true;
                    block_header = head;
                    block_first_token = block_header.first().map(|t| t.start).unwrap_or(token.start);
                    continue;
                }
                header.push(token.clone());
            } else {
                if block_kind == BlockKind::Global {
                    if token.line != last_line {
                        global_line_start = true;
                        last_line = token.line;
                    }
                    if depth == 1 && global_line_start && token.is("storage") {
                        storage = true;
                    }
                    global_line_start = false;
                }
                if token.is("{") {
                    depth += 1;
                } else if token.is("}") {
                    depth -= 1;
                    if depth == 0 {
                        if block_kind == BlockKind::Site {
                            let addresses = header_addresses(text, &block_header);
                            let start = comment_start(text, line_start(text, block_first_token));
                            let end = line_end(text, token.end);
                            sites.push(SiteBlock { addresses, line: block_header[0].line, span: (start, end) });
                        }
                        block_kind = BlockKind::Other;
                    }
                }
            }
        }
        if depth != 0 {
            return Err(ParseError { line: text.lines().count().max(1), message: "a '{' is never closed".into() });
        }
        let (_, loose) = split_header(header, usize::MAX);
        if let Some(first) = loose.into_iter().find(|l| !l.first().is_some_and(|f| f.is("import"))) {
            if seen_block {
                let t = &first[0];
                return Err(ParseError { line: t.line, message: format!("{:?} is outside any block", t.text) });
            }
            // A single site without braces: its first line holds the addresses.
            let addresses = header_addresses(text, &first);
            sites.push(SiteBlock { addresses, line: first[0].line, span: (0, text.len()) });
        }
        Ok(Self { text: text.to_string(), sites, storage })
    }

    /// The site blocks in order.
    pub fn sites(&self) -> &[SiteBlock] {
        &self.sites
    }

    /// Every site address, in order.
    pub fn addresses(&self) -> Vec<String> {
        self.sites.iter().flat_map(|s| s.addresses.iter().map(|a| a.address.clone())).collect()
    }

    /// Every distinct site host, in order (the unit `apply` compares and `prune` resolves).
    pub fn hosts(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for host in self.sites.iter().flat_map(|s| s.addresses.iter().filter_map(SiteAddress::host)) {
            if !out.contains(&host) {
                out.push(host);
            }
        }
        out
    }

    /// Whether the global options block sets `storage` (the seed's rule: without it a restart loses certificates).
    pub fn has_storage_block(&self) -> bool {
        self.storage
    }

    /// The text with every address whose host is in `hosts` removed; a block left without addresses goes
    /// entirely (with the comment lines right above it).
    pub fn without_hosts(&self, hosts: &[String]) -> String {
        let mut cuts: Vec<(usize, usize, String)> = Vec::new();
        for site in &self.sites {
            let keep: Vec<&SiteAddress> =
                site.addresses.iter().filter(|a| !a.host().is_some_and(|h| hosts.contains(&h))).collect();
            if keep.len() == site.addresses.len() {
                continue;
            }
            if keep.is_empty() {
                cuts.push((site.span.0, site.span.1, String::new()));
            } else {
                let (first, last) = match (site.addresses.first(), site.addresses.last()) {
                    (Some(f), Some(l)) => (f.span.0, l.span.1),
                    _ => continue,
                };
                let joined = keep.iter().map(|a| a.address.as_str()).collect::<Vec<_>>().join(", ");
                cuts.push((first, last, joined));
            }
        }
        let mut out = self.text.clone();
        for (start, end, replacement) in cuts.into_iter().rev() {
            out.replace_range(start..end, &replacement);
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Global,
    Site,
    Other,
}

/// Splits depth-0 tokens before a `{` on `brace_line` into the block's header (the brace's line, plus earlier lines
/// continued with a trailing `,`) and the loose lines before it.
fn split_header(tokens: Vec<Token>, brace_line: usize) -> (Vec<Token>, Vec<Vec<Token>>) {
    let mut lines: Vec<Vec<Token>> = Vec::new();
    for token in tokens {
        match lines.last_mut() {
            Some(line) if line.last().is_some_and(|t| t.line == token.line) => line.push(token),
            _ => lines.push(vec![token]),
        }
    }
    let mut head: Vec<Token> = Vec::new();
    if lines.last().is_some_and(|l| l.last().is_some_and(|t| t.line == brace_line)) {
        head = lines.pop().unwrap_or_default();
        while lines.last().is_some_and(|l| l.last().is_some_and(|t| t.text.ends_with(','))) {
            let mut line = lines.pop().unwrap_or_default();
            line.extend(head);
            head = line;
        }
    }
    (head, lines)
}

fn header_addresses(text: &str, head: &[Token]) -> Vec<SiteAddress> {
    let mut out = Vec::new();
    for token in head {
        let mut offset = token.start;
        for part in text[token.start..token.end].split(',') {
            let trimmed = part.trim();
            if !trimmed.is_empty() {
                let lead = part.len() - part.trim_start().len();
                let start = offset + lead;
                out.push(SiteAddress { address: trimmed.to_string(), span: (start, start + trimmed.len()) });
            }
            offset += part.len() + 1;
        }
    }
    out
}

fn line_start(text: &str, at: usize) -> usize {
    text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0)
}

fn line_end(text: &str, at: usize) -> usize {
    text[at..].find('\n').map(|i| at + i + 1).unwrap_or(text.len())
}

/// Move `start` (a line start) up over comment lines directly above it.
fn comment_start(text: &str, mut start: usize) -> usize {
    while start > 0 {
        let prev = line_start(text, start - 1);
        if text[prev..start].trim_start().starts_with('#') {
            start = prev;
        } else {
            break;
        }
    }
    start
}

/// Whether `name` is a valid DNS name for a site or zone: labels of letters, digits and `-` (not at either end),
/// 1-63 characters each, 253 in all, at least two labels, a leading `*.` allowed when `wildcard`.
pub fn valid_domain(name: &str, wildcard: bool) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let name = match name.strip_prefix("*.") {
        Some(rest) if wildcard => rest,
        _ => name,
    };
    let labels: Vec<&str> = name.split('.').collect();
    !name.is_empty()
        && name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Whether a site host is something gbo should check in DNS (a domain, not `localhost`, an IP or a wildcard).
pub fn is_public_domain(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_err()
        && !host.starts_with('*')
        && host != "localhost"
        && !host.ends_with(".localhost")
        && host.contains('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "{\n\tadmin localhost:2019\n\tstorage file_system {\n\t\troot /opt/gbo/data/caddy\n\t}\n}\n\n(log) {\n\tlog\n}\n\n# role: system\nchat.example.com {\n\timport log\n\treverse_proxy 127.0.0.1:5859\n}\n\na.example.com, b.example.com {\n\trespond \"}\" 200\n}\n\nhttp://localhost {\n\trespond /health ok\n}\n";

    #[test]
    fn lists_sites_and_storage() {
        let c = Caddyfile::parse(FULL).expect("parse");
        assert_eq!(c.addresses(), vec!["chat.example.com", "a.example.com", "b.example.com", "http://localhost"]);
        assert_eq!(c.hosts(), vec!["chat.example.com", "a.example.com", "b.example.com", "localhost"]);
        assert!(c.has_storage_block());
        assert!(!Caddyfile::parse("{\n\tadmin off\n}\na.example.com {\n\tstorage x\n}\n")
            .expect("parse")
            .has_storage_block());
        assert!(!Caddyfile::parse("{\n\tservers {\n\t\tstorage x\n\t}\n}\n").expect("parse").has_storage_block());
    }

    #[test]
    fn removes_hosts_and_whole_blocks() {
        let c = Caddyfile::parse(FULL).expect("parse");
        let out = c.without_hosts(&["chat.example.com".into(), "b.example.com".into()]);
        assert!(!out.contains("chat.example.com") && !out.contains("role: system"), "{out}");
        assert!(out.contains("a.example.com {"), "{out}");
        let again = Caddyfile::parse(&out).expect("parse");
        assert_eq!(again.addresses(), vec!["a.example.com", "http://localhost"]);
        assert!(again.has_storage_block());
    }

    #[test]
    fn refuses_broken_text() {
        assert_eq!(Caddyfile::parse("a.example.com {\n\trespond ok\n").unwrap_err().message, "a '{' is never closed");
        assert_eq!(Caddyfile::parse("}\n").unwrap_err().line, 1);
        assert!(Caddyfile::parse("a.example.com {\n}\nstray\nb.example.com {\n}\n").is_err());
        assert!(Caddyfile::parse("a {\n\trespond \"open\n}\n").is_err());
    }

    #[test]
    fn hosts_of_addresses_and_domain_rules() {
        assert_eq!(address_host("https://A.Example.com:8443/x").as_deref(), Some("a.example.com"));
        assert_eq!(address_host(":80"), None);
        assert_eq!(address_host("[::1]:80").as_deref(), Some("::1"));
        assert!(valid_domain("chat.example.com", false) && valid_domain("*.example.com", true));
        assert!(
            !valid_domain("*.example.com", false)
                && !valid_domain("bad_name.com", false)
                && !valid_domain("-a.com", false)
        );
        assert!(!valid_domain("localhost", false) && !valid_domain("a..b", false));
        assert!(is_public_domain("a.example.com") && !is_public_domain("localhost") && !is_public_domain("127.0.0.1"));
    }
}
