//! Verified migration against real PostgreSQL 15: a throw-away cluster on the host (loopback port, password
//! authentication) and the real one in a container from the test image (initdb'd by the test as `postgres`, data
//! in /opt/gbo/data/pgdata). Both directions, a broken target that differs in one value of one row, a non-empty
//! target (refused, or replaced after a snapshot of the container or a `pg_dump` backup of the host database), and
//! bad input.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use gbo_ops::events::Ignore;
use gbo_ops::migrate::{self, ContainerServer, Endpoint, HostServer, MigrateError, MigrateOptions};
use gbo_tests::TestContainer;
use lxd_client::ExecRequest;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const PASSWORD: &str = "gbot-Secret-pw-4821";

/// A host cluster owned by `postgres`, on 127.0.0.1 and a free port, with a password-protected superuser `gbot`.
struct HostCluster {
    dir: tempfile::TempDir,
    port: u16,
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().expect("sh");
    assert!(
        out.status.success(),
        "{cmd}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl HostCluster {
    fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Start after `prepare` had its say on the initialised data directory (certificates, `pg_hba.conf`, settings
    /// appended to `postgresql.conf`).
    fn start_with(prepare: impl FnOnce(&std::path::Path)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        std::fs::write(dir.path().join("pw"), PASSWORD).expect("pw");
        sh(&format!("chown -R postgres {d} && chmod 700 {d}"));
        let port = gbo_tests::free_port();
        sh(&format!("runuser -u postgres -- {PG_BIN}/initdb -D {d}/data -U gbot --pwfile={d}/pw --auth-host=scram-sha-256 --auth-local=scram-sha-256 >/dev/null"));
        prepare(&dir.path().join("data"));
        sh(&format!("chown -R postgres {d}/data"));
        sh(&format!(
            "runuser -u postgres -- {PG_BIN}/pg_ctl -D {d}/data -l {d}/log -w -t 60 -o \"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off\" start >/dev/null"
        ));
        Self { dir, port }
    }

    /// `psql` as another role of this cluster, with its password; the outcome as (success, stdout, stderr).
    fn psql_as(&self, user: &str, password: &str, db: &str, sql: &str) -> (bool, String, String) {
        let out = Command::new(format!("{PG_BIN}/psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", user, "-d", db, "-f", "-"])
            .env("PGPASSWORD", password)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child.stdin.take().expect("stdin").write_all(sql.as_bytes())?;
                child.wait_with_output()
            })
            .expect("psql");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )
    }

    fn server(&self) -> HostServer {
        // The password travels as libpq would take it from PGPASSWORD; here it is merged into the config in memory.
        HostServer::from_libpq(Some(&format!("postgresql://gbot:{PASSWORD}@127.0.0.1:{}", self.port)))
            .expect("conninfo")
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(format!("{PG_BIN}/psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "gbot",
                "-d",
                db,
                "-c",
                sql,
            ])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("psql");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for HostCluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &format!("{PG_BIN}/pg_ctl"),
                "-D",
                &format!("{}/data", self.dir.path().display()),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }
}

/// The host port the test containers publish their PostgreSQL on (a proxy device like the one `gbo install` adds).
const PUBLISHED_DEVICE: &str = "gbo-port-postgres";

/// PostgreSQL 15 inside a container from the test image, set up like the tables role: peer authentication on the
/// socket, SCRAM on 127.0.0.1, and the port published on the host's loopback by a proxy device.
async fn container_cluster(tag: &str) -> TestContainer {
    let port = gbo_tests::free_port();
    let device = lxd_client::DeviceName::new(PUBLISHED_DEVICE).expect("device name");
    let proxy = lxd_client::ProxyDevice::new(
        lxd_client::ProxyAddress::tcp("127.0.0.1", port),
        lxd_client::ProxyAddress::tcp("127.0.0.1", 5432),
    )
    .to_config(&device)
    .expect("proxy device");
    let c = TestContainer::create_with(tag, true, move |r| r.device(&device, proxy)).await;
    let script = format!(
        "set -e; mkdir -p /opt/gbo/data /var/run/postgresql; chown postgres /opt/gbo/data /var/run/postgresql; \
         runuser -u postgres -- {PG_BIN}/initdb -D /opt/gbo/data/pgdata --auth-local=peer --auth-host=scram-sha-256 >/dev/null; \
         runuser -u postgres -- {PG_BIN}/pg_ctl -D /opt/gbo/data/pgdata -l /opt/gbo/data/pg.log -w -t 60 -o \"-k /var/run/postgresql -c listen_addresses=127.0.0.1 -c fsync=off\" start >/dev/null"
    );
    let out = c
        .lxd
        .exec_output(&c.name, &ExecRequest::new(["sh", "-c", &script]).timeout(Duration::from_secs(120)))
        .await
        .expect("exec");
    assert!(out.success(), "container PostgreSQL: {}{}", out.stdout_text(), out.stderr_text());
    c
}

/// The host port a test container publishes its PostgreSQL on.
async fn published_port(c: &TestContainer) -> u16 {
    let instance = c.lxd.instance(&c.name).await.expect("instance");
    let listen = instance.expanded_devices.get(PUBLISHED_DEVICE).and_then(|d| d.get("listen")).expect("proxy device");
    listen.rsplit(':').next().and_then(|p| p.parse().ok()).expect("listen port")
}

/// Replace the program at `path` inside the container with `script` (a hostile or wrapped tool).
async fn replace_program(c: &TestContainer, path: &str, script: &str) {
    let install = format!("rm -f {path} && cat > {path} && chmod 755 {path}");
    let req = ExecRequest::new(["sh", "-c", install.as_str()]).stdin_bytes(script.to_string());
    let out = c.lxd.exec_output(&c.name, &req).await.expect("exec");
    assert!(out.success(), "{}", out.stderr_text());
}

async fn container_psql(c: &TestContainer, db: &str, sql: &str) -> String {
    let argv = [
        "runuser",
        "-u",
        "postgres",
        "--",
        "psql",
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "/var/run/postgresql",
        "-d",
        db,
        "-f",
        "-",
    ];
    let out = c.lxd.exec_output(&c.name, &ExecRequest::new(argv).stdin_bytes(sql.to_string())).await.expect("exec");
    assert!(out.success(), "{sql}: {}", out.stderr_text());
    out.stdout_text().trim().to_string()
}

/// The botserver database: an owner role, serial and bigserial sequences, an index, a foreign key, text with
/// quotes and newlines, jsonb, bytea, timestamptz and NULLs.
const SEED: &str = "
CREATE ROLE gbuser LOGIN;
CREATE DATABASE botserver OWNER gbuser;
\\connect botserver
SET ROLE gbuser;
CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL, created timestamptz NOT NULL DEFAULT now(), note text);
CREATE TABLE accounts (id bigserial PRIMARY KEY, user_id int REFERENCES users(id), balance numeric(12,2), data jsonb, blob bytea);
CREATE INDEX accounts_user ON accounts(user_id);
CREATE TABLE empty_table (x int);
INSERT INTO users (name, created, note) SELECT 'user ' || i || E' it''s \\n \"q\"', timestamptz '2024-01-01 00:00+02' + i * interval '1 minute', CASE WHEN i % 7 = 0 THEN NULL ELSE 'n' || i END FROM generate_series(1, 3000) i;
INSERT INTO accounts (user_id, balance, data, blob) SELECT 1 + i % 3000, i * 1.25, jsonb_build_object('i', i, 'tags', jsonb_build_array('a', i)), decode(md5(i::text), 'hex') FROM generate_series(1, 6000) i;
SELECT setval('users_id_seq', 4242);
";

fn seed_host(h: &HostCluster) {
    let file = h.dir.path().join("seed.sql");
    std::fs::write(&file, SEED).expect("seed");
    let out = Command::new(format!("{PG_BIN}/psql"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &h.port.to_string(),
            "-U",
            "gbot",
            "-d",
            "postgres",
            "-f",
        ])
        .arg(&file)
        .env("PGPASSWORD", PASSWORD)
        .output()
        .expect("psql");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The container side of a migration: exec for a target, the published port for a source.
async fn container_endpoint(c: &TestContainer) -> Endpoint {
    let server = ContainerServer::new(c.lxd.clone(), c.name.clone(), 5432);
    let instance = c.lxd.instance(&c.name).await.expect("instance");
    match instance.expanded_devices.contains_key(PUBLISHED_DEVICE) {
        true => Endpoint::Container(server.published("127.0.0.1", published_port(c).await)),
        false => Endpoint::Container(server),
    }
}

/// The spans named `copy` opened during a migration, each with the name of its parent span.
#[derive(Clone, Default)]
struct CopySpans(std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>);

impl<S> tracing_subscriber::Layer<S> for CopySpans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() == "copy" {
            let parent = ctx.span(id).and_then(|s| s.parent()).map(|p| p.name().to_string());
            self.0.lock().expect("lock").push(parent);
        }
    }
}

