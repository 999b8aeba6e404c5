//! Shared test support for gbo: a real LXD daemon (failing, never skipping, in CI), unique names, cleanup.
