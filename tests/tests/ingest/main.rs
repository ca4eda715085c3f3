//! Ingest end to end: what it accepts and rejects, its accounting under faults, and the whole path to a result.
//!
//! One test binary per area: the modules below share one link, and nextest runs each
//! test in its own process.

mod accepts;
mod accounting;
mod cluster_urls;
mod edge;
mod end_to_end;
mod faults;
mod fuzz;
mod redis_round_trips;
mod rejects;
