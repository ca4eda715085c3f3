//! The delivery lifecycle: one message from the jobs queue to its settlement.
//!
//! Read top to bottom, one job goes [`consumer`] (takes the delivery; the only
//! place that acks, nacks or rejects) → [`job`] (decodes it and runs each matching
//! pipeline, guarded by the redelivery markers) → [`outcome`] (what a failure
//! means: ack, retry or dead letter) → [`reroute`] (publishes the retry or
//! dead-letter copy, confirmed before the ack) → [`status`] (what the event's
//! status records of it). The pipeline stages themselves live in
//! [`crate::pipeline`]; this layer knows when to run them, not how.

pub mod consumer;
pub mod job;
pub mod outcome;
pub mod reroute;
pub mod status;
