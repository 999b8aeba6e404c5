//! Verified migration against real PostgreSQL 15: a throw-away cluster on the host (loopback port, password
//! authentication) and the real one in a container from the test image (initdb'd by the test as `postgres`, data
//! in /opt/gbo/data/pgdata). Both directions, a broken target that differs in one value of one row, a non-empty
//! target (refused, or replaced after a snapshot of the container or a `pg_dump` backup of the host database), and
//! bad input.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

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
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        std::fs::write(dir.path().join("pw"), PASSWORD).expect("pw");
        sh(&format!("chown -R postgres {d} && chmod 700 {d}"));
        let port = gbo_tests::free_port();
        sh(&format!("runuser -u postgres -- {PG_BIN}/initdb -D {d}/data -U gbot --pwfile={d}/pw --auth-host=scram-sha-256 --auth-local=scram-sha-256 >/dev/null"));
        sh(&format!(
            "runuser -u postgres -- {PG_BIN}/pg_ctl -D {d}/data -l {d}/log -w -t 60 -o \"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off\" start >/dev/null"
        ));
        Self { dir, port }
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

/// PostgreSQL 15 inside a container from the test image.
async fn container_cluster(tag: &str) -> TestContainer {
    let c = TestContainer::create(tag, true).await;
    let script = format!(
        "set -e; mkdir -p /opt/gbo/data /var/run/postgresql; chown postgres /opt/gbo/data /var/run/postgresql; \
         runuser -u postgres -- {PG_BIN}/initdb -D /opt/gbo/data/pgdata --auth-local=peer >/dev/null; \
         runuser -u postgres -- {PG_BIN}/pg_ctl -D /opt/gbo/data/pgdata -l /opt/gbo/data/pg.log -w -t 60 -o \"-k /var/run/postgresql -c listen_addresses='' -c fsync=off\" start >/dev/null"
    );
    let out = c
        .lxd
        .exec(&c.name, &ExecRequest::new(["sh", "-c", &script]).timeout(Duration::from_secs(120)))
        .await
        .expect("exec");
    assert!(out.success(), "container PostgreSQL: {}{}", out.stdout_text(), out.stderr_text());
    c
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
    let out = c.lxd.exec_with_stdin(&c.name, &ExecRequest::new(argv), sql.as_bytes()).await.expect("exec");
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

fn container_endpoint(c: &TestContainer) -> Endpoint {
    Endpoint::Container(ContainerServer::new(c.lxd.clone(), c.name.clone(), 5432))
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
    let report =
        migrate::migrate(&host, &container_endpoint(&c), &options, None, None).await.expect("local to container");
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
    let err = migrate::migrate(&host, &container_endpoint(&c), &options, None, None).await.expect_err("non-empty");
    assert!(matches!(err, MigrateError::TargetNotEmpty { tables: 3, .. }), "{err}");

    // Back to a fresh host cluster.
    let back = HostCluster::start();
    let report = migrate::migrate(&container_endpoint(&c), &Endpoint::Host(back.server()), &options, None, None)
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
        &container_endpoint(&c),
        &MigrateOptions::new("botserver"),
        None,
        None,
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
    migrate::migrate(&good_src, &container_endpoint(&c2), &MigrateOptions::new("botserver"), None, None)
        .await
        .expect("seed the container");
    let err = migrate::migrate(
        &container_endpoint(&c2),
        &Endpoint::Host(back.server()),
        &MigrateOptions::new("botserver"),
        None,
        None,
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
    let out = c.lxd.exec(&c.name, &ExecRequest::new(["sh", "-c", &script])).await.expect("exec");
    assert!(out.success(), "{}", out.stderr_text());
    container_psql(&c, "postgres", "CREATE DATABASE botserver;").await;
    container_psql(&c, "botserver", "CREATE TABLE old_stuff (x int); INSERT INTO old_stuff VALUES (1);").await;
    let mut options = MigrateOptions::new("botserver");
    options.replace = true;
    let report = migrate::migrate(&Endpoint::Host(source.server()), &container_endpoint(&c), &options, None, None)
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
    let err = migrate::migrate(&unreachable, &container_endpoint(&c), &MigrateOptions::new("botserver"), None, None)
        .await
        .expect_err("unreachable");
    assert!(err.to_string().contains(&format!("cannot connect to PostgreSQL at gbot@127.0.0.1:{closed}")), "{err}");
    let err = migrate::migrate(
        &Endpoint::Host(source.server()),
        &container_endpoint(&c),
        &MigrateOptions::new("nosuchdb"),
        None,
        None,
    )
    .await
    .expect_err("missing db");
    assert!(err.to_string().contains("database `nosuchdb` does not exist on the source"), "{err}");
    let wrong = Endpoint::Host(
        HostServer::from_libpq(Some(&format!("postgresql://gbot:wrong@127.0.0.1:{}", source.port))).expect("conninfo"),
    );
    let err = migrate::migrate(&wrong, &container_endpoint(&c), &MigrateOptions::new("botserver"), None, None)
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
    let err = migrate::migrate(&container_endpoint(&c), &target, &options, None, None)
        .await
        .expect_err("non-empty host target");
    assert!(matches!(err, MigrateError::TargetNotEmpty { tables: 2, .. }), "{err:?}");
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

    // With replace: the backup is written first, then the data is replaced and verified.
    options.replace = true;
    options.jobs = 3;
    let report = migrate::migrate(&container_endpoint(&c), &target, &options, None, None)
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
    let err = migrate::migrate(&Endpoint::Host(source.server()), &container_endpoint(&c), &options, None, None)
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

    let report = migrate::migrate(&Endpoint::Host(source.server()), &container_endpoint(&c), &options, None, None)
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
