//! `cargo xtask bench ci`: deploy a 50 MB binary with `gbo-ci deploy` versus the runbook's sequence
//! (`ssh pkill`, `scp`, `ssh chmod && nohup`) on the same real sshd (127.0.0.1, temporary keys), interleaved A/B.
//!
//! The "botserver" is a copy of the system's python3 ELF binary padded to 50 MB, running a small HTTP server whose
//! `/api/health` answers with the version baked into the binary's last bytes. A poller thread GETs the health URL
//! every 5 ms during each deploy; the downtime window is the time from the first failed probe to the first answer
//! from the new version, measured the same way for both variants.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::report::{self, Samples};

const ROUNDS: usize = 5;
const SIZE: usize = 50 * 1024 * 1024;

const SERVER_PY: &str = r#"
import http.server, re, sys
port = int(sys.argv[1])
with open('/proc/self/exe', 'rb') as exe:
    exe.seek(0, 2); size = exe.tell(); exe.seek(max(0, size - 512)); tail = exe.read()
version = re.search(rb'GBO-BENCH version=(\S+)', tail).group(1).decode()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = version.encode()
        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args): pass
class Server(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
Server(('127.0.0.1', port), Handler).serve_forever()
"#;

/// A uniquely named directory under the system temp dir, removed on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
        let path = std::env::temp_dir().join(format!("gbo-ci-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path)?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Fixture {
    dir: ScratchDir,
    sshd: Child,
    ssh_config: PathBuf,
    dest: PathBuf,
    script: PathBuf,
    log: PathBuf,
    port: u16,
    python: Vec<u8>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let prefix = self.dir.path().display().to_string();
        for pid in pids_running_under(&prefix) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
    }
}

fn pids_running_under(prefix: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            if let Ok(exe) = std::fs::read_link(entry.path().join("exe")) {
                if exe.display().to_string().starts_with(prefix) {
                    pids.push(pid);
                }
            }
        }
    }
    pids
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn keygen(path: &Path) -> anyhow::Result<()> {
    let status = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(path).status()?;
    if !status.success() {
        bail!("ssh-keygen failed");
    }
    Ok(())
}

