//! The small pieces every room uses to speak SQL: quoting, and reading answers (a single value, a count, a
//! hex-encoded name) without ever taking an unreadable answer for "empty".

use super::error::MigrateError;

/// The only value of a one-row, one-column answer.
pub(super) fn single(rows: &[Vec<String>]) -> Option<&str> {
    match rows {
        [row] => match row.as_slice() {
            [value] => Some(value.as_str()),
            _ => None,
        },
        _ => None,
    }
}

/// An answer, shortened for a message.
pub(super) fn shorten(rows: &[Vec<String>]) -> String {
    let text = rows.iter().map(|r| r.join("\t")).collect::<Vec<_>>().join("\n");
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        out.push_str("...");
    }
    out.escape_debug().to_string()
}

/// An answer of `side` to `what` that cannot be read (shortened into the message).
pub(super) fn unreadable(side: &str, what: impl Into<String>, rows: &[Vec<String>]) -> MigrateError {
    MigrateError::Unreadable { side: side.to_string(), what: what.into(), answer: shorten(rows) }
}

/// A non-negative count.
pub(super) fn count(side: &str, what: &str, value: Option<&str>, rows: &[Vec<String>]) -> Result<u64, MigrateError> {
    value.and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| unreadable(side, what, rows))
}

/// A PostgreSQL error as a message: the server's own words, or the client error with its causes.
pub(super) fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                source = inner.source();
            }
            s
        }
    }
}

/// A failed statement on `side`, as [`MigrateError::Sql`].
pub(super) fn sql_error(side: &str) -> impl Fn(tokio_postgres::Error) -> MigrateError + '_ {
    move |e| MigrateError::Sql { side: side.to_string(), message: db_message(&e) }
}

/// Decode the hex of `encode(convert_to(x, 'UTF8'), 'hex')`.
pub(super) fn unhex(side: &str, value: &str) -> Result<String, MigrateError> {
    let bad = || MigrateError::Unreadable {
        side: side.to_string(),
        what: "a name".into(),
        answer: value.escape_debug().to_string(),
    };
    let bytes = hex::decode(value.trim()).map_err(|_| bad())?;
    String::from_utf8(bytes).map_err(|_| bad())
}

/// SQL string literal (the `E''` form when it holds a backslash, so it means the same whatever
/// `standard_conforming_strings` is).
pub fn quote_literal(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// SQL identifier, always quoted.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_mean_the_same_whatever_standard_conforming_strings_is() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\'b"), "E'a\\\\''b'");
        assert_eq!(quote_ident("a\"; DROP TABLE x; --"), "\"a\"\"; DROP TABLE x; --\"");
    }
}
