//! The worker end to end: results, retries, dead letters, redeliveries, shutdown, cache, limits, fallbacks, HTTP sinks, outbound hardening, event status and the reference workflow.
//!
//! One test binary per area: the modules below share one link, and nextest runs each
//! test in its own process.

mod cache;
mod connectors;
mod dead_letters;
mod event_status;
mod fallbacks;
mod faults;
mod http_sinks;
mod limits;
mod outbound;
mod outbound_auth;
mod redelivery;
mod redis_outage;
mod redis_restart;
mod redis_round_trips;
mod results;
mod shutdown;
mod workflow_product_reviews;
mod workflow_shop_orders;
mod workflow_support_escalation;
