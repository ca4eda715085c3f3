//! `mock-ai`: the fake OpenAI/Anthropic provider as a standalone server, for
//! benchmarks and manual runs. Parses flags into a [`MockConfig`] and serves
//! until Ctrl-C or SIGTERM; the behaviour lives in `hookfleet_tests::mock_ai`.
//! While running, `PUT /config` changes it and `GET /counters` reads what it saw.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use hookfleet_common::health::HealthArgs;
use hookfleet_tests::mock_ai::{MockAi, MockConfig};

/// Fake OpenAI (`/v1/chat/completions`) and Anthropic (`/v1/messages`) provider.
#[derive(Debug, Parser)]
#[command(name = "mock-ai", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MOCK_AI_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Delay before every answer, in ms.
    #[arg(long, env = "MOCK_AI_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Extra random delay, uniform in 0..=this, in ms.
    #[arg(long, env = "MOCK_AI_JITTER_MS", default_value_t = 0)]
    jitter_ms: u64,
    /// Chance (0..1) of a random 500/502/503.
    #[arg(long, env = "MOCK_AI_FAIL_RATE", default_value_t = 0.0)]
    fail_rate: f64,
    /// Chance (0..1) of a random 429 rate-limit error.
    #[arg(long, env = "MOCK_AI_RATE_429", default_value_t = 0.0)]
    rate_429: f64,
    /// Chance (0..1) of an OpenAI 429 `insufficient_quota`.
    #[arg(long, env = "MOCK_AI_INSUFFICIENT_QUOTA_RATE", default_value_t = 0.0)]
    insufficient_quota_rate: f64,
    /// Chance (0..1) of an Anthropic 529 `overloaded_error`.
    #[arg(long, env = "MOCK_AI_OVERLOADED_RATE", default_value_t = 0.0)]
    overloaded_rate: f64,
    /// Chance (0..1) of a 200 with a truncated or non-JSON body.
    #[arg(long, env = "MOCK_AI_MALFORMED_RATE", default_value_t = 0.0)]
    malformed_rate: f64,
    /// Prompts containing this string always get a 500.
    #[arg(long, env = "MOCK_AI_FAIL_MARKER")]
    fail_marker: Option<String>,
    /// Prompts containing this string always get a 400.
    #[arg(long, env = "MOCK_AI_BAD_REQUEST_MARKER")]
    bad_request_marker: Option<String>,
    /// The first N requests of every distinct prompt get a 500.
    #[arg(long, env = "MOCK_AI_FAIL_FIRST_ATTEMPTS", default_value_t = 0)]
    fail_first_attempts: u32,
    /// Requests per model per window (429 above).
    #[arg(long, env = "MOCK_AI_RPM")]
    rpm: Option<u32>,
    /// Tokens (prompt estimate + max_tokens) per model per window (429 above).
    #[arg(long, env = "MOCK_AI_TPM")]
    tpm: Option<u32>,
    /// Length of the sliding rate window, in ms (60000: the limits are per minute).
    #[arg(long, env = "MOCK_AI_WINDOW_MS", default_value_t = 60_000)]
    window_ms: u64,
    /// Accept requests without an API key header.
    #[arg(long, env = "MOCK_AI_NO_API_KEY")]
    no_api_key: bool,
    /// Seed for the random draws, for repeatable runs.
    #[arg(long, env = "MOCK_AI_SEED")]
    seed: Option<u64>,
    /// Without one, serve until Ctrl-C or SIGTERM.
    #[command(subcommand)]
    command: Option<MockCommand>,
}

#[derive(Debug, clap::Subcommand)]
enum MockCommand {
    /// Exit 0 if the mock on `--listen` answers `/healthz`, else 1: a
    /// container healthcheck (the image has no shell).
    Health(HealthArgs),
}

impl Args {
    fn config(&self) -> MockConfig {
        MockConfig {
            latency: Duration::from_millis(self.latency_ms),
            latency_jitter: Duration::from_millis(self.jitter_ms),
            fail_5xx_rate: self.fail_rate,
            rate_429: self.rate_429,
            insufficient_quota_rate: self.insufficient_quota_rate,
            overloaded_rate: self.overloaded_rate,
            malformed_rate: self.malformed_rate,
            fail_marker: self.fail_marker.clone(),
            bad_request_marker: self.bad_request_marker.clone(),
            fail_first_attempts: self.fail_first_attempts,
            rpm_limit: self.rpm,
            tpm_limit: self.tpm,
            rate_window: Duration::from_millis(self.window_ms),
            require_api_key: !self.no_api_key,
            seed: self.seed,
            ..MockConfig::default()
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if let Some(MockCommand::Health(health)) = &args.command {
        // The mock serves only `/healthz`: `--live` or not, it is what is asked.
        let health = HealthArgs {
            live: true,
            ..health.clone()
        };
        return Ok(health.run(args.listen).await);
    }
    let mock = MockAi::bind(args.listen, args.config())
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!("mock-ai listening on {}", mock.base_url());
    shutdown_signal().await?;
    mock.stop().await.context("serving")?;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C, or SIGTERM (what `docker stop` and systemd send).
async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C"),
        _ = term.recv() => Ok(()),
    }
}
