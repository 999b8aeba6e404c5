//! Loopback is not a trust boundary (issue 9, items 4 and 5): every host user reaches 127.0.0.1, so the services
//! published there authenticate, and the public DNS listener decides nothing from a source address it cannot see.
//!
//! Qdrant and llama.cpp cannot run here (no package of either exists for this machine): their rendered files are
//! checked as text. Redis runs for real in `real_tools.rs`; CoreDNS cannot run here either.

mod common;

use gbo_components::render::coredns;
use gbo_components::{component, ComponentSpec, RenderContext, Role, Secrets};

fn spec(role: Role, secrets: &Secrets) -> ComponentSpec {
    let tenant = common::full_tenant();
    let ports = common::seed_ports(&tenant);
    let ctx = RenderContext { tenant: &tenant, secrets, host_ports: &ports };
    component(role, &ctx).unwrap_or_else(|e| panic!("{role}: {e}"))
}

fn secret(secrets: &Secrets, name: &str) -> String {
    secrets.get(name).unwrap_or_else(|| panic!("the catalogue has no secret named {name}")).to_owned()
}

/// The files of `spec` whose content holds `value`.
fn holding<'a>(spec: &'a ComponentSpec, value: &str) -> Vec<&'a gbo_components::RenderedFile> {
    spec.files.iter().filter(|f| f.content.contains(value)).collect()
}

#[test]
fn the_cache_requires_a_generated_password_kept_in_a_0600_file_of_its_own() {
    let secrets = common::test_secrets();
    let password = secret(&secrets, "cache-password");
    let cache = spec(Role::Cache, &secrets);
    let files = holding(&cache, &password);
    assert_eq!(files.len(), 1, "exactly one file holds the password: {:?}", cache.files);
    let auth = files[0];
    assert!(auth.secret && auth.mode == 0o600, "{auth:?}");
    let redis = gbo_components::users::service_user("redis").map(|u| (u.uid, u.gid));
    assert_eq!(Some((auth.uid, auth.gid)), redis, "readable by the redis user only");
    assert!(!auth.path.starts_with("/opt/gbo/"), "{}: secrets stay off the host mounts", auth.path);
    assert!(auth.content.lines().any(|l| l == format!("requirepass {password}")), "{}", auth.content);
    assert!(auth.restarts.contains(&"cache.service".to_owned()), "a new password restarts the cache");
    // The main config (0640 on the conf mount) only includes it.
    let conf = cache.file("/opt/gbo/conf/redis.conf").unwrap_or_else(|| panic!("no redis.conf"));
    assert!(conf.content.lines().any(|l| l == format!("include {}", auth.path)), "{}", conf.content);
    assert!(!conf.content.lines().any(|l| l.starts_with("requirepass")), "{}", conf.content);
    // Never on a command line: the unit and every init step carry no secret.
    for unit in cache.files.iter().filter(|f| f.path.starts_with("/etc/systemd/")) {
        assert!(!unit.content.contains(&password), "{}", unit.path);
    }
    // The health check logs in.
    let health = serde_json::to_string(&cache.health).unwrap_or_default();
    assert!(health.contains("cache-password"), "the cache's health check authenticates: {health}");
}

#[test]
fn valkey_cli_inside_the_cache_authenticates_from_the_0600_file_never_from_argv() {
    let secrets = common::test_secrets();
    let cache = spec(Role::Cache, &secrets);
    let cli = cache.file("/usr/local/bin/valkey-cli").unwrap_or_else(|| panic!("no valkey-cli"));
    let auth = holding(&cache, &secret(&secrets, "cache-password"))[0].path.clone();
    assert!(cli.content.contains(&auth), "valkey-cli reads {auth}:\n{}", cli.content);
    assert!(cli.content.contains("REDISCLI_AUTH"), "redis-cli's own variable, not -a:\n{}", cli.content);
    assert!(!cli.content.contains(" -a ") && !cli.content.contains("--pass"), "{}", cli.content);
    assert!(!cli.secret, "the wrapper holds no secret");
}

