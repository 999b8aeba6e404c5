//! Renders the library's typed events on stderr, for every long command alike: a plain line per event after the
//! time since the start (an upload bar on a terminal), or with `--output json` one JSON object per line (the event
//! with its `"event"` tag and fields, `"elapsed_ms"`, and the plain line as `"message"`). Stdout keeps the result.

use std::time::{Duration, Instant};

use gbo_ci::cache::CacheEvent;
use gbo_ci::deploy::{DeployEvent, Restart};
use gbo_ci::event::Observer;
use gbo_ci::push::PushEvent;
use gbo_ci::runs::RunsEvent;
use gbo_ci::size::ByteSize;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::Output;

/// How often an upload's progress is a JSON line.
const JSON_PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The stderr renderer of one command's events.
pub struct Events {
    output: Output,
    started: Instant,
    bar: Option<ProgressBar>,
    last_progress: Option<Instant>,
}

/// One JSON line.
#[derive(Serialize)]
struct Line<'a, E: Serialize> {
    elapsed_ms: u64,
    #[serde(flatten)]
    event: &'a E,
    message: &'a str,
}

impl Events {
    /// A renderer for the command's `--output`.
    pub fn new(output: Output) -> Self {
        Self { output, started: Instant::now(), bar: None, last_progress: None }
    }

    /// Print one event: its line, or its JSON object.
    fn emit<E: Serialize>(&self, event: &E, message: &str) {
        let elapsed = self.started.elapsed();
        match self.output {
            Output::Text => eprintln!("[{:6.2}s] {message}", elapsed.as_secs_f64()),
            Output::Json => {
                let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
                if let Ok(line) = serde_json::to_string(&Line { elapsed_ms, event, message }) {
                    eprintln!("{line}");
                }
            }
        }
    }

    /// An upload's progress: the bar on a terminal (nothing otherwise), or a JSON line now and then.
    fn progress(&mut self, event: &DeployEvent, sent: u64, total: u64) {
        match self.output {
            Output::Text => {
                if let Some(bar) = &self.bar {
                    bar.set_position(sent);
                }
            }
            Output::Json => {
                let due = self.last_progress.is_none_or(|last| last.elapsed() >= JSON_PROGRESS_EVERY);
                if due || sent == total {
                    self.last_progress = Some(Instant::now());
                    self.emit(event, &format!("uploaded {sent} of {total} bytes"));
                }
            }
        }
    }
}

impl Observer<DeployEvent> for Events {
    fn on_event(&mut self, event: &DeployEvent) {
        let message = match event {
            DeployEvent::Connected { target, recorded_host_key } => match recorded_host_key {
                Some(path) => {
                    format!("connected to {target}\nfirst contact: recorded the host key in {}", path.display())
                }
                None => format!("connected to {target}"),
            },
            DeployEvent::WaitingForLock { lock, holder } => {
                format!("another deploy of this target is running ({holder}); waiting for {lock}")
            }
            DeployEvent::Locked { lock } => format!("locked {lock}"),
            DeployEvent::UploadStarted { temp_path, total } => {
                // The line first, then the bar under it.
                self.emit(event, &format!("uploading to {temp_path}"));
                if self.output == Output::Text {
                    let bar = ProgressBar::with_draw_target(Some(*total), ProgressDrawTarget::stderr());
                    if let Ok(style) =
                        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                    {
                        bar.set_style(style);
                    }
                    self.bar = Some(bar);
                }
                return;
            }
            DeployEvent::UploadProgress { sent, total } => return self.progress(event, *sent, *total),
            DeployEvent::Uploaded { .. } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                "uploaded and synced; checking SHA-256 on the remote".to_string()
            }
            DeployEvent::ChecksumVerified { sha256 } => format!("checksum ok ({sha256})"),
            DeployEvent::Swapped { previous_release: Some(release) } => {
                format!("swapped in atomically; previous binary kept as {release}")
            }
            DeployEvent::Swapped { previous_release: None } => "swapped in atomically".to_string(),
            DeployEvent::Restarting { restart } => format!("restarting ({})", restart_method(restart)),
            DeployEvent::WaitingForHealth { url } => format!("waiting for {url}"),
            DeployEvent::Healthy { downtime: Some(downtime) } => {
                format!("healthy after {:.0} ms of downtime", downtime.as_secs_f64() * 1000.0)
            }
            DeployEvent::Healthy { downtime: None } => "healthy".to_string(),
            DeployEvent::RollingBack { reason } => format!("{reason}; rolling back"),
            _ => return,
        };
        self.emit(event, &message);
    }
}

/// How a restart goes: `systemd unit X`, `process 123, 456`, or `not running; starting it`.
fn restart_method(restart: &Restart) -> String {
    match restart {
        Restart::Systemd { unit } => format!("systemd unit {unit}"),
        Restart::Process { pids } if pids.is_empty() => "not running; starting it".to_string(),
        Restart::Process { pids } => format!("process {}", pid_list(pids)),
    }
}

/// `1, 2, 3`.
pub fn pid_list(pids: &[u32]) -> String {
    pids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

impl Observer<PushEvent> for Events {
    fn on_event(&mut self, event: &PushEvent) {
        let message = match event {
            PushEvent::Checked { submodule, commit } => {
                format!("{submodule} at {}: trees clean, no remote ahead; pushing", commit.get(..12).unwrap_or(commit))
            }
            PushEvent::Pushed { repository, remote } => format!("pushed the {repository} to {remote}"),
            PushEvent::PointerCommitted { commit } => {
                format!("committed the submodule pointer in the root ({})", commit.get(..12).unwrap_or(commit))
            }
            _ => return,
        };
        self.emit(event, &message);
    }
}

impl Observer<CacheEvent> for Events {
    fn on_event(&mut self, event: &CacheEvent) {
        let message = match event {
            CacheEvent::Missing { path } => format!("{}: not there, nothing to prune", path.display()),
            CacheEvent::Scanned { units, bytes } => format!("scanned {units} unit(s), {}", ByteSize(*bytes)),
            CacheEvent::Removing { units, bytes } => {
                format!("removing the oldest {units} unit(s) ({})", ByteSize(*bytes))
            }
            _ => return,
        };
        self.emit(event, &message);
    }
}

impl Observer<RunsEvent> for Events {
    fn on_event(&mut self, event: &RunsEvent) {
        let message = match event {
            RunsEvent::Requesting { url } => format!("GET {url}"),
            _ => return,
        };
        self.emit(event, &message);
    }
}
