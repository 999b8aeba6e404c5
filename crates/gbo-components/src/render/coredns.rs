//! The dns role's Corefile (one authoritative server block per zone behind an `acl`, no recursion) and zone files.
//!
//! What CoreDNS sees decides the ACL. The dns container is published by LXD proxy devices, which accept the
//! client's connection on the host and open a new one from the container's own loopback: every query reaches
//! CoreDNS from 127.0.0.1. The seed's rule "ANY only from 10.0.0.0/8 and 127.0.0.0/8" therefore allows ANY (the
//! amplification vector) for the whole internet. No rule here is decided by a source address: ANY is refused for
//! everyone (as RFC 8482 lets an authoritative server do), the zone's own record types are answered to anyone,
//! everything else is refused, and the root block refuses whatever is not in a zone (no `forward`: not a
//! resolver). A Corefile that needs source rules must first get real client addresses (a NIC, or proxy devices with
//! `nat=true`), which gbo's containers do not have.

use std::fmt::Write as _;
use std::net::IpAddr;

/// The Corefile inside the dns container.
pub const COREFILE_PATH: &str = "/opt/gbo/conf/Corefile";
/// Where the CoreDNS `health` plugin listens inside the container.
pub const HEALTH_PORT: u16 = 8053;

/// The query types a zone answers, to anyone: the records gbo renders (the seed's A, AAAA and MX, and the zone's
/// own NS and SOA, which resolvers and delegation checks ask for).
pub const ANSWERED_TYPES: &[&str] = &["A", "AAAA", "MX", "NS", "SOA"];

/// The zone file path of `zone`, on the data mount (`/opt/gbo/data/<zone>.zone`, as in the seed).
pub fn zone_file_path(zone: &str) -> String {
    format!("/opt/gbo/data/{zone}.zone")
}

/// The comment above every `acl`: why no rule looks at the source address.
const ACL_REASON: &str =
    "\t# Queries arrive through an LXD proxy device, which connects from the container's 127.0.0.1: CoreDNS sees
\t# every client as 127.0.0.1, so a source address proves nothing and no rule below uses one (the seed's
\t# \"ANY from loopback\" rule would allow ANY to the whole internet). ANY is refused for everyone; the zone's
\t# record types are answered to anyone; everything else is refused.
";

/// The `acl` block of a zone: `ANY` refused for every source, [`ANSWERED_TYPES`] allowed for every source,
/// everything else refused. Indented one tab, under a comment that says why no rule uses a source address.
pub fn acl_block() -> String {
    format!(
        "{ACL_REASON}\tacl {{
\t\tblock type ANY
\t\tallow type {}
\t\tblock
\t}}
",
        ANSWERED_TYPES.join(" ")
    )
}

/// Renders the Corefile: a block per zone serving its zone file behind the ACL, and a root block that refuses
/// everything else (no recursion: an open resolver is an amplifier) and carries the health endpoint.
pub fn corefile(zones: &[&str], port: u16) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", super::HEADER);
    for zone in zones {
        let _ = writeln!(out, "{zone}:{port} {{");
        out.push_str("\tbind 127.0.0.1\n");
        let _ = writeln!(out, "\tfile {}", zone_file_path(zone));
        out.push_str(&acl_block());
        out.push_str("\tcache\n\terrors\n\tlog . \"{remote} {type} {name} {rcode}\"\n}\n\n");
    }
    let _ = writeln!(
        out,
        ".:{port} {{
\tbind 127.0.0.1
\thealth 127.0.0.1:{HEALTH_PORT}
\t# Not a resolver (no recursion): every name outside the zones above is refused.
\tacl {{
\t\tblock
\t}}
\terrors
}}"
    );
    out
}

/// One record of a zone, relative to the zone's origin (`@` for the apex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Owner name relative to the origin, or `@`.
    pub name: String,
    /// `A`, `AAAA`, `MX`, `NS`, ...
    pub kind: &'static str,
    /// The record data.
    pub data: String,
}

/// The records gbo derives for `zone`: `ns1` (the name server) and every proxy domain inside the zone point to
/// `address`; with the email role, `mail` does too, with an `MX` on the apex.
pub fn derived_records(zone: &str, domains: &[&str], address: Option<IpAddr>, has_email: bool) -> Vec<Record> {
    let mut records = vec![Record { name: "@".to_owned(), kind: "NS", data: format!("ns1.{zone}.") }];
    let Some(address) = address else {
        return records;
    };
    let kind = if address.is_ipv4() { "A" } else { "AAAA" };
    let mut names: Vec<String> = vec!["ns1".to_owned()];
    for domain in domains {
        let relative = if *domain == zone {
            Some("@".to_owned())
        } else {
            domain.strip_suffix(&format!(".{zone}")).map(str::to_owned)
        };
        if let Some(name) = relative {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    if has_email {
        records.push(Record { name: "@".to_owned(), kind: "MX", data: format!("10 mail.{zone}.") });
        if !names.iter().any(|n| n == "mail") {
            names.push("mail".to_owned());
        }
    }
    records.extend(names.into_iter().map(|name| Record { name, kind, data: address.to_string() }));
    records
}

/// Renders a zone file. The SOA serial is derived from the records (CoreDNS's `file` plugin reloads a zone when its
/// serial changes), so the same records always give the same file.
pub fn zone_file(zone: &str, records: &[Record]) -> String {
    use sha2::Digest;
    let mut body = String::new();
    for r in records {
        let _ = writeln!(body, "{}\tIN\t{}\t{}", r.name, r.kind, r.data);
    }
    let digest = sha2::Sha256::digest(body.as_bytes());
    let serial = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 2_000_000_000 + 1;
    format!(
        "; Rendered by gbo; local changes are reported as drift and replaced on the next install.
$ORIGIN {zone}.
$TTL 3600
@\tIN\tSOA\tns1.{zone}. hostmaster.{zone}. ( {serial} 7200 3600 1209600 3600 )
{body}"
    )
}
