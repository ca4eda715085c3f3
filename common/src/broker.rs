//! Connecting to RabbitMQ.
//!
//! One place builds connections so every service names itself to the broker (the
//! management UI shows `hookfleet-ingest@host`) and bounds the handshake with a
//! timeout: a broker behind a dead load balancer accepts TCP and never answers.

use lapin::{Connection, ConnectionProperties};

use crate::config::{AmqpConfig, redact_url};

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
}

/// Opens a connection named `name` (shown in the management UI).
pub async fn connect(amqp: &AmqpConfig, name: &str) -> Result<Connection, BrokerError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let url = redact_url(&amqp.url);
    match tokio::time::timeout(amqp.connect_timeout, Connection::connect(&amqp.url, props)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(source)) => Err(BrokerError::Connect { url, source }),
        Err(_) => Err(BrokerError::Timeout { url }),
    }
}
