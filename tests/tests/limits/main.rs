//! The fleet-wide limiter and the response cache's single flight, against the real Redis.
//!
//! One test binary per area: the modules below share one link, and nextest runs each
//! test in its own process.

mod cache_flight;
mod limiter_accuracy;
mod limiter_arithmetic;
mod limiter_fleet;
mod redis_shared_connection;
