//! The dns role's Corefile (one server block per zone, each with the seed's `acl`) and zone files.

use std::fmt::Write as _;
use std::net::IpAddr;

/// The Corefile inside the dns container.
pub const COREFILE_PATH: &str = "/opt/gbo/conf/Corefile";
/// Where the CoreDNS `health` plugin listens inside the container.
pub const HEALTH_PORT: u16 = 8053;

/// Networks allowed to ask `ANY` (the seed's: private 10/8 and loopback). `ANY` is the amplification vector.
pub const ANY_ALLOWED_FROM: &[&str] = &["10.0.0.0/8", "127.0.0.0/8"];

/// The zone file path of `zone`, on the data mount (`/opt/gbo/data/<zone>.zone`, as in the seed).
pub fn zone_file_path(zone: &str) -> String {
    format!("/opt/gbo/data/{zone}.zone")
}

/// The `acl` block of the seed: `ANY` only from `any_from`, `A`, `AAAA`, `MX` from anywhere, everything else
/// blocked. Indented one tab.
pub fn acl_block(any_from: &[&str]) -> String {
    format!(
        "\tacl {{
\t\tallow type ANY net {}
\t\tallow type A net 0.0.0.0/0 ::/0
\t\tallow type AAAA net 0.0.0.0/0 ::/0
\t\tallow type MX net 0.0.0.0/0 ::/0
\t\tblock
\t}}
",
        any_from.join(" ")
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
        out.push_str(&acl_block(ANY_ALLOWED_FROM));
        out.push_str("\tcache\n\terrors\n\tlog . \"{remote} {type} {name} {rcode}\"\n}\n\n");
    }
    let _ = writeln!(
        out,
        ".:{port} {{
\tbind 127.0.0.1
\thealth 127.0.0.1:{HEALTH_PORT}
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
