//! The test tools themselves (the mock AI provider, the benchmark smoke run) and
//! the binaries' command lines (documented commands, `health`).
//!
//! One test binary per area: the modules below share one link, and nextest runs each
//! test in its own process.

mod bench_smoke;
mod cli;
mod config;
mod examples;
mod mock_ai;
