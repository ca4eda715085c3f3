//! hookfleet-tests: the harness for end-to-end tests against the real RabbitMQ and
//! Redis, the `mock-ai` server, and the `loadgen` tool.
//!
//! - [`accounting`]: where every accepted event ended, and the failure tests' figures.
//! - [`app`]: [`app::TestApp`], the builder every end-to-end test starts from.
//! - [`bench`]: the benchmarks behind `make bench` and `BENCHMARKS.md`.
//! - [`config_file`]: a spawned binary's `hookfleet.toml`, rendered from settings.
//! - [`cluster`]: the local three-node RabbitMQ cluster (`deploy/local/cluster.sh`).
//! - [`browser`]: headless Chromium through chromedriver, for the console.
//! - [`console`]: the web console turned on, and an operator's HTTP client.
//! - [`env`]: a unique namespace per test and queue helpers.
//! - [`fleet`]: workers started in-process, and jobs published as ingest does.
//! - [`process`]: a service run as its real binary, its ports read from its log.
//! - [`proxy`]: a TCP proxy a test can sever, to cut one service's connection.
//! - [`settings`]: one test's settings for ingest and the workers together.
//! - [`redis_server`]: a Redis server of the test's own, to kill and restart empty.
//! - [`sender`]: a webhook sender that retries `503` as real senders do.
//! - [`redis_monitor`]: the Redis commands a namespace costs, counted by `MONITOR`.
//! - [`spawn`]: the real services started in-process on port 0.
//! - [`stand_in`]: recording HTTP servers standing in for a CRM or chat channel.
//! - [`stand_ins`]: an OAuth 2.0 server with its API, a mutual-TLS server.
//! - [`webhook`]: signed requests per provider, sources with fresh secrets.
//! - [`wait`]: awaiting conditions with a deadline.
//! - [`logs`]: the process's log output, captured to check secrets stay out.
//! - [`loadgen`]: closed- and open-loop signed load, and queue accounting.
//! - [`mock_ai`]: the fake AI provider (the only fake; broker and Redis are real).

pub mod accounting;
pub mod app;
pub mod bench;
pub mod browser;
pub mod cluster;
pub mod config_file;
pub mod console;
pub mod env;
pub mod fleet;
pub mod loadgen;
pub mod logs;
pub mod mock_ai;
pub mod process;
pub mod proxy;
pub mod redis_monitor;
pub mod redis_server;
pub mod sender;
pub mod settings;
pub mod spawn;
pub mod stand_in;
pub mod stand_ins;
pub mod wait;
pub mod webhook;
