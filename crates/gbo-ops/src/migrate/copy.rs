//! The data: the source's tables (largest first) and large objects as COPY streams, each loaded into the target
//! in one transaction while the source's stream is counted, digested (rows and SHA-256) and, with `--keep-sql`,
//! kept on disk as it passes; and the sequences' values, set afterwards.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, TryStreamExt};
use lxd_client::ExecRequest;
use tokio::io::AsyncReadExt;

use super::endpoint::HostServer;
use super::error::MigrateError;
use super::event::{MigrateEvent, MigrateEventKind, Progress};
use super::session::Restore;
use super::sql::{db_message, quote_ident, quote_literal, sql_error};
use crate::events::Observer;

/// Name of the large objects in reports.
pub(super) const LARGE_OBJECTS: &str = "large objects";
/// The large objects and their contents, as one COPY source.
const LARGE_OBJECTS_SOURCE: &str =
    "(SELECT m.oid, pg_catalog.lo_get(m.oid) FROM pg_catalog.pg_largeobject_metadata m ORDER BY 1)";

/// One COPY stream of a migration: a table, or the large objects.
#[derive(Debug, Clone)]
pub(super) struct Unit {
    /// `schema.table` quoted by the host, or [`LARGE_OBJECTS`].
    pub name: String,
    /// The table's raw schema and name; None for the large objects.
    pub ident: Option<(String, String)>,
    /// What `COPY ... TO STDOUT` reads.
    pub source: String,
}

impl Unit {
    /// Target statements: before the COPY, the COPY, after it (one transaction around them).
    pub(super) fn target_statements(&self) -> (Vec<String>, String, Vec<String>) {
        match self.ident {
            Some(_) => (
                vec![format!("TRUNCATE ONLY {}", self.name)],
                format!("COPY {} FROM STDIN WITH (FREEZE)", self.name),
                vec![],
            ),
            None => (
                vec!["CREATE TEMP TABLE gbo_large_objects (id oid, data bytea) ON COMMIT DROP".into()],
                "COPY pg_temp.gbo_large_objects FROM STDIN".into(),
                vec!["SELECT pg_catalog.lo_put(id, 0, data) FROM pg_temp.gbo_large_objects".into()],
            ),
        }
    }
}

/// A sequence of the source and its value.
#[derive(Debug, Clone)]
pub(super) struct Seq {
    /// Its raw schema and name.
    pub ident: (String, String),
    /// `schema.sequence` quoted by the host.
    pub quoted: String,
    /// `last_value`.
    pub last: i64,
    /// `is_called`.
    pub called: bool,
}

/// Quote `schema.name` pairs with the host's own `quote_ident`, in order.
async fn quote_names(trusted: &HostServer, pairs: &[(String, String)]) -> Result<Vec<String>, MigrateError> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let client = trusted.connect("postgres").await?;
    let schemas: Vec<&str> = pairs.iter().map(|p| p.0.as_str()).collect();
    let names: Vec<&str> = pairs.iter().map(|p| p.1.as_str()).collect();
    let side = trusted.side();
    let rows = client
        .query(
            "SELECT pg_catalog.quote_ident(s) || '.' || pg_catalog.quote_ident(n) \
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(s, n, i) ORDER BY i",
            &[&schemas, &names],
        )
        .await
        .map_err(sql_error(&side))?;
    let quoted: Vec<String> =
        rows.iter().map(|r| r.try_get::<_, String>(0)).collect::<Result<_, _>>().map_err(sql_error(&side))?;
    if quoted.len() != pairs.len() {
        return Err(MigrateError::Unreadable {
            side,
            what: "quote_ident".into(),
            answer: format!("{} names for {}", quoted.len(), pairs.len()),
        });
    }
    Ok(quoted)
}

/// The source's relations of `kind` (`r`: tables, `S`: sequences) outside the system schemas, in `order`, as raw
/// (schema, name) pairs read through a host connection (typed: a value that is not text is an error, whatever the
/// server is).
async fn source_relations(
    client: &tokio_postgres::Client,
    side: &str,
    kind: char,
    order: &str,
) -> Result<Vec<(String, String)>, MigrateError> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = '{kind}' AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' ORDER BY {order}"
    );
    let rows = client.query(sql.as_str(), &[]).await.map_err(sql_error(side))?;
    rows.iter()
        .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, String>(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(sql_error(side))
}

