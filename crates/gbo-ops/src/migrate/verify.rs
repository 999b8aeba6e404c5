//! Nothing is declared a success before it is checked. Each table's COPY stream is read back where the target keeps
//! it (inside a container: `psql | sha256sum`) and compared with the source's; only when two streams differ does an
//! order-independent per-row checksum of both sides decide. Then the set of tables, every sequence's value, the
//! application role's right to read and write every table (in a transaction rolled back), and who owns what.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::StreamExt;
use lxd_client::ExecRequest;

use super::contents::not_extension_member;
use super::copy::{Digester, Seq, StreamDigest, Unit, LARGE_OBJECTS, STREAM_SESSION};
use super::endpoint::{ContainerServer, Endpoint};
use super::error::{Difference, MigrateError};
use super::event::{MigrateEvent, MigrateEventKind};
use super::session::Restore;
use super::sql::{count, db_message, quote_ident, quote_literal, unhex, unreadable};
use crate::events::Observer;

/// A table's identity and verification data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableCheck {
    /// `schema.table`, quoted as SQL needs.
    pub table: String,
    /// Exact `count(*)`.
    pub rows: u64,
    /// Order-independent content checksum.
    pub checksum: String,
}

/// The raw (schema, name) pairs of relations of `kind` on a side; names travel hex-encoded, so no name can break the
/// answer's rows.
async fn relations(side: &Endpoint, database: &str, kind: char) -> Result<BTreeSet<(String, String)>, MigrateError> {
    let sql = format!(
        "SELECT encode(convert_to(n.nspname::text, 'UTF8'), 'hex'), encode(convert_to(c.relname::text, 'UTF8'), 'hex') \
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = '{kind}' AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema';"
    );
    let name = side.describe();
    side.query(database, &sql)
        .await?
        .iter()
        .map(|r| match r.as_slice() {
            [s, n] => Ok((unhex(&name, s)?, unhex(&name, n)?)),
            _ => Err(unreadable(&name, "the list of relations", std::slice::from_ref(r))),
        })
        .collect()
}

/// Values (`last_value`, `is_called`) of the sequences of `wanted` that exist on a side, by index in `wanted`.
async fn sequence_values(
    side: &Endpoint,
    database: &str,
    wanted: &[Seq],
) -> Result<BTreeMap<usize, (i64, bool)>, MigrateError> {
    let present = relations(side, database, 'S').await?;
    let parts: Vec<String> = wanted
        .iter()
        .enumerate()
        .filter(|(_, s)| present.contains(&s.ident))
        .map(|(i, s)| format!("SELECT {i}, last_value, is_called FROM {}", s.quoted))
        .collect();
    if parts.is_empty() {
        return Ok(BTreeMap::new());
    }
    let name = side.describe();
    let rows = side.query(database, &format!("{};", parts.join(" UNION ALL "))).await?;
    let mut out = BTreeMap::new();
    for row in &rows {
        let parsed = match row.as_slice() {
            [i, last, called] => match (i.parse::<usize>(), last.parse::<i64>(), called.as_str()) {
                (Ok(i), Ok(last), "t") if i < wanted.len() => Some((i, (last, true))),
                (Ok(i), Ok(last), "f") if i < wanted.len() => Some((i, (last, false))),
                _ => None,
            },
            _ => None,
        };
        let (i, value) = parsed.ok_or_else(|| unreadable(&name, "sequence values", std::slice::from_ref(row)))?;
        out.insert(i, value);
    }
    Ok(out)
}

/// The query [`check_table`] runs (after the session settings): the row count, then `A:B`, where A and B are the
/// exact sums of two 60-bit pieces (hex digits 1-15 and 16-30) of each row's `md5(row::text)`.
///
/// The value is the one every gbo release recorded (backups keep it in their description and restores compare
/// with it), so the formula never changes; only how PostgreSQL evaluates it may. The md5 comes out of a
/// one-element `unnest`, which keeps the planner from inlining the subquery and computing the row's text and
/// md5 once per sum (half the time on a large table); `sum(bigint)` is exact (numeric result) and needs no cast.
pub fn table_check_sql(table: &str) -> String {
    format!(
        "SELECT count(*), coalesce(sum(('x' || substr(h, 1, 15))::bit(60)::bigint), 0) || ':' || coalesce(sum(('x' || substr(h, 16, 15))::bit(60)::bigint), 0) FROM (SELECT unnest(ARRAY[md5(t::text)]) AS h FROM {table} AS t) AS rows;"
    )
}