/// Each table is copied in a span of its own, under the migration's. A span guard (`span.enter()`) held across an
/// `.await` left a table's span entered while the other tables' copies ran on the same task, so their spans (and
/// every log line in them) nested in it.
#[tokio::test(flavor = "multi_thread")]
async fn each_table_is_copied_in_a_span_of_its_own() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let spans = CopySpans::default();
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let source = HostCluster::start();
    seed_host(&source);
    let c = container_cluster("migspan").await;
    let options = MigrateOptions::new("botserver");
    assert_eq!(options.jobs, 2, "two tables at a time");
    migrate::migrate(&Endpoint::Host(source.server()), &container_endpoint(&c).await, &options, None, None, &Ignore)
        .await
        .expect("migrate");
    let parents = spans.0.lock().expect("lock").clone();
    assert_eq!(parents.len(), 3, "one span per table: {parents:?}");
    assert!(parents.iter().all(|p| p.as_deref() != Some("copy")), "a table's span inside another's: {parents:?}");
    assert!(parents.iter().all(|p| p.as_deref() == Some("migrate")), "under the migration's span: {parents:?}");
}

/// Progress is typed: the library sends each phase of the database and each table's copy and verification to an
/// observer, a table's bytes a few times a second at most; `gbo migrate --output json` renders the same events as JSON
/// lines on stderr, with the report alone on stdout.
#[tokio::test(flavor = "multi_thread")]
async fn progress_is_typed_events_rendered_as_json_lines_by_the_cli() {
    use gbo_ops::migrate::{MigrateEvent, MigrateEventKind, Phase};
    let source = HostCluster::start();
    seed_host(&source);
    let c = container_cluster("migevents").await;
    let seen = std::sync::Mutex::new(Vec::new());
    let observer = |e: &MigrateEvent| seen.lock().expect("lock").push(e.clone());
    let started = std::time::Instant::now();
    let report = migrate::migrate(
        &Endpoint::Host(source.server()),
        &container_endpoint(&c).await,
        &MigrateOptions::new("botserver"),
        None,
        None,
        &observer,
    )
    .await
    .expect("local to container");
    let elapsed = started.elapsed();
    let events = seen.into_inner().expect("lock");
    let phases: Vec<(Phase, bool)> = events
        .iter()
        .filter(|e| e.subject == "botserver")
        .filter_map(|e| match e.kind {
            MigrateEventKind::PhaseStarted { phase } => Some((phase, true)),
            MigrateEventKind::PhaseDone { phase, .. } => Some((phase, false)),
            _ => None,
        })
        .collect();
    let expected: Vec<(Phase, bool)> = [Phase::Prepare, Phase::Schema, Phase::Copy, Phase::PostData, Phase::Verify]
        .into_iter()
        .flat_map(|p| [(p, true), (p, false)])
        .collect();
    assert_eq!(phases, expected);
    let names: Vec<&str> = report.phases.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["prepare", "schema", "copy", "post-data", "verify"]);
    let mut copied = 0;
    for table in &report.tables {
        let kinds: Vec<&MigrateEventKind> =
            events.iter().filter(|e| e.subject == table.table).map(|e| &e.kind).collect();
        let copying = kinds.iter().filter(|k| matches!(k, MigrateEventKind::Copying { .. })).count();
        let most = 1 + (elapsed.as_millis() / migrate::PROGRESS_EVERY.as_millis()) as usize;
        assert!(copying <= most, "{}: {copying} bytes events in {elapsed:?}", table.table);
        let milestones: Vec<&&MigrateEventKind> =
            kinds.iter().filter(|k| !matches!(k, MigrateEventKind::Copying { .. })).collect();
        match milestones.as_slice() {
            [MigrateEventKind::CopyStarted, MigrateEventKind::Copied { bytes, rows }, MigrateEventKind::Verified { rows: verified }] =>
            {
                assert_eq!((*rows, *verified), (table.rows, table.rows), "{}", table.table);
                copied += bytes;
            }
            other => panic!("{}: {other:?}", table.table),
        }
    }
    assert_eq!(copied, report.bytes, "the report counts the bytes the events saw");
    let last: Vec<&MigrateEventKind> = events.iter().rev().take(2).map(|e| &e.kind).collect();
    assert!(
        matches!(
            last.as_slice(),
            [MigrateEventKind::Done { tables: 3, bytes, .. }, MigrateEventKind::PhaseDone { phase: Phase::Verify, .. }]
                if *bytes == report.bytes
        ),
        "{last:?}"
    );
    assert!(events.iter().any(|e| e.kind == MigrateEventKind::AppRoleChecked { role: "gbuser".into(), problems: 0 }));

    // Back to a fresh host cluster through the CLI, with --output json.
    let back = HostCluster::start();
    let cli = tokio::task::spawn_blocking({
        let (name, port) = (c.name.to_string(), back.port);
        move || {
            Command::new(gbo_tests::gbo_bin())
                .args(["migrate", "container-to-local", "--container", &name, "--output", "json", "--host"])
                .arg(format!("postgresql://gbot@127.0.0.1:{port}"))
                .env("PGPASSWORD", PASSWORD)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("running gbo")
        }
    })
    .await
    .expect("gbo thread");
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert_eq!(cli.status.code(), Some(0), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&cli.stdout).expect("the report alone on stdout");
    assert_eq!(report["tables"].as_array().map(Vec::len), Some(3), "{report}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}\n{stderr}")))
        .collect();
    let verified: Vec<&str> =
        lines.iter().filter(|l| l["event"] == "verified").filter_map(|l| l["subject"].as_str()).collect();
    assert_eq!(verified.len(), 3, "{stderr}");
    for table in ["public.accounts", "public.empty_table", "public.users"] {
        assert!(verified.contains(&table), "{table}: {stderr}");
    }
    let done = lines.last().expect("events");
    assert_eq!((done["subject"].as_str(), done["event"].as_str()), (Some("botserver"), Some("done")), "{stderr}");
    assert_eq!(done["bytes"], report["bytes"]);
    assert!(!stderr.contains(PASSWORD), "the password is not echoed");
}

/// Break a target: every database created from template1 gets a trigger that changes one value of one row of
/// `accounts` while COPY loads it (same row count).
const BREAK_TEMPLATE: &str = "
CREATE FUNCTION gbot_corrupt() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.id = 4321 THEN NEW.balance := NEW.balance + 0.01; END IF; RETURN NEW; END $$;
CREATE FUNCTION gbot_attach() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE TABLE' LOOP
    IF r.object_identity = 'public.accounts' THEN
      EXECUTE 'CREATE TRIGGER gbot_corrupt BEFORE INSERT ON public.accounts FOR EACH ROW EXECUTE FUNCTION public.gbot_corrupt()';
    END IF;
  END LOOP;
END $$;
CREATE EVENT TRIGGER gbot_attach ON ddl_command_end EXECUTE FUNCTION gbot_attach();
";

fn checksum_host(h: &HostCluster) -> String {
    h.psql("botserver", "SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM accounts t")
}

