//! [`TestApp`]: the one way an end-to-end test starts hookfleet.
//!
//! A builder says what the test needs — the mock AI's behaviour, pipelines,
//! sources, how many workers, whether ingest runs, any other setting — and
//! [`TestAppBuilder::start`] starts all of it in a fresh namespace, each service
//! in-process on port 0. The app then offers the actions tests are written in
//! (`publish`, `post_hook`, `results`, `dead_letters`, `wait_jobs`), so a test
//! reads as what it checks. Dropping the app stops nothing explicitly (the
//! services' tasks end with the test's runtime) but removes the namespace: queues,
//! exchanges and Redis keys go even when the test panics.

use std::time::Duration;

use hookfleet_worker::config::PipelineConfig;

use crate::settings::Settings;

use hookfleet_common::message::EventMeta;
use hookfleet_ingest::config::SourceConfig;
use lapin::message::BasicGetMessage;

use crate::env::TestEnv;
use crate::fleet::{JobPublisher, WorkerHandle, json_body, mock_openai, pending_jobs, take};
use crate::mock_ai::{MockAi, MockConfig};
use crate::spawn::IngestHandle;
use crate::wait::wait_until;

/// A change to the settings, given the mock so it can point providers at it.
type Configure = Box<dyn FnOnce(&mut Settings, &MockAi) + Send>;

/// What a test needs started; see the module docs.
pub struct TestAppBuilder {
    mock: MockConfig,
    workers: usize,
    ingest: bool,
    max_attempts: u32,
    pipelines: Vec<PipelineConfig>,
    sources: Vec<(String, SourceConfig)>,
    configure: Vec<Configure>,
}

impl Default for TestAppBuilder {
    fn default() -> Self {
        Self {
            mock: MockConfig::default(),
            workers: 1,
            ingest: false,
            max_attempts: 3,
            pipelines: Vec::new(),
            sources: Vec::new(),
            configure: Vec::new(),
        }
    }
}

impl TestAppBuilder {
    /// How the mock AI answers (it is always started, as provider `mock`).
    pub fn mock(mut self, config: MockConfig) -> Self {
        self.mock = config;
        self
    }

    /// How many workers run (1 by default; 0 for ingest-only tests).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Runs ingest too.
    pub fn ingest(mut self) -> Self {
        self.ingest = true;
        self
    }

    /// `worker.max_attempts` (3 by default).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Adds a pipeline (see [`crate::fleet::pipeline`] for one on provider `mock`).
    pub fn pipeline(mut self, pipeline: PipelineConfig) -> Self {
        self.pipelines.push(pipeline);
        self
    }

    /// Adds an ingest source.
    pub fn source(mut self, name: &str, source: SourceConfig) -> Self {
        self.sources.push((name.to_owned(), source));
        self
    }

    /// Any other setting, applied after the builder's own.
    pub fn configure(mut self, f: impl FnOnce(&mut Settings, &MockAi) + Send + 'static) -> Self {
        self.configure.push(Box::new(f));
        self
    }

    /// Starts the mock, then ingest and the workers (each consuming before this
    /// returns), in a namespace of their own.
    pub async fn start(mut self) -> TestApp {
        let env = TestEnv::new().await;
        let mock = MockAi::start(std::mem::take(&mut self.mock)).await;
        let (with_ingest, n_workers) = (self.ingest, self.workers);
        let settings = self.settings(&env, &mock);
        let ingest = match with_ingest {
            true => Some(IngestHandle::start(settings.clone()).await),
            false => None,
        };
        let mut workers = Vec::with_capacity(n_workers);
        for _ in 0..n_workers {
            workers.push(WorkerHandle::start_consuming(settings.clone()).await);
        }
        let jobs = JobPublisher::new(&env).await;
        TestApp {
            settings,
            mock,
            ingest,
            workers,
            jobs,
            http: reqwest::Client::new(),
            env,
        }
    }

