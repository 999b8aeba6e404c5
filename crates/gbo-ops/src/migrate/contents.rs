//! What the two databases hold, read before anything changes: whether each exists, what a target holds (a target
//! that holds anything is refused without `--replace`), the roles the source's grants and owners name, and which of
//! them the target lacks.

use std::collections::BTreeSet;

use super::endpoint::{Endpoint, HostServer};
use super::error::{Contents, MigrateError};
use super::sql::{count, quote_literal, single, sql_error, unreadable};

/// What a migration found before it changes anything.
pub(super) struct Observed {
    /// The target database exists.
    pub target_exists: bool,
    /// It holds data, and `--replace` was given: it is saved, then replaced.
    pub replace: bool,
    /// Roles the source's grants and policies name (grants travel).
    pub grantees: Vec<String>,
    /// Roles that own something in the source (with `--keep-owners`; else none).
    pub owners: Vec<String>,
    /// Who will own the target database.
    pub database_owner: String,
}

/// Read what both sides hold: the source database exists, the target is empty (or `replace` is given), and the roles
/// the restore needs. A container's objects (`from_container`) kept with their owners may go only to roles this run
/// creates or to the application role `app`.
pub(super) async fn observe(
    reader: &HostServer,
    target: &Endpoint,
    database: &str,
    app: &str,
    replace: bool,
    keep_owners: bool,
    from_container: bool,
) -> Result<Observed, MigrateError> {
    let source = Endpoint::Host(reader.clone());
    if !database_exists(&source, database).await? {
        return Err(MigrateError::NoSuchDatabase { database: database.to_string(), side: source.describe() });
    }
    let target_exists = database_exists(target, database).await?;
    let mut replacing = false;
    if target_exists {
        let held = contents(target, database).await?;
        if !held.is_empty() {
            if !replace {
                return Err(MigrateError::TargetNotEmpty {
                    database: database.to_string(),
                    side: target.describe(),
                    contents: held,
                });
            }
            replacing = true;
        }
    }
    let grantees = source_roles(reader, database, GRANTEES_SQL).await?;
    let owners = if keep_owners { source_roles(reader, database, &owners_sql()).await? } else { Vec::new() };
    if keep_owners && from_container {
        let missing: BTreeSet<String> = missing_roles(target, &owners).await?.into_iter().collect();
        let foreign: Vec<String> =
            owners.iter().filter(|o| !missing.contains(*o) && o.as_str() != app).cloned().collect();
        if !foreign.is_empty() {
            return Err(MigrateError::ForeignOwners {
                side: target.describe(),
                roles: foreign,
                app_role: app.to_string(),
            });
        }
    }
    let database_owner = if keep_owners { source_owner(reader, database).await? } else { app.to_string() };
    Ok(Observed { target_exists, replace: replacing, grantees, owners, database_owner })
}

/// The role that owns the source database.
async fn source_owner(reader: &HostServer, database: &str) -> Result<String, MigrateError> {
    let client = reader.connect(database).await?;
    client
        .query_one(
            "SELECT pg_catalog.pg_get_userbyid(datdba)::text FROM pg_catalog.pg_database WHERE datname = current_database()",
            &[],
        )
        .await
        .and_then(|r| r.try_get::<_, String>(0))
        .map_err(sql_error(&reader.side()))
}

/// A catalog condition: the object (`oid` of class `class`) is not a member of an extension.
pub(super) fn not_extension_member(class: &str, oid: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.{class}'::regclass AND d.objid = {oid} AND d.deptype = 'e')"
    )
}