fn chmod(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

impl Fixture {
    fn start() -> anyhow::Result<Fixture> {
        for program in ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/scp", "/usr/bin/python3"] {
            if !Path::new(program).exists() {
                bail!("{program} is required for the ci benchmark");
            }
        }
        std::fs::create_dir_all("/run/sshd")?;
        let dir = ScratchDir::new()?;
        let root = dir.path().to_path_buf();
        chmod(&root, 0o755)?;
        let host_key = root.join("host_ed25519");
        let client_key = root.join("client_ed25519");
        keygen(&host_key)?;
        keygen(&client_key)?;
        std::fs::copy(root.join("client_ed25519.pub"), root.join("authorized_keys"))?;
        let port = free_port()?;
        std::fs::write(
            root.join("sshd_config"),
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nPidFile {}/sshd.pid\nAuthorizedKeysFile {}/authorized_keys\n\
                 StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nAllowTcpForwarding yes\nSubsystem sftp internal-sftp\nLogLevel ERROR\n",
                host_key.display(),
                root.display(),
                root.display()
            ),
        )?;
        let sshd = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(root.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut banner = [0_u8; 7];
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
                if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-2.0" {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("sshd did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let host_pub = std::fs::read_to_string(root.join("host_ed25519.pub"))?;
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        std::fs::write(root.join("known_hosts"), format!("[127.0.0.1]:{port} {}\n", host_pub.join(" ")))?;
        let ssh_config = root.join("ssh_config");
        std::fs::write(
            &ssh_config,
            format!(
                "Host testhost\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {}\n  UserKnownHostsFile {}\n  \
                 BatchMode yes\n  StrictHostKeyChecking yes\n",
                client_key.display(),
                root.join("known_hosts").display()
            ),
        )?;
        for sub in ["opt", "opt/gbo", "opt/gbo/bin", "opt/gbo/logs", "app", "build"] {
            std::fs::create_dir_all(root.join(sub))?;
            chmod(&root.join(sub), 0o755)?;
        }
        let script = root.join("app/server.py");
        std::fs::write(&script, SERVER_PY)?;
        chmod(&script, 0o644)?;
        let python = std::fs::read(std::fs::canonicalize("/usr/bin/python3")?)?;
        let fixture = Fixture {
            sshd,
            ssh_config,
            dest: root.join("opt/gbo/bin/botserver"),
            script,
            log: root.join("opt/gbo/logs/error.log"),
            port: free_port()?,
            python,
            dir,
        };
        // The first release, running as `nobody` from its absolute path, as a hand-run botserver.
        fixture.build(&fixture.dest, "v0")?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&fixture.log)?;
        // The release runs as nobody and reopens its log on every start (gbo-ci checks that it can): nobody owns it,
        // as on a botserver host.
        std::os::unix::fs::chown(&fixture.log, Some(65534), Some(65534))?;
        Command::new(&fixture.dest)
            .arg(&fixture.script)
            .arg(fixture.port.to_string())
            .current_dir(root.join("opt/gbo/bin"))
            .uid(65534)
            .gid(65534)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        fixture.wait_version("v0", Duration::from_secs(10))?;
        Ok(fixture)
    }

    /// Write a 50 MB build whose health answers `version`.
    fn build(&self, path: &Path, version: &str) -> anyhow::Result<()> {
        let trailer = format!("\nGBO-BENCH version={version}\n");
        let mut bytes = self.python.clone();
        bytes.resize(SIZE - trailer.len(), 0);
        bytes.extend_from_slice(trailer.as_bytes());
        std::fs::write(path, bytes)?;
        chmod(path, 0o755)?;
        Ok(())
    }

    fn wait_version(&self, version: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if probe(self.port).as_deref() == Some(version) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!("version {version} never answered on port {}", self.port)
    }

    fn ssh(&self, command: &str) -> anyhow::Result<i32> {
        let status = Command::new("ssh")
            .arg("-F")
            .arg(&self.ssh_config)
            .args(["testhost", command])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        Ok(status.code().unwrap_or(-1))
    }
}

fn probe(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    stream.write_all(b"GET /api/health HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    if !response.starts_with("HTTP/1.0 200") && !response.starts_with("HTTP/1.1 200") {
        return None;
    }
    response.split("\r\n\r\n").nth(1).map(|body| body.trim().to_string())
}