/// The source's tables, largest first (plain tables and partitions: a partitioned parent holds no rows of its own
/// and `COPY` cannot read it, its partitions travel one by one), then its large objects when it has any.
pub(super) async fn source_units(
    reader: &HostServer,
    trusted: &HostServer,
    database: &str,
) -> Result<Vec<Unit>, MigrateError> {
    let client = reader.connect(database).await?;
    let side = reader.side();
    let pairs = source_relations(&client, &side, 'r', "pg_catalog.pg_total_relation_size(c.oid) DESC, 1, 2").await?;
    let quoted = quote_names(trusted, &pairs).await?;
    let mut units: Vec<Unit> = pairs
        .into_iter()
        .zip(quoted)
        .map(|(ident, name)| Unit { source: name.clone(), name, ident: Some(ident) })
        .collect();
    let objects: i64 = client
        .query_one("SELECT count(*) FROM pg_catalog.pg_largeobject_metadata", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(sql_error(&side))?;
    if objects > 0 {
        units.push(Unit { name: LARGE_OBJECTS.into(), ident: None, source: LARGE_OBJECTS_SOURCE.into() });
    }
    Ok(units)
}

/// The source's sequences and their values (`last_value`, `is_called`), read as numbers.
pub(super) async fn source_sequences(
    reader: &HostServer,
    trusted: &HostServer,
    database: &str,
) -> Result<Vec<Seq>, MigrateError> {
    let client = reader.connect(database).await?;
    let side = reader.side();
    let pairs = source_relations(&client, &side, 'S', "1, 2").await?;
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let quoted = quote_names(trusted, &pairs).await?;
    let sql = quoted
        .iter()
        .enumerate()
        .map(|(i, q)| format!("SELECT {i}::int4, last_value, is_called FROM {q}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let rows = client.query(sql.as_str(), &[]).await.map_err(sql_error(&side))?;
    let mut values: BTreeMap<usize, (i64, bool)> = BTreeMap::new();
    for row in &rows {
        let i: i32 = row.try_get(0).map_err(sql_error(&side))?;
        let last: i64 = row.try_get(1).map_err(sql_error(&side))?;
        let called: bool = row.try_get(2).map_err(sql_error(&side))?;
        let index = usize::try_from(i).ok().filter(|i| *i < quoted.len()).ok_or_else(|| MigrateError::Unreadable {
            side: side.clone(),
            what: "sequence values".into(),
            answer: format!("index {i}"),
        })?;
        values.insert(index, (last, called));
    }
    if values.len() != quoted.len() {
        return Err(MigrateError::Unreadable {
            side,
            what: "sequence values".into(),
            answer: format!("{} values for {} sequences", values.len(), quoted.len()),
        });
    }
    Ok(pairs
        .into_iter()
        .zip(quoted)
        .zip(values.into_values())
        .map(|((ident, quoted), (last, called))| Seq { ident, quoted, last, called })
        .collect())
}

/// A table's `COPY ... TO STDOUT` text stream, summarised: rows (one newline each: text format escapes newlines in
/// values) and the stream's SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDigest {
    /// Rows in the stream.
    pub rows: u64,
    /// Hex SHA-256 of the stream.
    pub sha256: String,
}

/// Hashes and counts a COPY stream as it passes.
#[derive(Default)]
pub(super) struct Digester {
    hasher: sha2::Sha256,
    rows: u64,
    /// A copy of the stream kept on disk (`--keep-sql`), written through the page cache, and its first error.
    tee: Option<std::io::BufWriter<std::fs::File>>,
    tee_error: Option<std::io::Error>,
}

impl Digester {
    /// A digester that also writes the stream to `file`.
    pub(super) fn teeing(file: Option<std::fs::File>) -> Self {
        Self { tee: file.map(|f| std::io::BufWriter::with_capacity(1 << 20, f)), ..Self::default() }
    }

    /// More of the stream.
    pub(super) fn update(&mut self, data: &[u8]) {
        use sha2::Digest as _;
        use std::io::Write as _;
        self.hasher.update(data);
        self.rows += data.iter().filter(|b| **b == b'\n').count() as u64;
        if let (Some(tee), None) = (self.tee.as_mut(), self.tee_error.as_ref()) {
            if let Err(e) = tee.write_all(data) {
                self.tee_error = Some(e);
            }
        }
    }

    /// Flush the kept copy, if any, and report the first error writing it.
    pub(super) fn close_tee(&mut self) -> std::io::Result<()> {
        use std::io::Write as _;
        if let Some(e) = self.tee_error.take() {
            return Err(e);
        }
        match self.tee.take() {
            Some(mut tee) => tee.flush(),
            None => Ok(()),
        }
    }

    /// The digest of the whole stream.
    pub(super) fn finish(self) -> StreamDigest {
        use sha2::Digest as _;
        StreamDigest { rows: self.rows, sha256: hex::encode(self.hasher.finalize()) }
    }
}

/// Session settings that make COPY's text output canonical on both sides, and a sequential scan that starts at the
/// table's first page (a synchronised scan may start in the middle when another scan of the table is running).
pub(super) const STREAM_SESSION: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'; SET synchronize_seqscans = off;";

/// Counts and digests the bytes passing through, and reports them.
struct Digesting<'a, R> {
    inner: R,
    digest: Digester,
    progress: Progress<'a>,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Digesting<'_, R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        let added = &buf.filled()[before..];
        this.digest.update(added);
        this.progress.add(added.len());
        poll
    }
}

/// One unit copied: the digest of the source's COPY stream, taken as it passed, and its size.
pub(super) struct Copied {
    /// The stream's digest.
    pub digest: StreamDigest,
    /// Its bytes.
    pub bytes: u64,
}