/// What a target database holds (see [`Contents`]). The only query of a migration that reads `pg_depend` on the
/// target before anything changes.
pub async fn contents(side: &Endpoint, database: &str) -> Result<Contents, MigrateError> {
    let system = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'";
    let sql = format!(
        "SELECT
 (SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE {system} AND {rel} AND (c.relkind IN ('r', 'p', 'v', 'm', 'f') OR (c.relkind = 'S' AND NOT EXISTS
     (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i'))))),
 (SELECT count(*) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE {system} AND {proc}),
 (SELECT count(*) FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
   WHERE {system} AND {typ} AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e WHERE e.typarray = t.oid)
     AND (t.typrelid = 0 OR EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid AND c.relkind = 'c'))),
 (SELECT count(*) FROM pg_catalog.pg_largeobject_metadata),
 (SELECT count(*) FROM pg_catalog.pg_namespace n WHERE {system} AND n.nspname <> 'public' AND {ns}),
 (SELECT count(*) FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql');",
        rel = not_extension_member("pg_class", "c.oid"),
        proc = not_extension_member("pg_proc", "p.oid"),
        typ = not_extension_member("pg_type", "t.oid"),
        ns = not_extension_member("pg_namespace", "n.oid"),
    );
    let rows = side.query(database, &sql).await?;
    let name = side.describe();
    let what = format!("what database `{database}` holds");
    let values = match rows.as_slice() {
        [row] if row.len() == 6 => {
            row.iter().map(|v| count(&name, &what, Some(v), &rows)).collect::<Result<Vec<u64>, _>>()?
        }
        _ => return Err(unreadable(&name, what, &rows)),
    };
    Ok(Contents {
        relations: values[0],
        functions: values[1],
        types: values[2],
        large_objects: values[3],
        schemas: values[4],
        extensions: values[5],
    })
}

/// Whether `database` exists on a side.
async fn database_exists(side: &Endpoint, database: &str) -> Result<bool, MigrateError> {
    let rows = side
        .query(
            "postgres",
            &format!("SELECT count(*) FROM pg_catalog.pg_database WHERE datname = {};", quote_literal(database)),
        )
        .await?;
    match single(&rows) {
        Some("0") => Ok(false),
        Some("1") => Ok(true),
        _ => Err(unreadable(&side.describe(), format!("whether database `{database}` exists"), &rows)),
    }
}

/// Of `names`, the roles a side lacks, in order.
pub(super) async fn missing_roles(side: &Endpoint, names: &[String]) -> Result<Vec<String>, MigrateError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let list = names.iter().map(|n| quote_literal(n)).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT i FROM unnest(ARRAY[{list}]::text[]) WITH ORDINALITY AS u(name, i) \
         WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = u.name) ORDER BY i;"
    );
    let rows = side.query("postgres", &sql).await?;
    rows.iter()
        .map(|row| {
            single(std::slice::from_ref(row))
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| i.checked_sub(1))
                .and_then(|i| names.get(i).cloned())
                .ok_or_else(|| unreadable(&side.describe(), "which roles exist", std::slice::from_ref(row)))
        })
        .collect()
}

/// Roles referenced in the source database by grants and policies (raw names).
const GRANTEES_SQL: &str = "SELECT DISTINCT r.rolname::text FROM pg_catalog.pg_shdepend d \
     JOIN pg_catalog.pg_roles r ON r.oid = d.refobjid \
     WHERE d.refclassid = 'pg_catalog.pg_authid'::regclass AND d.deptype IN ('a', 'r') \
     AND d.dbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) \
     AND r.rolname !~ '^pg_' ORDER BY 1";

/// Roles that own something in the source database (raw names).
fn owners_sql() -> String {
    let system = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'";
    format!(
        "SELECT DISTINCT pg_catalog.pg_get_userbyid(o)::text FROM (
  SELECT n.nspowner AS o FROM pg_catalog.pg_namespace n WHERE {system} AND n.nspname <> 'public' AND {ns}
  UNION SELECT c.relowner FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE {system} AND {rel}
  UNION SELECT p.proowner FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE {system} AND {proc}
  UNION SELECT t.typowner FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE {system} AND {typ}
  UNION SELECT m.lomowner FROM pg_catalog.pg_largeobject_metadata m
  UNION SELECT a.defaclrole FROM pg_catalog.pg_default_acl a
  UNION SELECT datdba FROM pg_catalog.pg_database WHERE datname = current_database()
) AS owners WHERE pg_catalog.pg_get_userbyid(o) !~ '^pg_' ORDER BY 1",
        ns = not_extension_member("pg_namespace", "n.oid"),
        rel = not_extension_member("pg_class", "c.oid"),
        proc = not_extension_member("pg_proc", "p.oid"),
        typ = not_extension_member("pg_type", "t.oid"),
    )
}

/// Role names from a one-column query on the source, without gbo's own temporary roles.
async fn source_roles(reader: &HostServer, database: &str, sql: &str) -> Result<Vec<String>, MigrateError> {
    let client = reader.connect(database).await?;
    let side = reader.side();
    let rows = client.query(sql, &[]).await.map_err(sql_error(&side))?;
    let names: Vec<String> =
        rows.iter().map(|r| r.try_get::<_, String>(0)).collect::<Result<_, _>>().map_err(sql_error(&side))?;
    Ok(names.into_iter().filter(|n| !n.starts_with("gbo_migrate_") && !n.starts_with("gbo_restore_")).collect())
}
