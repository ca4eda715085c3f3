//! A service run as its real binary, for what only a process shows: SIGTERM and
//! SIGKILL, the exit code, the log output, resident memory.
//!
//! The harness writes the process's config itself ([`ConfigFile`]) with every
//! listener on port 0; the service logs the ports it bound at start (JSON lines,
//! `Ingest listening.` / `Worker admin server listening.`), and
//! [`ServiceProcess::spawn`] reads them back from that line, so no port is ever
//! guessed or bound and released by the test first. Everything the process
//! writes is kept for the test to read; the process is killed when dropped.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::settings::Settings;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::config_file::ConfigFile;
use crate::wait::wait_until;

/// Which service binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// `hookfleet-ingest`.
    Ingest,
    /// `hookfleet-worker run`.
    Worker,
}

impl Service {
    fn binary(self) -> &'static str {
        match self {
            Self::Ingest => "hookfleet-ingest",
            Self::Worker => "hookfleet-worker",
        }
    }

    /// The start-up line that carries the bound ports, and its crate's log target.
    fn listening(self) -> (&'static str, &'static str) {
        match self {
            Self::Ingest => ("Ingest listening.", "hookfleet_ingest::app"),
            Self::Worker => ("Worker admin server listening.", "hookfleet_worker::app"),
        }
    }
}

/// The ports a process bound, read from its start-up line.
#[derive(Debug, Clone, Copy)]
struct Bound {
    port: u16,
    admin_port: Option<u16>,
}

/// How a process ended.
#[derive(Debug)]
pub struct Exited {
    /// Its exit code (`None` when a signal ended it).
    pub code: Option<i32>,
    /// Everything it wrote to stdout and stderr.
    pub logs: String,
}

/// A running service binary; see the module docs.
pub struct ServiceProcess {
    child: Child,
    pid: u32,
    logs: Arc<Mutex<String>>,
    /// The port of its main listener (ingest's public one, the worker's admin).
    pub port: u16,
    /// Ingest: `http://127.0.0.1:{port}`; worker: its admin server.
    pub base_url: String,
    /// Ingest's admin listener (the worker has only one).
    pub admin_url: String,
}

impl ServiceProcess {
    /// Writes `settings` (listeners forced to port 0) into `dir`, starts the
    /// binary on them and waits until it logged the ports it bound.
    pub async fn spawn(service: Service, settings: &Settings, dir: &Path) -> Self {
        let mut settings = settings.clone();
        let any_port = "127.0.0.1:0".parse().expect("an address");
        settings.ingest.listen = any_port;
        settings.ingest.admin_listen = any_port;
        settings.worker.admin_listen = any_port;
        let (line, target) = service.listening();
        // The ports are read from an info line, whatever level the test wants.
        if matches!(
            settings.telemetry.log_level.as_str(),
            "warn" | "error" | "off"
        ) {
            settings.telemetry.log_level =
                format!("{},{target}=info", settings.telemetry.log_level);
        }
        settings.telemetry.log_format = hookfleet_common::config::LogFormat::Json;
        let name = format!("{}-{}", service.binary(), ulid::Ulid::new());
        let config = ConfigFile::write(&settings, dir, &name);
        let mut command = Command::new(crate::spawn::binary(service.binary()));
        command.arg("--config").arg(&config.path);
        if service == Service::Worker {
            command.arg("run");
        }
        // The file says everything: nothing from the test's environment overrides it.
        for (key, _) in std::env::vars() {
            if key.starts_with("HOOKFLEET") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        let pid = child.id().expect("a running child");
        let logs = Arc::new(Mutex::new(String::new()));
        let (bound_tx, mut bound_rx) = watch::channel(None);
        let bound_tx = Arc::new(bound_tx);
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        tokio::spawn(collect(stdout, logs.clone(), bound_tx.clone(), line));
        tokio::spawn(collect(stderr, logs.clone(), bound_tx, line));
        let bound =
            tokio::time::timeout(Duration::from_secs(60), bound_rx.wait_for(Option::is_some))
                .await
                .unwrap_or_else(|_| panic!("{name} logged no ports: {}", lock(&logs)))
                .unwrap_or_else(|_| panic!("{name} exited before listening: {}", lock(&logs)))
                .expect("some");
        let base_url = format!("http://127.0.0.1:{}", bound.port);
        let admin_url = bound
            .admin_port
            .map_or_else(|| base_url.clone(), |p| format!("http://127.0.0.1:{p}"));
        Self {
            child,
            pid,
            logs,
            port: bound.port,
            base_url,
            admin_url,
        }
    }

    /// Spawns the service and waits until its `/readyz` answers 200.
    pub async fn spawn_ready(service: Service, settings: &Settings, dir: &Path) -> Self {
        let process = Self::spawn(service, settings, dir).await;
        process.wait_ready(Duration::from_secs(30)).await;
        process
    }

    /// Waits until `/readyz` answers 200; panics after `deadline`.
    pub async fn wait_ready(&self, deadline: Duration) {
        let client = reqwest::Client::new();
        let ready = self.url("/readyz");
        wait_until(deadline, || async {
            client
                .get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A URL on the main listener.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A URL on the admin listener.
    pub fn admin(&self, path: &str) -> String {
        format!("{}{path}", self.admin_url)
    }

    /// `{base_url}/hooks/{source}` (ingest).
    pub fn hook_url(&self, source: &str) -> String {
        self.url(&format!("/hooks/{source}"))
    }

    /// What it has written so far.
    pub fn logs(&self) -> String {
        lock(&self.logs).clone()
    }

    /// Sends SIGTERM, as Kubernetes does to stop a pod.
    pub fn sigterm(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {}", self.pid);
    }

    /// Sends SIGKILL and waits until the process is gone.
    pub async fn sigkill(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child
            .wait()
            .await
            .expect("the killed process is reaped");
    }

    /// Waits until the process exits (panics after `deadline`) and returns its
    /// code and everything it wrote.
    pub async fn wait_exit(mut self, deadline: Duration) -> Exited {
        let status = tokio::time::timeout(deadline, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("exits within {deadline:?}: {}", self.logs()))
            .expect("the process is reaped");
        // The readers end at the pipes' end of file, right after the exit.
        wait_until(Duration::from_secs(5), || {
            let closed = Arc::strong_count(&self.logs) == 1;
            async move { closed }
        })
        .await;
        Exited {
            code: status.code(),
            logs: self.logs(),
        }
    }
}

fn lock(logs: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    logs.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Appends every line of `pipe` to `logs`; reports the ports of the `listening` line.
async fn collect(
    pipe: impl AsyncRead + Unpin,
    logs: Arc<Mutex<String>>,
    bound: Arc<watch::Sender<Option<Bound>>>,
    listening: &'static str,
) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(ports) = ports_in(&line, listening) {
            bound.send_replace(Some(ports));
        }
        let mut logs = lock(&logs);
        logs.push_str(&line);
        logs.push('\n');
    }
}

/// The ports in a JSON log line whose message is `listening`.
fn ports_in(line: &str, listening: &str) -> Option<Bound> {
    let json: serde_json::Value = serde_json::from_str(line).ok()?;
    if json["message"] != listening {
        return None;
    }
    let port = |key: &str| json[key].as_u64().and_then(|p| u16::try_from(p).ok());
    Some(Bound {
        port: port("port")?,
        admin_port: port("admin_port"),
    })
}
