//! Property tests for every parser of outside input: what the daemon (or a remote, or a container through it)
//! answers, the `lxc` CLI's configuration files, the environment, and names and addresses given by people. Arbitrary
//! input gives `Ok` or a clear error, never a panic; where a parser accepts, what it accepted keeps its invariants.
//! Case counts are modest so the whole set takes a few seconds in the normal test run.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use http::StatusCode;
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::Value;

use crate::client::{decode_envelope, decode_metadata, operation_from_answer};
use crate::devices::{DeviceConfig, ProxyAddress, ProxyDevice, ProxyProtocol};
use crate::error::{human_size, Error};
use crate::names::{DeviceName, InstanceName, ObjectName, SnapshotName};
use crate::operation::{interpret_wait, Operation, WaitOutcome};
use crate::remote::{parse_lxc_config, parse_remote_address, RemoteAddress};
use crate::transport::{certificate_fingerprint, discover_socket_in, host_of, parse_fingerprint, Flavor};

fn config() -> ProptestConfig {
    ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() }
}

/// Field names of LXD's answers, so generated objects reach the typed decoders' fields, not only unknown keys.
const KEYS: &[&str] = &[
    "type",
    "status",
    "status_code",
    "operation",
    "error_code",
    "error",
    "metadata",
    "id",
    "class",
    "description",
    "resources",
    "may_cancel",
    "err",
    "location",
    "name",
    "config",
    "devices",
    "profiles",
    "state",
    "expanded_config",
    "expanded_devices",
    "architecture",
    "created_at",
    "last_used_at",
    "stateful",
    "ephemeral",
    "used_by",
    "fds",
    "return",
    "output",
    "environment",
    "certificate",
    "api_extensions",
    "auth",
    "network",
    "addresses",
    "snapshots",
    "aliases",
    "fingerprint",
    "size",
    "public",
    "properties",
    "timestamp",
    "project",
    "action",
    "memory",
    "disk",
    "pid",
    "processes",
    "usage",
    "expires_at",
    "instance_only",
    "driver",
    "server_name",
    "0",
    "1",
    "2",
    "control",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![3 => proptest::sample::select(KEYS).prop_map(str::to_string), 1 => "[a-z_.]{0,10}"]
}

/// Any JSON value, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::String),
        proptest::sample::select(&["sync", "async", "error", "Running", "Success", "/1.0/instances/x"][..])
            .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(key(), inner, 0..8).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object shaped like an envelope (`type`, codes, metadata), with arbitrary values in places.
fn envelope_json() -> impl Strategy<Value = Value> {
    (
        prop_oneof![Just(json!("sync")), Just(json!("async")), Just(json!("error")), json()],
        prop_oneof![any::<i64>().prop_map(Value::from), json()],
        prop_oneof![(0u16..700).prop_map(Value::from), json()],
        json(),
        json(),
    )
        .prop_map(|(kind, status_code, error_code, error, metadata)| {
            json!({ "type": kind, "status_code": status_code, "error_code": error_code, "error": error,
                    "metadata": metadata, "operation": "/1.0/operations/x" })
        })
}

use serde_json::json;

fn status() -> impl Strategy<Value = StatusCode> {
    (100u16..1000).prop_map(|code| StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..256),
        json().prop_map(|v| v.to_string().into_bytes()),
        envelope_json().prop_map(|v| v.to_string().into_bytes()),
        // Truncated JSON, as a connection cut mid-answer leaves it.
        envelope_json().prop_flat_map(|v| {
            let text = v.to_string().into_bytes();
            let len = text.len();
            (Just(text), 0..=len).prop_map(|(t, n)| t[..n].to_vec())
        }),
    ]
}

