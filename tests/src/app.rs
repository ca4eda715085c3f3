//! [`TestApp`]: the one way an end-to-end test starts hookfleet.
//!
//! A builder says what the test needs — the mock AI's behaviour, stand-ins,
//! pipelines, sources, how many workers, whether ingest runs, whether a service
//! runs as its real binary, any other setting — and [`TestAppBuilder::start`]
//! starts all of it in a fresh namespace on port 0: services in-process by
//! default, or as processes ([`crate::process`]) whose config file the harness
//! writes from the same settings. The app then offers the actions tests are
//! written in (`publish`, `post_hook`, `results`, `dead_letters`, `wait_jobs`,
//! `spawn`, …), so a test reads as what it checks. Dropping the app kills its
//! processes and removes the namespace: queues, exchanges and Redis keys go even
//! when the test panics.

use std::collections::BTreeMap;
use std::time::Duration;

use hookfleet_worker::config::PipelineConfig;

use crate::settings::Settings;

use hookfleet_common::message::EventMeta;
use hookfleet_ingest::config::SourceConfig;
use lapin::message::BasicGetMessage;

use crate::env::TestEnv;
use crate::fleet::{JobPublisher, WorkerHandle, json_body, mock_openai, pending_jobs, take};
use crate::mock_ai::{MockAi, MockConfig};
use crate::process::{Service, ServiceProcess};
use crate::spawn::IngestHandle;
use crate::stand_in::StandIn;
use crate::wait::wait_until;

/// A change to the settings, given what was started so it can point at it. It
/// may borrow from the test: the builder is used up by `start`.
type Configure<'a> = Box<dyn FnOnce(&mut Settings, &Started) + Send + 'a>;

/// What the builder started before the services, for [`TestAppBuilder::configure`].
pub struct Started {
    /// The mock AI provider.
    pub mock: MockAi,
    /// The stand-ins, by the names given to [`TestAppBuilder::stand_in`].
    pub stand_ins: BTreeMap<String, StandIn>,
}

impl Started {
    /// The stand-in named `name`.
    ///
    /// # Panics
    /// When the builder started none by that name.
    pub fn stand_in(&self, name: &str) -> &StandIn {
        self.stand_ins
            .get(name)
            .unwrap_or_else(|| panic!("no stand-in named {name}"))
    }
}

/// What a test needs started; see the module docs.
pub struct TestAppBuilder<'a> {
    mock: MockConfig,
    workers: usize,
    worker_processes: usize,
    ingest: bool,
    ingest_process: bool,
    max_attempts: u32,
    stand_ins: Vec<String>,
    before_publish: Option<hookfleet_ingest::app::BeforePublish>,
    pipelines: Vec<PipelineConfig>,
    sources: Vec<(String, SourceConfig)>,
    configure: Vec<Configure<'a>>,
    cluster: Vec<String>,
}

impl Default for TestAppBuilder<'_> {
    fn default() -> Self {
        Self {
            mock: MockConfig::default(),
            workers: 1,
            worker_processes: 0,
            ingest: false,
            ingest_process: false,
            max_attempts: 3,
            stand_ins: Vec::new(),
            before_publish: None,
            pipelines: Vec::new(),
            sources: Vec::new(),
            configure: Vec::new(),
            cluster: Vec::new(),
        }
    }
}

impl<'a> TestAppBuilder<'a> {
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

    /// How many workers run as `hookfleet-worker` processes, besides the
    /// in-process ones (each ready before [`start`](Self::start) returns).
    pub fn worker_processes(mut self, n: usize) -> Self {
        self.worker_processes = n;
        self
    }

    /// Runs ingest as the `hookfleet-ingest` process instead of in-process.
    pub fn ingest_process(mut self) -> Self {
        self.ingest_process = true;
        self
    }

    /// Starts a recording stand-in named `name` (see [`Started::stand_in`] and
    /// [`TestApp::stand_in`]).
    pub fn stand_in(mut self, name: &str) -> Self {
        self.stand_ins.push(name.to_owned());
        self
    }