/// Count and checksum one COPY source, order-independently ([`table_check_sql`]), so it needs no sort. In a
/// migration, the slow path, used only when the fast comparison of COPY streams disagrees; a backup records it for
/// every table, and a restore compares with it.
pub async fn check_table(side: &Endpoint, database: &str, table: &str) -> Result<TableCheck, MigrateError> {
    let sql = format!("{STREAM_SESSION} {}", table_check_sql(table));
    let rows = side.query(database, &sql).await?;
    match rows.as_slice() {
        [row] if row.len() == 2 => Ok(TableCheck {
            table: table.to_string(),
            rows: count(&side.describe(), "a row count", Some(&row[0]), &rows)?,
            checksum: row[1].clone(),
        }),
        _ => Err(unreadable(&side.describe(), format!("the checksum of {table}"), &rows)),
    }
}

/// Read a table back as its COPY stream and digest it, where the data lives: through the host connection, or inside
/// the container (`psql | sha256sum`, so the data does not cross LXD's websocket).
pub async fn digest_table(side: &Endpoint, database: &str, table: &str) -> Result<StreamDigest, MigrateError> {
    match side {
        Endpoint::Host(h) => {
            let client = h.connect(database).await?;
            client
                .batch_execute(STREAM_SESSION)
                .await
                .map_err(|e| MigrateError::Sql { side: side.describe(), message: db_message(&e) })?;
            let stream = client.copy_out(format!("COPY {table} TO STDOUT").as_str()).await.map_err(|e| {
                MigrateError::Sql { side: side.describe(), message: format!("{table}: {}", db_message(&e)) }
            })?;
            let mut stream = Box::pin(stream);
            let mut digest = Digester::default();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| MigrateError::Sql {
                    side: side.describe(),
                    message: format!("{table}: {}", db_message(&e)),
                })?;
                digest.update(&chunk);
            }
            Ok(digest.finish())
        }
        Endpoint::Container(c) => {
            // bash for pipefail and `wait` on a process substitution; the SQL (and the table's name) on stdin.
            let script = "set -o pipefail; exec 3>&1; \
                          runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql -p \"$0\" -d \"$1\" -f - \
                          | tee >(sha256sum >&3) | wc -l; rc=$?; wait $!; exit $rc";
            let argv = vec![
                "bash".to_string(),
                "-c".to_string(),
                script.to_string(),
                c.port.to_string(),
                database.to_string(),
            ];
            let sql = format!("{STREAM_SESSION}\nCOPY {table} TO STDOUT;\n");
            let out = c
                .lxd
                .exec_output(
                    &c.instance,
                    &ExecRequest::new(argv).timeout(Duration::from_secs(6 * 3600)).stdin_bytes(sql),
                )
                .await?;
            if !out.success() {
                return Err(MigrateError::Sql {
                    side: side.describe(),
                    message: format!("{table}: {}", out.stderr_text().trim()),
                });
            }
            let text = out.stdout_text();
            let mut rows = None;
            let mut sha = None;
            for line in text.lines() {
                let word = line.split_whitespace().next().unwrap_or("");
                if word.len() == 64 && word.bytes().all(|b| b.is_ascii_hexdigit()) {
                    sha = Some(word.to_string());
                } else if let Ok(n) = word.parse::<u64>() {
                    rows = Some(n);
                }
            }
            match (rows, sha) {
                (Some(rows), Some(sha256)) => Ok(StreamDigest { rows, sha256 }),
                _ => Err(MigrateError::Sql {
                    side: side.describe(),
                    message: format!("{table}: unexpected digest output `{}`", text.trim()),
                }),
            }
        }
    }
}

/// Compare one unit. Fast path: the row count and SHA-256 of both COPY streams (the source's may be known already,
/// digested while it was copied). Only when the streams differ, the order-independent checksum decides, so a
/// different row order or text rendering is not mistaken for different content.
pub(super) async fn compare_table(
    source: &Endpoint,
    target: &Endpoint,
    database: &str,
    unit: &Unit,
    known: Option<StreamDigest>,
) -> Result<(TableCheck, Option<Difference>), MigrateError> {
    let (s, t) = match known {
        Some(s) => (s, digest_table(target, database, &unit.source).await?),
        None => {
            let (s, t) = tokio::join!(
                digest_table(source, database, &unit.source),
                digest_table(target, database, &unit.source)
            );
            (s?, t?)
        }
    };
    if s == t {
        return Ok((
            TableCheck { table: unit.name.clone(), rows: s.rows, checksum: format!("sha256:{}", s.sha256) },
            None,
        ));
    }
    let (a, b) = tokio::join!(check_table(source, database, &unit.source), check_table(target, database, &unit.source));
    let (mut a, b) = (a?, b?);
    a.table = unit.name.clone();
    let difference = if a.rows != b.rows {
        Some(Difference { object: unit.name.clone(), what: format!("rows {} on source, {} on target", a.rows, b.rows) })
    } else if a.checksum != b.checksum {
        Some(Difference { object: unit.name.clone(), what: "same row count, different content checksum".into() })
    } else {
        None
    };
    Ok((a, difference))
}

