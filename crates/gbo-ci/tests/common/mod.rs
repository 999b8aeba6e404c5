//! Shared fixtures for the integration tests: a real OpenSSH server on 127.0.0.1 with a temporary host key and an
//! authorised test key, and a real "botserver" (a copy of the system's python3 ELF binary running a small HTTP
//! server) whose health answer is baked into the binary's own bytes, so that two builds really differ.
//!
//! Every fixture lives in its own temporary directory and uses its own free ports, so tests run in parallel.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Fail (never skip) when a program the tests need is missing (or not on the host program list).
pub fn require(program: &str) {
    gbo_tests::programs::require_program(program);
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "gbo-ci-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "ssh-keygen failed");
}

/// A running `/usr/sbin/sshd -D` on 127.0.0.1 with its own keys and config.
pub struct Sshd {
    /// Everything of this fixture lives here (mode 0755 so the service user can read the test program).
    pub dir: tempfile::TempDir,
    /// The sshd port.
    pub port: u16,
    /// The client's private key.
    pub client_key: PathBuf,
    /// A client ssh config with `Host testhost` pointing at this server.
    pub ssh_config: PathBuf,
    /// known_hosts holding this server's key.
    pub known_hosts: PathBuf,
    /// The server's public host key line (`ssh-ed25519 AAAA...`).
    pub host_key_line: String,
    child: Child,
}

impl Sshd {
    /// Start a server; retries on a port race.
    pub fn start() -> Sshd {
        Self::start_with("")
    }

    /// Start a server with `extra` lines appended to its sshd_config.
    pub fn start_with(extra: &str) -> Sshd {
        require("/usr/sbin/sshd");
        require("ssh-keygen");
        // sshd refuses to start without its privilege separation directory (normally made by the init script).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let dir = tempfile::Builder::new().prefix("gbo-ci-test-").tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let host_key = dir.path().join("host_ed25519");
        let client_key = dir.path().join("client_ed25519");
        keygen(&host_key);
        keygen(&client_key);
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(dir.path().join("client_ed25519.pub"), &authorized).unwrap();
        let host_key_line = std::fs::read_to_string(dir.path().join("host_ed25519.pub")).unwrap();
        let host_key_line = host_key_line.split_whitespace().take(2).collect::<Vec<_>>().join(" ");

        for _attempt in 0..5 {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "ListenAddress 127.0.0.1\nPort {port}\nHostKey {host}\nPidFile {dir}/sshd.pid\n\
                     AuthorizedKeysFile {authorized}\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                     AllowTcpForwarding yes\nSubsystem sftp internal-sftp\nLogLevel ERROR\nMaxStartups 50\n\
                     MaxSessions 50\n{extra}",
                    host = host_key.display(),
                    dir = dir.path().display(),
                    authorized = authorized.display(),
                ),
            )
            .unwrap();
            let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
            let mut child = Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            if wait_for_banner(port, &mut child) {
                let known_hosts = dir.path().join("known_hosts");
                std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {host_key_line}\n")).unwrap();
                let ssh_config = dir.path().join("ssh_config");
                std::fs::write(
                    &ssh_config,
                    format!(
                        "Host testhost\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {key}\n  \
                         UserKnownHostsFile {known}\n",
                        key = client_key.display(),
                        known = known_hosts.display()
                    ),
                )
                .unwrap();
                return Sshd { dir, port, client_key, ssh_config, known_hosts, host_key_line, child };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default();
        panic!("sshd did not start: {log}");
    }

    /// A path inside this fixture's directory.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Make a directory (and parents) readable by everyone.
    pub fn mkdir(&self, relative: &str) -> PathBuf {
        let path = self.path(relative);
        std::fs::create_dir_all(&path).unwrap();
        let mut current = path.clone();
        while current != self.dir.path() {
            chmod(&current, 0o755);
            current = current.parent().unwrap().to_path_buf();
        }
        path
    }

    /// `gbo-ci` with a clean environment pointing at this server (`--host testhost` resolves through the config).
    pub fn gbo_ci(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gbo-ci"));
        command.env_remove("SSH_AUTH_SOCK").env_remove("GBO_CI_SSH_KEY").env("HOME", self.dir.path());
        command
    }

    /// The connection flags for `testhost`.
    pub fn connect_args(&self) -> Vec<String> {
        vec!["--host".into(), "testhost".into(), "--ssh-config".into(), self.ssh_config.display().to_string()]
    }