    /// Runs `hook` inside every publish task of the in-process ingest, after the
    /// dedup claim, so a test can make the task fail or panic.
    pub fn before_publish(mut self, hook: hookfleet_ingest::app::BeforePublish) -> Self {
        self.before_publish = Some(hook);
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

    /// Runs everything on these RabbitMQ nodes (`amqp.urls`) instead of the
    /// machine's broker (the chaos tests' local cluster).
    pub fn cluster(mut self, urls: Vec<String>) -> Self {
        self.cluster = urls;
        self
    }

    /// Any other setting, applied after the builder's own.
    pub fn configure(mut self, f: impl FnOnce(&mut Settings, &Started) + Send + 'a) -> Self {
        self.configure.push(Box::new(f));
        self
    }

    /// Starts the mock and stand-ins, then ingest and the workers (each consuming
    /// before this returns), in a namespace of their own.
    pub async fn start(mut self) -> TestApp {
        let env = TestEnv::on_cluster(&std::mem::take(&mut self.cluster)).await;
        let mock = MockAi::start(std::mem::take(&mut self.mock)).await;
        let mut stand_ins = BTreeMap::new();
        for name in std::mem::take(&mut self.stand_ins) {
            stand_ins.insert(name, StandIn::start().await);
        }
        let started = Started { mock, stand_ins };
        let shape = Shape {
            ingest: self.ingest,
            ingest_process: self.ingest_process,
            workers: self.workers,
            worker_processes: self.worker_processes,
        };
        let before_publish = self.before_publish.take();
        let settings = self.settings(&env, &started);
        let dir = tempfile::Builder::new()
            .prefix(&format!("hf-{}-", env.namespace))
            .tempdir()
            .expect("a temporary directory");
        let ingest = match (shape.ingest && !shape.ingest_process, before_publish) {
            (false, _) => None,
            (true, None) => Some(IngestHandle::start(settings.clone()).await),
            (true, Some(hook)) => {
                Some(IngestHandle::start_with_before_publish(settings.clone(), hook).await)
            }
        };
        let mut workers = Vec::with_capacity(shape.workers);
        for _ in 0..shape.workers {
            workers.push(WorkerHandle::start_consuming(settings.clone()).await);
        }
        let mut processes = Vec::new();
        if shape.ingest_process {
            processes
                .push(ServiceProcess::spawn_ready(Service::Ingest, &settings, dir.path()).await);
        }
        for _ in 0..shape.worker_processes {
            processes
                .push(ServiceProcess::spawn_ready(Service::Worker, &settings, dir.path()).await);
        }
        let jobs = JobPublisher::new(&env).await;
        TestApp {
            settings,
            mock: started.mock,
            stand_ins: started.stand_ins,
            ingest,
            workers,
            processes,
            jobs,
            http: reqwest::Client::new(),
            dir,
            env,
        }
    }

    /// The test environment's settings with the builder's applied.
    fn settings(self, env: &TestEnv, started: &Started) -> Settings {
        let mut settings = crate::fleet::worker_settings(env, self.max_attempts);
        settings
            .worker
            .providers
            .insert("mock".into(), mock_openai(&started.mock));
        settings.worker.pipelines = self.pipelines;
        settings.ingest.sources.extend(self.sources);
        for configure in self.configure {
            configure(&mut settings, started);
        }
        settings
    }
}

/// Which services the builder starts, and how.
struct Shape {
    ingest: bool,
    ingest_process: bool,
    workers: usize,
    worker_processes: usize,
}

/// A running hookfleet in its own namespace; see the module docs.
pub struct TestApp {
    /// The settings every service was started with.
    pub settings: Settings,
    /// The mock AI provider (provider `mock` in the settings).
    pub mock: MockAi,
    /// The stand-ins, by name.
    pub stand_ins: BTreeMap<String, StandIn>,
    /// Ingest in-process, when the builder asked for it.
    pub ingest: Option<IngestHandle>,
    /// The in-process workers, consuming.
    pub workers: Vec<WorkerHandle>,
    /// The services run as processes: ingest first when the builder asked for
    /// it, then the workers.
    pub processes: Vec<ServiceProcess>,
    jobs: JobPublisher,
    http: reqwest::Client,
    /// Config and secret files of the processes; removed when dropped.
    dir: tempfile::TempDir,
    // Last, so the namespace is removed after everything that uses it is dropped.
    env: TestEnv,
}

impl TestApp {
    /// A builder with one worker, no ingest, no pipeline.
    pub fn builder<'a>() -> TestAppBuilder<'a> {
        TestAppBuilder::default()
    }

