//! The real services, started in-process on port 0, each with its own shutdown
//! token so a test can stop one service without touching another's.

use std::time::Duration;

use hookfleet_common::config::Settings;
use hookfleet_common::metrics::IngestMetrics;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running ingest service.
pub struct IngestHandle {
    /// `http://127.0.0.1:{port}`.
    pub base_url: String,
    /// Its metrics registry.
    pub metrics: IngestMetrics,
    token: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl IngestHandle {
    /// Starts ingest with `settings` (listen on port 0).
    pub async fn start(settings: Settings) -> Self {
        let app = hookfleet_ingest::Application::build(settings)
            .await
            .expect("ingest builds");
        Self::run(app)
    }

    /// Starts ingest with `hook` run inside every publish task, after the dedup
    /// claim (the `test-hooks` feature): a test can make the task fail or panic.
    pub async fn start_with_before_publish(
        settings: Settings,
        hook: hookfleet_ingest::app::BeforePublish,
    ) -> Self {
        let mut app = hookfleet_ingest::Application::build(settings)
            .await
            .expect("ingest builds");
        app.set_before_publish(hook);
        Self::run(app)
    }

    fn run(app: hookfleet_ingest::Application) -> Self {
        let base_url = format!("http://127.0.0.1:{}", app.port());
        let metrics = app.metrics();
        let token = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(token.clone()));
        Self {
            base_url,
            metrics,
            token,
            task,
        }
    }

    /// `{base_url}/hooks/{source}`.
    pub fn hook_url(&self, source: &str) -> String {
        format!("{}/hooks/{source}", self.base_url)
    }

    /// A URL on this service.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Begins shutdown (as SIGTERM does) without waiting.
    pub fn begin_shutdown(&self) {
        self.token.cancel();
    }

    /// Shuts down and returns what `run_until_stopped` returned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("ingest stops within 30 s")
            .expect("ingest task does not panic")
    }

    /// The value of counter `hookfleet_ingest_requests_total{source,outcome}`.
    pub fn requests(&self, source: &str, outcome: &str) -> u64 {
        self.metrics
            .requests
            .with_label_values(&[source, outcome])
            .get()
    }
}

/// The path of a workspace binary (`hookfleet-ingest`, `hookfleet-worker`,
/// `mock-ai`), built first if this test run has not built it.
pub fn binary(name: &str) -> std::path::PathBuf {
    // Test executables live in target/{profile}/deps; binaries one level up.
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/{profile}");
    let path = dir.join(name);
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--workspace", "--bin", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build --bin {name}");
    path
}