#[tokio::test(flavor = "multi_thread")]
async fn host_to_container_and_back_verified_with_owners_and_sequences() {
    let source = HostCluster::start();
    seed_host(&source);
    let before = checksum_host(&source);
    let c = container_cluster("migrate").await;
    let mut options = MigrateOptions::new("botserver");
    options.jobs = 3;
    let host = Endpoint::Host(source.server());
    let report = migrate::migrate(&host, &container_endpoint(&c).await, &options, None, None, &Ignore)
        .await
        .expect("local to container");
    let tables: Vec<(&str, u64)> = report.tables.iter().map(|t| (t.table.as_str(), t.rows)).collect();
    assert_eq!(tables, [("public.accounts", 6000), ("public.empty_table", 0), ("public.users", 3000)]);
    assert_eq!(report.sequences.get("public.users_id_seq").map(String::as_str), Some("4242 t"));
    assert!(report.bytes > 300_000, "progress counts the COPY bytes: {}", report.bytes);
    assert_eq!(container_psql(&c, "botserver", "SELECT count(*) FROM users;").await, "3000");
    assert_eq!(container_psql(&c, "botserver", "SELECT nextval('users_id_seq');").await, "4243");
    assert_eq!(
        container_psql(&c, "botserver", "SELECT tableowner FROM pg_tables WHERE tablename = 'accounts';").await,
        "gbuser"
    );
    assert_eq!(
        container_psql(&c, "botserver", "SELECT count(*) FROM pg_indexes WHERE indexname = 'accounts_user';").await,
        "1"
    );
    assert_eq!(checksum_host(&source), before, "the source is unchanged");

    // A second run refuses the non-empty target.
    let err = migrate::migrate(&host, &container_endpoint(&c).await, &options, None, None, &Ignore)
        .await
        .expect_err("non-empty");
    assert!(matches!(&err, MigrateError::TargetNotEmpty { contents, .. } if contents.relations == 3), "{err}");

    // Back to a fresh host cluster.
    let back = HostCluster::start();
    let report =
        migrate::migrate(&container_endpoint(&c).await, &Endpoint::Host(back.server()), &options, None, None, &Ignore)
            .await
            .expect("container to local");
    assert_eq!(report.tables.len(), 3);
    assert_eq!(checksum_host(&back), before);
    // The nextval above advanced the container's sequence; the migration carries that value over.
    assert_eq!(back.psql("botserver", "SELECT last_value FROM users_id_seq"), "4243");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_differs_in_one_value_fails_verification_and_names_the_table() {
    let source = HostCluster::start();
    seed_host(&source);
    let before = checksum_host(&source);
    let c = container_cluster("migbroken").await;
    container_psql(&c, "template1", BREAK_TEMPLATE).await;
    let err = migrate::migrate(
        &Endpoint::Host(source.server()),
        &container_endpoint(&c).await,
        &MigrateOptions::new("botserver"),
        None,
        None,
        &Ignore,
    )
    .await
    .expect_err("broken target");
    match &err {
        MigrateError::Mismatch { differences } => {
            assert_eq!(differences.len(), 1, "{differences:?}");
            assert_eq!(differences[0].object, "public.accounts");
            assert_eq!(differences[0].what, "same row count, different content checksum");
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("public.accounts"), "{err}");
    assert_eq!(checksum_host(&source), before, "the source is unchanged");

    // The other direction: a broken host target.
    let back = HostCluster::start();
    back.psql("template1", BREAK_TEMPLATE);
    let good = HostCluster::start();
    seed_host(&good);
    let good_src = Endpoint::Host(good.server());
    let c2 = container_cluster("migsrc").await;
    migrate::migrate(&good_src, &container_endpoint(&c2).await, &MigrateOptions::new("botserver"), None, None, &Ignore)
        .await
        .expect("seed the container");
    let err = migrate::migrate(
        &container_endpoint(&c2).await,
        &Endpoint::Host(back.server()),
        &MigrateOptions::new("botserver"),
        None,
        None,
        &Ignore,
    )
    .await
    .expect_err("broken host target");
    assert!(err.to_string().contains("public.accounts (same row count, different content checksum)"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn replace_snapshots_the_container_first_and_bad_input_is_refused() {
    let source = HostCluster::start();
    seed_host(&source);
    let stack = tempfile::tempdir().expect("stack");
    let stack_path = stack.path().display().to_string();
    let c = TestContainer::create_with("migreplace", true, move |r| {
        r.config(gbo_ops::inventory::KEY_STACK_DIR, stack_path)
    })
    .await;
    let script = format!(
        "set -e; mkdir -p /opt/gbo/data /var/run/postgresql; chown postgres /opt/gbo/data /var/run/postgresql; \
         runuser -u postgres -- {PG_BIN}/initdb -D /opt/gbo/data/pgdata --auth-local=peer >/dev/null; \
         runuser -u postgres -- {PG_BIN}/pg_ctl -D /opt/gbo/data/pgdata -l /opt/gbo/data/pg.log -w -t 60 -o \"-k /var/run/postgresql -c listen_addresses=''\" start >/dev/null"
    );
    let out = c.lxd.exec_output(&c.name, &ExecRequest::new(["sh", "-c", &script])).await.expect("exec");
    assert!(out.success(), "{}", out.stderr_text());
    container_psql(&c, "postgres", "CREATE DATABASE botserver;").await;
    container_psql(&c, "botserver", "CREATE TABLE old_stuff (x int); INSERT INTO old_stuff VALUES (1);").await;
    let mut options = MigrateOptions::new("botserver");
    options.replace = true;
    let report = migrate::migrate(
        &Endpoint::Host(source.server()),
        &container_endpoint(&c).await,
        &options,
        None,
        None,
        &Ignore,
    )
    .await
    .expect("replace");
    let backup = report.replaced_backup.expect("a snapshot first");
    assert!(backup.starts_with(&format!("snapshot {}/before-migrate-", c.name)), "{backup}");
    assert_eq!(
        container_psql(&c, "botserver", "SELECT count(*) FROM pg_tables WHERE tablename = 'old_stuff';").await,
        "0"
    );
    let snaps = c.lxd.snapshots(&c.name).await.expect("snapshots");
    assert_eq!(snaps.len(), 1);

    // Unreachable server, missing database, wrong password: clear errors, nothing changed.
    let closed = gbo_tests::free_port();
    let unreachable = Endpoint::Host(
        HostServer::from_libpq(Some(&format!("host=127.0.0.1 port={closed} user=gbot"))).expect("conninfo"),
    );
    let err = migrate::migrate(
        &unreachable,
        &container_endpoint(&c).await,
        &MigrateOptions::new("botserver"),
        None,
        None,
        &Ignore,
    )
    .await
    .expect_err("unreachable");
    assert!(err.to_string().contains(&format!("cannot connect to PostgreSQL at gbot@127.0.0.1:{closed}")), "{err}");
    let err = migrate::migrate(
        &Endpoint::Host(source.server()),
        &container_endpoint(&c).await,
        &MigrateOptions::new("nosuchdb"),
        None,
        None,
        &Ignore,
    )
    .await
    .expect_err("missing db");
    assert!(err.to_string().contains("database `nosuchdb` does not exist on the source"), "{err}");
    let wrong = Endpoint::Host(
        HostServer::from_libpq(Some(&format!("postgresql://gbot:wrong@127.0.0.1:{}", source.port))).expect("conninfo"),
    );
    let err =
        migrate::migrate(&wrong, &container_endpoint(&c).await, &MigrateOptions::new("botserver"), None, None, &Ignore)
            .await
            .expect_err("wrong password");
    assert!(err.to_string().contains("password authentication failed"), "{err}");
    assert!(!err.to_string().contains("wrong"), "the password is not echoed: {err}");
}

/// The tables of `botserver` on a host cluster, their row counts and the content of `old_orders`: what must stay
/// exactly as it was when a migration is refused.
fn host_state(h: &HostCluster) -> String {
    h.psql(
        "botserver",
        "SELECT (SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public') \
         || ' ' || (SELECT count(*) FROM old_orders) || ' ' || (SELECT count(*) FROM old_notes) \
         || ' ' || (SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM old_orders t)",
    )
}

/// Container → host onto a host database that already holds data. Without `--replace` it is refused before
/// anything changes: the error (and `gbo migrate`'s exit code 2) names the number of tables found, no backup is
/// written, the host database is byte-for-byte the same. With `replace`, a `pg_dump` custom-format archive of the
/// old database is written to `backup_dir` first (restorable: `pg_restore --list` reads it and a restore into a
/// scratch database brings the old rows back), then the data is replaced and verified.
#[tokio::test(flavor = "multi_thread")]
async fn container_to_host_replace_backs_up_the_host_database_first() {
    let c = container_cluster("migtohost").await;
    container_psql(&c, "postgres", SEED).await;
    let source_checksum =
        container_psql(&c, "botserver", "SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM accounts t;").await;

    let host = HostCluster::start();
    host.psql("postgres", "CREATE DATABASE botserver");
    host.psql(
        "botserver",
        "CREATE TABLE old_orders (id serial PRIMARY KEY, item text NOT NULL); \
         INSERT INTO old_orders (item) SELECT 'order ' || i FROM generate_series(1, 250) i; \
         CREATE TABLE old_notes (note text); INSERT INTO old_notes VALUES ('keep me until replaced')",
    );
    let orders_checksum = host.psql("botserver", "SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM old_orders t");
    let before = host_state(&host);
    assert_eq!(before, format!("old_notes,old_orders 250 1 {orders_checksum}"));
    let backups = tempfile::tempdir().expect("tempdir");
    let backup_dir = backups.path().join("gbo-backups");

    // Refused without replace: the error names the two tables found, nothing changes, no backup is taken.
    let mut options = MigrateOptions::new("botserver");
    options.backup_dir = backup_dir.clone();
    let target = Endpoint::Host(host.server());
    let err = migrate::migrate(&container_endpoint(&c).await, &target, &options, None, None, &Ignore)
        .await
        .expect_err("non-empty host target");
    assert!(matches!(&err, MigrateError::TargetNotEmpty { contents, .. } if contents.relations == 2), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("already holds 2 relation(s)") && message.contains("--replace"), "{message}");
    assert_eq!(host_state(&host), before, "a refused migration changed the host database");
    assert!(!backup_dir.exists(), "no backup is written when nothing is replaced");

    // The same through the CLI: exit code 2 and the same message. The password travels in PGPASSWORD.
    let cli = tokio::task::spawn_blocking({
        let (name, port, backup_dir) = (c.name.to_string(), host.port, backup_dir.display().to_string());
        move || {
            Command::new(gbo_tests::gbo_bin())
                .args([
                    "migrate",
                    "container-to-local",
                    "--container",
                    &name,
                    "--host",
                    &format!("postgresql://gbot@127.0.0.1:{port}"),
                    "--backup-dir",
                    &backup_dir,
                ])
                .env("PGPASSWORD", PASSWORD)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("running gbo")
        }
    })
    .await
    .expect("gbo thread");
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert_eq!(cli.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("already holds 2 relation(s)"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "the password is not echoed");
    assert_eq!(host_state(&host), before, "a refused `gbo migrate` changed the host database");
    assert!(!backup_dir.exists(), "no backup is written when nothing is replaced");

    // PGSSLMODE is honoured like every libpq setting: this server speaks no TLS, so `require` fails, says why, and
    // changes nothing.
    let cli = tokio::task::spawn_blocking({
        let (name, port) = (c.name.to_string(), host.port);
        move || {
            Command::new(gbo_tests::gbo_bin())
                .args(["migrate", "container-to-local", "--container", &name, "--replace", "--host"])
                .arg(format!("postgresql://gbot@127.0.0.1:{port}"))
                .env("PGPASSWORD", PASSWORD)
                .env("PGSSLMODE", "require")
                .stdin(std::process::Stdio::null())
                .output()
                .expect("running gbo")
        }
    })
    .await
    .expect("gbo thread");
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert_eq!(cli.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("gbot@127.0.0.1:{}", host.port)) && stderr.contains("does not support TLS"),
        "{stderr}"
    );
    assert_eq!(host_state(&host), before, "a refused `gbo migrate` changed the host database");

    // With replace: the backup is written first, then the data is replaced and verified.
    options.replace = true;
    options.jobs = 3;
    let report = migrate::migrate(&container_endpoint(&c).await, &target, &options, None, None, &Ignore)
        .await
        .expect("replace the host database");
    let files: Vec<PathBuf> =
        std::fs::read_dir(&backup_dir).expect("the backup dir was created").map(|e| e.expect("entry").path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let archive = &files[0];
    let file_name = archive.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    assert!(file_name.starts_with("botserver-before-migrate-") && file_name.ends_with(".dump"), "{file_name}");
    assert_eq!(report.replaced_backup.as_deref(), Some(format!("pg_dump archive {}", archive.display()).as_str()));
    {
        use std::os::unix::fs::PermissionsExt as _;
        // A full copy of the database: private to root.
        assert_eq!(std::fs::metadata(archive).expect("archive").permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&backup_dir).expect("dir").permissions().mode() & 0o777, 0o700);
    }
    let size = std::fs::metadata(archive).expect("archive").len();
    assert!(size > 0, "the archive is empty");
    let listing = sh(&format!("{PG_BIN}/pg_restore --list {}", archive.display()));
    assert!(
        listing.contains("TABLE DATA public old_orders") && listing.contains("TABLE DATA public old_notes"),
        "{listing}"
    );
    // The archive holds the old rows: restored into a scratch database, they are all there.
    host.psql("postgres", "CREATE DATABASE old_restored");
    let restored = Command::new(format!("{PG_BIN}/pg_restore"))
        .args(["--no-owner", "-h", "127.0.0.1", "-p", &host.port.to_string(), "-U", "gbot", "-d", "old_restored"])
        .arg(archive)
        .env("PGPASSWORD", PASSWORD)
        .output()
        .expect("pg_restore");
    assert!(restored.status.success(), "{}", String::from_utf8_lossy(&restored.stderr));
    assert_eq!(
        host.psql("old_restored", "SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM old_orders t"),
        orders_checksum
    );
    assert_eq!(host.psql("old_restored", "SELECT note FROM old_notes"), "keep me until replaced");

    // The host database now holds the container's data, verified; the old tables are gone.
    let tables: Vec<(&str, u64)> = report.tables.iter().map(|t| (t.table.as_str(), t.rows)).collect();
    assert_eq!(tables, [("public.accounts", 6000), ("public.empty_table", 0), ("public.users", 3000)]);
    assert_eq!(report.sequences.get("public.users_id_seq").map(String::as_str), Some("4242 t"));
    assert_eq!(checksum_host(&host), source_checksum);
    assert_eq!(host.psql("botserver", "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'old_%'"), "0");
    assert_eq!(host.psql("botserver", "SELECT tableowner FROM pg_tables WHERE tablename = 'accounts'"), "gbuser");
}

/// Partitions, a view and a materialized view travel too; `--keep-sql` keeps the migration as a psql script (0600),
/// written only after verification, that restores into an empty database with the same content; an existing file is
/// refused before anything changes.
#[tokio::test(flavor = "multi_thread")]
async fn partitions_travel_and_keep_sql_writes_a_restorable_private_script() {
    let source = HostCluster::start();
    seed_host(&source);
    source.psql(
        "botserver",
        "SET ROLE gbuser;
         CREATE TABLE measures (id bigint NOT NULL, day date NOT NULL, value double precision, PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
         CREATE TABLE measures_2024 PARTITION OF measures FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
         CREATE TABLE measures_2025 PARTITION OF measures FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
         CREATE INDEX measures_value ON measures (value);
         INSERT INTO measures SELECT i, date '2024-06-01' + (i % 400), i / 7.0 FROM generate_series(1, 4000) i;
         CREATE VIEW rich AS SELECT user_id, sum(balance) AS total FROM accounts GROUP BY user_id;
         CREATE MATERIALIZED VIEW rich_m AS SELECT * FROM rich;
         RESET ROLE;
         CREATE ROLE gbot_reader NOLOGIN;
         GRANT SELECT ON accounts TO gbot_reader;",
    );
    let measures = "SELECT md5(string_agg(t::text, '|' ORDER BY id, day)) FROM measures t";
    let before = (
        checksum_host(&source),
        source.psql("botserver", measures),
        source.psql("botserver", "SELECT count(*) FROM rich_m"),
    );
    let c = container_cluster("migkeep").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kept = dir.path().join("botserver.sql");

    // An existing file is refused before anything changes.
    std::fs::write(&kept, "precious").expect("write");
    let mut options = MigrateOptions::new("botserver");
    options.keep_sql = Some(kept.clone());
    let err = migrate::migrate(
        &Endpoint::Host(source.server()),
        &container_endpoint(&c).await,
        &options,
        None,
        None,
        &Ignore,
    )
    .await
    .expect_err("exists");
    assert!(matches!(err, MigrateError::KeepSql { .. }) && err.to_string().contains("exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&kept).expect("read"), "precious");
    assert_eq!(
        container_psql(&c, "postgres", "SELECT count(*) FROM pg_database WHERE datname = 'botserver';").await,
        "0",
        "nothing changed"
    );
    std::fs::remove_file(&kept).expect("rm");

    let report = migrate::migrate(
        &Endpoint::Host(source.server()),
        &container_endpoint(&c).await,
        &options,
        None,
        None,
        &Ignore,
    )
    .await
    .expect("migrate");
    let tables: Vec<&str> = report.tables.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(
        tables,
        ["public.accounts", "public.empty_table", "public.measures_2024", "public.measures_2025", "public.users"]
    );
    assert_eq!(
        report.tables.iter().filter(|t| t.table.starts_with("public.measures_")).map(|t| t.rows).sum::<u64>(),
        4000
    );
    assert!(
        report.tables.iter().all(|t| t.checksum.starts_with("sha256:")),
        "the fast comparison agreed: {:?}",
        report.tables
    );
    assert_eq!(container_psql(&c, "botserver", &format!("{measures};")).await, before.1);
    assert_eq!(
        container_psql(&c, "botserver", "SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'measures_2024%';").await,
        "2",
        "partition indexes built"
    );
    assert_eq!(
        container_psql(&c, "botserver", "SELECT count(*) FROM rich_m;").await,
        before.2,
        "the materialized view was refreshed"
    );
    assert_eq!(
        container_psql(&c, "botserver", "SELECT has_table_privilege('gbot_reader', 'public.accounts', 'SELECT');")
            .await,
        "t",
        "grants kept"
    );
    assert_eq!(report.kept_sql.as_deref(), Some(kept.as_path()));
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&kept).expect("kept").permissions().mode() & 0o777, 0o600);
    }
    let leftovers: Vec<_> =
        std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("botserver.sql")], "the parts are gone");

    // The kept script restores into an empty database (the owner role exists on the restoring server).
    let restored = HostCluster::start();
    restored.psql("postgres", "CREATE ROLE gbuser LOGIN");
    restored.psql("postgres", "CREATE ROLE gbot_reader NOLOGIN");
    restored.psql("postgres", "CREATE DATABASE botserver OWNER gbuser");
    let out = Command::new(format!("{PG_BIN}/psql"))
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &restored.port.to_string(),
            "-U",
            "gbot",
            "-d",
            "botserver",
            "-f",
        ])
        .arg(&kept)
        .env("PGPASSWORD", PASSWORD)
        .output()
        .expect("psql");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(checksum_host(&restored), before.0);
    assert_eq!(restored.psql("botserver", measures), before.1);
    assert_eq!(restored.psql("botserver", "SELECT last_value FROM users_id_seq"), "4242");
    assert_eq!(restored.psql("botserver", "SELECT count(*) FROM rich_m"), before.2);
}

/// `psql` inside a container as the OS user `user` (peer authentication maps it to the role of the same name); the
/// outcome as (success, stdout, stderr). The full path of the real client, so a test that replaces `/usr/bin/psql`
/// still reads the truth.
async fn container_psql_as(c: &TestContainer, user: &str, db: &str, sql: &str) -> (bool, String, String) {
    let psql = format!("{PG_BIN}/psql");
    let argv = [
        "runuser",
        "-u",
        user,
        "--",
        &psql,
        "-X",
        "-q",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "/var/run/postgresql",
    ];
    let argv: Vec<&str> = argv.into_iter().chain(["-d", db, "-f", "-"]).collect();
    let out = c.lxd.exec_output(&c.name, &ExecRequest::new(argv).stdin_bytes(sql.to_string())).await.expect("exec");
    (out.success(), out.stdout_text().trim().to_string(), out.stderr_text().trim().to_string())
}

/// A source whose objects belong to its superuser (whoever runs this script: `gbot` on the host clusters,
/// `postgres` in the containers) and to another role: a schema, tables with a serial, an identity and a
/// free-standing sequence, an enum type, a view, SQL and PL/pgSQL functions and a large object. The application role
/// `gbuser` exists and owns nothing.
const OWNED_BY_OTHERS: &str = "
CREATE ROLE gbuser LOGIN;
CREATE ROLE legacy_owner NOLOGIN;
CREATE DATABASE botserver;
\\connect botserver
CREATE SCHEMA app;
CREATE TABLE public.users (id serial PRIMARY KEY, name text NOT NULL);
CREATE TABLE app.orders (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, user_id int REFERENCES public.users(id), total numeric(10,2), doc oid);
CREATE SEQUENCE app.invoice_no START 1000;
CREATE TYPE app.state AS ENUM ('new', 'paid');
CREATE TABLE app.invoices (no bigint DEFAULT nextval('app.invoice_no') PRIMARY KEY, state app.state NOT NULL DEFAULT 'new');
CREATE VIEW app.order_totals AS SELECT user_id, sum(total) AS total FROM app.orders GROUP BY user_id;
CREATE FUNCTION app.add_order(u int, t numeric) RETURNS bigint LANGUAGE sql AS $$ INSERT INTO app.orders (user_id, total) VALUES (u, t) RETURNING id $$;
CREATE FUNCTION public.user_count() RETURNS bigint LANGUAGE plpgsql AS $$ BEGIN RETURN (SELECT count(*) FROM public.users); END $$;
CREATE TABLE public.legacy (x int);
ALTER TABLE public.legacy OWNER TO legacy_owner;
INSERT INTO public.users (name) SELECT 'user ' || i FROM generate_series(1, 50) i;
INSERT INTO app.orders (user_id, total) SELECT 1 + i % 50, i FROM generate_series(1, 200) i;
INSERT INTO app.invoices DEFAULT VALUES;
INSERT INTO app.invoices DEFAULT VALUES;
INSERT INTO public.legacy VALUES (1), (2);
SELECT lo_from_bytea(424242, 'large object payload');
UPDATE app.orders SET doc = 424242 WHERE id = 1;
";

/// What the application does with the database, as `gbuser`: read and write every table, take sequence values, call
/// the functions, read the view and the large object, create a table of its own in the schema.
const APP_USE: &str = "
SELECT count(*) FROM public.users;
INSERT INTO public.users (name) VALUES ('by the app');
UPDATE public.users SET name = name || '!' WHERE name = 'by the app';
DELETE FROM public.users WHERE name = 'by the app!';
SELECT app.add_order(1, 9.99) > 200;
UPDATE app.orders SET total = total + 1 WHERE id = 1;
DELETE FROM app.orders WHERE id = (SELECT max(id) FROM app.orders);
INSERT INTO app.invoices DEFAULT VALUES;
UPDATE app.invoices SET state = 'paid' WHERE no = 1000;
DELETE FROM app.invoices WHERE no = (SELECT max(no) FROM app.invoices);
INSERT INTO public.legacy VALUES (3);
UPDATE public.legacy SET x = 4 WHERE x = 3;
DELETE FROM public.legacy WHERE x = 4;
SELECT nextval('public.users_id_seq') > 50, nextval('app.invoice_no') > 1001;
SELECT public.user_count();
SELECT count(*) FROM app.order_totals;
SELECT convert_from(lo_get(424242), 'UTF8');
CREATE TABLE app.made_by_the_app (x int);
DROP TABLE app.made_by_the_app;
";

/// What `APP_USE` prints when everything works.
const APP_USE_OUTPUT: &str = "50\nt\nt|t\n50\n50\nlarge object payload";

/// The distinct owners of the migrated objects: the database, the `app` schema, every relation, function and type in
/// `public` and `app`, and every large object.
const OWNERS: &str = "SELECT string_agg(DISTINCT pg_get_userbyid(owner), ',') FROM (
  SELECT c.relowner AS owner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'app')
  UNION ALL SELECT nspowner FROM pg_namespace WHERE nspname = 'app'
  UNION ALL SELECT p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname IN ('public', 'app')
  UNION ALL SELECT t.typowner FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname IN ('public', 'app')
  UNION ALL SELECT lomowner FROM pg_largeobject_metadata
  UNION ALL SELECT datdba FROM pg_database WHERE datname = current_database()) AS o;";

