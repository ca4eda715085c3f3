//! Workers started in-process, and jobs published the way ingest publishes them.
//!
//! - [`WorkerHandle`]: one worker (`hookfleet_worker::Application`) on port 0 with
//!   its own shutdown token, its metrics and readiness readable by the test.
//! - [`JobPublisher`]: publishes `{ns}.events` messages exactly as ingest does
//!   (`EventMeta::to_properties()`, routing key `{source}.{event_type}`, the raw
//!   JSON body), with confirms.
//! - [`mock_openai`], [`mock_anthropic`], [`pipeline`]: config pieces pointing at a
//!   [`MockAi`](crate::mock_ai::MockAi).

use std::time::Duration;

use hookfleet_worker::config::{
    CacheConfig, PipelineConfig, ProviderConfig, ProviderKind, ResponseFormat, SinkConfig,
    UndefinedMode,
};

use hookfleet_common::config::Secret;

use crate::settings::Settings;
use hookfleet_common::message::{EventMeta, now_rfc3339};
use hookfleet_common::publisher::Publisher;
use hookfleet_common::topology::Topology;
use hookfleet_worker::delivery::consumer::Readiness;
use hookfleet_worker::metrics::WorkerMetrics;
use lapin::BasicProperties;
use lapin::message::BasicGetMessage;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::env::TestEnv;
use crate::mock_ai::MockAi;
use crate::wait::wait_until;

/// A running worker.
pub struct WorkerHandle {
    /// `http://127.0.0.1:{admin_port}`.
    pub admin_url: String,
    /// Its metrics registry.
    pub metrics: WorkerMetrics,
    /// Whether it is consuming.
    pub readiness: Readiness,
    token: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl WorkerHandle {
    /// Starts a worker with `settings` (admin on port 0, as `TestEnv` sets).
    pub async fn start(settings: Settings) -> Self {
        let app = hookfleet_worker::Application::build(settings.for_worker())
            .await
            .expect("worker builds");
        let admin_url = format!("http://127.0.0.1:{}", app.admin_port());
        let metrics = app.metrics();
        let readiness = app.readiness();
        let token = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(token.clone()));
        Self {
            admin_url,
            metrics,
            readiness,
            token,
            task,
        }
    }

    /// Starts a worker and waits until it consumes.
    pub async fn start_consuming(settings: Settings) -> Self {
        let worker = Self::start(settings).await;
        worker.wait_consuming(Duration::from_secs(10)).await;
        worker
    }

    /// Waits until the worker consumes, or panics after `deadline`.
    pub async fn wait_consuming(&self, deadline: Duration) {
        let readiness = self.readiness.clone();
        wait_until(deadline, || {
            let ready = readiness.is_consuming();
            async move { ready }
        })
        .await;
    }

    /// A URL on the admin server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.admin_url)
    }

    /// Begins shutdown (as SIGTERM does) without waiting.
    pub fn begin_shutdown(&self) {
        self.token.cancel();
    }

    /// Whether `run_until_stopped` has returned.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Shuts down and returns what `run_until_stopped` returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("worker stops within 20 s")
            .expect("worker task does not panic")
    }

    /// `hookfleet_jobs_total{pipeline,outcome}`.
    pub fn jobs(&self, pipeline: &str, outcome: &str) -> u64 {
        self.metrics
            .jobs
            .with_label_values(&[pipeline, outcome])
            .get()
    }

    /// `hookfleet_dead_letters_total{reason}`.
    pub fn dead_letters(&self, reason: &str) -> u64 {
        self.metrics.dead_letters.with_label_values(&[reason]).get()
    }

    /// `hookfleet_oauth_token_requests_total{outcome}`.
    pub fn oauth_token_requests(&self, outcome: &str) -> u64 {
        self.metrics
            .oauth_token_requests
            .with_label_values(&[outcome])
            .get()
    }

    /// `hookfleet_inflight_jobs`.
    pub fn inflight(&self) -> i64 {
        self.metrics.inflight.get()
    }
}

/// Test-friendly worker settings on top of the environment's: quick reconnects
/// and requeues, short leases, attempts as given.
pub fn worker_settings(env: &TestEnv, max_attempts: u32) -> Settings {
    let mut settings = env.settings.clone();
    let worker = &mut settings.worker;
    worker.concurrency = 8;
    worker.max_attempts = max_attempts;
    // Longer than the limiter's `max_wait` (30 s) plus the mock provider's
    // timeout (10 s), as the worker's validation requires of a config file.
    worker.lease_ttl = Duration::from_secs(45);
    worker.done_ttl = Duration::from_secs(600);
    worker.reconnect_min_delay = Duration::from_millis(100);
    worker.reconnect_max_delay = Duration::from_secs(1);
    worker.requeue_delay = Duration::from_millis(200);
    settings
}

