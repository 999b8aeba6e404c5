//! Forgejo workflows: render `.forgejo/workflows/<name>.yaml` for each submodule (build, test, then `gbo-ci deploy`
//! with the key taken from the runner's secrets through the environment), and lint existing workflows for the
//! runbook's pitfalls.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

/// Settings shared by every rendered workflow.
#[derive(Debug, Clone)]
pub struct RenderSettings {
    /// The deploy host (an ssh config alias on the runner, like the seed's `pragmatismo-system`).
    pub host: String,
    /// The user that owns and runs the binaries.
    pub owner: String,
    /// Directory the binaries are deployed to.
    pub bin_dir: String,
    /// Directory for logs of hand-run processes.
    pub log_dir: String,
    /// The runner label (`runs-on`).
    pub runs_on: String,
    /// The branch that deploys.
    pub branch: String,
    /// Name of the repository secret holding the deploy key.
    pub key_secret: String,
    /// Releases to keep.
    pub keep: usize,
}

impl Default for RenderSettings {
    fn default() -> Self {
        Self {
            host: "pragmatismo-system".into(),
            owner: "gbuser".into(),
            bin_dir: "/opt/gbo/bin".into(),
            log_dir: "/opt/gbo/logs".into(),
            runs_on: "gbo-runner".into(),
            branch: "main".into(),
            key_secret: "GBO_DEPLOY_SSH_KEY".into(),
            keep: 5,
        }
    }
}

/// What one submodule's workflow builds and deploys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowSpec {
    /// Workflow (and file) name: the submodule's directory name.
    pub name: String,
    /// Cargo package to build and test.
    pub package: String,
    /// Cargo features to enable.
    pub features: Vec<String>,
    /// Deploy after the tests, when the submodule is a deployed service.
    pub deploy: Option<DeploySpec>,
}

/// The deploy step of a service's workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploySpec {
    /// Port the service listens on, on the remote's loopback.
    pub port: u16,
    /// Health path.
    pub health_path: String,
    /// Arguments of the binary.
    pub args: Vec<String>,
    /// Log file name under the log directory.
    pub log_file: String,
}

/// The spec for a submodule: botserver (port 5858, `--noconsole`, the seed's error.log) and botui (port 5859,
/// `embed-ui`) deploy; anything else builds and tests only.
pub fn spec_for(name: &str) -> WorkflowSpec {
    match name {
        "botserver" => WorkflowSpec {
            name: name.into(),
            package: name.into(),
            features: Vec::new(),
            deploy: Some(DeploySpec {
                port: 5858,
                health_path: "/api/health".into(),
                args: vec!["--noconsole".into()],
                log_file: "error.log".into(),
            }),
        },
        "botui" => WorkflowSpec {
            name: name.into(),
            package: name.into(),
            features: vec!["embed-ui".into()],
            deploy: Some(DeploySpec {
                port: 5859,
                health_path: "/".into(),
                args: Vec::new(),
                log_file: "botui.log".into(),
            }),
        },
        _ => WorkflowSpec { name: name.into(), package: name.into(), features: Vec::new(), deploy: None },
    }
}

