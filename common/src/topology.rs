//! Every exchange, queue and Redis key name, derived from one namespace, and the
//! idempotent declaration of the broker topology.
//!
//! ```text
//! ingest ──▶ {ns}.events (topic) ──#──▶ {ns}.jobs (quorum) ──▶ workers
//!                                          │  ▲                    │
//!              x-delivery-limit exceeded   │  └─ TTL ── {ns}.retry.{tier} ◀─┤ Retry
//!                                          ▼                                │
//!                      {ns}.dead (fanout) ──▶ {ns}.dead (quorum) ◀──────────┤ DeadLetter
//!                      {ns}.results (topic) ──#──▶ {ns}.results (quorum) ◀──┘ Ack
//! ```
//!
//! Declaring is idempotent: RabbitMQ accepts a re-declaration with identical
//! arguments, so every service declares at start and the first one wins. A
//! re-declaration with *different* arguments fails with 406 PRECONDITION_FAILED,
//! which we surface with the queue's name (changing a queue's arguments needs a
//! migration, not a restart).
//!
//! **The dead-letter queue never drops a letter.** RabbitMQ 4.0 gives every
//! quorum queue without one a delivery limit of 20, and a queue without a
//! dead-letter exchange *drops* a message returned more often than that; every
//! `dlq list/stats/show` pass returns the letters it reads (4.0–4.2 count those
//! returns; 4.3 counts only `basic.reject`). `x-delivery-limit = -1` disables
//! the limit on 4.x but drops at the first return on 3.10 (measured), and the
//! server's version is not exposed by lapin, so the DLQ is declared with
//! [`DEAD_QUEUE_DELIVERY_LIMIT`] — a positive limit both lines accept and no
//! number of passes reaches. A DLQ declared by an older release has no limit
//! and refuses the new argument (406): [`Topology::declare_on`] then declares it
//! as it is, warns, and the operator migrates it (docs: dead letters).

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ExchangeKind};

use crate::config::AmqpConfig;

/// The DLQ's `x-delivery-limit`: `i32::MAX` returns, out of reach of any
/// number of read-only passes, and accepted by RabbitMQ 3.x and 4.x alike.
pub const DEAD_QUEUE_DELIVERY_LIMIT: i64 = i32::MAX as i64;

/// The names of everything hookfleet creates, for one namespace.
#[derive(Debug, Clone)]
pub struct Topology {
    namespace: String,
    retry_tiers: Vec<Duration>,
    delivery_limit: u32,
    jobs_max_length: Option<u64>,
    queue_expires: Option<Duration>,
    quorum_group_size: Option<u32>,
    jobs_binding: Vec<String>,
}

/// Declaring the topology failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot declare {what} `{name}`")]
pub struct TopologyError {
    what: &'static str,
    name: String,
    #[source]
    source: lapin::Error,
}

impl TopologyError {
    /// Whether the broker refused a re-declaration of `queue` with different
    /// arguments (406 PRECONDITION_FAILED).
    fn is_inequivalent(&self, queue: &str) -> bool {
        self.name == queue && self.is_inequivalent_queue()
    }

    /// Whether the broker refused a queue's re-declaration with different
    /// arguments.
    fn is_inequivalent_queue(&self) -> bool {
        self.what == "queue"
            && matches!(
                self.source.kind(),
                lapin::ErrorKind::ProtocolError(e)
                    if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED))
            )
    }
}

/// How the dead-letter queue is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeadQueue {
    /// With [`DEAD_QUEUE_DELIVERY_LIMIT`].
    Kept,
    /// As releases before it declared it: no delivery limit argument.
    Legacy,
}

impl Topology {
    /// The topology of `namespace` with the given AMQP settings.
    pub fn new(namespace: &str, amqp: &AmqpConfig) -> Self {
        Self {
            namespace: namespace.to_owned(),
            retry_tiers: amqp.retry_tiers.clone(),
            delivery_limit: amqp.delivery_limit,
            jobs_max_length: amqp.jobs_max_length,
            queue_expires: amqp.queue_expires,
            quorum_group_size: amqp.initial_group_size(),
            jobs_binding: vec!["#".to_owned()],
        }
    }