/// The reproduction of the issue: objects owned by the source's superuser and by another role, migrated into a
/// tables container whose application role is `gbuser`. Afterwards `gbuser` owns everything (database, schema,
/// tables, sequences, view, functions, type, large object) and the application can use all of it; the large object
/// travelled with its content.
#[tokio::test(flavor = "multi_thread")]
async fn local_to_container_gives_every_object_to_the_app_role_and_the_app_can_use_it() {
    let source = HostCluster::start();
    source.psql("postgres", "SELECT 1");
    let seed = source.dir.path().join("owned.sql");
    std::fs::write(&seed, OWNED_BY_OTHERS).expect("seed");
    sh(&format!(
        "PGPASSWORD={PASSWORD} {PG_BIN}/psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p {} -U gbot -d postgres -f {}",
        source.port,
        seed.display()
    ));
    let c = container_cluster("migowners").await;
    // The tables role creates its application role at install.
    container_psql(&c, "postgres", "CREATE ROLE gbuser LOGIN;").await;
    let report = migrate::migrate(
        &Endpoint::Host(source.server()),
        &container_endpoint(&c).await,
        &MigrateOptions::new("botserver"),
        None,
        None,
        &Ignore,
    )
    .await
    .expect("local to container");
    assert_eq!(report.tables.len(), 4, "{:?}", report.tables);
    let (ok, out, err) = container_psql_as(&c, "gbuser", "botserver", APP_USE).await;
    assert!(ok, "the application cannot use the migrated database: {err}");
    assert_eq!(out, APP_USE_OUTPUT);
    assert_eq!(container_psql(&c, "botserver", OWNERS).await, "gbuser");
    assert_eq!(
        container_psql(&c, "postgres", "SELECT rolsuper FROM pg_roles WHERE rolname = 'gbuser';").await,
        "f",
        "the application role stays a plain role"
    );
}

