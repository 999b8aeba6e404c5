//! The one shape of progress in gbo-ci: every long operation (deploy, rollback, push, cache prune, runs) has a typed
//! event enum ([`crate::deploy::DeployEvent`], [`crate::push::PushEvent`], [`crate::cache::CacheEvent`],
//! [`crate::runs::RunsEvent`]) and reports each step to an [`Observer`] of it, synchronously, between steps.
//!
//! The library never renders an event. The `gbo-ci` binary prints a plain line per event on stderr (an upload bar
//! on a terminal), or one JSON object per line on stderr with `--output json`: the event serialised with its
//! `"event"` tag (snake_case) and fields, beside the plain line as `"message"`.

/// Receives the events of one long operation, in order, between its steps.
pub trait Observer<E> {
    /// One event.
    fn on_event(&mut self, event: &E);
}

/// Ignores every event.
impl<E> Observer<E> for () {
    fn on_event(&mut self, _event: &E) {}
}

/// Milliseconds of a duration, saturating.
pub(crate) fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
