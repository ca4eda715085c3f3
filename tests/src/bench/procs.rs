//! The real binaries as child processes, started the way an operator starts them:
//! one `hookfleet.toml` written for the run (the format of `deploy/local/demo.sh`),
//! secrets passed by environment, logs to files, readiness awaited over HTTP,
//! SIGTERM to stop.
//!
//! Separate processes, not in-process services, because the point is to measure
//! each one: its CPU time and its peak RSS (`VmHWM`) are its own. `HOOKFLEET__…`
//! variables of the caller pass through, so `HOOKFLEET__AMQP__PUBLISHER_CHANNELS=8
//! make bench` tries a setting without editing anything.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::env::TestEnv;
use crate::loadgen::{Scheme, Target};

/// Where the binaries are and where runs leave their configs and logs.
#[derive(Debug, Clone)]
pub struct Lab {
    /// Directory holding `hookfleet-ingest`, `hookfleet-worker` and `mock-ai`.
    pub bin_dir: PathBuf,
    /// Configs and logs of the runs (overwritten by the next run).
    pub work_dir: PathBuf,
}

impl Lab {
    /// The lab for `bin_dir`, keeping files under `work_dir`.
    pub fn new(bin_dir: impl Into<PathBuf>, work_dir: impl Into<PathBuf>) -> Self {
        Self {
            bin_dir: bin_dir.into(),
            work_dir: work_dir.into(),
        }
    }

    /// Fails unless every service binary is there.
    pub fn check(&self) -> anyhow::Result<()> {
        for name in ["hookfleet-ingest", "hookfleet-worker", "mock-ai"] {
            let path = self.bin_dir.join(name);
            if !path.is_file() {
                bail!(
                    "{} is missing: build first (cargo build --release --workspace --bins)",
                    path.display()
                );
            }
        }
        std::fs::create_dir_all(&self.work_dir)
            .with_context(|| format!("cannot create {}", self.work_dir.display()))
    }

    /// `{work_dir}/{file}`.
    pub fn file(&self, file: &str) -> PathBuf {
        self.work_dir.join(file)
    }
}

/// Ports and knobs of one run's services.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Ingest's HTTP port.
    pub ingest_port: u16,
    /// Ingest's admin port (`/metrics`).
    pub ingest_admin_port: u16,
    /// The worker's admin port.
    pub admin_port: u16,
    /// mock-ai's port.
    pub mock_port: u16,
    /// `worker.concurrency` (prefetch).
    pub concurrency: u16,
}

impl Layout {
    /// Free ports for every service.
    pub fn new(concurrency: u16) -> anyhow::Result<Self> {
        Ok(Self {
            ingest_port: free_port()?,
            ingest_admin_port: free_port()?,
            admin_port: free_port()?,
            mock_port: free_port()?,
            concurrency,
        })
    }

    /// `http://127.0.0.1:{ingest}/hooks/support`.
    pub fn hook_url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/support", self.ingest_port)
    }

    /// Signed Standard Webhooks load of `body_bytes` bodies at [`hook_url`](Self::hook_url).
    pub fn hook_target(&self, secret: String, body_bytes: usize) -> Target {
        Target {
            url: self.hook_url(),
            scheme: Scheme::Standard,
            secret,
            body_bytes,
        }
    }
}

/// Environment variable carrying the `support` source's signing secret.
pub const SECRET_ENV: &str = "BENCH_SUPPORT_SECRET";
/// Environment variable carrying the API key the worker sends to mock-ai.
pub const MOCK_KEY_ENV: &str = "BENCH_MOCK_AI_KEY";
/// The pipeline every benchmark job runs through.
pub const PIPELINE: &str = "triage";