    /// The namespace every name starts with.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Topic exchange ingest publishes to, routing key `{source}.{event_type}`.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.namespace)
    }

    /// Quorum queue the workers consume.
    pub fn jobs_queue(&self) -> String {
        format!("{}.jobs", self.namespace)
    }

    /// The configured retry delays, shortest first.
    pub fn retry_tiers(&self) -> &[Duration] {
        &self.retry_tiers
    }

    /// Retry queue of one delay tier, e.g. `{ns}.retry.10s`.
    pub fn retry_queue(&self, delay: Duration) -> String {
        format!("{}.retry.{}", self.namespace, tier_label(delay))
    }

    /// The retry queue for a wanted delay: the shortest tier at least that long, or
    /// the longest tier.
    pub fn retry_queue_for(&self, wanted: Duration) -> (String, Duration) {
        let mut tiers = self.retry_tiers.clone();
        tiers.sort();
        let tier = tiers
            .iter()
            .copied()
            .find(|t| *t >= wanted)
            .or(tiers.last().copied())
            .unwrap_or(Duration::from_secs(1));
        (self.retry_queue(tier), tier)
    }

    /// Fanout exchange of dead letters (ours and RabbitMQ's delivery-limit ones).
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.namespace)
    }

    /// Quorum queue holding dead letters until an operator replays or purges them.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.namespace)
    }

    /// Topic exchange of results, routing key `{pipeline}.{source}.{event_type}`.
    pub fn results_exchange(&self) -> String {
        format!("{}.results", self.namespace)
    }

    /// Durable default results queue, so results survive when nobody listens.
    pub fn results_queue(&self) -> String {
        format!("{}.results", self.namespace)
    }

    /// A Redis key in this namespace: `{ns}:{parts…}` joined with `:`.
    pub fn redis_key(&self, parts: &[&str]) -> String {
        let mut key = self.namespace.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// Declares every exchange, queue and binding. Safe to call from every replica.
    pub async fn declare(&self, channel: &Channel) -> Result<(), TopologyError> {
        self.declare_with(channel, DeadQueue::Kept).await
    }

    /// [`Topology::declare`] on channels of its own, accepting a dead-letter
    /// queue an older release declared without a delivery limit: it is declared
    /// as it is, with a warning to migrate it (module docs). Likewise queues
    /// declared before `amqp.urls` listed several nodes, without a quorum group
    /// size: the topology is then declared without one, with a warning to grow
    /// their replicas (docs/cluster.md).
    pub async fn declare_on(&self, connection: &Connection) -> Result<(), TopologyError> {
        match self.declare_keeping_old_dead_queue(connection).await {
            Err(e) if self.quorum_group_size.is_some() && e.is_inequivalent_queue() => {
                tracing::warn!(queue = %e.name,
                    "Queues declared before amqp.urls listed several nodes have no quorum group \
                     size; declaring them as they are. Grow their replicas with \
                     `rabbitmq-queues grow` (docs: cluster).");
                let plain = Topology {
                    quorum_group_size: None,
                    ..self.clone()
                };
                plain.declare_keeping_old_dead_queue(connection).await
            }
            other => other,
        }
    }

    async fn declare_keeping_old_dead_queue(
        &self,
        connection: &Connection,
    ) -> Result<(), TopologyError> {
        let channel = self.channel_on(connection).await?;
        let declared = self.declare_with(&channel, DeadQueue::Kept).await;
        let dead_queue = self.dead_queue();
        let declared = match declared {
            Err(e) if e.is_inequivalent(&dead_queue) => {
                tracing::warn!(queue = %dead_queue, limit = DEAD_QUEUE_DELIVERY_LIMIT,
                    "The dead-letter queue has no delivery limit (declared by an older release); \
                     RabbitMQ 4 drops letters returned more than 20 times from it. Migrate it \
                     (docs: dead letters).");
                // The 406 closed the channel.
                let channel = self.channel_on(connection).await?;
                let declared = self.declare_with(&channel, DeadQueue::Legacy).await;
                let _ = channel.close(200, "declared".into()).await;
                declared
            }
            other => other,
        };
        if channel.status().connected() {
            let _ = channel.close(200, "declared".into()).await;
        }
        declared
    }

    /// A fresh channel on `connection` for declaring this namespace.
    async fn channel_on(&self, connection: &Connection) -> Result<Channel, TopologyError> {
        connection
            .create_channel()
            .await
            .map_err(|source| TopologyError {
                what: "a channel for",
                name: self.namespace.clone(),
                source,
            })
    }

    async fn declare_with(
        &self,
        channel: &Channel,
        dead_queue: DeadQueue,
    ) -> Result<(), TopologyError> {
        let events = self.events_exchange();
        let dead = self.dead_exchange();
        let results = self.results_exchange();
        self.exchange(channel, &events, ExchangeKind::Topic).await?;
        self.exchange(channel, &dead, ExchangeKind::Fanout).await?;
        self.exchange(channel, &results, ExchangeKind::Topic)
            .await?;

        // Dead letters: a quorum queue without a DLX. It only grows until an operator
        // acts, so it must never drop anything: a delivery limit no pass reaches
        // keeps RabbitMQ 4's default of 20 away (module docs).
        let mut dead_args = self.base_args();
        if dead_queue == DeadQueue::Kept {
            dead_args.insert("x-delivery-limit".into(), long(DEAD_QUEUE_DELIVERY_LIMIT));
        }
        // An older DLQ refuses the limit with a 406, which closes the channel:
        // `declare_on` starts over on a new one.
        let dead_queue = self.dead_queue();
        self.queue(channel, &dead_queue, dead_args).await?;
        self.bind(channel, &dead_queue, &dead, "").await?;

        let mut jobs = self.base_args();
        // A consumer that crashes on a message redelivers it forever without this;
        // RabbitMQ dead-letters it with reason `delivery_limit` instead.
        jobs.insert("x-delivery-limit".into(), long(self.delivery_limit.into()));
        self.dead_lettering(&mut jobs, &dead, None);
        if let Some(max) = self.jobs_max_length {
            jobs.insert(
                "x-max-length".into(),
                long(max.try_into().unwrap_or(i64::MAX)),
            );
        }
        let jobs_queue = self.jobs_queue();
        self.queue(channel, &jobs_queue, jobs).await?;
        for pattern in &self.jobs_binding {
            self.bind(channel, &jobs_queue, &events, pattern).await?;
        }

        for tier in &self.retry_tiers {
            let mut args = self.base_args();
            // Queue-wide TTL, one queue per tier: per-message `expiration` only expires
            // at the head of the queue, so a short delay would wait behind a long one.
            args.insert(
                "x-message-ttl".into(),
                long(tier.as_millis().try_into().unwrap_or(i64::MAX)),
            );
            // Expired retries go back to the jobs queue through the default exchange.
            self.dead_lettering(&mut args, "", Some(&jobs_queue));
            self.queue(channel, &self.retry_queue(*tier), args).await?;
        }

        let results_queue = self.results_queue();
        self.queue(channel, &results_queue, self.base_args())
            .await?;
        self.bind(channel, &results_queue, &results, "#").await?;
        Ok(())
    }

    /// Deletes everything [`Topology::declare`] created (tests and demos).
    pub async fn delete(&self, channel: &Channel) -> Result<(), lapin::Error> {
        use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
        let mut queues = vec![self.jobs_queue(), self.dead_queue(), self.results_queue()];
        queues.extend(self.retry_tiers.iter().map(|t| self.retry_queue(*t)));
        for queue in queues {
            channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in [
            self.events_exchange(),
            self.dead_exchange(),
            self.results_exchange(),
        ] {
            channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }

    fn base_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        // Quorum queues: replicated, durable, and the only kind with delivery limits
        // and at-least-once dead-lettering.
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        // On a cluster, say how many nodes hold a replica instead of leaving it to
        // the broker's defaults, so the queues' fault tolerance is what the
        // operator configured (docs/cluster.md).
        if let Some(size) = self.quorum_group_size {
            args.insert("x-quorum-initial-group-size".into(), long(size.into()));
        }
        if let Some(expires) = self.queue_expires {
            args.insert(
                "x-expires".into(),
                long(expires.as_millis().try_into().unwrap_or(i64::MAX)),
            );
        }
        args
    }

    fn dead_lettering(&self, args: &mut FieldTable, exchange: &str, routing_key: Option<&str>) {
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(exchange.into()),
        );
        if let Some(key) = routing_key {
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(key.into()),
            );
        }
        // at-least-once: the message leaves the source queue only once the target
        // queue confirmed it. RabbitMQ silently falls back to at-most-once unless the
        // overflow mode is reject-publish (docs/broker-notes.md), so both are set together.
        args.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
    }

    async fn exchange(
        &self,
        channel: &Channel,
        name: &str,
        kind: ExchangeKind,
    ) -> Result<(), TopologyError> {
        let options = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(name.into(), kind, options, FieldTable::default())
            .await
            .map_err(|source| TopologyError {
                what: "exchange",
                name: name.to_owned(),
                source,
            })
    }

    async fn queue(
        &self,
        channel: &Channel,
        name: &str,
        args: FieldTable,
    ) -> Result<(), TopologyError> {
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(name.into(), options, args)
            .await
            .map(drop)
            .map_err(|source| TopologyError {
                what: "queue",
                name: name.to_owned(),
                source,
            })
    }

    async fn bind(
        &self,
        channel: &Channel,
        queue: &str,
        exchange: &str,
        pattern: &str,
    ) -> Result<(), TopologyError> {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                ShortString::from(pattern),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| TopologyError {
                what: "binding of queue",
                name: queue.to_owned(),
                source,
            })
    }
}