/// The other direction: a container whose objects belong to its `postgres` superuser and to another role, migrated
/// to a host server where the application role `gbuser` has a password. Afterwards `gbuser` owns everything there
/// and the application, logging in as `gbuser`, can use all of it.
#[tokio::test(flavor = "multi_thread")]
async fn container_to_local_gives_every_object_to_the_app_role_and_the_app_can_use_it() {
    let c = container_cluster("migownback").await;
    container_psql(&c, "postgres", OWNED_BY_OTHERS).await;
    let host = HostCluster::start();
    host.psql("postgres", "CREATE ROLE gbuser LOGIN PASSWORD 'app-password-1'");
    let report = migrate::migrate(
        &container_endpoint(&c).await,
        &Endpoint::Host(host.server()),
        &MigrateOptions::new("botserver"),
        None,
        None,
        &Ignore,
    )
    .await
    .expect("container to local");
    assert_eq!(report.tables.len(), 4, "{:?}", report.tables);
    let (ok, out, err) = host.psql_as("gbuser", "app-password-1", "botserver", APP_USE);
    assert!(ok, "the application cannot use the migrated database: {err}");
    assert_eq!(out, APP_USE_OUTPUT);
    assert_eq!(host.psql("botserver", OWNERS), "gbuser");
    assert_eq!(
        host.psql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname ~ '^gbo_(restore|migrate)_'"),
        "0",
        "the temporary restore role is gone"
    );
    assert_eq!(
        container_psql(&c, "postgres", "SELECT count(*) FROM pg_roles WHERE rolname ~ '^gbo_(restore|migrate)_';")
            .await,
        "0",
        "the temporary login in the container is gone"
    );
}

/// A sentinel path on the host that only the host's PostgreSQL server (OS user `postgres`) could create.
fn sentinel(h: &HostCluster, name: &str) -> PathBuf {
    h.dir.path().join(name)
}

/// Root in the container replaces its own `pg_dump` with one that prints SQL of its choosing. Container → host must
/// not run any of it: the dump is taken by the host's own `pg_dump` through the published port. The SQL here would
/// make the host's server run a program as its OS user; afterwards no such file exists and the data arrived intact.
#[tokio::test(flavor = "multi_thread")]
async fn container_to_local_never_runs_what_the_containers_programs_print() {
    let c = container_cluster("mighostile").await;
    container_psql(&c, "postgres", SEED).await;
    let host = HostCluster::start();
    let planted = sentinel(&host, "pwned-by-dump");
    let fake = format!(
        "#!/bin/sh\necho \"COPY (SELECT 1) TO PROGRAM 'touch {}';\"\necho \"CREATE TABLE public.planted (x int);\"\n",
        planted.display()
    );
    replace_program(&c, "/usr/bin/pg_dump", &fake).await;
    let source_checksum =
        container_psql(&c, "botserver", "SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM accounts t;").await;
    let result = migrate::migrate(
        &container_endpoint(&c).await,
        &Endpoint::Host(host.server()),
        &MigrateOptions::new("botserver"),
        None,
        None,
        &Ignore,
    )
    .await;
    assert!(!planted.exists(), "the host's server ran a program the container's pg_dump asked for");
    let report = result.expect("container to local with the host's own pg_dump");
    assert_eq!(report.tables.len(), 3);
    assert_eq!(checksum_host(&host), source_checksum);
    assert_eq!(host.psql("botserver", "SELECT count(*) FROM pg_tables WHERE tablename = 'planted'"), "0");
}

