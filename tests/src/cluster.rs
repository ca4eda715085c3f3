//! The local three-node RabbitMQ cluster of `deploy/local/cluster.sh`, driven
//! from a test: its URLs, which node leads a queue, `kill -9` and restart.
//!
//! Tests never start or remove the cluster themselves: `make chaos` brings it up
//! before the chaos tests and down after them, even when they fail, so a failed
//! test cannot leave three Erlang nodes running.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The script, from the workspace root.
fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/cluster.sh")
}

/// Runs `cluster.sh ARGS` and returns its standard output, trimmed.
fn run(args: &[&str]) -> String {
    let output = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("bash runs deploy/local/cluster.sh");
    assert!(
        output.status.success(),
        "cluster.sh {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The running local cluster.
pub struct LocalCluster {
    /// The nodes' AMQP URLs, in order (hf1, hf2, hf3).
    pub urls: Vec<String>,
}

impl LocalCluster {
    /// The cluster `make chaos` started; panics with how to start it otherwise.
    pub fn running() -> Self {
        let urls: Vec<String> = run(&["urls"]).split(',').map(str::to_owned).collect();
        for url in &urls {
            let node = hookfleet_common::broker::node_label(url);
            let address = node.parse().expect("host:port");
            assert!(
                std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok(),
                "node {node} does not answer: run `deploy/local/cluster.sh up` (or `make chaos`)"
            );
        }
        Self { urls }
    }

    /// The node (`hf1`…`hf3`) leading quorum queue `queue`.
    pub fn leader(&self, queue: &str) -> String {
        run(&["leader", queue])
    }

    /// `kill -9` of `node`'s Erlang VM.
    pub fn kill(&self, node: &str) {
        run(&["kill", node]);
    }

    /// Starts `node` again and waits until it rejoined and every quorum queue has
    /// quorum + 1 replicas online (`cluster.sh start`).
    pub fn start(&self, node: &str) {
        run(&["start", node]);
    }
}