/// An `openai` provider pointing at `mock` (with an API key, which it requires).
pub fn mock_openai(mock: &MockAi) -> ProviderConfig {
    ProviderConfig {
        kind: ProviderKind::Openai,
        base_url: Some(format!("{}/v1", mock.base_url())),
        api_key: Some(Secret::new("sk-test")),
        timeout: Duration::from_secs(10),
        anthropic_version: "2023-06-01".into(),
        api_key_header: None,
        auth: None,
        tls: None,
    }
}

/// An `anthropic` provider pointing at `mock`.
pub fn mock_anthropic(mock: &MockAi) -> ProviderConfig {
    ProviderConfig {
        kind: ProviderKind::Anthropic,
        ..mock_openai(mock)
    }
}

/// A JSON pipeline taking every event, rendering `user`, on `provider`.
pub fn pipeline(name: &str, provider: &str, user: &str) -> PipelineConfig {
    PipelineConfig {
        name: name.into(),
        sources: vec!["*".into()],
        event_types: vec!["*".into()],
        provider: provider.into(),
        model: "gpt-4o-mini".into(),
        temperature: Some(0.0),
        max_tokens: Some(128),
        response_format: ResponseFormat::Json,
        system: Some("You triage support tickets. Answer in JSON.".into()),
        user: user.into(),
        undefined: UndefinedMode::SemiStrict,
        sinks: vec![SinkConfig::Amqp],
        cache: CacheConfig::default(),
        enrich: Vec::new(),
        fallbacks: Vec::new(),
        fallback_wait: Duration::from_millis(250),
    }
}

/// Metadata of a new event, as ingest would assign it.
pub fn event(source: &str, event_type: &str) -> EventMeta {
    EventMeta {
        message_id: ulid::Ulid::new().to_string(),
        source: source.into(),
        event_type: event_type.into(),
        event_id: Some(format!("evt_{}", ulid::Ulid::new())),
        received_at: now_rfc3339(),
        content_type: Some("application/json".into()),
        traceparent: None,
        forwarded: Vec::new(),
        attempt: 0,
        replays: 0,
    }
}

/// Publishes jobs to `{ns}.events` the way ingest does, with confirms, on the
/// test's own connection (never through a test's proxy).
pub struct JobPublisher {
    publisher: Publisher,
    topology: Topology,
}

impl JobPublisher {
    /// A publisher for the environment's namespace.
    pub async fn new(env: &TestEnv) -> Self {
        let publisher = Publisher::new(&env.settings.amqp, "test-jobs", None);
        publisher.connect().await.expect("test publisher connects");
        Self {
            publisher,
            topology: env.topology(),
        }
    }

    /// Publishes a new event with `body`; returns its metadata.
    pub async fn publish(
        &self,
        source: &str,
        event_type: &str,
        body: &serde_json::Value,
    ) -> EventMeta {
        let meta = event(source, event_type);
        self.publish_meta(&meta, body.to_string().as_bytes()).await;
        meta
    }

    /// Publishes `body` with `meta` (e.g. the same message id twice).
    pub async fn publish_meta(&self, meta: &EventMeta, body: &[u8]) {
        self.publish_raw(&meta.routing_key(), body, meta.to_properties())
            .await;
    }

    /// Publishes anything to `{ns}.events` (poison messages).
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8], properties: BasicProperties) {
        self.publisher
            .publish(
                &self.topology.events_exchange(),
                routing_key,
                body,
                properties,
            )
            .await
            .expect("the broker confirms the job");
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.publisher.close().await;
    }
}

/// Waits until `queue` holds at least `n` messages, then takes all of them.
pub async fn take(env: &TestEnv, queue: &str, n: u32, deadline: Duration) -> Vec<BasicGetMessage> {
    env.wait_for_count(queue, n, deadline).await;
    env.drain(queue).await
}

/// A message's body as JSON.
pub fn json_body(message: &BasicGetMessage) -> serde_json::Value {
    serde_json::from_slice(&message.delivery.data).expect("a JSON body")
}

/// A message's header as a string.
pub fn header(message: &BasicGetMessage, name: &str) -> Option<String> {
    let headers = message.delivery.properties.headers().as_ref()?;
    hookfleet_common::message::header_str(headers, name)
}

/// Ready messages in the jobs queue and every retry queue together.
pub async fn pending_jobs(env: &TestEnv) -> u32 {
    let topology = env.topology();
    let mut total = env.ready_count(&topology.jobs_queue()).await;
    for tier in topology.retry_tiers() {
        total += env.ready_count(&topology.retry_queue(*tier)).await;
    }
    total
}