/// Render one workflow file.
pub fn render(spec: &WorkflowSpec, settings: &RenderSettings) -> String {
    let features =
        if spec.features.is_empty() { String::new() } else { format!(" --features {}", spec.features.join(",")) };
    let mut out = format!(
        "# Written by `gbo-ci workflow render`: change its inputs and re-render rather than editing by hand.\n\
         name: {name}\n\
         \n\
         on:\n\
         \x20 push:\n\
         \x20   branches: [{branch}]\n\
         \x20 workflow_dispatch:\n\
         \n\
         jobs:\n\
         \x20 build-test-deploy:\n\
         \x20   runs-on: {runs_on}\n\
         \x20   env:\n\
         \x20     CARGO_TERM_COLOR: never\n\
         \x20   steps:\n\
         \x20     - name: Check out\n\
         \x20       uses: actions/checkout@v4\n\
         \x20     - name: Build\n\
         \x20       run: cargo build --release --locked -p {package}{features}\n\
         \x20     - name: Test\n\
         \x20       run: cargo test --release --locked -p {package}{features}\n",
        name = spec.name,
        branch = settings.branch,
        runs_on = settings.runs_on,
        package = spec.package,
    );
    if let Some(deploy) = &spec.deploy {
        let binary = format!("target/release/{}", spec.package);
        let dest = format!("{}/{}", settings.bin_dir, spec.package);
        let args: String = deploy.args.iter().map(|arg| format!(" --arg={arg}")).collect();
        out.push_str(&format!(
            "\x20     # Atomic swap, restart through the unit when one owns the process, health check, rollback.\n\
             \x20     # The key comes from the repository secret through the environment, never the command line.\n\
             \x20     - name: Deploy\n\
             \x20       if: github.ref == 'refs/heads/{branch}'\n\
             \x20       env:\n\
             \x20         GBO_CI_SSH_KEY: ${{{{ secrets.{secret} }}}}\n\
             \x20       run: >-\n\
             \x20         gbo-ci deploy --host {host} --binary {binary} --dest {dest}\n\
             \x20         --owner {owner} --health http://localhost:{port}{path} --keep {keep}\n\
             \x20         --log {log_dir}/{log_file}{args}\n\
             \x20     - name: Verify\n\
             \x20       if: github.ref == 'refs/heads/{branch}'\n\
             \x20       env:\n\
             \x20         GBO_CI_SSH_KEY: ${{{{ secrets.{secret} }}}}\n\
             \x20       run: gbo-ci verify --host {host} --binary {binary} --dest {dest}\n",
            branch = settings.branch,
            secret = settings.key_secret,
            host = settings.host,
            owner = settings.owner,
            port = deploy.port,
            path = deploy.health_path,
            keep = settings.keep,
            log_dir = settings.log_dir,
            log_file = deploy.log_file,
        ));
    }
    out
}

/// The submodules (name, path) listed in `<root>/.gitmodules`.
pub fn submodules(root: &Path) -> Result<Vec<(String, String)>> {
    let file = root.join(".gitmodules");
    let text = std::fs::read_to_string(&file).map_err(|error| Error::io("reading", &file, error))?;
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(value) = line.strip_prefix("path").map(str::trim_start).and_then(|rest| rest.strip_prefix('=')) {
            let path = value.trim().to_string();
            let name = path.rsplit('/').next().unwrap_or(&path).to_string();
            found.push((name, path));
        }
    }
    Ok(found)
}

/// One rendered file.
#[derive(Debug, Clone, Serialize)]
pub struct RenderedFile {
    /// Where it belongs (or was written).
    pub path: PathBuf,
    /// The YAML.
    pub contents: String,
    /// Whether the workflow deploys.
    pub deploys: bool,
}

/// Render (and, when `write`, write) the workflow of each submodule of `root`, optionally only those named.
pub fn render_all(root: &Path, settings: &RenderSettings, only: &[String], write: bool) -> Result<Vec<RenderedFile>> {
    let mut rendered = Vec::new();
    let all = submodules(root)?;
    for wanted in only {
        if !all.iter().any(|(name, path)| name == wanted || path == wanted) {
            let known: Vec<&str> = all.iter().map(|(name, _)| name.as_str()).collect();
            return Err(Error::invalid("--submodule", wanted.clone(), format!("one of: {}", known.join(", "))));
        }
    }
    for (name, path) in all {
        if !only.is_empty() && !only.iter().any(|wanted| *wanted == name || *wanted == path) {
            continue;
        }
        let spec = spec_for(&name);
        let contents = render(&spec, settings);
        // The file must be valid YAML with the structure Forgejo reads; a rendering bug must not be written.
        let parsed: serde_yaml::Value = serde_yaml::from_str(&contents).map_err(|error| Error::InvalidInput {
            what: "rendered workflow",
            value: name.clone(),
            allowed: format!("valid YAML ({error})"),
        })?;
        debug_assert!(parsed.get("jobs").is_some());
        let file = root.join(&path).join(".forgejo").join("workflows").join(format!("{name}.yaml"));
        if write {
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(|error| Error::io("creating", parent, error))?;
            }
            std::fs::write(&file, &contents).map_err(|error| Error::io("writing", &file, error))?;
        }
        rendered.push(RenderedFile { path: file, contents, deploys: spec.deploy.is_some() });
    }
    Ok(rendered)
}

/// One problem found in a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The workflow file.
    pub file: PathBuf,
    /// 1-based line of the offending text.
    pub line: usize,
    /// Rule identifier.
    pub rule: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

struct Rule {
    id: &'static str,
    needles: &'static [&'static str],
    message: &'static str,
}