/// The one config file both services read for a run in `env`'s namespace. The
/// topology arguments repeat `env`'s, so the services' declarations match the one
/// `TestEnv` made; everything not written here is the shipped default.
pub fn config_toml(env: &TestEnv, layout: &Layout) -> String {
    let amqp = &env.settings.amqp;
    let tiers = amqp
        .retry_tiers
        .iter()
        .map(|t| format!("\"{}\"", humantime::format_duration(*t)))
        .collect::<Vec<_>>()
        .join(", ");
    let expires = amqp
        .queue_expires
        .map(|d| format!("queue_expires = \"{}\"\n", humantime::format_duration(d)))
        .unwrap_or_default();
    format!(
        r#"namespace = "{ns}"
[amqp]
url = "{url}"
retry_tiers = [{tiers}]
{expires}[redis]
url = "{redis}"
[telemetry]
log_format = "json"
log_level = "info"
[ingest]
listen = "127.0.0.1:{ingest_port}"
admin_listen = "127.0.0.1:{ingest_admin_port}"
dedup_ttl = "10m"
drain_delay = "0s"
[ingest.sources.support]
scheme = "standard"
secrets = [{{ secret_env = "{SECRET_ENV}" }}]
[worker]
admin_listen = "127.0.0.1:{admin_port}"
concurrency = {concurrency}
done_ttl = "10m"
[worker.providers.mock]
kind = "openai"
base_url = "http://127.0.0.1:{mock_port}/v1"
api_key = {{ secret_env = "{MOCK_KEY_ENV}" }}
timeout = "30s"
[[worker.pipelines]]
name = "{PIPELINE}"
sources = ["support"]
event_types = ["ticket.*"]
provider = "mock"
model = "gpt-4o-mini"
temperature = 0.0
max_tokens = 128
response_format = "json"
system = "You triage support tickets. Answer in JSON."
user = "Ticket {{{{ meta.message_id }}}} from {{{{ payload.customer.name }}}}: {{{{ payload.ticket.body }}}}"
"#,
        ns = env.namespace,
        url = amqp.url,
        redis = env.settings.redis.url,
        ingest_port = layout.ingest_port,
        ingest_admin_port = layout.ingest_admin_port,
        admin_port = layout.admin_port,
        mock_port = layout.mock_port,
        concurrency = layout.concurrency,
    )
}

/// A service running as a child process. Killed if dropped while running.
pub struct Service {
    name: String,
    pid: u32,
    child: Child,
    log: PathBuf,
}

impl Service {
    /// Starts `{bin_dir}/{binary} {args…}` with `envs`, output to `{work_dir}/{name}.log`.
    pub fn spawn(
        lab: &Lab,
        name: &str,
        binary: &str,
        args: &[String],
        envs: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let log = lab.file(&format!("{name}.log"));
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let path = lab.bin_dir.join(binary);
        let mut command = Command::new(&path);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        for (key, value) in envs {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        let pid = child.id().context("the child has a pid")?;
        Ok(Self {
            name: name.to_owned(),
            pid,
            child,
            log,
        })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// (name, pid), for a [`CpuMeter`](super::cpu::CpuMeter).
    pub fn cpu_entry(&self) -> (String, u32) {
        (self.name.clone(), self.pid)
    }

    /// Peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        super::cpu::peak_rss_kib(self.pid).unwrap_or(0)
    }

    /// Waits until `url` answers 2xx; fails early if the process exits.
    pub async fn wait_ready(&mut self, url: &str, deadline: Duration) -> anyhow::Result<Instant> {
        let client = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Ok(response) = client.get(url).timeout(Duration::from_secs(1)).send().await
                && response.status().is_success()
            {
                return Ok(Instant::now());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before it was ready; see {}",
                    self.name,
                    self.log.display()
                );
            }
            if start.elapsed() > deadline {
                bail!(
                    "{} not ready at {url} within {deadline:?}; see {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGTERM, then waits for a clean exit (SIGKILL after 30 s). Fails if the
    /// service did not exit 0: a benchmark of a service that cannot stop cleanly
    /// is not one to publish.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => bail!(
                "{} exited with {status}; see {}",
                self.name,
                self.log.display()
            ),
            Ok(Err(e)) => Err(e).context("waiting for the child"),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!(
                    "{} did not stop within 30 s of SIGTERM; see {}",
                    self.name,
                    self.log.display()
                )
            }
        }
    }
}