/// The container's database itself is hostile: a table whose CHECK constraint calls a function that, on the host
/// (where the role `gbot` exists), leaves the restoring role and runs a program. Restored by a non-superuser, the
/// function is refused: the migration fails, nothing ran on the host.
#[tokio::test(flavor = "multi_thread")]
async fn container_to_local_restores_as_a_role_that_cannot_run_programs_on_the_host() {
    let c = container_cluster("migtrap").await;
    let host = HostCluster::start();
    let planted = sentinel(&host, "pwned-by-check");
    container_psql(
        &c,
        "postgres",
        &format!(
            "CREATE DATABASE botserver;
\\connect botserver
CREATE FUNCTION public.evil(x int) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gbot') THEN
    PERFORM set_config('role', 'none', false);
    EXECUTE format('COPY (SELECT 1) TO PROGRAM %L', 'touch {}');
  END IF;
  RETURN true;
END $$;
CREATE TABLE public.trap (x int CHECK (public.evil(x)));
INSERT INTO public.trap VALUES (1);
",
            planted.display()
        ),
    )
    .await;
    let result = migrate::migrate(
        &container_endpoint(&c).await,
        &Endpoint::Host(host.server()),
        &MigrateOptions::new("botserver"),
        None,
        None,
        &Ignore,
    )
    .await;
    assert!(!planted.exists(), "the container's function ran a program on the host");
    let err = result.expect_err("a function that needs a superuser fails the restore");
    let message = err.to_string();
    assert!(message.contains("public.trap") && message.contains("pg_execute_server_program"), "{message}");
    assert!(message.contains("restoring as gbo_restore_"), "names the restoring role: {message}");
    assert_eq!(
        host.psql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname ~ '^gbo_restore_'"),
        "0",
        "the temporary restore role is gone"
    );
}

/// Identifiers a container (or anyone) can choose: quotes with SQL after them, spaces, upper case, a tab and a
/// newline, in table, schema, sequence and role names. They travel both ways intact, and nothing else happens.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_identifiers_travel_both_ways_quoted() {
    const NAMES: &str = "
CREATE ROLE gbuser LOGIN;
CREATE ROLE \"Weird Role\"\"; DROP TABLE x; --\" NOLOGIN;
CREATE DATABASE botserver;
\\connect botserver
CREATE TABLE public.x (keep int);
INSERT INTO public.x VALUES (42);
CREATE SCHEMA \"Odd \"\"Schema\"\"\";
CREATE TABLE public.\"a\"\"; DROP TABLE x; --\" (id int PRIMARY KEY, v text);
CREATE TABLE \"Odd \"\"Schema\"\"\".\"Mixed Case\" (\"Col Umn\" int);
CREATE TABLE public.\"tab\there\" (v text);
CREATE TABLE public.\"new
line\" (v text);
CREATE SEQUENCE \"Odd \"\"Schema\"\"\".\"seq \"\"q\"\"\";
SELECT setval('\"Odd \"\"Schema\"\"\".\"seq \"\"q\"\"\"', 77);
INSERT INTO public.\"a\"\"; DROP TABLE x; --\" SELECT i, 'v' || i FROM generate_series(1, 20) i;
INSERT INTO \"Odd \"\"Schema\"\"\".\"Mixed Case\" SELECT generate_series(1, 30);
INSERT INTO public.\"tab\there\" VALUES ('t');
INSERT INTO public.\"new
line\" VALUES ('n'), ('m');
GRANT SELECT ON public.\"new
line\" TO \"Weird Role\"\"; DROP TABLE x; --\";
";
    let source = HostCluster::start();
    let seed = source.dir.path().join("names.sql");
    std::fs::write(&seed, NAMES).expect("seed");
    sh(&format!(
        "PGPASSWORD={PASSWORD} {PG_BIN}/psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p {} -U gbot -d postgres -f {}",
        source.port,
        seed.display()
    ));
    let content = "SELECT (SELECT count(*) FROM public.\"a\"\"; DROP TABLE x; --\") || ' ' || \
                   (SELECT sum(\"Col Umn\") FROM \"Odd \"\"Schema\"\"\".\"Mixed Case\") || ' ' || \
                   (SELECT string_agg(v, ',' ORDER BY v) FROM public.\"new\nline\") || ' ' || \
                   (SELECT v FROM public.\"tab\there\") || ' ' || (SELECT keep FROM public.x) || ' ' || \
                   (SELECT last_value FROM \"Odd \"\"Schema\"\"\".\"seq \"\"q\"\"\")";
    let expected = "20 465 m,n t 42 77";
    assert_eq!(source.psql("botserver", content), expected);
    let c = container_cluster("mignames").await;
    container_psql(&c, "postgres", "CREATE ROLE gbuser LOGIN;").await;
    let report = migrate::migrate(
        &Endpoint::Host(source.server()),
        &container_endpoint(&c).await,
        &MigrateOptions::new("botserver"),
        None,
        None,
        &Ignore,
    )
    .await
    .expect("local to container");
    assert_eq!(report.tables.len(), 5, "{:?}", report.tables);
    assert_eq!(container_psql(&c, "botserver", &format!("{content};")).await, expected);

    let back = HostCluster::start();
    back.psql("postgres", "CREATE ROLE gbuser LOGIN");
    let report = migrate::migrate(
        &container_endpoint(&c).await,
        &Endpoint::Host(back.server()),
        &MigrateOptions::new("botserver"),
        None,
        None,
        &Ignore,
    )
    .await
    .expect("container to local");
    assert_eq!(report.tables.len(), 5, "{:?}", report.tables);
    assert_eq!(back.psql("botserver", content), expected);
    assert_eq!(
        back.psql(
            "botserver",
            "SELECT has_table_privilege('Weird Role\"; DROP TABLE x; --', 'public.\"new\nline\"', 'SELECT')"
        ),
        "t",
        "the grant to the odd role travelled"
    );
}

/// A target database that holds no relation but a function, a type or a large object is not empty: it is refused
/// without `--replace`, and the object is still there.
#[tokio::test(flavor = "multi_thread")]
async fn a_target_holding_only_a_function_a_type_or_a_large_object_is_not_empty() {
    let source = HostCluster::start();
    seed_host(&source);
    let c = container_cluster("migempty").await;
    for (what, create, check) in [
        (
            "a function",
            "CREATE FUNCTION public.keep_me() RETURNS int LANGUAGE sql AS 'SELECT 7';",
            "SELECT public.keep_me();",
        ),
        (
            "a type",
            "CREATE TYPE public.keep_me AS ENUM ('a', 'b');",
            "SELECT count(*) FROM pg_type WHERE typname = 'keep_me';",
        ),
        (
            "a large object",
            "SELECT lo_from_bytea(777, 'keep me');",
            "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = 777;",
        ),
    ] {
        container_psql(&c, "postgres", "DROP DATABASE IF EXISTS botserver; CREATE DATABASE botserver;").await;
        container_psql(&c, "botserver", create).await;
        let before = container_psql(&c, "botserver", check).await;
        let err = migrate::migrate(
            &Endpoint::Host(source.server()),
            &container_endpoint(&c).await,
            &MigrateOptions::new("botserver"),
            None,
            None,
            &Ignore,
        )
        .await
        .expect_err(what);
        assert!(matches!(err, MigrateError::TargetNotEmpty { .. }), "{what}: {err}");
        assert!(err.to_string().contains("--replace"), "{err}");
        assert_eq!(container_psql(&c, "botserver", check).await, before, "{what} is still there");
    }
}

/// Root in the container replaces `psql` with one that answers the emptiness question with something that is not a
/// count, or fails it. Either is an error naming the target, never "empty": the target's table is still there.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_emptiness_answer_is_an_error_and_changes_nothing() {
    let source = HostCluster::start();
    seed_host(&source);
    let c = container_cluster("migunread").await;
    container_psql(&c, "postgres", "CREATE DATABASE botserver;").await;
    container_psql(&c, "botserver", "CREATE TABLE precious (x int); INSERT INTO precious VALUES (1), (2);").await;
    for (answer, expect) in
        [("echo lots; exit 0", "lots"), ("echo 'ERROR:  out of cheese' >&2; exit 1", "out of cheese")]
    {
        // The emptiness check is the only query that reads pg_depend; every other call reaches the real psql.
        let wrapper = format!(
            "#!/bin/bash\nfstdin=0; prev=\nfor a in \"$@\"; do [ \"$prev\" = -f ] && [ \"$a\" = - ] && fstdin=1; prev=$a; done\n\
             if [ $fstdin = 1 ]; then sql=$(cat); if [[ $sql == *pg_depend* ]]; then {answer}; fi; \
             printf '%s' \"$sql\" | exec {PG_BIN}/psql \"$@\"; fi\nexec {PG_BIN}/psql \"$@\"\n"
        );
        replace_program(&c, "/usr/bin/psql", &wrapper).await;
        let result = migrate::migrate(
            &Endpoint::Host(source.server()),
            &container_endpoint(&c).await,
            &MigrateOptions::new("botserver"),
            None,
            None,
            &Ignore,
        )
        .await;
        let (ok, rows, err) = container_psql_as(&c, "postgres", "botserver", "SELECT count(*) FROM precious;").await;
        assert!(ok && rows == "2", "the target's table is gone after `{answer}`: {rows} {err}");
        let err = result.expect_err(answer);
        assert!(err.to_string().contains(expect), "{answer}: {err}");
        assert!(err.to_string().contains(c.name.as_str()), "the error names the target: {err}");
    }
}

