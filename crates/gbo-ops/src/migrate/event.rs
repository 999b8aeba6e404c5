//! What a migration reports as it goes ([`MigrateEvent`], sent to an [`Observer`](crate::events::Observer)): the
//! database's phases, and each table's copy and verification. A table's copied bytes are reported a few times a
//! second at most, never once per chunk.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, Instant};

use crate::events::{human_bytes, Observer, Outcome, Subject};

/// The least time between two [`MigrateEventKind::Copying`] events of one table.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// A phase of a migration, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The target saved (with `--replace`), roles created, the empty database made.
    Prepare,
    /// The schema (pre-data) restored.
    Schema,
    /// Every table copied, verified and indexed.
    Copy,
    /// Sequences set; foreign keys, triggers and the rest of post-data applied.
    PostData,
    /// Everything compared again; the application role's check.
    Verify,
}

impl Phase {
    /// The phase's name in reports (`prepare`, `schema`, `copy`, `post-data`, `verify`).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Prepare => "prepare",
            Phase::Schema => "schema",
            Phase::Copy => "copy",
            Phase::PostData => "post-data",
            Phase::Verify => "verify",
        }
    }

    fn doing(self) -> &'static str {
        match self {
            Phase::Prepare => "preparing the target",
            Phase::Schema => "restoring the schema",
            Phase::Copy => "copying tables",
            Phase::PostData => "setting sequences, adding keys and triggers",
            Phase::Verify => "verifying",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing that happened during a migration, to a table or (for phases) to the database.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MigrateEvent {
    /// The table (`schema.table`, or `large objects`) or the database; control characters escaped (a name can come
    /// from a container).
    pub subject: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: MigrateEventKind,
}

/// The kinds of [`MigrateEvent`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MigrateEventKind {
    /// A phase started (the database).
    PhaseStarted {
        /// The phase.
        phase: Phase,
    },
    /// A phase ended (the database).
    PhaseDone {
        /// The phase.
        phase: Phase,
        /// How long it took.
        seconds: f64,
    },
    /// The target was saved before it is replaced (the database).
    Saved {
        /// The snapshot or archive.
        backup: String,
    },
    /// A table's copy started.
    CopyStarted,
    /// Bytes of a table's COPY stream copied so far (a few times a second at most).
    Copying {
        /// Bytes so far.
        bytes: u64,
    },
    /// A table's COPY stream was copied whole; its verification follows.
    Copied {
        /// Bytes of the stream.
        bytes: u64,
        /// Rows in it.
        rows: u64,
    },
    /// A table is the same on both sides (ends the table).
    Verified {
        /// Its rows.
        rows: u64,
    },
    /// A table differs between the sides (ends the table; the migration fails).
    Differs {
        /// What differs.
        what: String,
    },
    /// The application role read and wrote every table, or could not (the database).
    AppRoleChecked {
        /// The role.
        role: String,
        /// Tables and sequences it cannot use.
        problems: usize,
    },
    /// The migration succeeded (ends the database).
    Done {
        /// Tables copied and verified.
        tables: usize,
        /// Bytes of COPY data streamed.
        bytes: u64,
        /// How long it took.
        seconds: f64,
    },
    /// The migration failed (ends the database).
    Failed {
        /// The error.
        error: String,
    },
}

impl MigrateEvent {
    /// An event of `subject` (a table or the database).
    pub fn new(subject: &str, kind: MigrateEventKind) -> Self {
        Self { subject: printable(subject).into_owned(), kind }
    }
}

/// Text as it may reach a terminal: control characters escaped.
fn printable(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(
            text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

impl fmt::Display for MigrateEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            MigrateEventKind::PhaseStarted { phase } => f.write_str(phase.doing()),
            MigrateEventKind::PhaseDone { phase, seconds } => write!(f, "{phase} done in {seconds:.1} s"),
            MigrateEventKind::Saved { backup } => write!(f, "saved first: {}", printable(backup)),
            MigrateEventKind::CopyStarted => f.write_str("copying"),
            MigrateEventKind::Copying { bytes } => write!(f, "copying: {}", human_bytes(*bytes)),
            MigrateEventKind::Copied { bytes, rows } => {
                write!(f, "copied {} ({rows} rows), verifying", human_bytes(*bytes))
            }
            MigrateEventKind::Verified { rows } => write!(f, "verified: {rows} rows"),
            MigrateEventKind::Differs { what } => write!(f, "DIFFERS: {}", printable(what)),
            MigrateEventKind::AppRoleChecked { role, problems: 0 } => {
                write!(f, "`{}` read and wrote every table", printable(role))
            }
            MigrateEventKind::AppRoleChecked { role, problems } => {
                write!(f, "`{}` cannot use {problems} table(s) or sequence(s)", printable(role))
            }
            MigrateEventKind::Done { tables, bytes, seconds } => {
                write!(f, "migrated {tables} tables, {} in {seconds:.1} s", human_bytes(*bytes))
            }
            MigrateEventKind::Failed { error } => write!(f, "failed: {}", printable(error)),
        }
    }
}

