//! Tenant names, roles and the instance naming rule.

use gbo_components::{instance_name, parse_instance_name, try_parse_instance_name, Error, Role, TenantName};

fn rule_of(name: &str) -> String {
    match TenantName::new(name) {
        Err(Error::InvalidTenantName { value, rule }) => {
            assert_eq!(value, name, "the error names the bad value");
            rule.to_owned()
        }
        other => panic!("{name:?} should be rejected, got {other:?}"),
    }
}

#[test]
fn valid_tenant_names() {
    for name in ["default", "a", "mycompany", "acme-2", "a1-b2-c3", &"a".repeat(50)] {
        let tenant = TenantName::new(name).unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert_eq!(tenant.as_str(), name);
        assert_eq!(tenant.to_string(), name);
    }
    assert_eq!(TenantName::default().as_str(), "default");
}

#[test]
fn seed_bad_examples_name_the_rule() {
    // The empty tenant of the seed's `-system`.
    assert!(rule_of("").contains("empty"));
    assert!(rule_of("_").contains("lower-case letter"));
    assert!(rule_of("my_company").contains("'_'"));
    assert!(rule_of("MyCompany").contains("lower-case letter"));
    assert!(rule_of("myCompany").contains("upper case"));
    assert!(rule_of("1tenant").contains("digit"));
    assert!(rule_of("-tenant").contains("starts with '-'"));
    assert!(rule_of("tenant-").contains("ends with '-'"));
    assert!(rule_of("ten.ant").contains("other than a-z"));
    assert!(rule_of("tenänt").contains("other than a-z"));
    assert!(rule_of(&"a".repeat(51)).contains("50 characters"));
}

#[test]
fn error_message_is_printable_as_is() {
    let message = TenantName::new("Acme").map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(message, Err("invalid tenant name \"Acme\": it must start with a lower-case letter a-z".to_owned()));
}

#[test]
fn longest_instance_name_fits_lxd() {
    let tenant = TenantName::new(&"a".repeat(50)).map_err(|e| e.to_string());
    let tenant = tenant.unwrap_or_else(|e| panic!("{e}"));
    for role in Role::ALL {
        assert!(instance_name(&tenant, role).len() <= 63, "{role}");
    }
}

#[test]
fn role_names() {
    let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        names,
        [
            "tables",
            "drive",
            "cache",
            "llm",
            "email",
            "vault",
            "vector_db",
            "proxy",
            "dns",
            "alm",
            "alm-ci",
            "table-editor",
            "webmail",
            "system"
        ]
    );
    assert_eq!(Role::VectorDb.container_suffix(), "vectordb");
    assert_eq!(Role::AlmCi.container_suffix(), "alm-ci");
    assert_eq!(Role::DEFAULT_SET, [Role::Tables, Role::Drive, Role::Cache]);
    for role in Role::ALL {
        assert_eq!(role.as_str().parse::<Role>().ok(), Some(role));
        assert_eq!(role.container_suffix().parse::<Role>().ok(), Some(role));
        assert!(!role.container_suffix().contains('_'));
    }
    assert_eq!(Role::Tables.unit_name(), "tables.service");
    assert_eq!(Role::VectorDb.unit_name(), "vectordb.service");
}

#[test]
fn unknown_role_lists_the_allowed_ones() {
    let message = "database".parse::<Role>().map(|_| ()).map_err(|e| e.to_string());
    let message = message.err().unwrap_or_default();
    assert!(message.starts_with("unknown role \"database\": expected one of tables, drive, cache"), "{message}");
    assert!("Tables".parse::<Role>().is_err(), "roles are case-sensitive");
    assert!("vector-db".parse::<Role>().is_err());
}

#[test]
fn instance_names_round_trip() {
    for tenant in ["default", "a", "acme-2", "alm", "x-alm", "tables", "my-table"] {
        let tenant = TenantName::new(tenant).unwrap_or_else(|e| panic!("{e}"));
        for role in Role::ALL {
            let name = instance_name(&tenant, role);
            assert_eq!(parse_instance_name(&name), Some((tenant.clone(), role)), "{name}");
        }
    }
    assert_eq!(instance_name(&TenantName::default(), Role::Tables), "default-tables");
    assert_eq!(instance_name(&TenantName::default(), Role::VectorDb), "default-vectordb");
}

#[test]
fn bad_instance_names() {
    for name in
        ["-system", "system", "default-", "default-vector_db", "Default-tables", "default-unknown", "_-tables", ""]
    {
        assert_eq!(parse_instance_name(name), None, "{name}");
    }
    let message = try_parse_instance_name("-system").map(|_| ()).map_err(|e| e.to_string());
    assert_eq!(
        message,
        Err("invalid instance name \"-system\": its tenant part \"\" is invalid: it is empty; a tenant name has 1 to 50 characters".to_owned())
    );
}