    /// Library connect options for `testhost`.
    pub fn connect_options(&self) -> gbo_ci::ssh::ConnectOptions {
        let mut options = gbo_ci::ssh::ConnectOptions::new("testhost");
        options.ssh_config = Some(self.ssh_config.clone());
        options.home = self.dir.path().to_path_buf();
        options
    }

    /// A build of the botserver in this fixture's `build/` directory.
    pub fn build(&self, name: &str, health: u16, version: &str) -> PathBuf {
        let path = self.mkdir("build").join(name);
        make_botserver(&path, health, version, 0);
        path
    }

    /// `gbo-ci deploy` of `binary` to `dest` as `nobody`, polling `health` (deadline 15 s unless `extra` sets one),
    /// not started.
    pub fn deploy_command(&self, binary: &Path, dest: &Path, health: &str, extra: &[&str]) -> Command {
        let mut command = self.gbo_ci();
        command
            .arg("deploy")
            .args(self.connect_args())
            .arg("--binary")
            .arg(binary)
            .arg("--dest")
            .arg(dest)
            .args(["--owner", "nobody", "--health", health])
            .args(extra);
        if !extra.contains(&"--health-timeout") {
            command.args(["--health-timeout", "15"]);
        }
        command
    }

    /// `gbo-ci rollback` of `dest` with `extra` flags, not started.
    pub fn rollback_command(&self, dest: &Path, extra: &[&str]) -> Command {
        let mut command = self.gbo_ci();
        command.arg("rollback").args(self.connect_args()).arg("--dest").arg(dest).args(extra);
        command
    }