/// Tell `events` how a table's comparison came out.
pub(super) fn report(events: &dyn Observer<MigrateEvent>, (check, difference): &(TableCheck, Option<Difference>)) {
    let kind = match difference {
        None => MigrateEventKind::Verified { rows: check.rows },
        Some(d) => MigrateEventKind::Differs { what: d.what.clone() },
    };
    events.event(&MigrateEvent::new(&check.table, kind));
}

/// Compare every table, the large objects and every sequence on both sides; returns the table checks, the large
/// objects' check and the differences. `checked` holds what was compared while copying; the rest is compared here,
/// `jobs` at a time.
#[allow(clippy::too_many_arguments)]
pub(super) async fn verify(
    source: &Endpoint,
    target: &Endpoint,
    database: &str,
    jobs: usize,
    units: &[Unit],
    sequences: &[Seq],
    checked: Vec<(TableCheck, Option<Difference>)>,
    events: &dyn Observer<MigrateEvent>,
) -> Result<(Vec<TableCheck>, Option<TableCheck>, Vec<Difference>), MigrateError> {
    let target_tables = relations(target, database, 'r').await?;
    let done: BTreeSet<String> = checked.iter().map(|(c, _)| c.table.clone()).collect();
    let mut differences = Vec::new();
    let mut present = Vec::new();
    for unit in units {
        match &unit.ident {
            Some(ident) if !target_tables.contains(ident) => {
                let missing = Difference { object: unit.name.clone(), what: "missing on target".into() };
                events.event(&MigrateEvent::new(&unit.name, MigrateEventKind::Differs { what: missing.what.clone() }));
                differences.push(missing)
            }
            _ if !done.contains(&unit.name) => present.push(unit),
            _ => {}
        }
    }
    let compared: Vec<Result<(TableCheck, Option<Difference>), MigrateError>> =
        futures_util::stream::iter(present.iter().map(|u| async move {
            let compared = compare_table(source, target, database, u, None).await?;
            report(events, &compared);
            Ok(compared)
        }))
        .buffer_unordered(jobs.max(1))
        .collect()
        .await;
    let mut verified = Vec::new();
    let mut large_objects = None;
    for result in checked.into_iter().map(Ok).chain(compared) {
        let (check, difference) = result?;
        differences.extend(difference);
        if check.table == LARGE_OBJECTS {
            large_objects = Some(check);
        } else {
            verified.push(check);
        }
    }
    verified.sort_by(|a, b| a.table.cmp(&b.table));
    let values = sequence_values(target, database, sequences).await?;
    for (i, seq) in sequences.iter().enumerate() {
        match values.get(&i) {
            Some(v) if *v == (seq.last, seq.called) => {}
            Some((last, called)) => differences.push(Difference {
                object: seq.quoted.clone(),
                what: format!(
                    "sequence {} on source, {} on target",
                    seq_value(seq.last, seq.called),
                    seq_value(*last, *called)
                ),
            }),
            None => {
                differences.push(Difference { object: seq.quoted.clone(), what: "sequence missing on target".into() })
            }
        }
    }
    differences.sort_by(|a, b| a.object.cmp(&b.object));
    Ok((verified, large_objects, differences))
}

/// `last_value is_called`, as reports show a sequence.
pub(super) fn seq_value(last: i64, called: bool) -> String {
    format!("{last} {}", if called { "t" } else { "f" })
}

