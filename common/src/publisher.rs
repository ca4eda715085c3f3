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
//!
//! **A channel that nacked is replaced.** On RabbitMQ 3.10 a channel's client of
//! a quorum queue is set up by its first publish into that queue, aimed at the
//! leader the queue's record names. When that first publish comes while the
//! record still names a leader that was just killed, the broker nacks it and
//! every later publish on that channel too, until that node is back (a new
//! leader elsewhere does not help; docs/broker-notes.md). A fresh channel starts
//! from the record as it is then, so after a nack the channel is replaced,
//! logged and counted (`hookfleet_amqp_channels_reopened_total`), at most once
//! per `CHANNEL_REOPEN_PAUSE` per channel: a queue that is really full
//! (`reject-publish`) costs one new channel a second each, and confirms still in
//! flight on the old channel arrive before it is closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection};
use prometheus::{IntCounterVec, Registry};
use tokio::sync::{Mutex, RwLock};

use crate::broker::{Broker, BrokerError};
use crate::config::AmqpConfig;
use crate::metrics::{self, MetricsError};
use crate::telemetry::error_chain;
use crate::topology::Topology;

/// Failed attempts to connect are not retried more often than this.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// A channel is replaced after a nack at most this often (module docs).
const CHANNEL_REOPEN_PAUSE: Duration = Duration::from_secs(1);

/// `hookfleet_amqp_channels_reopened_total{name}`: publisher channels replaced
/// after a nack. Registered by each service in its own registry.
pub fn channels_reopened_counter(registry: &Registry) -> Result<IntCounterVec, MetricsError> {
    metrics::counter(
        registry,
        "amqp_channels_reopened_total",
        "Publisher channels replaced by a fresh one after the broker nacked a publish on them.",
        &["name"],
    )
}

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
    /// One per `publisher_channels`; a slot's channel is replaced after a nack.
    slots: Vec<std::sync::Mutex<Slot>>,
}

/// One confirm-mode channel and when it was opened (or its replacement begun).
struct Slot {
    channel: Channel,
    since: Instant,
}

impl Live {
    fn healthy(&self) -> bool {
        self.connection.status().connected()
    }

    /// The channel in slot `index`. The lock is never held across an await.
    fn channel(&self, index: usize) -> Channel {
        lock(&self.slots[index]).channel.clone()
    }

    /// Whether slot `index` should get a fresh channel after `nacked` was nacked:
    /// not when it holds another channel already, nor within
    /// `CHANNEL_REOPEN_PAUSE` of the last one. A true answer claims the slot.
    fn claim_reopen(&self, index: usize, nacked: &Channel) -> bool {
        let mut slot = lock(&self.slots[index]);
        if slot.channel.id() != nacked.id() || slot.since.elapsed() < CHANNEL_REOPEN_PAUSE {
            return false;
        }
        slot.since = Instant::now();
        true
    }

    /// Puts `fresh` in slot `index`, returning the channel it replaces.
    fn replace(&self, index: usize, fresh: Channel) -> Channel {
        let mut slot = lock(&self.slots[index]);
        slot.since = Instant::now();
        std::mem::replace(&mut slot.channel, fresh)
    }
}

/// A slot's lock; a panic while holding it cannot leave a slot half-written.
fn lock(slot: &std::sync::Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A publisher channel was replaced after a nack: logs it and counts it, together.
struct ChannelReopened<'a> {
    name: &'a str,
    index: usize,
}

impl ChannelReopened<'_> {
    fn emit(&self, counter: Option<&IntCounterVec>) {
        tracing::warn!(name = %self.name, channel = self.index,
            "RabbitMQ nacked a publish; replaced the publisher channel with a fresh one.");
        if let Some(counter) = counter {
            counter.with_label_values(&[self.name]).inc();
        }
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
    /// `hookfleet_amqp_channels_reopened_total`, when the service counts it.
    reopened: Option<IntCounterVec>,
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
        Self::build(broker, name, topology, None)
    }

    /// [`Publisher::on`], counting replaced channels in `reopened`
    /// ([`channels_reopened_counter`]).
    pub fn counted(
        broker: Broker,
        name: &str,
        topology: Option<Topology>,
        reopened: IntCounterVec,
    ) -> Self {
        Self::build(broker, name, topology, Some(reopened))
    }

    fn build(
        broker: Broker,
        name: &str,
        topology: Option<Topology>,
        reopened: Option<IntCounterVec>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                amqp: broker.amqp().clone(),
                broker,
                name: name.to_owned(),
                topology,
                live: RwLock::new(None),
                connecting: Mutex::new(None),
                next_channel: AtomicUsize::new(0),
                reopened,
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
        let index = self.inner.next_channel.fetch_add(1, Ordering::Relaxed) % live.slots.len();
        let channel = live.channel(index);
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
            Ok(Ok(Confirmation::Nack(_))) => {
                self.reopen(&live, index, &channel);
                Err(PublishError::Nacked)
            }
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
        let mut slots = Vec::with_capacity(self.inner.amqp.publisher_channels);
        for _ in 0..self.inner.amqp.publisher_channels {
            let channel = confirm_channel(&connection).await?;
            slots.push(std::sync::Mutex::new(Slot {
                channel,
                since: Instant::now(),
            }));
        }
        if let Some(topology) = &self.inner.topology {
            topology.declare_on(&connection).await?;
        }
        Ok(Live { connection, slots })
    }

    /// Replaces the channel in slot `index` after `nacked` was nacked on it, in
    /// the background (module docs). The old channel stays open for one
    /// `confirm_timeout`, so the confirms in flight on it still arrive.
    fn reopen(&self, live: &Arc<Live>, index: usize, nacked: &Channel) {
        if !live.claim_reopen(index, nacked) {
            return;
        }
        let (live, inner) = (live.clone(), self.inner.clone());
        tokio::spawn(async move {
            let fresh = match confirm_channel(&live.connection).await {
                Ok(fresh) => fresh,
                Err(e) => {
                    // A broken connection is replaced by the next publish anyway.
                    tracing::warn!(name = %inner.name, channel = index, error = %error_chain(&e),
                        "Cannot open a channel to replace one RabbitMQ nacked on; keeping it.");
                    return;
                }
            };
            let old = live.replace(index, fresh);
            let event = ChannelReopened {
                name: &inner.name,
                index,
            };
            event.emit(inner.reopened.as_ref());
            tokio::time::sleep(inner.amqp.confirm_timeout).await;
            let _ = old.close(200, "replaced after a nack".into()).await;
        });
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

/// A new channel on `connection`, in confirm mode.
async fn confirm_channel(connection: &Connection) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

impl From<BrokerError> for PublishError {
    fn from(e: BrokerError) -> Self {
        Self::Unavailable(Box::new(e))
    }
}
