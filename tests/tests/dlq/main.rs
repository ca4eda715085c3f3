//! The `dlq` commands: inspect, replay, purge, cancel, scale, and recovery after an outage.
//!
//! One test binary per area: the modules below share one link, and nextest runs each
//! test in its own process.

mod cancel;
mod delivery_limit;
mod dlq_common;
mod inspect;
mod recovery;
mod replay;
mod scale;