/// The formula earlier releases ran for a table's checksum, verbatim: backups made by them keep its value in their
/// description, and a restore compares a restored table with it.
const EARLIER_TABLE_CHECK: &str = "SELECT count(*), coalesce(sum(('x' || substr(h, 1, 15))::bit(60)::bigint::numeric), 0) || ':' || coalesce(sum(('x' || substr(h, 16, 15))::bit(60)::bigint::numeric), 0) FROM (SELECT md5(t::text) AS h FROM {table} AS t) AS rows;";

/// A table's checksum (what a backup records, a restore and `gbo migrate` compare) is the value earlier releases
/// computed, on every kind of value, on an empty table and through PostgreSQL's parallel partial aggregation; and
/// each row's text and md5 are computed once, not once per sum (the second backup's time is mostly this query).
#[tokio::test(flavor = "multi_thread")]
async fn table_checksums_are_what_earlier_backups_recorded_computed_once_per_row() {
    // Every scan parallel, however small, so the partial sums are combined as on a large table.
    let h = HostCluster::start_with(|data| {
        let mut conf = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).expect("conf");
        use std::io::Write as _;
        writeln!(
            conf,
            "parallel_setup_cost = 0\nparallel_tuple_cost = 0\nmin_parallel_table_scan_size = 0\nmax_parallel_workers_per_gather = 2"
        )
        .expect("conf");
    });
    h.psql(
        "postgres",
        "CREATE TYPE mood AS ENUM ('sad', 'ok'); \
         CREATE TABLE mixed (id bigint, name text, price numeric(12,4), at timestamptz, span interval, \
           tags text[], doc jsonb, raw bytea, f double precision, m mood, ok boolean); \
         INSERT INTO mixed SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'n' || g || E'\\t\"q\" ,()' END, g / 3.0, \
           timestamptz '2026-03-29 01:30:00+00' + g * interval '37 minutes', g * interval '1 day 3 hours', \
           ARRAY['a', NULL, 'b' || g], jsonb_build_object('k', g, 'v', ARRAY[g, -g]), decode(md5(g::text), 'hex'), \
           1.0 / g, CASE WHEN g % 2 = 0 THEN 'sad'::mood ELSE 'ok' END, g % 3 = 0 FROM generate_series(1, 5000) g; \
         INSERT INTO mixed VALUES (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL); \
         CREATE TABLE empty (id int); \
         CREATE TABLE \"Odd \"\"name\" AS SELECT g FROM generate_series(1, 300) g",
    );
    let endpoint = Endpoint::Host(h.server());
    // The session settings a check runs with (so values print the same way), then the earlier formula.
    let settings = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; \
                    SET extra_float_digits = 3; SET bytea_output = 'hex'; SET synchronize_seqscans = off;";
    for (table, rows) in [("public.mixed", 5001), ("public.empty", 0), ("public.\"Odd \"\"name\"", 300)] {
        let check = migrate::check_table(&endpoint, "postgres", table).await.expect("check_table");
        let out = h.psql("postgres", &format!("{settings} {}", EARLIER_TABLE_CHECK.replace("{table}", table)));
        let earlier = out.lines().last().expect("a result line");
        assert_eq!(format!("{}|{}", check.rows, check.checksum), earlier, "{table}");
        assert_eq!(check.rows, rows, "{table}");
    }
    let plan = h.psql("postgres", &format!("EXPLAIN (VERBOSE) {}", migrate::table_check_sql("public.mixed")));
    assert!(plan.contains("Partial Aggregate"), "the check ran in parallel: {plan}");
    // Where the row's md5 is computed: one plan node below the aggregate, once (the aggregates only refer to it).
    let computing: Vec<&str> = plan
        .lines()
        .filter(|l| l.trim_start().starts_with("Output:") && l.contains("md5((t.*)::text)") && !l.contains("sum("))
        .collect();
    assert_eq!(computing.len(), 1, "{plan}");
    assert_eq!(computing[0].matches("md5(").count(), 1, "{plan}");
    let earlier_plan =
        h.psql("postgres", &format!("EXPLAIN (VERBOSE) {}", EARLIER_TABLE_CHECK.replace("{table}", "public.mixed")));
    assert!(
        !earlier_plan
            .lines()
            .any(|l| l.trim_start().starts_with("Output:") && l.contains("md5((t.*)::text)") && !l.contains("sum(")),
        "the earlier formula computes the md5 inside each sum: {earlier_plan}"
    );
}

/// `--database` values that are not a plain database name are refused by `gbo migrate` before anything happens:
/// exit 2, the value and what is allowed in the message, no backup directory created.
#[test]
fn bad_database_names_are_refused_before_anything_happens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backup_dir = dir.path().join("backups");
    let long = "d".repeat(64);
    for bad in ["a=b", "host=127.0.0.1 port=1", "../../etc/cron.d/x", "postgresql://evil/db", "   ", "", long.as_str()]
    {
        for direction in ["local-to-container", "container-to-local"] {
            let run = gbo_tests::gbo(&[
                "migrate",
                direction,
                "--container",
                "gbot-no-such-container",
                "--host",
                "postgresql://gbot@127.0.0.1:1",
                "--database",
                bad,
                "--replace",
                "--backup-dir",
                &backup_dir.display().to_string(),
            ]);
            assert_eq!(run.code, 2, "{bad:?}: {}", run.all());
            assert!(run.stderr.contains(&format!("invalid --database `{bad}`")), "{bad:?}: {}", run.stderr);
            assert!(
                run.stderr.contains("63 bytes") && run.stderr.contains("no `=`"),
                "says what is allowed: {}",
                run.stderr
            );
            assert!(!backup_dir.exists(), "nothing was created");
        }
    }
}

/// Certificates for a TLS test server: a CA, a server certificate it signed for 127.0.0.1 only, and an unrelated CA.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Self {
        let openssl = gbo_tests::programs::require_program("openssl").display().to_string();
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        std::fs::write(dir.path().join("san.cnf"), "subjectAltName=IP:127.0.0.1\n").expect("san");
        sh(&format!(
            "cd {d} && {openssl} req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=gbot-test-ca -keyout ca.key -out ca.crt 2>/dev/null \
             && {openssl} req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=gbot-other-ca -keyout other.key -out other.crt 2>/dev/null \
             && {openssl} req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null \
             && {openssl} x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile san.cnf -out server.crt 2>/dev/null \
             && chmod 644 ca.crt other.crt"
        ));
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A host cluster that speaks TLS with the server certificate, and (with `only_tls`) refuses connections without.
    fn cluster(&self, only_tls: bool) -> HostCluster {
        let (crt, key) = (self.path("server.crt"), self.path("server.key"));
        HostCluster::start_with(move |data| {
            std::fs::copy(&crt, data.join("server.crt")).expect("crt");
            std::fs::copy(&key, data.join("server.key")).expect("key");
            sh(&format!("chmod 600 {}/server.key", data.display()));
            let mut conf = std::fs::OpenOptions::new().append(true).open(data.join("postgresql.conf")).expect("conf");
            use std::io::Write as _;
            writeln!(conf, "ssl = on\nlog_connections = on").expect("conf");
            if only_tls {
                std::fs::write(
                    data.join("pg_hba.conf"),
                    "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n",
                )
                .expect("hba");
            }
        })
    }
}