const RULES: &[Rule] = &[
    Rule {
        id: "strict-host-key-checking-off",
        needles: &["StrictHostKeyChecking=no", "StrictHostKeyChecking no", "UserKnownHostsFile=/dev/null"],
        message: "host key checking is disabled: anyone on the path can impersonate the target; record the key once \
                  (gbo-ci deploy --accept-new-host-key) and keep checking it",
    },
    Rule {
        id: "systemctl-stop",
        needles: &["systemctl stop"],
        message: "never `systemctl stop` in a deploy: it leaves the service down if anything after it fails; \
                  gbo-ci deploy swaps first and restarts through the unit only when one owns the process",
    },
    Rule {
        id: "pkill",
        needles: &["pkill ", "killall "],
        message: "killing by pattern (`pkill -f /opt/gbo/bin/botserver`) also matches the shell running the command \
                  and anything else with that text; gbo-ci deploy stops the process by its exact executable path",
    },
];

/// Lint one workflow text.
pub fn check_text(file: &Path, text: &str) -> Result<Vec<Finding>> {
    let document: serde_yaml::Value = serde_yaml::from_str(text).map_err(|error| Error::InvalidInput {
        what: "workflow file",
        value: file.display().to_string(),
        allowed: format!("valid YAML ({error})"),
    })?;
    let mut findings = Vec::new();
    let line_of = |needle: &str| -> usize {
        text.lines().position(|line| line.contains(needle)).map(|index| index + 1).unwrap_or(1)
    };
    // Host key checking can be switched off anywhere (env, ssh options written by a step), so the whole text counts.
    for rule in RULES {
        for needle in rule.needles {
            if text.contains(needle) {
                findings.push(Finding {
                    file: file.to_path_buf(),
                    line: line_of(needle),
                    rule: rule.id,
                    message: rule.message.into(),
                });
                break;
            }
        }
    }
    for run in run_blocks(&document) {
        for command in run.lines().flat_map(|line| line.split(&[';', '&', '|'][..])) {
            let words: Vec<&str> = command.split_whitespace().collect();
            let Some(tool) = words.first() else { continue };
            if *tool != "scp" && *tool != "rsync" {
                continue;
            }
            let Some(destination) =
                words.iter().skip(1).rev().find(|word| !word.starts_with('-') && word.contains(':'))
            else {
                continue;
            };
            let remote_path = destination.split_once(':').map(|(_, path)| path).unwrap_or_default();
            let renamed_later =
                run.contains(&format!("mv {remote_path}")) || run.contains("mv -f") || run.contains("mv -T");
            if !renamed_later {
                findings.push(Finding {
                    file: file.to_path_buf(),
                    line: line_of(destination),
                    rule: "copy-over-running-binary",
                    message: format!(
                        "`{tool}` writes straight onto {destination}: without an upload beside it and an atomic rename \
                         the copy fails with `dest open: Failure` (text file busy) while the binary runs, or the \
                         service runs a half-written file; use gbo-ci deploy"
                    ),
                });
            }
        }
    }
    findings.sort_by(|a, b| a.line.cmp(&b.line).then(a.rule.cmp(b.rule)));
    Ok(findings)
}

fn run_blocks(document: &serde_yaml::Value) -> Vec<String> {
    let mut runs = Vec::new();
    let Some(jobs) = document.get("jobs").and_then(serde_yaml::Value::as_mapping) else { return runs };
    for (_, job) in jobs {
        let Some(steps) = job.get("steps").and_then(serde_yaml::Value::as_sequence) else { continue };
        for step in steps {
            if let Some(run) = step.get("run").and_then(serde_yaml::Value::as_str) {
                runs.push(run.to_string());
            }
        }
    }
    runs
}

/// The workflow files to lint under `path`: the file itself, or `*.yaml`/`*.yml` in every `.forgejo/workflows`
/// directory below it (submodules included).
pub fn workflow_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        return Err(Error::invalid("path", path.display().to_string(), "an existing workflow file or directory"));
    }
    let mut files = Vec::new();
    walk(path, &mut files, 0)?;
    files.sort();
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, depth: usize) -> Result<()> {
    if depth > 6 {
        return Ok(());
    }
    let entries = std::fs::read_dir(dir).map_err(|error| Error::io("listing", dir, error))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if name == "target" || name == ".git" || name == "node_modules" {
                continue;
            }
            walk(&path, files, depth + 1)?;
        } else if (name.ends_with(".yaml") || name.ends_with(".yml"))
            && path.parent().is_some_and(|parent| parent.ends_with(".forgejo/workflows"))
        {
            files.push(path);
        }
    }
    Ok(())
}