impl Subject for MigrateEvent {
    fn subject(&self) -> &str {
        &self.subject
    }

    fn finished(&self) -> Option<Outcome> {
        match &self.kind {
            MigrateEventKind::Verified { .. } | MigrateEventKind::Done { .. } => Some(Outcome::Succeeded),
            MigrateEventKind::Differs { .. } | MigrateEventKind::Failed { .. } => Some(Outcome::Failed),
            _ => None,
        }
    }
}

/// The bytes copied of one table, reported at most once per [`PROGRESS_EVERY`].
pub(super) struct Progress<'a> {
    subject: &'a str,
    events: &'a dyn Observer<MigrateEvent>,
    bytes: u64,
    last: Instant,
}

impl<'a> Progress<'a> {
    /// No bytes yet of `subject`.
    pub(super) fn new(subject: &'a str, events: &'a dyn Observer<MigrateEvent>) -> Self {
        Self { subject, events, bytes: 0, last: Instant::now() }
    }

    /// `n` more bytes passed.
    pub(super) fn add(&mut self, n: usize) {
        self.bytes += n as u64;
        if n > 0 && self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            self.events.event(&MigrateEvent::new(self.subject, MigrateEventKind::Copying { bytes: self.bytes }));
        }
    }

    /// Bytes so far.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_their_subject_end_tables_and_serialise_with_their_kind() {
        let verified = MigrateEvent::new("public.users", MigrateEventKind::Verified { rows: 3000 });
        assert_eq!(verified.to_string(), "verified: 3000 rows");
        assert_eq!(verified.finished(), Some(Outcome::Succeeded));
        let json = serde_json::to_value(&verified).expect("json");
        assert_eq!(json, serde_json::json!({"subject": "public.users", "event": "verified", "rows": 3000}));
        let phase = MigrateEvent::new("botserver", MigrateEventKind::PhaseStarted { phase: Phase::PostData });
        assert_eq!(serde_json::to_value(&phase).expect("json")["phase"], "post-data");
        assert_eq!(phase.finished(), None);
        let started = serde_json::to_value(MigrateEvent::new("t", MigrateEventKind::CopyStarted)).expect("json");
        assert_eq!(started["event"], "copy_started");
        let copying = MigrateEvent::new("t", MigrateEventKind::Copying { bytes: 3 * 1024 * 1024 });
        assert_eq!(copying.to_string(), "copying: 3.0 MiB");
        let differs = MigrateEvent::new("t", MigrateEventKind::Differs { what: "rows 2 vs 1".into() });
        assert_eq!(differs.finished(), Some(Outcome::Failed));
        let failed = MigrateEvent::new("db", MigrateEventKind::Failed { error: "x".into() });
        assert_eq!(failed.finished(), Some(Outcome::Failed));
        let done = MigrateEvent::new("db", MigrateEventKind::Done { tables: 3, bytes: 2048, seconds: 1.25 });
        assert_eq!(
            (done.to_string().as_str(), done.finished()),
            ("migrated 3 tables, 2.0 KiB in 1.2 s", Some(Outcome::Succeeded))
        );
    }

    #[test]
    fn names_from_a_container_reach_no_terminal_raw() {
        let event = MigrateEvent::new("public.\"a\u{1b}[2Jb\"", MigrateEventKind::Differs { what: "x\u{7}\ny".into() });
        assert_eq!(event.subject(), "public.\"a\\u{1b}[2Jb\"");
        assert_eq!(event.to_string(), "DIFFERS: x\\u{7}\\ny");
    }

    #[test]
    fn copied_bytes_are_reported_a_few_times_a_second_never_per_chunk() {
        let seen = std::sync::Mutex::new(Vec::new());
        let observer = |e: &MigrateEvent| seen.lock().expect("lock").push(e.clone());
        let mut progress = Progress::new("public.t", &observer);
        let started = Instant::now();
        // 100,000 chunks as fast as they come, then chunks spread over about 1.3 s.
        for _ in 0..100_000 {
            progress.add(64);
        }
        for _ in 0..26 {
            std::thread::sleep(Duration::from_millis(50));
            progress.add(1000);
        }
        let elapsed = started.elapsed();
        assert_eq!(progress.bytes(), 100_000 * 64 + 26 * 1000);
        let seen = seen.lock().expect("lock");
        let most = (elapsed.as_millis() / PROGRESS_EVERY.as_millis()) as usize;
        assert!(!seen.is_empty() && seen.len() <= most, "{} events in {elapsed:?}", seen.len());
        let bytes: Vec<u64> = seen
            .iter()
            .map(|e| match e.kind {
                MigrateEventKind::Copying { bytes } => bytes,
                _ => panic!("{e:?}"),
            })
            .collect();
        assert!(bytes.windows(2).all(|w| w[0] < w[1]), "{bytes:?}");
    }
}