#[test]
fn botserver_reaches_the_cache_the_vector_db_and_the_llm_with_their_credentials() {
    let secrets = common::test_secrets();
    let system = spec(Role::System, &secrets);
    let env = system.file("/etc/gbo/system.env").unwrap_or_else(|| panic!("no system.env"));
    assert!(env.secret && env.mode == 0o600);
    let cache = secret(&secrets, "cache-password");
    assert!(env.content.contains(&format!("CACHE_URL=redis://:{cache}@localhost:6379\n")), "{}", env.content);
    let qdrant = secret(&secrets, "vector-db-api-key");
    assert!(env.content.contains(&format!("VECTORDB_API_KEY={qdrant}\n")), "{}", env.content);
    let llm = secret(&secrets, "llm-api-key");
    assert!(env.content.contains(&format!("LLM_KEY={llm}\n")), "{}", env.content);
}

#[test]
fn qdrant_gets_an_api_key_in_a_secret_config() {
    let secrets = common::test_secrets();
    let key = secret(&secrets, "vector-db-api-key");
    let vector = spec(Role::VectorDb, &secrets);
    let files = holding(&vector, &key);
    assert_eq!(files.len(), 1, "{:?}", vector.files);
    let config = files[0];
    assert!(config.secret && config.mode == 0o600 && config.uid == 1000, "{config:?}");
    assert!(!config.path.starts_with("/opt/gbo/"), "{}", config.path);
    // `service.api_key` in Qdrant's YAML.
    let service = config.content.split("\nservice:\n").nth(1).unwrap_or_default();
    assert!(service.lines().any(|l| l == format!("  api_key: {key}")), "{}", config.content);
    let unit = vector.file("/etc/systemd/system/vector_db.service").or_else(|| {
        vector.files.iter().find(|f| f.path.starts_with("/etc/systemd/system/") && f.path.ends_with(".service"))
    });
    let unit = unit.unwrap_or_else(|| panic!("no unit"));
    assert!(unit.content.contains(&config.path), "the unit runs Qdrant with that config:\n{}", unit.content);
}

#[test]
fn llama_servers_read_their_api_key_from_a_0600_file() {
    let secrets = common::test_secrets();
    let key = secret(&secrets, "llm-api-key");
    let llm = spec(Role::Llm, &secrets);
    let files = holding(&llm, &key);
    assert_eq!(files.len(), 1, "{:?}", llm.files);
    let file = files[0];
    assert!(file.secret && file.mode == 0o600 && file.uid == 1000, "{file:?}");
    assert_eq!(file.content.trim_end(), key);
    let units: Vec<_> = llm
        .files
        .iter()
        .filter(|f| f.path.starts_with("/etc/systemd/system/") && f.path.ends_with(".service"))
        .collect();
    assert_eq!(units.len(), 2);
    for unit in units {
        assert!(unit.content.contains(&format!("--api-key-file {}", file.path)), "{}", unit.content);
        assert!(!unit.content.contains(&key), "{}", unit.path);
    }
}

/// Item 5: the Corefile decides nothing from the source address, which through an LXD proxy device is always
/// 127.0.0.1, and says so.
#[test]
fn the_corefile_refuses_any_from_everyone_and_says_why() {
    let text = coredns::corefile(&["example.com", "example.org"], 53);
    assert!(!text.contains("127.0.0.0/8"), "no rule trusts loopback:\n{text}");
    assert!(!text.contains(" net "), "no rule is decided by a source network:\n{text}");
    assert!(!text.contains("forward"), "not a resolver:\n{text}");
    assert!(text.contains("proxy device") && text.contains("127.0.0.1"), "the reason is in the file:\n{text}");
    for zone in ["example.com:53", "example.org:53"] {
        let block = text.split(&format!("\n{zone} {{\n")).nth(1).unwrap_or_default();
        let block = block.split("\n}\n").next().unwrap_or_default();
        let rules: Vec<&str> =
            block.lines().map(str::trim).filter(|l| l.starts_with("allow") || l.starts_with("block")).collect();
        assert_eq!(rules.first().copied(), Some("block type ANY"), "{zone}: ANY is refused first:\n{block}");
        assert_eq!(rules.last().copied(), Some("block"), "{zone}: everything else is refused:\n{block}");
        assert!(rules.iter().all(|r| !r.starts_with("allow") || !r.contains("ANY")), "{zone}: {rules:?}");
        assert!(block.contains("\tfile /opt/gbo/data/"), "{zone}: authoritative from its zone file");
    }
    let root = text.split("\n.:53 {\n").nth(1).unwrap_or_default();
    assert!(root.contains("acl {\n\t\tblock\n\t}"), "the root block refuses everything:\n{root}");
    insta::assert_snapshot!("corefile_through_the_proxy_device", text);
}