fn long(value: i64) -> AMQPValue {
    AMQPValue::LongLongInt(value)
}

/// `1s`, `10s`, `1m`, `1500ms`: the tier's delay as a stable queue-name suffix.
pub fn tier_label(delay: Duration) -> String {
    let ms = delay.as_millis();
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        let amqp = AmqpConfig {
            retry_tiers: vec![
                Duration::from_millis(200),
                Duration::from_secs(10),
                Duration::from_secs(60),
            ],
            ..AmqpConfig::default()
        };
        Topology::new("t-ns", &amqp)
    }

    #[test]
    fn every_name_is_derived_from_the_namespace() {
        let t = topology();
        assert_eq!(t.events_exchange(), "t-ns.events");
        assert_eq!(t.jobs_queue(), "t-ns.jobs");
        assert_eq!(t.retry_queue(Duration::from_secs(10)), "t-ns.retry.10s");
        assert_eq!(
            t.retry_queue(Duration::from_millis(200)),
            "t-ns.retry.200ms"
        );
        assert_eq!(t.dead_queue(), "t-ns.dead");
        assert_eq!(t.results_exchange(), "t-ns.results");
        assert_eq!(
            t.redis_key(&["seen", "stripe", "evt_1"]),
            "t-ns:seen:stripe:evt_1"
        );
    }

    #[test]
    fn queues_on_a_cluster_get_a_replica_per_listed_node() {
        let group = |t: &Topology| {
            t.base_args()
                .inner()
                .get("x-quorum-initial-group-size")
                .cloned()
        };
        assert_eq!(group(&topology()), None, "one url: the broker's default");
        let cluster = AmqpConfig {
            urls: vec![
                "amqp://a/%2f".into(),
                "amqp://b/%2f".into(),
                "amqp://c/%2f".into(),
            ],
            ..AmqpConfig::default()
        };
        assert_eq!(group(&Topology::new("t-ns", &cluster)), Some(long(3)));
        let five = AmqpConfig {
            quorum_group_size: Some(5),
            ..cluster
        };
        assert_eq!(group(&Topology::new("t-ns", &five)), Some(long(5)));
    }

    #[test]
    fn a_wanted_delay_picks_the_shortest_tier_that_covers_it() {
        let t = topology();
        assert_eq!(
            t.retry_queue_for(Duration::ZERO).1,
            Duration::from_millis(200)
        );
        assert_eq!(
            t.retry_queue_for(Duration::from_secs(3)).1,
            Duration::from_secs(10)
        );
        assert_eq!(
            t.retry_queue_for(Duration::from_secs(3600)).1,
            Duration::from_secs(60)
        );
    }
}
