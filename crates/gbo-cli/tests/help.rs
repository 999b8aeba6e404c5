//! `gbo --help` and the help of every subcommand, at every depth, as insta snapshots: a change to any flag, text or
//! default shows up in review. The commands are found by walking the real binary's own help (the `Commands:`
//! section of each level), so a new subcommand is covered without touching this file.

use std::process::Command;

fn help(path: &[String]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_gbo"))
        .args(path)
        .arg("--help")
        .env("COLUMNS", "120")
        .env_remove("GBO_DEFAULT_IMAGE")
        .env_remove("GBO_FALLBACK_IMAGE")
        .output()
        .expect("gbo runs");
    assert!(output.status.success(), "gbo {} --help failed", path.join(" "));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The subcommands a help text lists (its `Commands:` section, `help` left out).
fn subcommands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("Commands:") {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        if line.trim().is_empty() || !line.starts_with("  ") {
            break;
        }
        // Entries are indented two spaces; wrapped descriptions are indented further.
        if line.starts_with("   ") {
            continue;
        }
        if let Some(name) = line.split_whitespace().next() {
            if name != "help" {
                out.push(name.to_string());
            }
        }
    }
    out
}

#[test]
fn every_command_s_help_is_snapshotted() {
    let mut queue: Vec<Vec<String>> = vec![Vec::new()];
    let mut seen = 0;
    while let Some(path) = queue.pop() {
        let text = help(&path);
        let name = if path.is_empty() { "gbo".to_string() } else { format!("gbo_{}", path.join("_")) };
        insta::assert_snapshot!(name, text);
        seen += 1;
        for sub in subcommands(&text) {
            let mut next = path.clone();
            next.push(sub);
            queue.push(next);
        }
    }
    assert!(seen > 40, "only {seen} help texts were found: the walk of `Commands:` sections broke");
}

/// A reader that goes away (`gbo components | head -1`) ends gbo quietly with exit 0: it used to panic on the broken
/// pipe ("failed printing to stdout").
#[test]
fn a_closed_stdout_ends_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gbo"))
        .args(["components", "--output", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("gbo runs");
    // The reading end is closed before gbo writes anything: its first write meets a broken pipe.
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("gbo ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}
