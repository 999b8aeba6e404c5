//! Property tests of the public key parser (`parse_public_key`), which reads keys out of containers: arbitrary text
//! gives a key or an error, never a panic; every ed25519 key written the OpenSSH way reads back as the same key.

use proptest::prelude::*;

use super::{parse_public_key, PublicKey};

/// 256 cases a property in the normal test run; `PROPTEST_CASES` for a longer hunt.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

fn blob(key: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&11u32.to_be_bytes());
    out.extend_from_slice(b"ssh-ed25519");
    out.extend_from_slice(&32u32.to_be_bytes());
    out.extend_from_slice(key);
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        let _ = parse_public_key(&text);
    }

    #[test]
    fn arbitrary_base64_after_the_type_never_panics(encoded in "[A-Za-z0-9+/=]{0,120}") {
        let _ = parse_public_key(&format!("ssh-ed25519 {encoded}"));
    }

    #[test]
    fn written_keys_read_back(key in proptest::array::uniform32(any::<u8>()), comment in "[a-z@.-]{0,20}") {
        let written = PublicKey { blob: blob(&key) };
        let line = format!("{} {} {comment}\n", PublicKey::TYPE, written.base64());
        prop_assert_eq!(parse_public_key(&line), Ok(written));
    }
}