/// Whether a query through `conninfo` ran over TLS, as the server saw it.
async fn tls_in_use(conninfo: &str) -> Result<String, MigrateError> {
    let server = HostServer::from_libpq(Some(conninfo))?;
    let rows =
        Endpoint::Host(server).query("postgres", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();").await?;
    Ok(rows.first().and_then(|r| r.first()).cloned().unwrap_or_default())
}

/// `sslmode` in the connection string is honoured, with TLS through OpenSSL: `require` encrypts, `verify-full` with
/// the right CA verifies the server, a wrong CA or a name the certificate does not carry is refused, and `require`
/// against a server without TLS fails and says so. A migration from a server that accepts only TLS works end to end
/// (the host's `pg_dump` gets the same settings).
#[tokio::test(flavor = "multi_thread")]
async fn sslmode_is_honoured_with_tls_through_openssl() {
    let certs = Certs::new();
    let tls = certs.cluster(true);
    let base = format!("postgresql://gbot:{PASSWORD}@127.0.0.1:{}/postgres", tls.port);
    assert_eq!(tls_in_use(&format!("{base}?sslmode=require")).await.expect("require"), "t");
    let ca = certs.path("ca.crt");
    assert_eq!(
        tls_in_use(&format!("{base}?sslmode=verify-full&sslrootcert={ca}")).await.expect("verify-full, right CA"),
        "t"
    );
    // A name the certificate does not carry (`hostaddr` connects without looking the name up).
    let other_name =
        format!("host=gbot-test.invalid hostaddr=127.0.0.1 port={} user=gbot password={PASSWORD}", tls.port);
    assert_eq!(
        tls_in_use(&format!("{other_name} sslmode=verify-ca sslrootcert={ca}"))
            .await
            .expect("verify-ca does not check the name"),
        "t"
    );
    let err = tls_in_use(&format!("{base}?sslmode=verify-full&sslrootcert={}", certs.path("other.crt")))
        .await
        .expect_err("wrong CA");
    assert!(err.to_string().contains("certificate verify failed"), "{err}");
    let err = tls_in_use(&format!("{other_name} sslmode=verify-full sslrootcert={ca}"))
        .await
        .expect_err("a name the certificate does not carry");
    assert!(err.to_string().contains("certificate verify failed"), "{err}");
    let err = tls_in_use(&format!("{base}?sslmode=disable")).await.expect_err("the server accepts only TLS");
    assert!(err.to_string().contains("no encryption") || err.to_string().contains("pg_hba.conf"), "{err}");

    let plain = HostCluster::start();
    let err = tls_in_use(&format!("postgresql://gbot:{PASSWORD}@127.0.0.1:{}/postgres?sslmode=require", plain.port))
        .await
        .expect_err("no TLS on the server");
    assert!(err.to_string().contains("does not support TLS"), "{err}");
    assert_eq!(
        tls_in_use(&format!("postgresql://gbot:{PASSWORD}@127.0.0.1:{}/postgres?sslmode=prefer", plain.port))
            .await
            .expect("prefer falls back"),
        "f"
    );

    // A whole migration from the TLS-only server, verified.
    seed_host(&tls);
    let c = container_cluster("migtls").await;
    let source =
        HostServer::from_libpq(Some(&format!("{base}?sslmode=verify-full&sslrootcert={ca}"))).expect("conninfo");
    let report = migrate::migrate(
        &Endpoint::Host(source),
        &container_endpoint(&c).await,
        &MigrateOptions::new("botserver"),
        None,
        None,
        &Ignore,
    )
    .await
    .expect("migration over TLS");
    assert_eq!(report.tables.len(), 3);
    let log = std::fs::read_to_string(tls.dir.path().join("log")).expect("server log");
    assert!(
        log.lines().any(|l| l.contains("application_name=pg_dump") && l.contains("SSL enabled")),
        "pg_dump connected with TLS: {log}"
    );
}

/// Grants that let the application role use [`OWNED_BY_OTHERS`] while others own it.
const GRANTS_TO_APP: &str = "
\\connect botserver
GRANT USAGE, CREATE ON SCHEMA app TO gbuser;
GRANT ALL ON ALL TABLES IN SCHEMA public, app TO gbuser;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public, app TO gbuser;
GRANT SELECT ON LARGE OBJECT 424242 TO gbuser;
";

/// Seed a host cluster with `script` run as its superuser `gbot`.
fn seed_host_with(h: &HostCluster, name: &str, script: &str) {
    let file = h.dir.path().join(name);
    std::fs::write(&file, script).expect("seed");
    sh(&format!(
        "PGPASSWORD={PASSWORD} {PG_BIN}/psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p {} -U gbot -d postgres -f {}",
        h.port,
        file.display()
    ));
}

/// `--keep-owners` into a container: the objects keep the source's owners (its superuser `gbot` becomes a plain
/// role there, `legacy_owner` is created too), and the application, given access by the source's grants, can use
/// everything.
#[tokio::test(flavor = "multi_thread")]
async fn keep_owners_keeps_the_source_owners_as_plain_roles() {
    let source = HostCluster::start();
    seed_host_with(&source, "owned.sql", &format!("{OWNED_BY_OTHERS}{GRANTS_TO_APP}"));
    let c = container_cluster("migkeepown").await;
    container_psql(&c, "postgres", "CREATE ROLE gbuser LOGIN;").await;
    let mut options = MigrateOptions::new("botserver");
    options.keep_owners = true;
    let report = migrate::migrate(
        &Endpoint::Host(source.server()),
        &container_endpoint(&c).await,
        &options,
        None,
        None,
        &Ignore,
    )
    .await
    .expect("local to container, owners kept");
    assert_eq!(report.created_roles, ["gbot", "legacy_owner"]);
    assert_eq!(container_psql(&c, "botserver", OWNERS).await, "gbot,legacy_owner");
    assert_eq!(
        container_psql(
            &c,
            "postgres",
            "SELECT string_agg(rolname || ':' || rolsuper || ':' || rolcanlogin, ',' ORDER BY rolname) FROM pg_roles WHERE rolname IN ('gbot', 'legacy_owner');"
        )
        .await,
        "gbot:false:false,legacy_owner:false:false",
        "a source superuser becomes a plain role without login"
    );
    let (ok, out, err) = container_psql_as(&c, "gbuser", "botserver", APP_USE).await;
    assert!(ok, "the application cannot use the migrated database: {err}");
    assert_eq!(out, APP_USE_OUTPUT);
}

/// `--keep-owners` from a source that gives the application role nothing: the data is copied and verified, then
/// the check as the application role fails `gbo migrate` with exit 2, naming every table it cannot use.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_the_app_role_cannot_use_fails_the_migration_naming_it() {
    let source = HostCluster::start();
    seed_host_with(&source, "owned.sql", OWNED_BY_OTHERS);
    let c = container_cluster("migappdeny").await;
    container_psql(&c, "postgres", "CREATE ROLE gbuser LOGIN;").await;
    let run = tokio::task::spawn_blocking({
        let (name, port) = (c.name.to_string(), source.port);
        move || {
            Command::new(gbo_tests::gbo_bin())
                .args(["migrate", "local-to-container", "--container", &name, "--keep-owners", "--host"])
                .arg(format!("postgresql://gbot@127.0.0.1:{port}"))
                .env("PGPASSWORD", PASSWORD)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("running gbo")
        }
    })
    .await
    .expect("gbo thread");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("the application role `gbuser` cannot use the migrated database"), "{stderr}");
    for table in ["public.users", "app.orders", "app.invoices", "public.legacy"] {
        assert!(stderr.contains(&format!("{table} (permission denied")), "{table} named: {stderr}");
    }
    assert!(stderr.contains("public.users_id_seq (no USAGE privilege"), "the sequence is named: {stderr}");
    assert!(!stderr.contains(PASSWORD), "the password is not echoed");
}

/// `--keep-owners` from a container to the host: the container's objects go only to roles the migration creates (or
/// to the application role). A host that already has a role of an owner's name is refused before anything changes;
/// a host without it gets the role as a plain one, owning the objects.
#[tokio::test(flavor = "multi_thread")]
async fn container_to_local_keep_owners_never_gives_objects_to_existing_host_roles() {
    let c = container_cluster("migkeepback").await;
    container_psql(&c, "postgres", &format!("{OWNED_BY_OTHERS}{GRANTS_TO_APP}")).await;
    // PostgreSQL lets only a superuser give a table in `public` to a role without CREATE there: one owner here.
    container_psql(&c, "botserver", "ALTER TABLE public.legacy OWNER TO postgres;").await;
    let mut options = MigrateOptions::new("botserver");
    options.keep_owners = true;

    let host = HostCluster::start();
    host.psql("postgres", "CREATE ROLE postgres NOLOGIN");
    host.psql("postgres", "CREATE ROLE gbuser LOGIN PASSWORD 'app-password-2'");
    let err =
        migrate::migrate(&container_endpoint(&c).await, &Endpoint::Host(host.server()), &options, None, None, &Ignore)
            .await
            .expect_err("an existing host role");
    assert!(matches!(&err, MigrateError::ForeignOwners { roles, .. } if roles == &["postgres".to_string()]), "{err}");
    assert!(err.to_string().contains("`postgres`"), "{err}");
    assert_eq!(host.psql("postgres", "SELECT count(*) FROM pg_database WHERE datname = 'botserver'"), "0");

    let fresh = HostCluster::start();
    fresh.psql("postgres", "CREATE ROLE gbuser LOGIN PASSWORD 'app-password-2'");
    let report =
        migrate::migrate(&container_endpoint(&c).await, &Endpoint::Host(fresh.server()), &options, None, None, &Ignore)
            .await
            .expect("container to local, owners kept");
    assert_eq!(report.created_roles, ["postgres"]);
    assert_eq!(fresh.psql("botserver", OWNERS), "postgres");
    assert_eq!(
        fresh.psql("postgres", "SELECT rolsuper::text || rolcanlogin::text FROM pg_roles WHERE rolname = 'postgres'"),
        "falsefalse"
    );
    let (ok, out, err) = fresh.psql_as("gbuser", "app-password-2", "botserver", APP_USE);
    assert!(ok, "the application cannot use the migrated database: {err}");
    assert_eq!(out, APP_USE_OUTPUT);
    assert_eq!(fresh.psql("postgres", "SELECT count(*) FROM pg_roles WHERE rolname ~ '^gbo_(restore|migrate)_'"), "0");
    assert_eq!(
        container_psql(&c, "postgres", "SELECT count(*) FROM pg_roles WHERE rolname ~ '^gbo_(restore|migrate)_';")
            .await,
        "0",
        "the temporary login in the container is gone"
    );
}
