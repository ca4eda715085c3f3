//! The real services, started in-process on port 0, each with its own shutdown
//! token so a test can stop one service without touching another's.

use std::time::Duration;

use hookfleet_ingest::config::Listener;

use crate::settings::Settings;
use hookfleet_ingest::metrics::IngestMetrics;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running ingest service.
pub struct IngestHandle {
    /// `http://127.0.0.1:{port}`.
    pub base_url: String,
    /// `http://127.0.0.1:{admin_port}` (`/metrics`, probes).
    pub admin_url: String,
    /// The listener serving the status API (`/events/…`), and its token.
    status_base: String,
    status_token: Option<String>,
    /// Its metrics registry.
    pub metrics: IngestMetrics,
    token: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Where the status API is served and the token it wants.
struct StatusAccess {
    listener: Listener,
    token: Option<String>,
}

impl StatusAccess {
    fn of(settings: &Settings) -> Self {
        Self {
            listener: settings.ingest.status_listener,
            token: settings
                .ingest
                .status_token
                .as_ref()
                .map(|t| t.expose().to_owned()),
        }
    }
}

impl IngestHandle {
    /// Starts ingest with `settings` (listen on port 0).
    pub async fn start(settings: Settings) -> Self {
        let status = StatusAccess::of(&settings);
        let app = hookfleet_ingest::Application::build(settings.for_ingest())
            .await
            .expect("ingest builds");
        Self::run(app, status)
    }

    /// Starts ingest with `hook` run inside every publish task, after the dedup
    /// claim (the `test-hooks` feature): a test can make the task fail or panic.
    pub async fn start_with_before_publish(
        settings: Settings,
        hook: hookfleet_ingest::app::BeforePublish,
    ) -> Self {
        let status = StatusAccess::of(&settings);
        let mut app = hookfleet_ingest::Application::build(settings.for_ingest())
            .await
            .expect("ingest builds");
        app.set_before_publish(hook);
        Self::run(app, status)
    }

    fn run(app: hookfleet_ingest::Application, status: StatusAccess) -> Self {
        let StatusAccess {
            listener: settings_status_listener,
            token: status_token,
        } = status;
        let base_url = format!("http://127.0.0.1:{}", app.port());
        let admin_url = format!("http://127.0.0.1:{}", app.admin_port());
        let status_base = match settings_status_listener {
            Listener::Public => base_url.clone(),
            Listener::Admin => admin_url.clone(),
        };
        let metrics = app.metrics();
        let token = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(token.clone()));
        Self {
            base_url,
            admin_url,
            status_base,
            status_token,
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

    /// A URL on the admin listener.
    pub fn admin(&self, path: &str) -> String {
        format!("{}{path}", self.admin_url)
    }

    /// `GET {path}` of the status API, on its listener, with its bearer token.
    pub fn status(&self, path: &str) -> reqwest::RequestBuilder {
        let request = reqwest::Client::new().get(format!("{}{path}", self.status_base));
        match &self.status_token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
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
