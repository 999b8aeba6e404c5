//! Resolving site domains for `prune-dead-domains` and doctor. The resolver is injectable: tests and
//! `--resolver-file` use a [`StaticResolver`], production the system's (`getaddrinfo`) with a short timeout.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

/// What one lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The name has addresses.
    Found(Vec<IpAddr>),
    /// The name does not exist or has no address records (NXDOMAIN / NODATA).
    NoRecord,
    /// The lookup itself failed (timeout, no resolver reachable, SERVFAIL): nothing is known.
    Failed(String),
}

/// A boxed lookup future.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = Resolution> + Send + 'a>>;

/// Something that resolves names.
pub trait Resolver: Send + Sync {
    /// Resolve `name` (its A and AAAA records).
    fn resolve<'a>(&'a self, name: &'a str) -> Lookup<'a>;
}

/// The system's resolver (`getaddrinfo` through tokio), bounded by a timeout per name.
#[derive(Debug, Clone)]
pub struct SystemResolver {
    /// Per-name timeout.
    pub timeout: Duration,
}

impl Default for SystemResolver {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(3) }
    }
}

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> Lookup<'a> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, tokio::net::lookup_host((name, 0))).await {
                Err(_) => Resolution::Failed(format!("no answer within {:?}", self.timeout)),
                Ok(Ok(addrs)) => {
                    let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                    ips.sort();
                    ips.dedup();
                    if ips.is_empty() {
                        Resolution::NoRecord
                    } else {
                        Resolution::Found(ips)
                    }
                }
                Ok(Err(e)) => classify_lookup_error(&e.to_string()),
            }
        })
    }
}

/// `getaddrinfo`'s messages for "the name has no address" (EAI_NONAME, EAI_NODATA) versus everything else
/// (EAI_AGAIN "Temporary failure in name resolution", EAI_FAIL, ...), which say nothing about the name.
pub fn classify_lookup_error(message: &str) -> Resolution {
    let m = message.to_ascii_lowercase();
    if m.contains("name or service not known")
        || m.contains("no address associated with hostname")
        || m.contains("nodename nor servname")
    {
        Resolution::NoRecord
    } else {
        Resolution::Failed(message.to_string())
    }
}

/// A fixed table (tests, and `--resolver-file` for offline checks). File format, one name per line:
/// `name 192.0.2.1 [2001:db8::1 ...]` (found), `name NXDOMAIN` (no record), `name FAIL` (lookup fails).
/// Names not listed have no record, unless `unlisted_fail` is set.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    entries: BTreeMap<String, Resolution>,
    /// Unlisted names fail instead of having no record.
    pub unlisted_fail: bool,
}

impl StaticResolver {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Unlisted names fail (a resolver that can answer nothing).
    pub fn failing() -> Self {
        Self { unlisted_fail: true, ..Self::default() }
    }

    /// Add an entry.
    pub fn with(mut self, name: &str, resolution: Resolution) -> Self {
        self.entries.insert(name.trim_end_matches('.').to_ascii_lowercase(), resolution);
        self
    }

    /// Parse the file format above. Errors name the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Self::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let name = words.next().unwrap_or_default();
            let rest: Vec<&str> = words.collect();
            let resolution = match rest.as_slice() {
                ["NXDOMAIN"] => Resolution::NoRecord,
                ["FAIL"] => Resolution::Failed("listed as FAIL".into()),
                [] => return Err(format!("line {}: {name:?} needs addresses, NXDOMAIN or FAIL", i + 1)),
                ips => Resolution::Found(
                    ips.iter()
                        .map(|ip| {
                            ip.parse::<IpAddr>().map_err(|_| format!("line {}: {ip:?} is not an IP address", i + 1))
                        })
                        .collect::<Result<_, _>>()?,
                ),
            };
            out = out.with(name, resolution);
        }
        Ok(out)
    }
}

impl Resolver for StaticResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> Lookup<'a> {
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        let answer = match self.entries.get(&key) {
            Some(r) => r.clone(),
            None if self.unlisted_fail => Resolution::Failed("not listed".into()),
            None => Resolution::NoRecord,
        };
        Box::pin(async move { answer })
    }
}

/// The verdict on one domain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    /// It resolves.
    Alive {
        /// Its addresses.
        addresses: Vec<IpAddr>,
    },
    /// It has no DNS record: Caddy would loop on its certificate.
    Dead,
    /// Nothing can be said (the lookup failed, or nothing resolved at all).
    Unknown {
        /// Why.
        reason: String,
    },
}

/// Resolve every domain concurrently and give verdicts. When no domain resolves at all, none is called dead:
/// a broken resolver looks exactly like a world of dead domains.
pub async fn verdicts(resolver: &dyn Resolver, domains: &[String]) -> Vec<(String, Verdict)> {
    let lookups = domains.iter().map(|d| resolver.resolve(d));
    let results = futures_util::future::join_all(lookups).await;
    let mut out: Vec<(String, Verdict)> = domains
        .iter()
        .cloned()
        .zip(results)
        .map(|(d, r)| {
            let v = match r {
                Resolution::Found(addresses) => Verdict::Alive { addresses },
                Resolution::NoRecord => Verdict::Dead,
                Resolution::Failed(reason) => Verdict::Unknown { reason },
            };
            (d, v)
        })
        .collect();
    if !out.iter().any(|(_, v)| matches!(v, Verdict::Alive { .. })) {
        for (_, v) in &mut out {
            if *v == Verdict::Dead {
                *v = Verdict::Unknown {
                    reason: "no domain could be resolved at all: not calling any of them dead".into(),
                };
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_resolvable_means_unknown_never_dead() {
        let r = StaticResolver::parse("a.example.com 192.0.2.1\nb.example.com NXDOMAIN\nc.example.com FAIL\n")
            .expect("parse");
        let v = verdicts(&r, &["a.example.com".into(), "b.example.com".into(), "c.example.com".into()]).await;
        assert!(matches!(v[0].1, Verdict::Alive { .. }));
        assert_eq!(v[1].1, Verdict::Dead);
        assert!(matches!(v[2].1, Verdict::Unknown { .. }));
        let none = StaticResolver::parse("b.example.com NXDOMAIN\n").expect("parse");
        let v = verdicts(&none, &["b.example.com".into(), "d.example.com".into()]).await;
        assert!(v.iter().all(|(_, v)| matches!(v, Verdict::Unknown { .. })), "{v:?}");
    }

    #[test]
    fn lookup_errors_are_classified_and_files_checked() {
        assert_eq!(
            classify_lookup_error("failed to lookup address information: Name or service not known"),
            Resolution::NoRecord
        );
        assert!(matches!(
            classify_lookup_error("failed to lookup address information: Temporary failure in name resolution"),
            Resolution::Failed(_)
        ));
        assert!(StaticResolver::parse("a.example.com\n").unwrap_err().contains("line 1"));
        assert!(StaticResolver::parse("a.example.com 300.1.1.1\n").unwrap_err().contains("300.1.1.1"));
    }
}