    /// A real ssh-agent holding the client key, and its socket.
    pub fn agent(&self) -> (Child, PathBuf) {
        require("ssh-agent");
        require("ssh-add");
        let socket = self.path("agent.sock");
        let agent = Command::new("ssh-agent").arg("-D").arg("-a").arg(&socket).stdout(Stdio::null()).spawn().unwrap();
        // The socket file appears when the agent binds it, a moment before it listens: wait until `ssh-add -l`
        // reaches it (exit 2 is "cannot connect").
        let listening = || {
            let list = Command::new("ssh-add").arg("-l").env("SSH_AUTH_SOCK", &socket).output().unwrap();
            list.status.code() != Some(2)
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(socket.exists() && listening()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let added = Command::new("ssh-add").arg(&self.client_key).env("SSH_AUTH_SOCK", &socket).output().unwrap();
        assert!(added.status.success(), "{}", describe(&added));
        (agent, socket)
    }
}

/// The health URL of a botserver on `port`.
pub fn health_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/api/health")
}

/// The names in a directory, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Library options for a deploy of `binary` to `dest` as `nobody`, keeping `keep` releases.
pub fn deploy_options(binary: &Path, dest: &Path, health: &str, keep: usize) -> gbo_ci::deploy::DeployOptions {
    gbo_ci::deploy::DeployOptions {
        binary: binary.to_path_buf(),
        dest: dest.display().to_string().parse().unwrap(),
        owner: "nobody".parse().unwrap(),
        health: health.parse().unwrap(),
        keep,
        start: Default::default(),
        unit: None,
        health_timeout: Duration::from_secs(15),
        stop_timeout: Duration::from_secs(5),
        restart_timeout: Duration::from_secs(65),
        lock_wait: Duration::from_secs(10),
    }
}

fn wait_for_banner(port: u16, child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut banner = [0_u8; 8];
            if stream.read_exact(&mut banner).is_ok() && banner.starts_with(b"SSH-2.0") {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Drop for Sshd {
    fn drop(&mut self) {
        kill_processes_under(self.dir.path());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGKILL every process whose executable lives under `dir` (the botservers a test started or deployed).
pub fn kill_processes_under(dir: &Path) {
    let prefix = dir.display().to_string();
    for pid in pids_where(|exe| exe.starts_with(&prefix)) {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
}

/// PIDs whose `/proc/PID/exe` target satisfies `matches`.
pub fn pids_where(matches: impl Fn(&str) -> bool) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(target) = std::fs::read_link(entry.path().join("exe")) {
            if matches(&target.display().to_string()) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// The test botserver's program: serves `/api/health` with the status baked into its own executable.
pub const SERVER_PY: &str = r#"
import http.server, os, re, signal, socket, sys
port = int(sys.argv[1])
with open('/proc/self/exe', 'rb') as exe:
    exe.seek(0, 2)
    size = exe.tell()
    exe.seek(max(0, size - 512))
    tail = exe.read()
found = re.search(rb'GBO-TEST health=(\d+) version=(\S+)([^\n]*)', tail)
code, version, flags = int(found.group(1)), found.group(2).decode(), found.group(3).decode().split()
for flag in flags:
    if flag.startswith('exit='):
        print(f'botserver {version} exits with {flag[5:]}', flush=True)
        sys.exit(int(flag[5:]))
if 'term=ignore' in flags:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (version + '\n').encode()
        self.send_response(code if self.path.startswith('/api/health') else 200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    allow_reuse_address = True

print(f'botserver {version} listening on {port}, health {code}', flush=True)
server = Server(('127.0.0.1', port), Handler)
notify = os.environ.get('NOTIFY_SOCKET')
if notify and 'notify=never' not in flags:
    # Type=notify units: ready once listening (a build with notify=never never says so).
    if notify.startswith('@'):
        notify = '\0' + notify[1:]
    ready = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ready.connect(notify)
    ready.send(b'READY=1')
    ready.close()
server.serve_forever()
"#;

/// Build a "botserver" binary at `path`: the python3 ELF with a trailer naming its health status and version,
/// padded with zeros to at least `min_size` bytes.
pub fn make_botserver(path: &Path, health: u16, version: &str, min_size: usize) {
    make_botserver_with(path, health, version, "", min_size);
}

/// [`make_botserver`] with behaviour flags in the trailer: `exit=N` (exit at once with status N), `term=ignore`
/// (ignore SIGTERM), `notify=never` (never tell systemd it is ready).
pub fn make_botserver_with(path: &Path, health: u16, version: &str, flags: &str, min_size: usize) {
    require("python3");
    let python = std::fs::canonicalize("/usr/bin/python3").unwrap();
    let mut bytes = std::fs::read(python).unwrap();
    let trailer = format!("\nGBO-TEST health={health} version={version} {flags}\n");
    if bytes.len() + trailer.len() < min_size {
        bytes.resize(min_size - trailer.len(), 0);
    }
    bytes.extend_from_slice(trailer.as_bytes());
    std::fs::write(path, bytes).unwrap();
    chmod(path, 0o755);
}

/// Write the server program into the fixture and return its path.
pub fn write_server_script(sshd: &Sshd) -> PathBuf {
    let path = sshd.mkdir("app").join("server.py");
    std::fs::write(&path, SERVER_PY).unwrap();
    chmod(&path, 0o644);
    path
}

/// Start `binary script port` as `nobody`, detached, output to `log`, as the seed's hand-run setup does.
pub fn start_as_nobody(binary: &Path, script: &Path, port: u16, log: &Path) -> Child {
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let child = Command::new(binary)
        .arg(script)
        .arg(port.to_string())
        .current_dir(binary.parent().unwrap())
        .uid(65534)
        .gid(65534)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    wait_http(port, Duration::from_secs(10));
    child
}

/// GET `path` on 127.0.0.1:`port`: status and body, or `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().trim().to_string();
    Some((status, body))
}

/// Wait until anything answers HTTP on `port`.
pub fn wait_http(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if http_get(port, "/").is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing answered on 127.0.0.1:{port} within {timeout:?}");
}

/// SHA-256 of a local file, through the system's sha256sum.
pub fn sha256(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(output.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The service user of the tests: `nobody` (uid and gid 65534), who owns the deploy directory and runs the
/// botserver, as `gbuser` does on the seed's hosts.
pub const SERVICE_UID: u32 = 65534;

/// Run a Python snippet as the service user (arguments in `sys.argv[1:]`): how the tests plant links, FIFOs and
/// renames in the directories that user owns, with exactly that user's rights.
pub fn as_service_user(code: &str, args: &[&Path]) -> Output {
    require("python3");
    Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(code)
        .args(args)
        .uid(SERVICE_UID)
        .gid(SERVICE_UID)
        .env_clear()
        .output()
        .unwrap()
}

/// The service user makes `link` a symbolic link to `target` (replacing whatever `link` was, as its directory's
/// owner may); panics when that fails.
pub fn plant_symlink(target: &Path, link: &Path) {
    let output = as_service_user(
        "import os, sys\ntry:\n    os.unlink(sys.argv[2])\nexcept FileNotFoundError:\n    pass\nos.symlink(sys.argv[1], sys.argv[2])",
        &[target, link],
    );
    assert!(output.status.success(), "planting {} -> {}: {}", link.display(), target.display(), describe(&output));
}

/// Make `path` (and only it) belong to the service user.
pub fn give_to_service_user(path: &Path) {
    std::os::unix::fs::lchown(path, Some(SERVICE_UID), Some(SERVICE_UID)).unwrap();
}
