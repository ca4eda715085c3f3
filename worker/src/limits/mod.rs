//! What keeps the fleet within its AI providers' limits and its effects to one
//! each, all in Redis so every worker sees the same state:
//!
//! - [`limiter`]: the fleet-wide requests- and tokens-per-minute buckets.
//! - [`cache`]: the response cache, with single flight across the fleet.
//! - [`markers`]: the redelivery markers (done, lease, delivered sinks).

pub mod cache;
pub mod limiter;
pub mod markers;