/// Read and write every table as the application role, in one transaction that is rolled back: read a row, rewrite
/// one in place (`UPDATE ... SET c = c`), and an `INSERT` and a `DELETE` that touch no row (PostgreSQL checks a
/// statement's privileges before it runs); and take values of every sequence (privilege `USAGE`). Returns what the
/// role cannot do, by table or sequence.
pub(super) async fn app_access(
    restore: &Restore,
    database: &str,
    app: &str,
    units: &[Unit],
    sequences: &[Seq],
) -> Result<Vec<Difference>, MigrateError> {
    let tables: Vec<&Unit> = units.iter().filter(|u| u.ident.is_some()).collect();
    let table_list = tables.iter().map(|u| quote_literal(&u.name)).collect::<Vec<_>>().join(", ");
    let sequence_list = sequences.iter().map(|s| quote_literal(&s.quoted)).collect::<Vec<_>>().join(", ");
    let body = format!(
        "DECLARE
  t text; i int := 0; cols text; first_col text;
BEGIN
  FOREACH t IN ARRAY ARRAY[{table_list}]::text[] LOOP
    BEGIN
      SELECT string_agg(pg_catalog.quote_ident(attname), ', ' ORDER BY attnum),
             (array_agg(pg_catalog.quote_ident(attname) ORDER BY attnum))[1]
        INTO cols, first_col
        FROM pg_catalog.pg_attribute
       WHERE attrelid = t::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = '';
      EXECUTE 'SELECT 1 FROM ' || t || ' LIMIT 1';
      IF first_col IS NOT NULL THEN
        EXECUTE 'UPDATE ' || t || ' SET ' || first_col || ' = ' || first_col
             || ' WHERE ctid = (SELECT ctid FROM ' || t || ' LIMIT 1)';
        EXECUTE 'INSERT INTO ' || t || ' (' || cols || ') OVERRIDING SYSTEM VALUE SELECT ' || cols
             || ' FROM ' || t || ' WHERE false';
      END IF;
      EXECUTE 'DELETE FROM ' || t || ' WHERE false';
    EXCEPTION WHEN OTHERS THEN
      INSERT INTO pg_temp.gbo_app_check VALUES (i, SQLERRM);
    END;
    i := i + 1;
  END LOOP;
  FOREACH t IN ARRAY ARRAY[{sequence_list}]::text[] LOOP
    BEGIN
      IF NOT pg_catalog.has_sequence_privilege(t, 'USAGE') THEN
        INSERT INTO pg_temp.gbo_app_check VALUES (i, 'no USAGE privilege: nextval() is refused');
      END IF;
    EXCEPTION WHEN OTHERS THEN
      INSERT INTO pg_temp.gbo_app_check VALUES (i, SQLERRM);
    END;
    i := i + 1;
  END LOOP;
END"
    );
    let sql = format!(
        "BEGIN;
SET LOCAL ROLE {role};
CREATE TEMP TABLE gbo_app_check (n int, problem text);
DO {body};
SELECT n, translate(problem, E'\\t\\n\\r', '   ') FROM pg_temp.gbo_app_check ORDER BY n;
ROLLBACK;
",
        role = quote_ident(app),
        body = quote_literal(&body)
    );
    let side = restore.describe();
    let rows = restore.query(database, &sql).await?;
    let names: Vec<&str> =
        tables.iter().map(|u| u.name.as_str()).chain(sequences.iter().map(|s| s.quoted.as_str())).collect();
    rows.iter()
        .map(|row| match row.as_slice() {
            [n, problem] => match n.parse::<usize>().ok().and_then(|n| names.get(n)) {
                Some(name) => Ok(Difference { object: name.to_string(), what: problem.clone() }),
                None => Err(unreadable(&side, "the application role check", std::slice::from_ref(row))),
            },
            _ => Err(unreadable(&side, "the application role check", std::slice::from_ref(row))),
        })
        .collect()
}

/// Objects in the target database that the application role does not own (schemas other than `public`, relations,
/// functions, types, large objects; extension members aside). Names travel hex-encoded.
pub(super) async fn foreign_owned(
    target: &Endpoint,
    database: &str,
    app: &str,
) -> Result<Vec<Difference>, MigrateError> {
    let system = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'";
    let sql = format!(
        "SELECT kind, encode(convert_to(name, 'UTF8'), 'hex'), encode(convert_to(owner, 'UTF8'), 'hex') FROM (
  SELECT 'schema' AS kind, pg_catalog.quote_ident(n.nspname) AS name, pg_catalog.pg_get_userbyid(n.nspowner)::text AS owner
    FROM pg_catalog.pg_namespace n WHERE {system} AND n.nspname <> 'public' AND {ns}
  UNION ALL SELECT 'relation', c.oid::regclass::text, pg_catalog.pg_get_userbyid(c.relowner)::text
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE {system} AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {rel}
  UNION ALL SELECT 'function', p.oid::regprocedure::text, pg_catalog.pg_get_userbyid(p.proowner)::text
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE {system} AND {proc}
  UNION ALL SELECT 'type', t.oid::regtype::text, pg_catalog.pg_get_userbyid(t.typowner)::text
    FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
   WHERE {system} AND t.typrelid = 0 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e WHERE e.typarray = t.oid) AND {typ}
  UNION ALL SELECT 'large object', m.oid::text, pg_catalog.pg_get_userbyid(m.lomowner)::text
    FROM pg_catalog.pg_largeobject_metadata m
) AS o WHERE owner <> {app} ORDER BY 1, 2;",
        ns = not_extension_member("pg_namespace", "n.oid"),
        rel = not_extension_member("pg_class", "c.oid"),
        proc = not_extension_member("pg_proc", "p.oid"),
        typ = not_extension_member("pg_type", "t.oid"),
        app = quote_literal(app),
    );
    let side = target.describe();
    target
        .query(database, &sql)
        .await?
        .iter()
        .map(|row| match row.as_slice() {
            [kind, name, owner] => Ok(Difference {
                object: format!("{kind} {}", unhex(&side, name)?),
                what: format!("owned by {}, not by {app}", unhex(&side, owner)?),
            }),
            _ => Err(unreadable(&side, "the owners", std::slice::from_ref(row))),
        })
        .collect()
}