    /// The test environment's settings with the builder's applied.
    fn settings(self, env: &TestEnv, mock: &MockAi) -> Settings {
        let mut settings = crate::fleet::worker_settings(env, self.max_attempts);
        settings
            .worker
            .providers
            .insert("mock".into(), mock_openai(mock));
        settings.worker.pipelines = self.pipelines;
        settings.ingest.sources.extend(self.sources);
        for configure in self.configure {
            configure(&mut settings, mock);
        }
        settings
    }
}

/// A running hookfleet in its own namespace; see the module docs.
pub struct TestApp {
    /// The settings every service was started with.
    pub settings: Settings,
    /// The mock AI provider (provider `mock` in the settings).
    pub mock: MockAi,
    /// Ingest, when the builder asked for it.
    pub ingest: Option<IngestHandle>,
    /// The workers, consuming.
    pub workers: Vec<WorkerHandle>,
    jobs: JobPublisher,
    http: reqwest::Client,
    // Last, so the namespace is removed after everything that uses it is dropped.
    env: TestEnv,
}

impl TestApp {
    /// A builder with one worker, no ingest, no pipeline.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::default()
    }

    /// The test environment (namespace, topology, queue helpers).
    pub fn env(&self) -> &TestEnv {
        &self.env
    }

    /// Publishes a new event as ingest would, with `body`; returns its metadata.
    pub async fn publish(
        &self,
        source: &str,
        event_type: &str,
        body: &serde_json::Value,
    ) -> EventMeta {
        self.jobs.publish(source, event_type, body).await
    }

    /// Publishes `body` with `meta` as it is (the same message id twice, say).
    pub async fn publish_meta(&self, meta: &EventMeta, body: &[u8]) {
        self.jobs.publish_meta(meta, body).await;
    }

    /// `POST /hooks/{source}` on ingest, with `headers` and `body`.
    ///
    /// # Panics
    /// Without ingest (the builder's [`TestAppBuilder::ingest`]), or when ingest
    /// does not answer at all.
    pub async fn post_hook(
        &self,
        source: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> reqwest::Response {
        let ingest = self.ingest.as_ref().expect("the app runs ingest");
        let mut request = self.http.post(ingest.hook_url(source)).body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.expect("ingest answers")
    }

    /// Waits for `n` results on `{ns}.results` and takes them, as JSON.
    pub async fn results(&self, n: u32, deadline: Duration) -> Vec<serde_json::Value> {
        let queue = self.env.topology().results_queue();
        let taken = take(&self.env, &queue, n, deadline).await;
        taken.iter().map(json_body).collect()
    }

    /// Waits for `n` dead letters on `{ns}.dead` and takes them.
    pub async fn dead_letters(&self, n: u32, deadline: Duration) -> Vec<BasicGetMessage> {
        let queue = self.env.topology().dead_queue();
        take(&self.env, &queue, n, deadline).await
    }

    /// Waits until the workers together counted `n` jobs of `pipeline` with `outcome`.
    pub async fn wait_jobs(&self, pipeline: &str, outcome: &str, n: u64, deadline: Duration) {
        wait_until(deadline, || {
            let done = self.jobs_counted(pipeline, outcome);
            async move { done >= n }
        })
        .await;
    }

    /// Jobs of `pipeline` with `outcome`, counted by all the workers together.
    pub fn jobs_counted(&self, pipeline: &str, outcome: &str) -> u64 {
        self.workers.iter().map(|w| w.jobs(pipeline, outcome)).sum()
    }

    /// Ready jobs in the jobs queue and every retry queue.
    pub async fn pending_jobs(&self) -> u32 {
        pending_jobs(&self.env).await
    }

    /// Stops every worker and ingest cleanly, checking each stopped without error.
    pub async fn stop(&mut self) {
        for worker in self.workers.drain(..) {
            worker.stop().await.expect("the worker stops cleanly");
        }
        if let Some(ingest) = self.ingest.take() {
            ingest.stop().await.expect("ingest stops cleanly");
        }
    }
}
