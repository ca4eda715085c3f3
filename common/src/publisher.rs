//! The confirming publisher: a message counts as published only once the broker
//! confirmed it, routed, into a durable queue.
//!
//! Every publish is `mandatory` on a channel in confirm mode, and its confirm is
//! awaited with a deadline. RabbitMQ answers an unroutable mandatory publish with a
//! `basic.return` *and then an ack* (docs/broker-notes.md), so `Ack(Some(returned))` is a failure
//! here, not a success. Many publishes are in flight at once (one per caller, spread
//! over `publisher_channels` channels): awaiting confirms one at a time caps a
//! channel near 100 msg/s.
//!
//! Reconnection is ours, not lapin's auto-recover: on any connection or channel
//! failure the connection is dropped and the next publish reconnects (at most one
//! attempt at a time, and not more often than every `RECONNECT_PAUSE`), so callers
//! get a fast, clear `Unavailable` while the broker is down and success as soon as
//! it is back, without restarting the service.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::{Mutex, RwLock};

use crate::broker::{Broker, BrokerError};
use crate::config::AmqpConfig;
use crate::telemetry::error_chain;
use crate::topology::Topology;

/// Failed attempts to connect are not retried more often than this.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// Why a message was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No connection to the broker, or it broke while the message was in flight.
    #[error("broker unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The broker refused the message (`basic.nack`), e.g. a full queue with
    /// `reject-publish`.
    #[error("broker refused the message (nack)")]
    Nacked,
    /// No queue is bound for the routing key (312 NO_ROUTE).
    #[error("message returned unroutable: {code} {text}")]
    Returned {
        /// AMQP reply code (312).
        code: u16,
        /// The broker's reply text.
        text: String,
    },
    /// No confirm within `amqp.confirm_timeout`.
    #[error("no confirm from the broker within {0:?}")]
    Timeout(Duration),
}

struct Live {
    connection: Connection,
    channels: Vec<Channel>,
}

impl Live {
    fn healthy(&self) -> bool {
        self.connection.status().connected()
    }
}

struct Inner {
    amqp: AmqpConfig,
    broker: Broker,
    name: String,
    topology: Option<Topology>,
    live: RwLock<Option<Arc<Live>>>,
    /// Held while connecting; remembers when the last attempt failed.
    connecting: Mutex<Option<Instant>>,
    next_channel: AtomicUsize,
}

/// A cheap-to-clone handle publishing with confirms. See the module docs.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

impl Publisher {
    /// A publisher that connects on first use. With a topology, it (re)declares it
    /// on every connection so a wiped broker is repaired before the first publish.
    pub fn new(amqp: &AmqpConfig, name: &str, topology: Option<Topology>) -> Self {
        Self::on(Broker::new(amqp), name, topology)
    }

    /// [`Publisher::new`] connecting through `broker` (a cluster's nodes, counted).
    pub fn on(broker: Broker, name: &str, topology: Option<Topology>) -> Self {
        Self {
            inner: Arc::new(Inner {
                amqp: broker.amqp().clone(),
                broker,
                name: name.to_owned(),
                topology,
                live: RwLock::new(None),
                connecting: Mutex::new(None),
                next_channel: AtomicUsize::new(0),
            }),
        }
    }

    /// Connects now (and declares the topology), failing if the broker is away.
    pub async fn connect(&self) -> Result<(), PublishError> {
        self.live().await.map(drop)
    }

    /// Whether the publisher currently holds an open connection.
    pub async fn is_connected(&self) -> bool {
        self.inner
            .live
            .read()
            .await
            .as_ref()
            .is_some_and(|live| live.healthy())
    }

    /// Publishes `body` and waits for the broker's confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let live = self.live().await?;
        let index = self.inner.next_channel.fetch_add(1, Ordering::Relaxed) % live.channels.len();
        let channel = &live.channels[index];
        let options = BasicPublishOptions {
            // Unroutable messages come back as basic.return instead of vanishing.
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirm = match channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                options,
                body,
                properties,
            )
            .await
        {
            Ok(confirm) => confirm,
            Err(e) => {
                self.discard(&live).await;
                return Err(PublishError::Unavailable(Box::new(e)));
            }
        };
        let deadline = self.inner.amqp.confirm_timeout;
        match tokio::time::timeout(deadline, confirm).await {
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)))) => Err(PublishError::Returned {
                code: returned.reply_code,
                text: returned.reply_text.to_string(),
            }),
            Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
            Ok(Ok(Confirmation::NotRequested)) => {
                // Cannot happen: every channel is put in confirm mode before use.
                self.discard(&live).await;
                Err(PublishError::Unavailable(
                    "channel was not in confirm mode".into(),
                ))
            }
            Ok(Err(e)) => {
                self.discard(&live).await;
                Err(PublishError::Unavailable(Box::new(e)))
            }
            Err(_) => Err(PublishError::Timeout(deadline)),
        }
    }

    /// Closes the connection, letting in-flight confirms resolve first.
    pub async fn close(&self) {
        if let Some(live) = self.inner.live.write().await.take() {
            let _ = live.connection.close(200, "shutting down".into()).await;
        }
    }

    /// The live connection, connecting if there is none.
    async fn live(&self) -> Result<Arc<Live>, PublishError> {
        if let Some(live) = self.inner.live.read().await.as_ref()
            && live.healthy()
        {
            return Ok(live.clone());
        }
        let mut last_failure = self.inner.connecting.lock().await;
        // Someone else may have connected while we waited for the lock.
        if let Some(live) = self.inner.live.read().await.as_ref()
            && live.healthy()
        {
            return Ok(live.clone());
        }
        if let Some(at) = *last_failure
            && at.elapsed() < RECONNECT_PAUSE
        {
            return Err(PublishError::Unavailable(
                "broker unreachable (retrying shortly)".into(),
            ));
        }
        match self.open().await {
            Ok(live) => {
                *last_failure = None;
                let live = Arc::new(live);
                *self.inner.live.write().await = Some(live.clone());
                tracing::info!(name = %self.inner.name, "Publisher connected to RabbitMQ.");
                Ok(live)
            }
            Err(e) => {
                *last_failure = Some(Instant::now());
                tracing::warn!(name = %self.inner.name, error = %error_chain(&*e), "Publisher cannot connect to RabbitMQ.");
                Err(PublishError::Unavailable(e))
            }
        }
    }

    async fn open(&self) -> Result<Live, Box<dyn std::error::Error + Send + Sync>> {
        let connection = self.inner.broker.connect(&self.inner.name).await?;
        let mut channels = Vec::with_capacity(self.inner.amqp.publisher_channels);
        for _ in 0..self.inner.amqp.publisher_channels {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channels.push(channel);
        }
        if let Some(topology) = &self.inner.topology {
            topology.declare_on(&connection).await?;
        }
        Ok(Live {
            connection,
            channels,
        })
    }

    /// Drops `failed` if it is still the current connection, so the next publish
    /// reconnects. A newer connection made meanwhile is left alone.
    async fn discard(&self, failed: &Arc<Live>) {
        let mut live = self.inner.live.write().await;
        if live.as_ref().is_some_and(|l| Arc::ptr_eq(l, failed))
            && let Some(old) = live.take()
        {
            tokio::spawn(async move {
                let _ = old.connection.close(200, "reconnecting".into()).await;
            });
        }
    }
}

impl From<BrokerError> for PublishError {
    fn from(e: BrokerError) -> Self {
        Self::Unavailable(Box::new(e))
    }
}