    /// The test environment (namespace, topology, queue helpers).
    pub fn env(&self) -> &TestEnv {
        &self.env
    }

    /// The stand-in named `name`.
    ///
    /// # Panics
    /// When the builder started none by that name.
    pub fn stand_in(&self, name: &str) -> &StandIn {
        self.stand_ins
            .get(name)
            .unwrap_or_else(|| panic!("no stand-in named {name}"))
    }

    /// The in-process ingest.
    ///
    /// # Panics
    /// When the builder did not ask for one ([`TestAppBuilder::ingest`]).
    pub fn ingest(&self) -> &IngestHandle {
        self.ingest
            .as_ref()
            .expect("the app runs ingest in-process")
    }

    /// The first in-process worker.
    ///
    /// # Panics
    /// When the app runs none.
    pub fn worker(&self) -> &WorkerHandle {
        self.workers.first().expect("the app runs a worker")
    }

    /// Takes the first in-process worker out of the app, for a test that stops
    /// it itself (and checks what it returned) while the app runs on.
    ///
    /// # Panics
    /// When the app runs none.
    pub fn take_worker(&mut self) -> WorkerHandle {
        assert!(!self.workers.is_empty(), "the app runs a worker");
        self.workers.remove(0)
    }

    /// The app's settings, changed by `change`: for a second service that
    /// differs from the first in one setting.
    pub fn settings_with(&self, change: impl FnOnce(&mut Settings)) -> Settings {
        let mut settings = self.settings.clone();
        change(&mut settings);
        settings
    }

    /// Starts another in-process ingest on `settings` (see [`settings_with`](Self::settings_with)).
    pub async fn start_ingest(&self, settings: Settings) -> IngestHandle {
        IngestHandle::start(settings).await
    }

    /// Starts another in-process worker on `settings`, consuming before this returns.
    pub async fn start_worker(&self, settings: Settings) -> WorkerHandle {
        WorkerHandle::start_consuming(settings).await
    }

    /// Runs `service` as its binary on `settings`, the config written by the
    /// harness; returns once it logged its ports (not necessarily ready).
    pub async fn spawn(&self, service: Service, settings: &Settings) -> ServiceProcess {
        ServiceProcess::spawn(service, settings, self.dir.path()).await
    }

    /// [`spawn`](Self::spawn), then waits until its `/readyz` answers 200.
    pub async fn spawn_ready(&self, service: Service, settings: &Settings) -> ServiceProcess {
        ServiceProcess::spawn_ready(service, settings, self.dir.path()).await
    }

    /// A publisher of jobs on the test's own connection.
    pub fn jobs(&self) -> &JobPublisher {
        &self.jobs
    }

    /// An HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
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
        let url = match (&self.ingest, self.processes.first()) {
            (Some(ingest), _) => ingest.hook_url(source),
            (None, Some(process)) => process.hook_url(source),
            (None, None) => panic!("the app runs ingest"),
        };
        let mut request = self.http.post(url).body(body);
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

    /// Stops every in-process worker, ingest and the mock AI cleanly, checking
    /// each stopped without error (the mock's counters stay readable).
    pub async fn stop(&mut self) {
        for worker in self.workers.drain(..) {
            worker.stop().await.expect("the worker stops cleanly");
        }
        if let Some(ingest) = self.ingest.take() {
            ingest.stop().await.expect("ingest stops cleanly");
        }
        self.mock
            .shutdown()
            .await
            .expect("the mock AI stops cleanly");
    }
}
