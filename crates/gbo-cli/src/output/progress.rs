//! The one renderer of long operations' events (`gbo_ops::events`): on a terminal, one line per subject (a spinner,
//! the subject, the time it has taken, what it is doing; a finished line shows how it ended); otherwise one plain
//! line per event, `[subject] text`; with `--output json`, one JSON object per event (JSON lines). Everything goes
//! to stderr: stdout holds the command's result.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use gbo_ops::events::{Outcome, Subject};

use super::Format;

/// How events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// One live line per subject.
    Terminal,
    /// One plain line per event.
    Plain,
    /// One JSON object per event.
    Json,
}

impl Style {
    /// The style for a command's `--output` on this stderr.
    pub fn for_output(format: Format) -> Style {
        match format {
            Format::Json => Style::Json,
            Format::Table if std::io::stderr().is_terminal() => Style::Terminal,
            Format::Table => Style::Plain,
        }
    }
}

/// The live lines of one long operation.
pub struct Lines {
    style: Style,
    multi: Option<indicatif::MultiProgress>,
    bars: Mutex<BTreeMap<String, indicatif::ProgressBar>>,
}

fn style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template).unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
}

impl Lines {
    /// Lines in `style`.
    pub fn new(style: Style) -> Self {
        let multi = (style == Style::Terminal)
            .then(|| indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr()));
        Self { style, multi, bars: Mutex::new(BTreeMap::new()) }
    }

    /// Show one event.
    pub fn show<E: Subject>(&self, event: &E) {
        match self.style {
            Style::Json => {
                if let Ok(line) = serde_json::to_string(event) {
                    eprintln!("{line}");
                }
            }
            Style::Plain => eprintln!("[{}] {event}", event.subject()),
            Style::Terminal => self.live(event),
        }
    }

    fn live<E: Subject>(&self, event: &E) {
        let (Some(multi), Ok(mut bars)) = (&self.multi, self.bars.lock()) else { return };
        let subject = event.subject().to_string();
        let bar = bars
            .entry(subject.clone())
            .or_insert_with(|| {
                let bar = multi.add(indicatif::ProgressBar::new_spinner());
                bar.set_style(style("{spinner:.cyan} {prefix:<28} {elapsed:>4} {wide_msg}"));
                bar.set_prefix(subject.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            })
            .clone();
        if bar.is_finished() {
            return;
        }
        match event.finished() {
            None => match event.progress() {
                // Bytes with a known total: a bar (back to the spinner at the next step).
                Some((done, Some(total))) if total > 0 => {
                    if bar.length() != Some(total) {
                        bar.set_style(style(
                            "{spinner:.cyan} {prefix:<28} {elapsed:>4} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec}",
                        ));
                        bar.set_length(total);
                    }
                    bar.set_position(done.min(total));
                }
                _ => {
                    if bar.length().is_some() {
                        bar.set_style(style("{spinner:.cyan} {prefix:<28} {elapsed:>4} {wide_msg}"));
                        bar.unset_length();
                    }
                    bar.set_message(event.to_string())
                }
            },
            Some(outcome) => {
                let (template, mark) = match outcome {
                    Outcome::Succeeded => ("{prefix:.green} {elapsed:>4} {wide_msg}", "✓"),
                    Outcome::Degraded => ("{prefix:.yellow} {elapsed:>4} {wide_msg}", "✗"),
                    Outcome::Failed => ("{prefix:.red} {elapsed:>4} {wide_msg}", "✗"),
                };
                bar.set_style(style(template));
                bar.set_prefix(format!("{mark} {subject:<28}"));
                bar.finish_with_message(event.to_string());
            }
        }
    }

    /// Stop the lines that never finished (the operation stopped early).
    pub fn close(&self) {
        if let Ok(bars) = self.bars.lock() {
            for bar in bars.values().filter(|b| !b.is_finished()) {
                bar.abandon_with_message("stopped");
            }
        }
    }
}