/// Copy one unit, reporting it to `events` (started, bytes copied a few times a second, copied).
///
/// The source is always read through a connection the host makes itself (a host server, or a container through
/// its published port): only the COPY data crosses to the target. A table is loaded after `TRUNCATE ONLY` with
/// `COPY ... WITH (FREEZE)` in one transaction: the rows are written frozen, so reading them back for verification
/// does not rewrite every page to set hint bits. Large objects land in a temporary table and are written into the
/// objects the schema created.
pub(super) async fn copy_unit(
    reader: &HostServer,
    restore: &Restore,
    db: &str,
    unit: &Unit,
    tee: Option<std::fs::File>,
    events: &dyn Observer<MigrateEvent>,
) -> Result<Copied, MigrateError> {
    events.event(&MigrateEvent::new(&unit.name, MigrateEventKind::CopyStarted));
    let source_side = reader.side();
    let client = reader.connect(db).await?;
    client.batch_execute(STREAM_SESSION).await.map_err(sql_error(&source_side))?;
    let stream = client.copy_out(format!("COPY {} TO STDOUT", unit.source).as_str()).await.map_err(|e| {
        MigrateError::Sql { side: source_side.clone(), message: format!("{}: {}", unit.name, db_message(&e)) }
    })?;
    let reader_stream = tokio_util::io::StreamReader::new(stream.map_err(std::io::Error::other));
    let mut stream = Digesting {
        inner: Box::pin(reader_stream),
        digest: Digester::teeing(tee),
        progress: Progress::new(&unit.name, events),
    };
    let (before, copy_in, after) = unit.target_statements();
    let target_side = restore.describe();
    let failed =
        |message: String| MigrateError::Sql { side: target_side.clone(), message: format!("{}: {message}", unit.name) };
    match restore {
        Restore::Container { server: c, role } => {
            let mut statements: Vec<String> = Vec::new();
            if let Some(role) = role {
                statements.push(format!("SET ROLE {}", quote_ident(role)));
            }
            statements.push("BEGIN".into());
            statements.extend(before);
            statements.push(copy_in);
            statements.extend(after);
            statements.push("COMMIT".into());
            let mut args: Vec<&str> = Vec::new();
            for s in &statements {
                args.push("-c");
                args.push(s);
            }
            let argv = c.psql_argv(db, &args);
            let mut stderr = Vec::new();
            let code = c
                .lxd
                .exec(&c.instance, &ExecRequest::new(argv).timeout(Duration::from_secs(6 * 3600)).stdin_piped())
                .await?
                .relay(Some(&mut stream), tokio::io::sink(), &mut stderr)
                .await?;
            if code != 0 {
                return Err(failed(String::from_utf8_lossy(&stderr).trim().to_string()));
            }
        }
        Restore::Host { server, .. } => {
            let target = server.connect(db).await?;
            let mut start = restore.prelude();
            start.push_str("BEGIN;\n");
            for s in &before {
                start.push_str(s);
                start.push_str(";\n");
            }
            target.batch_execute(&start).await.map_err(|e| failed(db_message(&e)))?;
            let sink = target.copy_in::<_, bytes::Bytes>(copy_in.as_str()).await.map_err(|e| failed(db_message(&e)))?;
            let mut sink = Box::pin(sink);
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = stream.read(&mut buf).await.map_err(|e| MigrateError::Sql {
                    side: source_side.clone(),
                    message: format!("{}: {e}", unit.name),
                })?;
                if n == 0 {
                    break;
                }
                sink.send(bytes::Bytes::copy_from_slice(&buf[..n])).await.map_err(|e| failed(db_message(&e)))?;
            }
            sink.as_mut().finish().await.map_err(|e| failed(db_message(&e)))?;
            let mut end = String::new();
            for s in &after {
                end.push_str(s);
                end.push_str(";\n");
            }
            end.push_str("COMMIT;");
            target.batch_execute(&end).await.map_err(|e| failed(db_message(&e)))?;
        }
    }
    stream.digest.close_tee()?;
    let bytes = stream.progress.bytes();
    let digest = stream.digest.finish();
    events.event(&MigrateEvent::new(&unit.name, MigrateEventKind::Copied { bytes, rows: digest.rows }));
    Ok(Copied { digest, bytes })
}

/// `setval` statements that give each sequence its value, from numbers read as numbers.
pub(super) fn setval_sql(sequences: &[Seq]) -> String {
    sequences
        .iter()
        .map(|s| format!("SELECT pg_catalog.setval({}, {}, {});\n", quote_literal(&s.quoted), s.last, s.called))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_counts_rows_and_hashes_the_stream_in_any_chunking() {
        let mut one = Digester::default();
        one.update(b"1\ta\\nb\n2\tc\n");
        let mut two = Digester::default();
        two.update(b"1\ta\\n");
        two.update(b"b\n2\t");
        two.update(b"c\n");
        let (a, b) = (one.finish(), two.finish());
        assert_eq!(a, b);
        assert_eq!(a.rows, 2, "an escaped newline inside a value is not a row");
        assert_eq!(a.sha256.len(), 64);
    }
}
