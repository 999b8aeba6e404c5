//! Fault injection at step boundaries: a test hook that kills `gbo install` like a crash, so the crash tests can
//! prove that a re-run completes whatever step a run died at.
//!
//! Apply calls [`boundary`] twice around every step it applies: [`Edge::Before`] (nothing of the step is done)
//! and [`Edge::After`] (the step is done). The infrastructure steps (host directories, create, chown, start), the
//! batched config and device update, and every provisioning step (file writes and pushes, artifacts, masks,
//! daemon-reload, init steps, unit starts and restarts, recording the provisioned hash) each have both. The hook is
//! driven by environment variables, read once per process:
//!
//! - `GBO_FAULT_AT_BOUNDARY=N` (N ≥ 1): at the N-th boundary the process aborts (`std::process::abort`, SIGABRT):
//!   no destructor, no cleanup, no flush, no reply to a pending request, as in a real crash. Boundaries are
//!   counted across the whole run with one atomic counter, so with components applied concurrently the N-th
//!   boundary can be any component's.
//! - `GBO_FAULT_INSTANCE=NAME`: count only the boundaries of instance `NAME` (a component's own steps run one
//!   after the other, so its N-th boundary is the same step in every run with the same plan).
//! - `GBO_FAULT_TRACE=PATH`: append one line per boundary reached to `PATH`:
//!   `SEQ<TAB>before|after<TAB>INSTANCE<TAB>STEP` (`SEQ` counts every boundary of the run from 1; the line of the
//!   boundary that aborts ends with `<TAB>abort`). With the trace alone nothing is killed: a complete run traced
//!   this way tells a test how many boundaries there are and which step each one is.
//!
//! With none of them set the hook costs one initialised `OnceLock` read per boundary. A value of
//! `GBO_FAULT_AT_BOUNDARY` that is not a positive number fails the run at its first boundary, before any step.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use super::error::InstallError;

/// The boundary number at which the process aborts.
pub const ENV_AT_BOUNDARY: &str = "GBO_FAULT_AT_BOUNDARY";
/// Count only this instance's boundaries.
pub const ENV_INSTANCE: &str = "GBO_FAULT_INSTANCE";
/// Append a line per boundary to this file.
pub const ENV_TRACE: &str = "GBO_FAULT_TRACE";

/// Which side of a step a boundary is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// Before the step: nothing of it is done.
    Before,
    /// After the step: it is done.
    After,
}

impl Edge {
    fn as_str(self) -> &'static str {
        match self {
            Edge::Before => "before",
            Edge::After => "after",
        }
    }
}

/// The hook's settings, from the environment.
#[derive(Debug)]
struct Fault {
    /// Abort at this boundary (`Err`: the variable's value was not a positive number).
    at: Option<Result<u64, String>>,
    /// Count only this instance's boundaries.
    instance: Option<String>,
    /// The trace file.
    trace: Option<std::fs::File>,
    /// The trace file could not be opened (path, error).
    trace_error: Option<(String, String)>,
}

impl Fault {
    fn from_env() -> Option<Self> {
        let at = std::env::var(ENV_AT_BOUNDARY).ok();
        let trace_path = std::env::var(ENV_TRACE).ok().filter(|p| !p.is_empty());
        if at.is_none() && trace_path.is_none() {
            return None;
        }
        let at = at.map(|text| match text.trim().parse::<u64>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(text),
        });
        let instance = std::env::var(ENV_INSTANCE).ok().filter(|i| !i.is_empty());
        let (trace, trace_error) = match trace_path {
            None => (None, None),
            Some(path) => match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
                Ok(file) => (Some(file), None),
                Err(e) => (None, Some((path, e.to_string()))),
            },
        };
        Some(Self { at, instance, trace, trace_error })
    }
}

static FAULT: OnceLock<Option<Fault>> = OnceLock::new();
/// Every boundary reached in this process.
static SEQ: AtomicU64 = AtomicU64::new(0);
/// Boundaries that count towards `GBO_FAULT_AT_BOUNDARY` (those of `GBO_FAULT_INSTANCE` when it is set).
static COUNTED: AtomicU64 = AtomicU64::new(0);

/// A step boundary of `instance`; `step` describes the step (called only when the hook is armed). Aborts the
/// process when this is the boundary `GBO_FAULT_AT_BOUNDARY` names; fails when the hook's settings are invalid.
pub fn boundary(edge: Edge, instance: &str, step: impl FnOnce() -> String) -> Result<(), InstallError> {
    let Some(fault) = FAULT.get_or_init(Fault::from_env) else { return Ok(()) };
    if let Some(Err(value)) = &fault.at {
        return Err(InstallError::BadInput(format!(
            "{ENV_AT_BOUNDARY}={value:?}: expected a boundary number, 1 or more"
        )));
    }
    if let Some((path, error)) = &fault.trace_error {
        return Err(InstallError::BadInput(format!("{ENV_TRACE}={path:?}: cannot open it for appending: {error}")));
    }
    let seq = SEQ.fetch_add(1, Ordering::SeqCst) + 1;
    let counts = match fault.instance.as_deref() {
        Some(only) => only == instance,
        None => true,
    };
    let abort = counts && matches!(fault.at, Some(Ok(at)) if COUNTED.fetch_add(1, Ordering::SeqCst) + 1 == at);
    if let Some(mut file) = fault.trace.as_ref() {
        let line = format!(
            "{seq}\t{}\t{instance}\t{}{}\n",
            edge.as_str(),
            step().replace(['\t', '\n'], " "),
            if abort { "\tabort" } else { "" }
        );
        // One write of the whole line on an O_APPEND file: lines of concurrent components never interleave.
        let _ = file.write_all(line.as_bytes());
    }
    if abort {
        std::process::abort();
    }
    Ok(())
}
