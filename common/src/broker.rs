//! Connecting to RabbitMQ: one node, or the first node of a cluster that answers.
//!
//! One place builds connections so every service names itself to the broker (the
//! management UI shows `hookfleet-ingest@host`) and bounds the handshake with a
//! timeout: a broker behind a dead load balancer accepts TCP and never answers.
//!
//! **Several nodes.** With `amqp.urls`, a [`Broker`] connects to the first node
//! of the list that answers. A service calls [`Broker::connect`] again only when
//! it lost its connection (the worker's backoff, the publisher's next publish), so
//! later calls start with the node *after* the one last connected to and go round
//! the list: the lost node is tried last, which spares a node that hangs (it would
//! cost `amqp.connect_timeout`) and makes no difference otherwise, every node of
//! a cluster serving every queue. Keep one `Broker` per connection for this.
//! Each connection is logged and counted with the node's `host:port` as its label
//! (bounded by the configuration).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lapin::{Connection, ConnectionProperties};
use prometheus::{IntCounterVec, Registry};

use crate::config::{AmqpConfig, redact_url};
use crate::metrics::{self, MetricsError};

/// A connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker refused or dropped the connection.
    #[error("cannot connect to RabbitMQ at {url}")]
    Connect {
        /// The URL, credentials redacted.
        url: String,
        /// What lapin said.
        #[source]
        source: lapin::Error,
    },
    /// No answer within `amqp.connect_timeout`.
    #[error("timed out connecting to RabbitMQ at {url}")]
    Timeout {
        /// The URL, credentials redacted.
        url: String,
    },
    /// No node of the cluster answered; the error of the last one tried.
    #[error("no RabbitMQ node answered ({tried} tried)")]
    NoNode {
        /// How many nodes were tried.
        tried: usize,
        /// Why the last one failed.
        #[source]
        last: Box<BrokerError>,
    },
}

/// `hookfleet_amqp_connections_total{service, node}`: connections opened, by
/// node. Registered by each service in its own registry.
pub fn connections_counter(registry: &Registry) -> Result<IntCounterVec, MetricsError> {
    metrics::counter(
        registry,
        "amqp_connections_total",
        "RabbitMQ connections opened, by connection name and node (host:port).",
        &["name", "node"],
    )
}

/// A connection was opened: logs it and counts it, together.
struct Connected<'a> {
    name: &'a str,
    node: &'a str,
    index: usize,
    nodes: usize,
}

impl Connected<'_> {
    fn emit(&self, counter: Option<&IntCounterVec>) {
        tracing::info!(name = %self.name, node = %self.node, index = self.index, nodes = self.nodes,
            "Connected to RabbitMQ.");
        if let Some(counter) = counter {
            counter.with_label_values(&[self.name, self.node]).inc();
        }
    }
}

/// The nodes one connection goes round, and which to try next. Cheap to clone;
/// clones share the choice. See the module docs.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    amqp: AmqpConfig,
    /// Index (into `amqp.nodes()`) of the node to try first: 0, then the one
    /// after the node last connected to.
    next: AtomicUsize,
    connections: Option<IntCounterVec>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("nodes", &self.inner.amqp.nodes().len())
            .field("next", &self.inner.next.load(Ordering::Relaxed))
            .finish()
    }
}

impl Broker {
    /// The nodes of `amqp`; connections are logged but not counted.
    pub fn new(amqp: &AmqpConfig) -> Self {
        Self::build(amqp, None)
    }

    /// The nodes of `amqp`, counting connections in `connections`
    /// ([`connections_counter`]).
    pub fn counted(amqp: &AmqpConfig, connections: IntCounterVec) -> Self {
        Self::build(amqp, Some(connections))
    }

    fn build(amqp: &AmqpConfig, connections: Option<IntCounterVec>) -> Self {
        Self {
            inner: Arc::new(Inner {
                amqp: amqp.clone(),
                next: AtomicUsize::new(0),
                connections,
            }),
        }
    }

    /// The settings the connections are made with.
    pub fn amqp(&self) -> &AmqpConfig {
        &self.inner.amqp
    }

    /// Connects to the first node that answers, starting with the one after the
    /// node last connected to (module docs), naming the connection `name`.
    pub async fn connect(&self, name: &str) -> Result<Connection, BrokerError> {
        let amqp = &self.inner.amqp;
        let nodes = amqp.nodes();
        let start = self.inner.next.load(Ordering::Relaxed) % nodes.len();
        let mut last = None;
        for index in (0..nodes.len()).map(|i| (start + i) % nodes.len()) {
            match connect_to(amqp, nodes[index], name).await {
                Ok(connection) => {
                    self.inner
                        .next
                        .store((index + 1) % nodes.len(), Ordering::Relaxed);
                    let node = node_label(nodes[index]);
                    let event = Connected {
                        name,
                        node: &node,
                        index,
                        nodes: nodes.len(),
                    };
                    event.emit(self.inner.connections.as_ref());
                    return Ok(connection);
                }
                Err(e) => {
                    if nodes.len() > 1 {
                        tracing::warn!(name, node = %node_label(nodes[index]),
                            error = %crate::telemetry::error_chain(&e), "RabbitMQ node did not answer; trying the next.");
                    }
                    last = Some(e);
                }
            }
        }
        match last {
            Some(e) if nodes.len() > 1 => Err(BrokerError::NoNode {
                tried: nodes.len(),
                last: Box::new(e),
            }),
            Some(e) => Err(e),
            None => Err(BrokerError::Timeout {
                url: redact_url(&amqp.url),
            }),
        }
    }
}

/// Opens one connection to the first node of `amqp` that answers (one-shot
/// commands; services keep a [`Broker`]).
pub async fn connect(amqp: &AmqpConfig, name: &str) -> Result<Connection, BrokerError> {
    Broker::new(amqp).connect(name).await
}

async fn connect_to(amqp: &AmqpConfig, url: &str, name: &str) -> Result<Connection, BrokerError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(amqp.connect_timeout, Connection::connect(url, props)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(source)) => Err(BrokerError::Connect {
            url: redact_url(url),
            source,
        }),
        Err(_) => Err(BrokerError::Timeout {
            url: redact_url(url),
        }),
    }
}

/// `host:port` of an AMQP URL: a metric label without credentials or vhost.
pub fn node_label(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let default_port = if url.starts_with("amqps://") {
        5671
    } else {
        5672
    };
    if host.contains(':') && !host.ends_with(']') {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_label_is_host_and_port_without_credentials() {
        assert_eq!(
            node_label("amqp://u:secret@rabbit-1:5673/%2f"),
            "rabbit-1:5673"
        );
        assert_eq!(node_label("amqp://rabbit-2/%2f"), "rabbit-2:5672");
        assert_eq!(node_label("amqps://u:p@rabbit-3"), "rabbit-3:5671");
    }

    #[tokio::test]
    async fn a_cluster_without_any_answering_node_says_how_many_were_tried() {
        // Port 1 on localhost refuses at once.
        let amqp = AmqpConfig {
            urls: vec![
                "amqp://127.0.0.1:1/%2f".into(),
                "amqp://u:secret@127.0.0.1:1/%2f".into(),
            ],
            ..AmqpConfig::default()
        };
        let error = Broker::new(&amqp).connect("test").await.unwrap_err();
        let chain = crate::telemetry::error_chain(&error);
        assert!(chain.contains("2 tried"), "{chain}");
        assert!(!chain.contains("secret"), "{chain}");
    }
}
