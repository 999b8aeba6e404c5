//! Property tests of the lifecycle commands' argument parsers (`--tenant`, `--role`, `--port ROLE.NAME=PORT`, and
//! a target that is a role or a container name): arbitrary text gives a value or an error, never a panic; what the
//! naming rule writes resolves back.

use gbo_components::{instance_name, Role, TenantName};
use proptest::prelude::*;

use super::{parse_ports, parse_roles, parse_tenant, resolve_target};

/// 256 cases a property in the normal test run; `PROPTEST_CASES` for a longer hunt.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arguments_never_panic(values in proptest::collection::vec(prop_oneof![
        "\\PC{0,20}",
        "[a-z_]{1,12}\\.[a-z]{0,8}=[0-9]{0,7}",
        "(tables|cache|vector_db|vectordb)\\.[a-z=.]{0,8}(=[0-9a-z]{0,6})?",
    ], 0..4)) {
        if let Err(e) = parse_ports(&values) {
            prop_assert!(!e.to_string().is_empty());
        }
        let _ = parse_roles(&values);
        for v in &values {
            let _ = parse_tenant(v);
            let _ = resolve_target(v, None);
        }
    }

    #[test]
    fn ports_round_trip(ports in proptest::collection::btree_map((proptest::sample::select(Role::ALL.to_vec()), "[a-z][a-z0-9_-]{0,8}"), 1u16.., 0..5)) {
        let values: Vec<String> = ports.iter().map(|((role, name), port)| format!("{role}.{name}={port}")).collect();
        prop_assert_eq!(parse_ports(&values).expect("valid ports"), ports);
    }

    #[test]
    fn targets_resolve(tenant in "[a-z][a-z0-9-]{0,20}[a-z0-9]", other in "[a-z]{1,8}") {
        let tenant = TenantName::new(&tenant).expect("valid");
        let other = TenantName::new(&format!("x{other}")).expect("valid");
        for role in Role::ALL {
            let name = instance_name(&tenant, role);
            prop_assert_eq!(resolve_target(&name, Some(&tenant)).ok(), Some((tenant.clone(), role)));
            prop_assert_eq!(resolve_target(&name, None).ok(), Some((tenant.clone(), role)));
            prop_assert_eq!(resolve_target(role.as_str(), Some(&tenant)).ok(), Some((tenant.clone(), role)));
            if other != tenant {
                prop_assert!(resolve_target(&name, Some(&other)).is_err(), "{} is not {}'s", name, other);
            }
        }
    }
}
