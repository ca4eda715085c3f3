//! The test tools themselves: the mock AI provider and the benchmark smoke run.
//!
//! One test binary per area: the modules below share one link, and nextest runs each
//! test in its own process.

mod bench_smoke;
mod mock_ai;
