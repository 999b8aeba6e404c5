//! Parsing and validating `gbo.toml`.

use gbo_components::{Role, TenantFile};

fn error(text: &str) -> String {
    match TenantFile::parse(text) {
        Ok(file) => panic!("expected an error for {text:?}, parsed {file:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn empty_file_is_the_default_tenant() {
    let file = TenantFile::parse("").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(file, TenantFile::default());
    assert_eq!(file.tenant.as_str(), "default");
    assert_eq!(file.roles, Role::DEFAULT_SET);
    assert_eq!(file.tenant_stack_dir(), "./botserver-stack");
}

#[test]
fn the_documented_example_parses() {
    let text = r#"
tenant = "mycompany"
roles = ["tables", "drive", "cache", "proxy", "system", "vectordb", "alm"]
stack_dir = "/srv/gbo"
public_address = "203.0.113.10"
domains = ["chat.example.com", "git.example.com"]
zones = ["example.com"]
storage = "volumes"
pool = "default"

[routes]
"git.example.com" = "alm"

[limits.tables]
cpu = 2
memory = "4GB"

[limits.vector_db]
memory = "50%"

[versions.vault]
version = "1.15.5"

[versions.drive]
version = "RELEASE.2025-01-01T00-00-00Z"
url = "http://127.0.0.1:8000/minio"
# The SHA-256 of an empty file: a real digest, used here only as test data.
sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

[trust.mirror]
minisign = "RWTx5Zr1tiHQLwG9keckT0c45M3AGeHD6IvimQHpyRywVWGbP1aVSGav"
roles = ["drive"]

[webmail]
imap = "192.0.2.25:143"
smtp = "[2001:db8::25]:587"
"#;
    let file = TenantFile::parse(text).unwrap_or_else(|e| panic!("{e}"));
    insta::assert_debug_snapshot!("tenant_file_example", file);
}

#[test]
fn trust_entries_are_checked() {
    let bad = [
        ("[trust.m]\nminisign = \"nope\"\n", "trust.m.minisign"),
        ("[trust.m]\nopenpgp = \"nope\"\n", "trust.m.openpgp"),
        ("[trust.m]\nroles = [\"drive\"]\n", "exactly one of"),
        (
            "[trust.m]\nminisign = \"RWTx5Zr1tiHQLwG9keckT0c45M3AGeHD6IvimQHpyRywVWGbP1aVSGav\"\nroles = [\"tables\"]\n",
            "no artifact to sign",
        ),
        ("[trust.m]\nminisign = \"RWTx5Zr1tiHQLwG9keckT0c45M3AGeHD6IvimQHpyRywVWGbP1aVSGav\"\nroles = [\"nope\"]\n", "not a role"),
    ];
    for (text, expected) in bad {
        let err = TenantFile::parse(text).expect_err(text).to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
}

#[test]
fn unknown_keys_are_rejected() {
    let message = error("tenant = \"a\"\nrole = [\"tables\"]\n");
    assert!(message.starts_with("invalid tenant file: "), "{message}");
    assert!(message.contains("unknown field `role`"), "{message}");
    assert!(message.contains("expected one of"), "{message}");
    let nested = error("[limits.tables]\ncpus = 2\n");
    assert!(nested.contains("unknown field `cpus`"), "{nested}");
}

#[test]
fn bad_values_name_key_value_and_rule() {
    let cases: &[(&str, &str)] = &[
        ("tenant = \"My_Company\"", "invalid tenant file: tenant = \"My_Company\": it must start with a lower-case letter a-z"),
        ("tenant = \"\"", "invalid tenant file: tenant = \"\": it is empty; a tenant name has 1 to 50 characters"),
        ("roles = [\"tables\", \"database\"]", "invalid tenant file: roles = \"database\": not a role; expected one of tables, drive, cache, llm, email, vault, vector_db, proxy, dns, alm, alm-ci, table-editor, webmail, system"),
        ("roles = [\"tables\", \"tables\"]", "invalid tenant file: roles = \"tables\": listed twice"),
        ("roles = []", "invalid tenant file: roles = \"[]\": list at least one role, or leave the key out for the default set"),
        ("stack_dir = \" \"", "invalid tenant file: stack_dir = \" \": must not be empty"),
        ("public_address = \"example.com\"", "invalid tenant file: public_address = \"example.com\": must be an IPv4 or IPv6 address"),
        ("public_address = \"0.0.0.0\"", "invalid tenant file: public_address = \"0.0.0.0\": must be a unicast address of this host"),
        ("domains = [\"Chat.example.com\"]", "invalid tenant file: domains = \"Chat.example.com\": it contains upper case; write domain names in lower case"),
        ("domains = [\"localhost\"]", "invalid tenant file: domains = \"localhost\": it has a single label; a site or zone needs at least two (example.com)"),
        ("domains = [\"a..example.com\"]", "invalid tenant file: domains = \"a..example.com\": it has an empty label ('..' or a leading '.')"),
        ("domains = [\"-a.example.com\"]", "invalid tenant file: domains = \"-a.example.com\": a label starts or ends with '-'"),
        ("domains = [\"a_b.example.com\"]", "invalid tenant file: domains = \"a_b.example.com\": a label contains a character other than a-z, 0-9 and '-'"),
        ("domains = [\"10.0.0.1\"]", "invalid tenant file: domains = \"10.0.0.1\": the last label is numeric (an IP address is not a domain name)"),
        ("domains = [\"a.example.com\", \"a.example.com\"]", "invalid tenant file: domains = \"a.example.com\": listed twice"),
        ("domains = [\"a.example.com\"]\n[routes]\n\"b.example.com\" = \"alm\"", "invalid tenant file: routes.b.example.com = \"b.example.com\": a route's domain must be listed in domains"),
        ("domains = [\"a.example.com\"]\n[routes]\n\"a.example.com\" = \"cache\"", "invalid tenant file: routes.a.example.com = \"cache\": this role serves no HTTP site; expected one of system, alm, webmail, table-editor, drive, email"),
        ("[limits.tables]\ncpu = 0", "invalid tenant file: limits.tables.cpu = \"0\": must be a whole number from 1 to 1024"),
        ("[limits.tables]\nmemory = \"4 GB\"", "invalid tenant file: limits.tables.memory = \"4 GB\": the unit must be one of B, kB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB or %"),
        ("[limits.tables]\nmemory = \"GB\"", "invalid tenant file: limits.tables.memory = \"GB\": it must start with a positive whole number, for example 4GB or 512MiB"),
        ("[limits.tables]\nmemory = \"150%\"", "invalid tenant file: limits.tables.memory = \"150%\": a percentage must be at most 100%"),
        ("[limits.database]\ncpu = 1", "invalid tenant file: limits.database = \"database\": not a role; expected one of tables, drive, cache, llm, email, vault, vector_db, proxy, dns, alm, alm-ci, table-editor, webmail, system"),
        ("[versions.tables]\nversion = \"17\"", "invalid tenant file: versions.tables = \"tables\": this role is installed from Debian packages in the image; it has no artifact to override"),
        ("[versions.vault]\nversion = \"1.15.4\"\nurl = \"http://example.com/vault.zip\"", "invalid tenant file: versions.vault.url = \"http://example.com/vault.zip\": plain http:// is only allowed on a loopback host; use https://"),
        ("[versions.vault]\nversion = \"1.15.4\"\nurl = \"ftp://example.com/vault.zip\"", "invalid tenant file: versions.vault.url = \"ftp://example.com/vault.zip\": the URL must start with https:// (or http:// on a loopback host)"),
        ("[versions.vault]\nversion = \"1.15.4\"\nsha256 = \"ABC\"", "invalid tenant file: versions.vault.sha256 = \"ABC\": a SHA-256 is 64 lower-case hexadecimal characters"),
        ("[versions.system]\nversion = \"6.1.0\"", "invalid tenant file: versions.system.url = \"\": the pinned URL of this role holds no version to substitute; give the url of this version"),
        ("[webmail]\nimap = \"mail.example.com:143\"\nsmtp = \"192.0.2.25:587\"", "invalid tenant file: webmail.imap = \"mail.example.com:143\": an IP address and a port from 1 to 65535 (e.g. 192.0.2.25:143, or [2001:db8::25]:143 for IPv6)"),
        ("[webmail]\nimap = \"192.0.2.25:143\"\nsmtp = \"192.0.2.25\"", "invalid tenant file: webmail.smtp = \"192.0.2.25\": an IP address and a port from 1 to 65535 (e.g. 192.0.2.25:143, or [2001:db8::25]:143 for IPv6)"),
        ("[webmail]\nimap = \"192.0.2.25:0\"\nsmtp = \"192.0.2.25:587\"", "invalid tenant file: webmail.imap = \"192.0.2.25:0\": an IP address and a port from 1 to 65535 (e.g. 192.0.2.25:143, or [2001:db8::25]:143 for IPv6)"),
        ("[webmail]\nimap = \"192.0.2.25:143\"", "invalid tenant file: webmail.smtp = \"(missing)\": give smtp = \"IP:port\" beside imap, or neither"),
        ("[webmail]\nsmtp = \"192.0.2.25:587\"", "invalid tenant file: webmail.imap = \"(missing)\": give imap = \"IP:port\" beside smtp, or neither"),
        ("[webmail]\nimap = \"192.0.2.25:143\"\npop3 = \"192.0.2.25:110\"", "invalid tenant file: TOML parse error at line 3, column 1\n  |\n3 | pop3 = \"192.0.2.25:110\"\n  | ^^^^\nunknown field `pop3`, expected `imap` or `smtp`"),
        ("[versions.vault]\nversion = \"a b\"", "invalid tenant file: versions.vault.version = \"a b\": must be non-empty, without spaces or '/'"),
    ];
    for (text, expected) in cases {
        assert_eq!(&error(text), expected, "for {text:?}");
    }
}

#[test]
fn syntax_errors_name_the_line() {
    let message = error("tenant = \"a\"\nroles = [\"tables\"\n");
    assert!(message.starts_with("invalid tenant file: TOML parse error at line"), "{message}");
    let wrong_type = error("tenant = 3\n");
    assert!(wrong_type.contains("invalid type: integer `3`, expected a string"), "{wrong_type}");
}

#[test]
fn roles_accept_both_spellings_and_keep_order() {
    let file = TenantFile::parse("roles = [\"vectordb\", \"vector_db-x\"]").map(|_| ()).map_err(|e| e.to_string());
    assert!(file.is_err());
    let file = TenantFile::parse("roles = [\"system\", \"vectordb\", \"alm-ci\"]").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(file.roles, [Role::System, Role::VectorDb, Role::AlmCi]);
}

#[test]
fn version_override_substitutes_the_version_in_the_pinned_url() {
    let file = TenantFile::parse("[versions.vault]\nversion = \"1.15.5\"").unwrap_or_else(|e| panic!("{e}"));
    let artifacts = gbo_components::artifacts::artifacts(Role::Vault, &file);
    assert_eq!(artifacts[0].version, "1.15.5");
    assert_eq!(artifacts[0].url, "https://releases.hashicorp.com/vault/1.15.5/vault_1.15.5_linux_amd64.zip");
    assert_eq!(artifacts[0].sha256, None, "an override never inherits the pinned checksum");
}

#[test]
fn the_system_role_is_unprivileged_unless_the_file_asks() {
    let default = TenantFile::parse("").unwrap_or_else(|e| panic!("{e}"));
    assert!(!default.system.privileged, "unprivileged by default");
    let asked = TenantFile::parse("[system]\nprivileged = true\n").unwrap_or_else(|e| panic!("{e}"));
    assert!(asked.system.privileged);
    let said_no = TenantFile::parse("[system]\nprivileged = false\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(said_no, default);
    let typo = error("[system]\nprivilged = true\n");
    assert!(typo.contains("unknown field `privilged`"), "{typo}");
    let not_bool = error("[system]\nprivileged = \"yes\"\n");
    assert!(not_bool.contains("expected a boolean"), "{not_bool}");
}

#[test]
fn storage_and_pool_are_parsed_and_bad_values_named() {
    use gbo_components::StorageMode;
    assert_eq!(TenantFile::parse("").unwrap_or_else(|e| panic!("{e}")).storage, None, "the caller chooses");
    let file = TenantFile::parse("storage = \"volumes\"\npool = \"fast-1\"\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((file.storage, file.pool.as_deref()), (Some(StorageMode::Volumes), Some("fast-1")));
    let file = TenantFile::parse("storage = \"host\"").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(file.storage, Some(StorageMode::Host));
    let text = toml::to_string(&file).expect("serializes");
    assert_eq!(TenantFile::parse(&text).unwrap_or_else(|e| panic!("{e}")), file);
    let bad = error("storage = \"nfs\"");
    assert!(bad.contains("storage") && bad.contains("nfs") && bad.contains("\"volumes\""), "{bad}");
    let bad = error("pool = \"../x\"");
    assert!(bad.contains("pool") && bad.contains("../x"), "{bad}");
}

#[test]
fn placement_names_a_member_or_a_group_per_role() {
    let file = TenantFile::parse("[placement]\ntables = \"m1\"\nproxy = \"@edge\"\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(file.placement.get(&Role::Tables), Some(&gbo_components::Placement::Member("m1".into())));
    assert_eq!(file.placement.get(&Role::Proxy).map(|p| p.target()), Some("@edge".to_string()));
    assert!(TenantFile::parse("").unwrap_or_else(|e| panic!("{e}")).placement.is_empty());
    let bad = error("[placement]\ntables = \"m 1\"\n");
    assert!(bad.contains("placement.tables") && bad.contains("cluster member name"), "{bad}");
    let empty_group = error("[placement]\ntables = \"@\"\n");
    assert!(empty_group.contains("placement.tables"), "{empty_group}");
    let not_a_role = error("[placement]\ntabels = \"m1\"\n");
    assert!(not_a_role.contains("placement.tabels"), "{not_a_role}");
}
