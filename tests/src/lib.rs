//! hookfleet-tests: the harness for end-to-end tests against the real RabbitMQ and
//! Redis, the `mock-ai` server, and the `loadgen` tool.
//!
//! - [`app`]: [`app::TestApp`], the builder every end-to-end test starts from.
//! - [`bench`]: the benchmarks behind `make bench` and `BENCHMARKS.md`.
//! - [`env`]: a unique namespace per test and queue helpers.
//! - [`fleet`]: workers started in-process, and jobs published as ingest does.
//! - [`proxy`]: a TCP proxy a test can sever, to cut one service's connection.
//! - [`redis_monitor`]: the Redis commands a namespace costs, counted by `MONITOR`.
//! - [`spawn`]: the real services started in-process on port 0.
//! - [`stand_in`]: recording HTTP servers standing in for a CRM or chat channel.
//! - [`webhook`]: signed requests per provider, sources with fresh secrets.
//! - [`wait`]: awaiting conditions with a deadline.
//! - [`loadgen`]: closed- and open-loop signed load, and queue accounting.
//! - [`mock_ai`]: the fake AI provider (the only fake; broker and Redis are real).

pub mod app;
pub mod bench;
pub mod env;
pub mod fleet;
pub mod loadgen;
pub mod mock_ai;
pub mod proxy;
pub mod redis_monitor;
pub mod spawn;
pub mod stand_in;
pub mod wait;
pub mod webhook;
