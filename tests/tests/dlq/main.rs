//! The `dlq` commands: inspect, replay, purge, cancel, scale, recovery after an outage,
//! the web console (over HTTP and in a browser),
//! and the command line (exit codes, `--all`, settings loaded).
//!
//! One test binary per area: the modules below share one link, and nextest runs each
//! test in its own process.

mod cancel;
mod cli;
mod console;
mod console_browser;
mod delivery_limit;
mod dlq_common;
mod inspect;
mod recovery;
mod replay;
mod scale;
