//! `mock-ai`: the fake AI provider every test and benchmark talks to, speaking
//! both OpenAI's chat completions and Anthropic's messages API.
//!
//! It is the only fake in the end-to-end tests (broker and Redis are real), so it
//! is built to be asserted against: answers are a pure function of the prompt,
//! failures can be injected at random or forced for chosen prompts, rate limits
//! are enforced exactly, and everything is counted.
//!
//! - [`config`]: [`MockConfig`], what the mock does; changeable while running.
//! - [`prompt`]: the provider-neutral [`Prompt`], its hash, and the
//!   deterministic completion (JSON mode, sentiment rules).
//! - [`window`]: the sliding-window rate limit, time passed in.
//! - [`counters`]: what was seen, as a [`CountersSnapshot`].
//! - `fault`: which injected failure a request gets; `call`: one request end to
//!   end; `openai` / `anthropic`: each provider's wire format.
//!
//! Routes: `POST /v1/chat/completions` (OpenAI), `POST /v1/messages` (Anthropic),
//! `GET /counters`, `POST /counters/reset`, `GET /config`, `PUT /config`,
//! `GET /healthz`.
//!
//! Locks are `std::sync::Mutex`: held for microseconds, never across an await.

pub mod config;
pub mod counters;
pub mod prompt;
pub mod window;

mod anthropic;
mod call;
mod fault;
mod openai;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{MockConfig, ModelLimits};
pub use counters::CountersSnapshot;
pub use openai::go_duration;
pub use prompt::{Prompt, Sentiment};

/// Which API a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// `POST /v1/chat/completions`.
    OpenAi,
    /// `POST /v1/messages`.
    Anthropic,
}

impl Provider {
    /// `openai` or `anthropic`: the key in `CountersSnapshot::by_provider`.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
        }
    }
}

/// State shared by the handlers and the [`MockAi`] handle.
struct Shared {
    /// The behaviour in force; each request clones it once, on arrival.
    config: RwLock<MockConfig>,
    /// What was seen.
    counters: Mutex<counters::Counters>,
    /// One rate window per model, created on the model's first request.
    windows: Mutex<HashMap<String, window::RateWindow>>,
    /// The random draws (faults, jitter); seedable for repeatable runs.
    rng: Mutex<StdRng>,
    /// Response and request ids.
    next_id: AtomicU64,
}

impl Shared {
    fn config(&self) -> MockConfig {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_config(&self, config: MockConfig) {
        if config.seed.is_some() {
            *lock(&self.rng) = rng_for(&config);
        }
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    /// Zeroes the counters; returns what they were.
    fn reset_counters(&self) -> CountersSnapshot {
        let now = Instant::now();
        let mut counters = lock(&self.counters);
        let before = counters.snapshot(now);
        *counters = counters::Counters::new(now);
        before
    }
}

/// Locks `mutex`. A panic while holding one of ours cannot leave the data half
/// updated in a way that matters to a test double, so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn rng_for(config: &MockConfig) -> StdRng {
    match config.seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_os_rng(),
    }
}

