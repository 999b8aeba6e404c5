//! The schema travels as the host's own `pg_dump` sections: pre-data (schema and grants) before the data, post-data
//! (indexes, keys, triggers) after it. A section is split into its entries, so that each table's indexes and keys can
//! be built as soon as that table is loaded and entries of one kind can be left out.

use std::collections::BTreeMap;
use std::ffi::OsStr;

use super::endpoint::HostServer;
use super::error::MigrateError;

/// One section of a dump taken with the host's own `pg_dump`; `owners` false leaves out ownership (the restoring
/// role owns what it creates) and keeps the grants.
pub(super) async fn dump_section(
    server: &HostServer,
    database: &str,
    section: &str,
    owners: bool,
) -> Result<String, MigrateError> {
    // A section without --schema-only: pre-data is the schema and its grants, post-data includes the refresh of
    // materialized views; table data is the `data` section, which travels as COPY streams instead.
    let section = format!("--section={section}");
    let mut args = vec![OsStr::new(&section)];
    if !owners {
        args.push(OsStr::new("--no-owner"));
    }
    server.pg_dump(database, &args).await
}

/// pg_dump 15.14+ frames its output with `\restrict KEY` / `\unrestrict KEY`: psql meta-commands that only psql
/// understands. Schema sections hold no other backslash lines.
pub(super) fn without_meta_commands(sql: &str) -> String {
    sql.lines()
        .filter(|l| !(l.starts_with("\\restrict ") || l.starts_with("\\unrestrict ")))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A section of a dump (`pg_dump --section=pre-data` or `post-data`), split into its entries: post-data so that index
/// builds can run in parallel, pre-data so that entries of one kind can be left out.
#[derive(Debug, Default)]
pub(super) struct DumpSection {
    /// The `SET` lines before the first entry.
    preamble: String,
    /// The key of pg_dump's `\restrict` framing (15.14+), put back around every part given to psql.
    restrict: Option<String>,
    /// (type, table, SQL) in dump order.
    entries: Vec<(String, Option<String>, String)>,
}

impl DumpSection {
    /// Split a section into its entries.
    pub(super) fn parse(dump: &str) -> Self {
        let mut out = DumpSection::default();
        let mut current: Option<(String, String)> = None;
        for line in dump.lines() {
            if let Some(key) = line.strip_prefix("\\restrict ") {
                out.restrict = Some(key.trim().to_string());
                continue;
            }
            if line.starts_with("\\unrestrict ") || line.starts_with("-- PostgreSQL database dump complete") {
                continue;
            }
            if let Some(header) = line.strip_prefix("-- Name: ") {
                if let Some((kind, text)) = current.take() {
                    let table = entry_table(&kind, &text);
                    out.entries.push((kind, table, text));
                }
                let kind = header.split("; Type: ").nth(1).and_then(|t| t.split(';').next()).unwrap_or("").to_string();
                current = Some((kind, format!("{line}\n")));
                continue;
            }
            match current.as_mut() {
                Some((_, text)) => {
                    text.push_str(line);
                    text.push('\n');
                }
                None => {
                    out.preamble.push_str(line);
                    out.preamble.push('\n');
                }
            }
        }
        if let Some((kind, text)) = current.take() {
            let table = entry_table(&kind, &text);
            out.entries.push((kind, table, text));
        }
        out
    }

    /// `body` framed as a script psql runs: the restrict key, the preamble's settings, a larger sort memory.
    pub(super) fn frame(&self, body: &str) -> String {
        // A larger sort memory than the default 64MB for index builds, within what a small container affords.
        let mut script = String::new();
        if let Some(key) = &self.restrict {
            script.push_str(&format!("\\restrict {key}\n"));
        }
        script.push_str(&self.preamble);
        script.push_str("SET maintenance_work_mem = '128MB';\n");
        script.push_str(body);
        if let Some(key) = &self.restrict {
            script.push_str(&format!("\\unrestrict {key}\n"));
        }
        script
    }

    fn parallel(kind: &str, table: &Option<String>) -> bool {
        table.is_some() && (kind == "INDEX" || kind == "CONSTRAINT")
    }

    /// The indexes and keys of each table (unframed SQL), by table: plain indexes first (`CREATE INDEX` shares the
    /// table with readers), then keys (`ALTER TABLE ... ADD CONSTRAINT` locks it exclusively).
    pub(super) fn table_bodies(&self) -> BTreeMap<String, String> {
        let mut bodies: BTreeMap<String, String> = BTreeMap::new();
        for first in ["INDEX", "CONSTRAINT"] {
            for (kind, table, text) in &self.entries {
                if let (true, true, Some(t)) = (kind == first, Self::parallel(kind, table), table) {
                    bodies.entry(t.clone()).or_default().push_str(text);
                }
            }
        }
        bodies
    }

    /// Every entry but those of `kind` (unframed SQL), in dump order.
    pub(super) fn body_without(&self, kind: &str) -> String {
        self.entries.iter().filter(|(k, _, _)| k != kind).map(|(_, _, text)| text.as_str()).collect()
    }

    /// Everything else (unframed SQL), in dump order.
    pub(super) fn rest_body(&self) -> String {
        self.entries.iter().filter(|(k, t, _)| !Self::parallel(k, t)).map(|(_, _, text)| text.as_str()).collect()
    }
}

/// The table an index or key entry belongs to, as the dump spells it (`public.events`).
fn entry_table(kind: &str, text: &str) -> Option<String> {
    let after = |line: &str, marker: &str| {
        line.split_once(marker)
            .map(|(_, rest)| rest.trim_start_matches("ONLY ").split_whitespace().next().unwrap_or("").to_string())
    };
    let found = match kind {
        "INDEX" => text
            .lines()
            .find(|l| l.starts_with("CREATE INDEX ") || l.starts_with("CREATE UNIQUE INDEX "))
            .and_then(|l| after(l, " ON ")),
        "CONSTRAINT" => text.lines().find(|l| l.starts_with("ALTER TABLE ")).and_then(|l| after(l, "ALTER TABLE ")),
        _ => None,
    };
    // pg_dump quotes identifiers the way `format('%I.%I')` does, so the name matches `list_tables`.
    found.filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POST_DATA: &str = "--
-- PostgreSQL database dump
--

\\restrict abc123

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: users users_pkey; Type: CONSTRAINT; Schema: public; Owner: gbot
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_pkey PRIMARY KEY (id);


--
-- Name: events_user; Type: INDEX; Schema: public; Owner: gbot
--

CREATE INDEX events_user ON public.events USING btree (user_id);


--
-- Name: users_email; Type: INDEX; Schema: public; Owner: gbot
--

CREATE UNIQUE INDEX users_email ON public.users USING btree (email);


--
-- Name: events events_user_fk; Type: FK CONSTRAINT; Schema: public; Owner: gbot
--

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_user_fk FOREIGN KEY (user_id) REFERENCES public.users(id);


--
-- PostgreSQL database dump complete
--

\\unrestrict abc123

";

    #[test]
    fn post_data_splits_into_per_table_index_groups_and_the_rest() {
        let post = DumpSection::parse(POST_DATA);
        assert_eq!(post.restrict.as_deref(), Some("abc123"));
        assert_eq!(post.entries.len(), 4);
        let kinds: Vec<(&str, Option<&str>)> =
            post.entries.iter().map(|(k, t, _)| (k.as_str(), t.as_deref())).collect();
        assert_eq!(
            kinds,
            vec![
                ("CONSTRAINT", Some("public.users")),
                ("INDEX", Some("public.events")),
                ("INDEX", Some("public.users")),
                ("FK CONSTRAINT", None)
            ]
        );
        let bodies = post.table_bodies();
        assert_eq!(bodies.len(), 2);
        assert!(
            bodies["public.events"].contains("events_user ON public.events")
                && !bodies["public.events"].contains("users_pkey")
        );
        let users = &bodies["public.users"];
        assert!(
            users.find("users_email").zip(users.find("users_pkey")).is_some_and(|(index, key)| index < key),
            "plain indexes before keys: {users}"
        );
        for b in bodies.values() {
            assert!(!b.contains("FOREIGN KEY"));
        }
        let framed = post.frame(&bodies["public.users"]);
        assert!(
            framed.starts_with("\\restrict abc123\n") && framed.trim_end().ends_with("\\unrestrict abc123"),
            "{framed}"
        );
        assert!(framed.contains("set_config('search_path', '', false)") && framed.contains("maintenance_work_mem"));
        let rest = post.rest_body();
        assert!(rest.contains("FOREIGN KEY") && !rest.contains("CREATE INDEX"));
        assert!(DumpSection::parse("SET x = 1;\n").rest_body().trim().is_empty());
    }
}