/// Writes the run's config file; returns its path.
pub fn config_path(lab: &Lab, env: &TestEnv, layout: &Layout) -> anyhow::Result<PathBuf> {
    let path = lab.file("hookfleet.toml");
    std::fs::write(&path, config_toml(env, layout))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Starts ingest with `config` and waits for `/readyz`.
pub async fn start_ingest(
    lab: &Lab,
    config: &Path,
    layout: &Layout,
    secret: &str,
) -> anyhow::Result<Service> {
    let mut ingest = Service::spawn(
        lab,
        "ingest",
        "hookfleet-ingest",
        &["--config".into(), config.display().to_string()],
        &secrets(secret),
    )?;
    let ready = format!("http://127.0.0.1:{}/readyz", layout.ingest_port);
    ingest.wait_ready(&ready, Duration::from_secs(20)).await?;
    Ok(ingest)
}

/// Starts mock-ai answering after `latency_ms` and waits for `/healthz`.
pub async fn start_mock(lab: &Lab, layout: &Layout, latency_ms: u64) -> anyhow::Result<Service> {
    let mut mock = Service::spawn(
        lab,
        "mock-ai",
        "mock-ai",
        &[
            "--listen".into(),
            format!("127.0.0.1:{}", layout.mock_port),
            "--latency-ms".into(),
            latency_ms.to_string(),
        ],
        &[],
    )?;
    let health = format!("http://127.0.0.1:{}/healthz", layout.mock_port);
    mock.wait_ready(&health, Duration::from_secs(20)).await?;
    Ok(mock)
}

/// Starts a worker with `config`; returns it and the moment it was seen consuming.
pub async fn start_worker(
    lab: &Lab,
    config: &Path,
    layout: &Layout,
    secret: &str,
) -> anyhow::Result<(Service, Instant)> {
    let mut fleet = start_workers(lab, config, layout, secret, 1).await?;
    let worker = fleet.workers.pop().context("one worker started")?;
    Ok((worker, fleet.consuming))
}

/// Worker processes started together.
pub struct Fleet {
    /// The first listens on the layout's admin port, the others on free ones.
    pub workers: Vec<Service>,
    /// When the first of them was seen consuming.
    pub consuming: Instant,
}

/// Starts `count` workers with `config` at once (the first named `worker`, the
/// others `worker-2`…, each with its own admin port) and waits until each is
/// consuming.
pub async fn start_workers(
    lab: &Lab,
    config: &Path,
    layout: &Layout,
    secret: &str,
    count: u16,
) -> anyhow::Result<Fleet> {
    let mut started = Vec::new();
    for i in 1..=count.max(1) {
        let (name, port) = match i {
            1 => ("worker".to_owned(), layout.admin_port),
            _ => (format!("worker-{i}"), free_port()?),
        };
        let mut envs = vec![(
            "HOOKFLEET__WORKER__ADMIN_LISTEN",
            format!("127.0.0.1:{port}"),
        )];
        envs.extend(secrets(secret));
        let args = [
            "--config".into(),
            config.display().to_string(),
            "run".into(),
        ];
        let worker = Service::spawn(lab, &name, "hookfleet-worker", &args, &envs)?;
        started.push((worker, format!("http://127.0.0.1:{port}/readyz")));
    }
    let mut workers = Vec::new();
    let mut consuming: Option<Instant> = None;
    for (mut worker, ready) in started {
        let at = worker.wait_ready(&ready, Duration::from_secs(20)).await?;
        consuming = Some(consuming.map_or(at, |first| first.min(at)));
        workers.push(worker);
    }
    Ok(Fleet {
        workers,
        consuming: consuming.context("at least one worker")?,
    })
}

/// Both services load the whole file, so both need every secret it names.
pub fn secrets(support: &str) -> [(&'static str, String); 2] {
    [
        (SECRET_ENV, support.to_owned()),
        (MOCK_KEY_ENV, "sk-bench".to_owned()),
    ]
}

/// Mean of a Prometheus histogram over all its label sets, in milliseconds,
/// read from the text exposition at `url` (`{name}_sum` ÷ `{name}_count`).
pub async fn mean_ms(url: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    let total = |suffix: &str| -> f64 {
        let series = format!("{name}{suffix}");
        text.lines()
            .filter(|line| {
                line.strip_prefix(&series)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let count = total("_count");
    (count > 0.0).then(|| total("_sum") / count * 1000.0)
}

/// A port nobody listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a local port")?;
    Ok(listener.local_addr()?.port())
}