/// A running mock provider. Dropping it stops the server (without waiting);
/// [`stop`](Self::stop) stops it and waits.
pub struct MockAi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    token: CancellationToken,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl MockAi {
    /// Starts a mock on `127.0.0.1:0` (a free port), for tests.
    ///
    /// # Panics
    /// If no local port can be bound: a test cannot run without its provider.
    #[allow(clippy::expect_used, reason = "test harness; the panic is documented")]
    pub async fn start(config: MockConfig) -> Self {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config)
            .await
            .expect("mock-ai binds a local port")
    }

    /// Starts a mock listening on `addr`.
    pub async fn bind(addr: SocketAddr, config: MockConfig) -> io::Result<Self> {
        Self::serve(TcpListener::bind(addr).await?, config)
    }

    /// Starts a mock on an already bound listener.
    pub fn serve(listener: TcpListener, config: MockConfig) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            rng: Mutex::new(rng_for(&config)),
            config: RwLock::new(config),
            counters: Mutex::new(counters::Counters::new(Instant::now())),
            windows: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        });
        let token = CancellationToken::new();
        let server = axum::serve(listener, router(Arc::clone(&shared)))
            .with_graceful_shutdown(token.clone().cancelled_owned());
        let task = tokio::spawn(async move { server.await });
        Ok(Self {
            addr,
            shared,
            token,
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`, without a trailing slash or `/v1`; the endpoints are
    /// `{base_url}/v1/chat/completions` and `{base_url}/v1/messages`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `{base_url}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// The config in force.
    pub fn config(&self) -> MockConfig {
        self.shared.config()
    }

    /// Replaces the config; the next request sees it. Rate windows and counters
    /// carry on. A `seed` in the new config reseeds the random draws.
    pub fn set_config(&self, config: MockConfig) {
        self.shared.set_config(config);
    }

    /// Changes the config in place: `mock.update_config(|c| c.rpm_limit = Some(10))`.
    pub fn update_config(&self, change: impl FnOnce(&mut MockConfig)) {
        let mut config = self.config();
        change(&mut config);
        self.set_config(config);
    }

    /// "Fixes the AI": turns off every injected failure, keeping latency and
    /// limits ([`MockConfig::healthy`]).
    pub fn heal(&self) {
        self.set_config(self.config().healthy());
    }

    /// The counters now.
    pub fn counters(&self) -> CountersSnapshot {
        lock(&self.shared.counters).snapshot(Instant::now())
    }

    /// Zeroes the counters and restarts their clock (`admitted_at_us` offsets),
    /// returning what they were. Per-prompt counts restart too, so
    /// `fail_first_attempts` applies afresh. Rate windows are left as they are.
    pub fn reset_counters(&self) -> CountersSnapshot {
        self.shared.reset_counters()
    }

    /// Requests whose prompt text ([`Prompt::text`]) contains `needle`, since the
    /// last reset: "exactly one provider call for this event" when a test knows
    /// a unique string in the prompt but not the whole prompt.
    pub fn calls_for_prompt_containing(&self, needle: &str) -> u64 {
        lock(&self.shared.counters).calls_for_prompt_containing(needle)
    }

    /// Time since the start or last counters reset, on the clock of
    /// `CountersSnapshot::admitted_at_us`.
    pub fn elapsed(&self) -> Duration {
        lock(&self.shared.counters).elapsed(Instant::now())
    }

    /// Stops accepting, finishes requests in flight, and returns the server's
    /// result.
    pub async fn stop(mut self) -> io::Result<()> {
        self.shutdown().await
    }

    /// [`stop`](Self::stop) for an owner that keeps the mock (its counters stay
    /// readable); a second call returns `Ok` at once.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.token.cancel();
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for MockAi {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai_call))
        .route("/v1/messages", post(anthropic_call))
        .route("/counters", get(get_counters))
        .route("/counters/reset", post(reset_counters))
        .route("/config", get(get_config).put(put_config))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared)
}

async fn openai_call(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    call::handle(shared, Provider::OpenAi, headers, body).await
}

async fn anthropic_call(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    call::handle(shared, Provider::Anthropic, headers, body).await
}

async fn get_counters(State(shared): State<Arc<Shared>>) -> Json<CountersSnapshot> {
    Json(lock(&shared.counters).snapshot(Instant::now()))
}

/// Zeroes the counters; answers what they were.
async fn reset_counters(State(shared): State<Arc<Shared>>) -> Json<CountersSnapshot> {
    Json(shared.reset_counters())
}

async fn get_config(State(shared): State<Arc<Shared>>) -> Json<MockConfig> {
    Json(shared.config())
}

/// Replaces the whole config; fields left out take their defaults.
async fn put_config(
    State(shared): State<Arc<Shared>>,
    Json(config): Json<MockConfig>,
) -> Json<MockConfig> {
    shared.set_config(config.clone());
    Json(config)
}