/// The result of `workflow check` (`--output json` prints this shape).
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The workflow files read.
    pub checked: Vec<PathBuf>,
    /// What was found in them; empty when all is well.
    pub findings: Vec<Finding>,
}

/// Lint every workflow under `paths`.
pub fn check_paths(paths: &[PathBuf]) -> Result<CheckReport> {
    let mut checked = Vec::new();
    let mut findings = Vec::new();
    for path in paths {
        for file in workflow_files(path)? {
            let text = std::fs::read_to_string(&file).map_err(|error| Error::io("reading", &file, error))?;
            findings.extend(check_text(&file, &text)?);
            checked.push(file);
        }
    }
    Ok(CheckReport { checked, findings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn botserver_workflow_snapshot() {
        let text = render(&spec_for("botserver"), &RenderSettings::default());
        insta::assert_snapshot!("botserver", text);
    }

    #[test]
    fn botui_workflow_snapshot() {
        insta::assert_snapshot!("botui", render(&spec_for("botui"), &RenderSettings::default()));
    }

    #[test]
    fn library_workflow_snapshot() {
        insta::assert_snapshot!("library", render(&spec_for("botlib"), &RenderSettings::default()));
    }

    #[test]
    fn rendered_workflows_parse_and_pass_the_lint() {
        for name in ["botserver", "botui", "botlib"] {
            let text = render(&spec_for(name), &RenderSettings::default());
            let value: serde_yaml::Value = serde_yaml::from_str(&text).expect("from_str");
            let steps = value["jobs"]["build-test-deploy"]["steps"].as_sequence().expect("as_sequence");
            assert!(steps.len() >= 3, "{name}");
            assert_eq!(value["on"]["push"]["branches"][0], "main");
            assert_eq!(check_text(Path::new("x.yaml"), &text).expect("check_text"), Vec::new(), "{name}");
        }
        let text = render(&spec_for("botserver"), &RenderSettings::default());
        let value: serde_yaml::Value = serde_yaml::from_str(&text).expect("from_str");
        let deploy = &value["jobs"]["build-test-deploy"]["steps"][3];
        assert_eq!(deploy["env"]["GBO_CI_SSH_KEY"], "${{ secrets.GBO_DEPLOY_SSH_KEY }}");
        let run = deploy["run"].as_str().expect("as_str");
        assert!(run.starts_with("gbo-ci deploy --host pragmatismo-system"), "{run}");
        assert!(run.contains("--arg=--noconsole") && !run.contains('\n'), "{run}");
    }

    const SEED_WORKFLOW: &str = r#"
name: botserver
on: [push]
jobs:
  build:
    runs-on: ubuntu
    steps:
      - uses: actions/checkout@v4
      - run: cargo build -p botserver
      - name: Deploy via SSH
        run: |
          ssh -o StrictHostKeyChecking=no pragmatismo-system "pkill -f /opt/gbo/bin/botserver || true; sleep 2"
          scp target/debug/botserver pragmatismo-system:/opt/gbo/bin/botserver
          ssh pragmatismo-system "chmod +x /opt/gbo/bin/botserver && cd /opt/gbo/bin && nohup sudo -u gbuser ./botserver --noconsole >> /opt/gbo/logs/error.log 2>&1 &"
      - name: Restart
        run: ssh pragmatismo-system systemctl stop system.service
"#;

    #[test]
    fn the_seed_deploy_step_is_flagged() {
        let findings = check_text(Path::new("botserver.yaml"), SEED_WORKFLOW).expect("check_text");
        let rules: Vec<(&str, usize)> = findings.iter().map(|f| (f.rule, f.line)).collect();
        assert_eq!(
            rules,
            vec![
                ("pkill", 12),
                ("strict-host-key-checking-off", 12),
                ("copy-over-running-binary", 13),
                ("systemctl-stop", 16)
            ]
        );
    }

    #[test]
    fn an_upload_beside_and_rename_is_accepted() {
        let text = "jobs:\n  d:\n    steps:\n      - run: |\n          scp bin h:/opt/gbo/bin/.botserver.new\n          ssh h mv -f /opt/gbo/bin/.botserver.new /opt/gbo/bin/botserver\n";
        assert_eq!(check_text(Path::new("x.yaml"), text).expect("check_text"), Vec::new());
    }

    #[test]
    fn invalid_yaml_is_bad_input() {
        let error = check_text(Path::new("broken.yaml"), "jobs: [unclosed").unwrap_err();
        assert!(error.to_string().contains("broken.yaml"), "{error}");
    }
}
