//! What keeps the fleet within its AI providers' limits and its effects to one
//! each, all in Redis so every worker sees the same state:
//!
//! - [`limiter`]: the fleet-wide requests- and tokens-per-minute buckets.
//! - [`cache`]: the response cache, with single flight across the fleet.
//! - [`markers`]: the redelivery markers (done, lease, delivered sinks).

//! - [`STEPS`]: every scripted step the worker sends, as one chain script
//!   (`hookfleet_common::redis::chain`), so a job's Redis work before its AI
//!   call — the event's `processing` status, the lease and the done checks,
//!   the cache lookup, the limiter booking — is one round trip, and its work
//!   after it — the cache fill, the done marker, the `done` status — another.

use hookfleet_common::redis::chain::Step;
use hookfleet_common::redis::status;

pub mod cache;
pub mod limiter;
pub mod markers;

/// Every scripted step of the worker: one script, loaded once (module docs).
pub static STEPS: [&Step; 12] = [
    &markers::CLAIM,
    &markers::COMPLETE,
    &markers::RELEASE,
    &markers::RENEW,
    &cache::LOOKUP,
    &cache::FILL,
    &cache::FLIGHT_RENEW,
    &cache::FLIGHT_RELEASE,
    &limiter::RESERVE,
    &limiter::ADJUST,
    &limiter::PAUSE,
    &status::RECORD,
];