/// Probe every 5 ms until stopped; returns the downtime window (first failure to first answer of `new_version`).
fn poll_downtime(port: u16, new_version: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Option<Duration>> {
    std::thread::spawn(move || {
        let mut first_failure: Option<Instant> = None;
        loop {
            let answer = probe(port);
            let now = Instant::now();
            match answer {
                Some(version) if version == new_version => {
                    return Some(first_failure.map(|since| now - since).unwrap_or(Duration::ZERO));
                }
                Some(_) => {}
                None => {
                    first_failure.get_or_insert(now);
                }
            }
            if stop.load(Ordering::Relaxed) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

fn gbo_ci_binary() -> anyhow::Result<PathBuf> {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    eprintln!("building gbo-ci (release)...");
    duct::cmd!("cargo", "build", "--release", "--quiet", "-p", "gbo-ci").dir(&workspace).run()?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace.join("target"));
    let binary = target.join("release").join("gbo-ci");
    if !binary.exists() {
        bail!("{} was not built", binary.display());
    }
    Ok(binary)
}

/// Run the benchmark and return its markdown section.
pub async fn run() -> anyhow::Result<String> {
    let gbo_ci = gbo_ci_binary()?;
    let fixture = Fixture::start()?;
    let mut ours = Samples::default();
    let mut seed = Samples::default();
    let mut ours_downtime = Vec::new();
    let mut seed_downtime = Vec::new();
    let mut ours_reported = Vec::new();
    let mut ours_upload = Vec::new();
    let mut seed_pkill_status = Vec::new();
    let mut seed_start_returned = Vec::new();
    let dest = fixture.dest.display().to_string();
    let bin_dir = fixture.dest.parent().context("dest has a parent")?.display().to_string();
    let health = format!("http://127.0.0.1:{}/api/health", fixture.port);

    for round in 0..ROUNDS {
        // A: gbo-ci deploy.
        let version = format!("a{round}");
        let build = fixture.dir.path().join("build").join(format!("botserver-{version}"));
        fixture.build(&build, &version)?;
        let stop = Arc::new(AtomicBool::new(false));
        let poller = poll_downtime(fixture.port, version.clone(), stop.clone());
        let report: serde_json::Value = ours
            .time(|| async {
                let output = Command::new(&gbo_ci)
                    .args(["--output", "json", "deploy", "--host", "testhost", "--ssh-config"])
                    .arg(&fixture.ssh_config)
                    .arg("--binary")
                    .arg(&build)
                    .args(["--dest", &dest, "--owner", "nobody", "--health", &health, "--keep", "2"])
                    .env("HOME", fixture.dir.path())
                    .env_remove("SSH_AUTH_SOCK")
                    .output()?;
                if !output.status.success() {
                    bail!(
                        "gbo-ci deploy failed: {}{}",
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
                fixture.wait_version(&version, Duration::from_secs(30))?;
                Ok(serde_json::from_slice(&output.stdout)?)
            })
            .await?;
        stop.store(true, Ordering::Relaxed);
        ours_downtime.push(poller.join().map_err(|_| anyhow::anyhow!("poller panicked"))?.unwrap_or_default());
        ours_reported.push(Duration::from_millis(report["downtime_ms"].as_u64().unwrap_or(0)));
        ours_upload.push(Duration::from_millis(report["upload_ms"].as_u64().unwrap_or(0)));
        eprintln!("gbo-ci report: {report}");

        // B: the runbook's sequence, verbatim except `runuser -u` for `sudo -u` (no sudo on the test machines).
        let version = format!("b{round}");
        let build = fixture.dir.path().join("build").join(format!("botserver-{version}"));
        fixture.build(&build, &version)?;
        let stop = Arc::new(AtomicBool::new(false));
        let poller = poll_downtime(fixture.port, version.clone(), stop.clone());
        let pkill_status = seed
            .time(|| async {
                let pkill = fixture.ssh(&format!("pkill -f {dest} || true; sleep 2"))?;
                let scp = Command::new("scp")
                    .arg("-q")
                    .arg("-F")
                    .arg(&fixture.ssh_config)
                    .arg(&build)
                    .arg(format!("testhost:{dest}"))
                    .stdin(Stdio::null())
                    .status()?;
                if !scp.success() {
                    bail!("scp failed (round {round})");
                }
                // This ssh never returns by itself: the backgrounded `a && b && nohup c &` list is a subshell
                // that keeps the session's stdout open for as long as the server runs. Measure until the new
                // version answers, then close the client.
                let mut start = Command::new("ssh")
                    .arg("-F")
                    .arg(&fixture.ssh_config)
                    .arg("testhost")
                    .arg(format!(
                        "chmod +x {dest} && cd {bin_dir} && nohup runuser -u nobody -- ./botserver {} {} >> {} 2>&1 &",
                        fixture.script.display(),
                        fixture.port,
                        fixture.log.display()
                    ))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?;
                let healthy = fixture.wait_version(&version, Duration::from_secs(30));
                let returned = start.try_wait()?.is_some();
                let _ = start.kill();
                let _ = start.wait();
                healthy?;
                Ok((pkill, returned))
            })
            .await?;
        stop.store(true, Ordering::Relaxed);
        seed_downtime.push(poller.join().map_err(|_| anyhow::anyhow!("poller panicked"))?.unwrap_or_default());
        seed_pkill_status.push(pkill_status.0);
        seed_start_returned.push(pkill_status.1);
        // The seed starts `./botserver` (relative), which its own `pkill -f <absolute path>` can never match again;
        // the next A round finds the process by its executable path instead, so the rounds stay comparable.
        eprintln!("round {round}: gbo-ci {:?}, seed {:?}", ours.durations.last(), seed.durations.last());
    }

    // What one remote command costs on this sshd (login shell start-up included), for reading the totals.
    let mut round_trip = Samples::default();
    for _ in 0..5 {
        round_trip.time(|| async { fixture.ssh("true").map(|_| ()) }).await?;
    }
    let median = |values: &[Duration]| Samples { durations: values.to_vec() }.median();
    let raw = |values: &[Duration]| Samples { durations: values.to_vec() }.raw_ms();
    let mut out = String::new();
    out.push_str("## gbo-ci deploy versus the runbook's ssh/scp sequence\n\n");
    out.push_str(&report::stamp());
    out.push_str(&format!(
        "\nDeploy of a {} MB binary to a real OpenSSH server on 127.0.0.1 (temporary keys), interleaved A/B, {ROUNDS} \
         rounds each. The running program is a copy of python3's ELF binary padded to 50 MB serving `/api/health`; a \
         poller probes it every 5 ms. **Time** is from the start of the deploy to the new version answering; \
         **downtime** is from the first failed probe to the first answer of the new version.\n\n",
        SIZE / (1024 * 1024)
    ));
    out.push_str("| variant | median time | median downtime | time samples (ms) | downtime samples (ms) |\n");
    out.push_str("|---|---|---|---|---|\n");
    out.push_str(&format!(
        "| `gbo-ci deploy` (upload beside, sha256, swap, restart, health) | {} | {} | {} | {} |\n",
        report::ms(ours.median()),
        report::ms(median(&ours_downtime)),
        ours.raw_ms(),
        raw(&ours_downtime)
    ));
    out.push_str(&format!(
        "| runbook: `ssh pkill; sleep 2`, `scp`, `ssh chmod && nohup` | {} | {} | {} | {} |\n\n",
        report::ms(seed.median()),
        report::ms(median(&seed_downtime)),
        seed.raw_ms(),
        raw(&seed_downtime)
    ));
    out.push_str(&format!(
        "- Ratio (runbook / gbo-ci), total time: **{:.2}x**; downtime: **{:.1}x**.\n",
        report::ratio(seed.median(), ours.median()),
        report::ratio(median(&seed_downtime), median(&ours_downtime))
    ));
    out.push_str(&format!(
        "- Downtime reported by gbo-ci itself (old process signalled to health OK, probed through the SSH tunnel): \
         median {}.\n",
        report::ms(median(&ours_reported))
    ));
    out.push_str(&format!(
        "- gbo-ci's upload step (stream over the SSH channel plus `sync` of the 50 MB file on the remote): median {}.\n",
        report::ms(median(&ours_upload))
    ));
    out.push_str(&format!(
        "- Exit status of the runbook's `ssh \"pkill -f <path> || true; sleep 2\"` in each round: {:?}. A non-zero \
         status means `pkill -f` also killed the remote shell running the command (its command line contains the \
         pattern), so the `sleep 2` never ran and a `bash -e` workflow step would fail there.\n",
        seed_pkill_status
    ));
    out.push_str(&format!(
        "- Did the runbook's start command (`ssh host \"chmod +x … && cd … && nohup … >> log 2>&1 &\"`) return by \
         the time the new version answered? {:?}. It cannot: the backgrounded list is a subshell holding the SSH \
         session's stdout, so the step hangs for as long as the server runs; the benchmark stops its clock at the \
         first healthy answer and then closes that client.\n",
        seed_start_returned
    ));
    out.push_str(&format!(
        "- One `ssh testhost true` costs {} (median of 5) on this server; gbo-ci connects once and runs 6 \
         remote commands on that connection (inspect, take the target's lock, inspect under it, upload, \
         verify+swap, stop+start) plus tunnelled health probes, fsyncs the upload and checks its SHA-256 on \
         the remote; that verification is what its extra total time buys. The runbook's total is short only \
         because its `sleep 2` was killed along with the shell (see above) and because it stops the clock on a step \
         that never returns.\n",
        report::ms(round_trip.median())
    ));
    out.push_str(
        "- The runbook's downtime includes the whole upload: the old process is killed before `scp` starts. gbo-ci \
         uploads and verifies while the old process still serves, so its window is stop + exec + first healthy \
         answer.\n",
    );
    Ok(out)
}