/// The row count and order-independent checksum ([`check_table`]) of every table of `database` on a side, by name
/// (`schema.table`, quoted), in name order. Names travel hex-encoded and are quoted on the host. What a backup
/// records of a database, for [`check_recorded`] to compare after a restore.
pub async fn table_checks(side: &Endpoint, database: &str) -> Result<Vec<TableCheck>, MigrateError> {
    let mut names: Vec<String> = relations(side, database, 'r')
        .await?
        .iter()
        .map(|(s, n)| format!("{}.{}", quote_ident(s), quote_ident(n)))
        .collect();
    names.sort();
    let mut checks = Vec::with_capacity(names.len());
    for name in &names {
        checks.push(check_table(side, database, name).await?);
    }
    Ok(checks)
}

/// Compare what `database` holds on a side with `recorded` (from [`table_checks`]): every recorded table is there
/// with the same row count and checksum. With `app`, that role must also read and write every table and use every
/// sequence, as the migration's last check does (`app_access`, rolled back). Returns the differences, by table.
pub async fn check_recorded(
    side: &ContainerServer,
    database: &str,
    recorded: &[TableCheck],
    app: Option<&str>,
) -> Result<Vec<Difference>, MigrateError> {
    let endpoint = Endpoint::Container(side.clone());
    let present: BTreeSet<String> = relations(&endpoint, database, 'r')
        .await?
        .iter()
        .map(|(s, n)| format!("{}.{}", quote_ident(s), quote_ident(n)))
        .collect();
    let mut differences = Vec::new();
    let mut units = Vec::new();
    for want in recorded {
        if !present.contains(&want.table) {
            differences.push(Difference { object: want.table.clone(), what: "missing after the restore".into() });
            continue;
        }
        let got = check_table(&endpoint, database, &want.table).await?;
        if got.rows != want.rows {
            differences.push(Difference {
                object: want.table.clone(),
                what: format!("{} rows recorded at backup time, {} restored", want.rows, got.rows),
            });
        } else if got.checksum != want.checksum {
            differences.push(Difference {
                object: want.table.clone(),
                what: format!("{} rows as recorded, but a different content checksum", got.rows),
            });
        }
        units.push(Unit {
            name: want.table.clone(),
            ident: Some((String::new(), String::new())),
            source: want.table.clone(),
        });
    }
    if let Some(app) = app {
        let sequences: Vec<Seq> = relations(&endpoint, database, 'S')
            .await?
            .into_iter()
            .map(|(s, n)| Seq {
                quoted: format!("{}.{}", quote_ident(&s), quote_ident(&n)),
                ident: (s, n),
                last: 0,
                called: false,
            })
            .collect();
        let restore = Restore::Container { server: side.clone(), role: None };
        differences.extend(app_access(&restore, database, app, &units, &sequences).await?);
    }
    differences.sort_by(|a, b| a.object.cmp(&b.object));
    Ok(differences)
}

/// The databases of a side that hold data a backup records: every database that accepts connections, templates
/// aside, whose name passes [`super::validate_database`]. Names travel hex-encoded.
pub async fn databases(side: &Endpoint) -> Result<Vec<String>, MigrateError> {
    let name = side.describe();
    let rows = side
        .query(
            "postgres",
            "SELECT encode(convert_to(datname::text, 'UTF8'), 'hex') FROM pg_catalog.pg_database \
             WHERE datallowconn AND NOT datistemplate ORDER BY 1;",
        )
        .await?;
    let mut out = Vec::new();
    for row in &rows {
        match row.as_slice() {
            [hex] => {
                let db = unhex(&name, hex)?;
                if super::validate_database(&db).is_ok() {
                    out.push(db);
                }
            }
            _ => return Err(unreadable(&name, "the list of databases", std::slice::from_ref(row))),
        }
    }
    Ok(out)
}