/// Decode `value` as every typed answer the client reads; none may panic.
fn decode_as_everything(value: &Value) {
    fn one<T: serde::de::DeserializeOwned>(value: &Value) {
        let _ = decode_metadata::<T>("/p", value.clone());
    }
    one::<crate::Instance>(value);
    one::<Vec<crate::Instance>>(value);
    one::<crate::InstanceState>(value);
    one::<crate::Operation>(value);
    one::<Vec<crate::Operation>>(value);
    one::<std::collections::HashMap<String, Vec<crate::Operation>>>(value);
    one::<crate::Server>(value);
    one::<crate::Certificate>(value);
    one::<Vec<crate::Certificate>>(value);
    one::<crate::Image>(value);
    one::<Vec<crate::Image>>(value);
    one::<crate::ImageAlias>(value);
    one::<crate::Profile>(value);
    one::<Vec<crate::Profile>>(value);
    one::<crate::Network>(value);
    one::<crate::StoragePool>(value);
    one::<crate::StorageVolume>(value);
    one::<crate::Project>(value);
    one::<crate::Snapshot>(value);
    one::<Vec<crate::Snapshot>>(value);
    one::<crate::Backup>(value);
    one::<crate::Event>(value);
    one::<Vec<String>>(value);
    one::<InstanceName>(value);
    one::<Vec<InstanceName>>(value);
    one::<SnapshotName>(value);
    one::<DeviceName>(value);
    one::<ObjectName>(value);
}

/// Names: ASCII-heavy so the rules' edges are reached, plus any printable text.
fn name_text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9_./:*@ -]{0,70}", "\\PC{0,70}", "[a-z][a-z0-9-]{0,70}", "[a-zA-Z0-9/._:-]{0,70}"]
}

fn instance_rule(s: &str) -> bool {
    let first = s.chars().next();
    (1..=63).contains(&s.len())
        && first.is_some_and(|c| c.is_ascii_alphabetic())
        && !s.ends_with('-')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn proxy_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        "(tcp|udp|unix|sctp):[0-9a-f.:\\[\\]/@-]{0,30}",
        ("(tcp|udp)", "(127\\.0\\.0\\.1|0\\.0\\.0\\.0|\\[::1\\]|::1|10\\.0\\.0\\.300)", 0u32..70000, 0u32..70000)
            .prop_map(|(p, h, a, b)| format!("{p}:{h}:{a}-{b}")),
        ("(tcp|udp)", "(127\\.0\\.0\\.1|\\[::1\\]|\\[fe80::1\\])", 0u32..70000)
            .prop_map(|(p, h, a)| format!("{p}:{h}:{a}")),
    ]
}

fn proxy_address() -> impl Strategy<Value = ProxyAddress> {
    let protocol = prop_oneof![Just(ProxyProtocol::Tcp), Just(ProxyProtocol::Udp), Just(ProxyProtocol::Unix)];
    (protocol, "\\PC{0,20}", any::<u16>(), any::<u16>()).prop_map(|(protocol, address, port, port_end)| ProxyAddress {
        protocol,
        address,
        port,
        port_end,
    })
}

fn device_config() -> impl Strategy<Value = DeviceConfig> {
    let key = proptest::sample::select(&["type", "listen", "connect", "bind", "uid", "gid", "mode", "x"][..]);
    let value = prop_oneof![Just("proxy".to_string()), Just("instance".to_string()), proxy_text(), "[0-9]{0,12}"];
    btree_map(key.prop_map(str::to_string), value, 0..8)
}

fn remote_addr() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        "(unix|https|http)://[a-z0-9.:/\\[\\]@?#%-]{0,30}",
        (
            "(https://)",
            "(example\\.org|10\\.0\\.0\\.5|\\[::1\\]|\\[fe80::1%25eth0\\]|host)",
            "(:[0-9]{0,6})?",
            "(/|/1\\.0|\\?x=1)?"
        )
            .prop_map(|(a, b, c, d)| format!("{a}{b}{c}{d}")),
    ]
}

