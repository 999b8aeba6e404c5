//! The Caddyfile site helpers used by `gbo proxy apply`.

use gbo_components::caddyfile::{has_storage_block, site_addresses};

const PRODUCTION_LIKE: &str = r#"
# A comment { with braces }
{
	email ops@example.com
	storage file_system {
		root /opt/gbo/data/caddy
	}
}

(common) {
	encode gzip
	header {
		-Server
	}
}

import /etc/caddy/extra/*.caddy

chat.example.com, www.example.com {
	import common
	reverse_proxy 127.0.0.1:5859 {
		header_up Host {host}
	}
}

git.example.com
	alm.example.com {
	respond "not a continuation" 200
}

http://mail.example.com:8080 {
	respond "}" 200
	respond `{ braces in a backtick string }`
}
"#;

#[test]
fn finds_top_level_sites_only() {
    // "git.example.com" alone on its line is not continued by a comma: Caddy would treat it as a site without
    // braces, which is an error next to braced sites.
    let err = site_addresses(PRODUCTION_LIKE).map_err(|e| e.to_string());
    assert!(matches!(&err, Err(m) if m.contains("\"git.example.com\" is outside any block")), "{err:?}");

    let fixed = PRODUCTION_LIKE.replace("git.example.com\n", "git.example.com,\n");
    assert_eq!(
        site_addresses(&fixed).unwrap_or_default(),
        ["chat.example.com", "www.example.com", "git.example.com", "alm.example.com", "http://mail.example.com:8080"]
    );
    assert!(has_storage_block(&fixed));
}

#[test]
fn storage_block_only_counts_in_global_options() {
    assert!(!has_storage_block("example.com {\n\tstorage file_system /x\n}\n"));
    assert!(!has_storage_block("{\n\tadmin off\n}\nexample.com {\n\trespond ok\n}\n"));
    assert!(!has_storage_block("{\n\tservers {\n\t\tstorage x\n\t}\n}\n"));
    assert!(has_storage_block("{\n\tstorage file_system {\n\t\troot /opt/gbo/data/caddy\n\t}\n}\n"));
    assert!(!has_storage_block("{\n\tstorage file_system {\n"), "unbalanced text has no storage block");
    assert!(!has_storage_block(""));
}

#[test]
fn single_site_without_braces() {
    assert_eq!(site_addresses("localhost\n\nrespond \"hello\"\n").unwrap_or_default(), ["localhost"]);
    assert_eq!(site_addresses("").unwrap_or_default(), Vec::<String>::new());
    assert_eq!(site_addresses("# only a comment\n").unwrap_or_default(), Vec::<String>::new());
}

#[test]
fn snippets_and_global_block_are_not_sites() {
    let text = "{\n\tadmin localhost:2019\n}\n(log) {\n\tlog\n}\n&(route) {\n\trespond ok\n}\n:80 {\n\timport log\n}\n";
    assert_eq!(site_addresses(text).unwrap_or_default(), [":80"]);
}

#[test]
fn parse_errors_name_the_line() {
    let unbalanced = site_addresses("a.example.com {\n\trespond ok\n").map_err(|e| e.to_string());
    assert!(matches!(&unbalanced, Err(m) if m.contains("never closed")), "{unbalanced:?}");
    let stray = site_addresses("a.example.com {\n}\n}\n").map_err(|e| e.to_string());
    assert_eq!(stray, Err("invalid Caddyfile at line 3: '}' without a matching '{'".to_owned()));
    let quote = site_addresses("a.example.com {\n\trespond \"oops\n}\n").map_err(|e| e.to_string());
    assert_eq!(quote, Err("invalid Caddyfile at line 2: unterminated \" string".to_owned()));
    let second_global = site_addresses("a.example.com {\n}\n{\n}\n").map_err(|e| e.to_string());
    assert!(matches!(&second_global, Err(m) if m.contains("line 3")), "{second_global:?}");
}
