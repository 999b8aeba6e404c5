//! `--keep-sql`: the migration also kept as a plain SQL file that `psql -f` restores into an empty database,
//! written only once verification passed, never over an existing file. Without it nothing touches the disk.

use std::path::{Path, PathBuf};

use super::copy::{setval_sql, Seq, Unit, STREAM_SESSION};
use super::error::MigrateError;

/// A `--keep-sql` file in the making: each table's COPY stream is written to its own part (0600, in a 0700 directory
/// beside the file) as it passes; once verification passed the parts are assembled into a psql script (pre-data,
/// `COPY ... FROM stdin` blocks, sequence values, post-data) and renamed into place. Removed on failure.
pub(super) struct KeptSql {
    path: PathBuf,
    parts: PathBuf,
}

impl KeptSql {
    /// Check where the file goes (a new file in a directory that exists) and make the parts' directory, before
    /// anything changes.
    pub(super) fn prepare(path: &Path) -> Result<Self, MigrateError> {
        let bad = |reason: &str| MigrateError::KeepSql { path: path.display().to_string(), reason: reason.to_string() };
        if path.exists() {
            return Err(bad("the file exists; name a new file (it is never overwritten)"));
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(bad("its directory does not exist"));
        }
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| bad("it names no file"))?;
        let parts = parent.join(format!(".{name}.parts-{}", std::process::id()));
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&parts)
            .map_err(|e| bad(&format!("its directory is not writable ({e})")))?;
        Ok(Self { path: path.to_path_buf(), parts })
    }

    /// The part the `index`-th unit's COPY stream is written to.
    pub(super) fn part(&self, index: usize) -> Result<std::fs::File, MigrateError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        Ok(std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.parts.join(format!("{index}.copy")))?)
    }

    /// Assemble the script from the sections and the parts, and put it in place; its path.
    pub(super) fn assemble(
        self,
        pre: &str,
        units: &[Unit],
        sequences: &[Seq],
        post: &str,
    ) -> Result<PathBuf, MigrateError> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let partial = self.parts.join("assembled.sql");
        let file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&partial)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        writeln!(out, "-- Written by gbo migrate --keep-sql: restore into an empty database with `psql -v ON_ERROR_STOP=1 -f FILE`.")?;
        // The settings the COPY data was written with.
        writeln!(out, "{}", STREAM_SESSION.replace("; ", ";\n"))?;
        out.write_all(pre.as_bytes())?;
        for (i, unit) in units.iter().enumerate() {
            let (_, copy_in, after) = unit.target_statements();
            if unit.ident.is_some() {
                writeln!(out, "\nCOPY {} FROM stdin;", unit.name)?;
            } else {
                // Large objects: the schema created them empty; their contents go through a temporary table.
                writeln!(out, "\nCREATE TEMP TABLE gbo_large_objects (id oid, data bytea);")?;
                writeln!(out, "{};", copy_in.replace("FROM STDIN", "FROM stdin"))?;
            }
            let mut part = std::fs::File::open(self.parts.join(format!("{i}.copy")))?;
            std::io::copy(&mut part, &mut out)?;
            writeln!(out, "\\.")?;
            for statement in after {
                writeln!(out, "{statement};")?;
            }
            if unit.ident.is_none() {
                writeln!(out, "DROP TABLE pg_temp.gbo_large_objects;")?;
            }
        }
        writeln!(out)?;
        out.write_all(setval_sql(sequences).as_bytes())?;
        out.write_all(post.as_bytes())?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        // Never over a file that appeared meanwhile.
        std::fs::hard_link(&partial, &self.path)
            .map_err(|e| MigrateError::KeepSql { path: self.path.display().to_string(), reason: e.to_string() })?;
        Ok(self.path.clone())
    }
}

impl Drop for KeptSql {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.parts);
    }
}