fn lxc_config_text() -> impl Strategy<Value = String> {
    let remote = (remote_addr(), "(lxd|simplestreams|oci|)", any::<bool>());
    prop_oneof![
        "\\PC{0,200}",
        "(remotes:\n  [a-z]{1,5}:\n    (addr|protocol|public): [a-z:/.0-9\\[\\]{}'\"-]{0,20}\n){1,3}",
        btree_map("[a-z-]{1,8}", remote, 0..4).prop_map(|remotes| {
            let mut text = String::from("default-remote: local\nremotes:\n");
            for (name, (addr, protocol, public)) in remotes {
                text.push_str(&format!(
                    "  {name}:\n    addr: {addr:?}\n    protocol: {protocol:?}\n    public: {public}\n"
                ));
            }
            text
        }),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn envelopes_decode_or_fail_cleanly(status in status(), body in body()) {
        match decode_envelope(status, "/1.0/x", &body) {
            Ok(envelope) => prop_assert_ne!(envelope.kind.as_str(), "error"),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn an_error_envelope_is_never_success(status in status(), message in "\\PC{0,30}", code in 0u16..700) {
        let body = json!({ "type": "error", "error": message, "error_code": code }).to_string();
        prop_assert!(decode_envelope(status, "/p", body.as_bytes()).is_err());
    }

    #[test]
    fn operation_waits_decode_or_fail_cleanly(status in status(), body in body()) {
        match interpret_wait(status, "/1.0/operations/x/wait", &body) {
            Ok(WaitOutcome::Done(op)) => prop_assert!((200..400).contains(&op.status_code)),
            Ok(WaitOutcome::Running(op)) => prop_assert!(op.status_code < 200),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn typed_answers_decode_or_fail_cleanly(value in json()) {
        decode_as_everything(&value);
        if let Ok(envelope) = serde_json::from_value::<crate::client::Envelope>(value.clone()) {
            let _ = operation_from_answer("/p", envelope);
        }
        let op = Operation { metadata: Some(value.clone()), ..Operation::default() };
        let _ = crate::exec::exit_code(&op);
        let _ = crate::events::decode("/1.0/events", Ok(tokio_tungstenite::tungstenite::Message::Text(value.to_string())));
    }

    #[test]
    fn typed_answers_with_real_fields_replaced(value in json(), field in proptest::sample::select(KEYS)) {
        // A recorded instance with one field replaced by anything: type confusion is an error, not a panic.
        let mut instance = json!({
            "name": "c1", "status": "Running", "status_code": 103, "type": "container", "architecture": "x86_64",
            "config": {"image.os": "Debian"}, "devices": {"root": {"type": "disk", "path": "/", "pool": "default"}},
            "expanded_config": {}, "expanded_devices": {}, "profiles": ["default"], "ephemeral": false,
            "stateful": false, "description": "", "created_at": "2024-01-01T00:00:00Z", "location": "none",
            "project": "default", "used_by": null,
            "state": {"status": "Running", "status_code": 103, "pid": 42, "processes": 3,
                      "memory": {"usage": 1}, "disk": {"root": {"usage": 1}}, "network": null}
        });
        instance["state"][field] = value.clone();
        instance[field] = value;
        decode_as_everything(&instance);
    }

    #[test]
    fn event_messages_decode_or_fail_cleanly(text in "\\PC{0,200}", bytes in vec(any::<u8>(), 0..200)) {
        use tokio_tungstenite::tungstenite::Message;
        let _ = crate::events::decode("/1.0/events", Ok(Message::Text(text)));
        let _ = crate::events::decode("/1.0/events", Ok(Message::Binary(bytes)));
    }

    #[test]
    fn instance_names_follow_their_rule(s in name_text()) {
        match InstanceName::new(s.clone()) {
            Ok(name) => {
                prop_assert!(instance_rule(&s), "accepted {s:?}");
                prop_assert_eq!(name.as_str(), s.as_str());
                let json = serde_json::to_string(&name).expect("names serialize");
                prop_assert_eq!(serde_json::from_str::<InstanceName>(&json).ok(), Some(name));
            }
            Err(e) => {
                prop_assert!(!instance_rule(&s), "refused {s:?}");
                prop_assert!(matches!(e, Error::InvalidName { kind: "instance", .. }), "{:?}", e);
                prop_assert!(e.to_string().contains("instance names are"));
            }
        }
        let from_json = serde_json::from_value::<InstanceName>(Value::String(s.clone())).is_ok();
        prop_assert_eq!(from_json, instance_rule(&s));
    }

    #[test]
    fn other_names_keep_their_invariants(s in name_text()) {
        if let Ok(name) = SnapshotName::new(s.clone()) {
            prop_assert!(!name.as_str().is_empty() && name.as_str().len() <= 255);
            prop_assert!(!name.as_str().contains('/') && name.as_str() != "." && name.as_str() != "..");
        }
        if let Ok(name) = DeviceName::new(s.clone()) {
            prop_assert!((1..=63).contains(&name.as_str().len()) && !name.as_str().starts_with('.'));
            prop_assert!(name.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b"/._:-".contains(&b)));
        }
        if let Ok(name) = ObjectName::new(s.clone()) {
            prop_assert!(!name.as_str().is_empty() && !name.as_str().contains('/'));
            prop_assert!(!name.as_str().chars().any(char::is_whitespace));
        }
        for result in [
            SnapshotName::new(s.clone()).err(),
            DeviceName::new(s.clone()).err(),
            ObjectName::new(s.clone()).err(),
        ]
        .into_iter()
        .flatten()
        {
            prop_assert!(matches!(&result, Error::InvalidName { value, .. } if value == &s), "{:?}", result);
        }
    }

    #[test]
    fn proxy_addresses_parse_and_print_back(s in proxy_text()) {
        match s.parse::<ProxyAddress>() {
            Ok(address) => {
                prop_assert!(address.protocol == ProxyProtocol::Unix || (address.port >= 1 && address.port <= address.port_end));
                prop_assert_eq!(address.to_string().parse::<ProxyAddress>(), Ok(address));
            }
            Err(message) => prop_assert!(message.contains("expected `tcp:")),
        }
    }

    #[test]
    fn proxy_devices_read_back_or_refuse(config in device_config(), listen in proxy_address(), connect in proxy_address()) {
        let name = DeviceName::new("gbo-prop").expect("valid");
        if let Some(device) = ProxyDevice::from_config(&config) {
            let _ = device.to_config(&name);
        }
        // Hand-built addresses (public fields) may run backwards: an error, not an overflow.
        let _ = ProxyDevice::new(listen, connect).to_config(&name);
    }

    #[test]
    fn lxc_configs_parse_or_fail_cleanly(text in lxc_config_text()) {
        if let Ok(config) = parse_lxc_config(&text, Path::new("config.yml")) {
            for (name, remote) in &config.remotes {
                match parse_remote_address(name, &remote.addr) {
                    Ok(RemoteAddress::Https(address)) => {
                        let (host, port) = address.rsplit_once(':').expect("host:port");
                        prop_assert!(!host.is_empty() && port.parse::<u16>().is_ok(), "{address}");
                    }
                    Ok(RemoteAddress::Unix(path)) => prop_assert!(path.is_absolute()),
                    Ok(RemoteAddress::LocalDaemon) => prop_assert_eq!(remote.addr.as_str(), "unix://"),
                    Err(e) => prop_assert!(e.to_string().contains(&format!("remote `{}`", name)), "{}", e),
                }
            }
        }
    }

    #[test]
    fn remote_addresses_parse_or_fail_cleanly(addr in remote_addr()) {
        match parse_remote_address("r", &addr) {
            Ok(RemoteAddress::Https(address)) => {
                prop_assert!(addr.starts_with("https://"));
                let (_, port) = address.rsplit_once(':').expect("host:port");
                prop_assert!(port.parse::<u16>().is_ok());
                let _ = host_of(&address);
            }
            Ok(_) => prop_assert!(addr.starts_with("unix://")),
            Err(e) => prop_assert!(e.to_string().contains("remote `r` has an unsupported address")),
        }
    }

    #[test]
    fn lxc_config_directories_read_or_fail_cleanly(text in lxc_config_text(), name in "[a-z-]{1,8}") {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("config.yml"), &text).expect("write");
        std::fs::write(dir.path().join("client.crt"), "not a certificate").expect("write");
        std::fs::write(dir.path().join("client.key"), "not a key").expect("write");
        // Reading never panics; a client for what was read refuses bad material with an error.
        if let Ok(remote) = crate::Remote::from_lxc_config(dir.path(), &name) {
            let _ = remote.client();
        }
        let _ = crate::InstanceSource::from_lxc_remote(dir.path(), &name, "alias");
    }

    #[test]
    fn fingerprints_parse_or_fail_cleanly(s in prop_oneof!["\\PC{0,80}", "[0-9a-fA-F: ]{60,100}"], digest in vec(any::<u8>(), 32)) {
        if let Ok(fp) = parse_fingerprint(&s) {
            prop_assert!(fp.len() == 64 && fp.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
        }
        // What `lxc` prints (colon-separated upper case) and plain hex both pin the same digest.
        let plain = hex::encode(&digest);
        let colons = digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
        prop_assert_eq!(parse_fingerprint(&colons), Ok(plain.clone()));
        prop_assert_eq!(parse_fingerprint(&plain), Ok(plain));
    }

    #[test]
    fn certificates_hash_or_fail_cleanly(bytes in vec(any::<u8>(), 0..300), b64 in "[A-Za-z0-9+/=\n]{0,300}") {
        let _ = certificate_fingerprint(&bytes);
        let pem = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
        prop_assert!(certificate_fingerprint(pem.as_bytes()).is_err() || !b64.is_empty());
    }

    #[test]
    fn file_headers_read_or_default(values in vec(("(uid|gid|mode|type|other)", "[ -~]{0,24}"), 0..6)) {
        let mut headers = http::HeaderMap::new();
        for (key, value) in &values {
            if let (Ok(name), Ok(value)) =
                (http::HeaderName::from_bytes(format!("X-LXD-{key}").as_bytes()), http::HeaderValue::from_str(value))
            {
                headers.insert(name, value);
            }
        }
        let (_, _, _, kind) = crate::files::file_metadata(&headers, "X-LXD-");
        prop_assert!(!kind.is_empty() || headers.contains_key("X-LXD-type"));
    }

    #[test]
    fn sizes_always_print(bytes in any::<u64>()) {
        prop_assert!(!human_size(bytes).is_empty());
    }

    #[test]
    fn an_explicit_socket_is_the_only_one_ever_returned(
        socket in prop_oneof![Just(None), Just(Some(String::new())), "\\PC{0,30}".prop_map(Some), Just(Some("/var/lib/lxd/unix.socket".to_string()))],
        dir in prop_oneof![Just(None), Just(Some(String::new())), "\\PC{0,30}".prop_map(Some), Just(Some("/var/lib/lxd".to_string()))],
    ) {
        let env: BTreeMap<&str, OsString> = [("LXD_SOCKET", socket.clone()), ("LXD_DIR", dir.clone())]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, OsString::from(v))))
            .collect();
        let result = discover_socket_in(Flavor::Lxd, |k| env.get(k).cloned());
        let socket = socket.filter(|s| !s.is_empty());
        let dir = dir.filter(|s| !s.is_empty());
        let explicit = match (&socket, &dir) {
            (Some(s), _) => Some(("LXD_SOCKET", PathBuf::from(s))),
            (None, Some(d)) => Some(("LXD_DIR", Path::new(d).join("unix.socket"))),
            (None, None) => None,
        };
        match (explicit, result) {
            (Some((_, path)), Ok(found)) => prop_assert_eq!(found, path),
            (Some((variable, _)), Err(e)) => {
                let named = matches!(&e, Error::ExplicitSocket { variable: v, .. } if *v == variable);
                prop_assert!(named, "{:?}", e);
            }
            (None, Ok(found)) => prop_assert!(Flavor::Lxd.socket_candidates(|_| None).contains(&found)),
            (None, Err(e)) => prop_assert!(matches!(e, Error::SocketNotFound { .. }), "{:?}", e),
        }
    }
}
