//! [`DeadQueue`]: the connection a `dlq` command works on. Opening it checks that
//! `{ns}.dead` exists and takes the lock that keeps two commands from
//! interleaving (quorum queues ignore `exclusive` on `basic.consume`, so the lock
//! is an exclusive queue `{ns}.dead.lock` that goes with the connection). The
//! passes over the letters are [`super::pass`].

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Settings;
use hookfleet_common::broker;
use hookfleet_common::publisher::Publisher;
use hookfleet_common::topology::Topology;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use super::DlqError;

/// How long a read waits, at its end, for the letters it took to be ready again.
const RETURN_WAIT: Duration = Duration::from_secs(3);

/// The connection a command works on, holding the lock on `{ns}.dead`.
pub(crate) struct DeadQueue {
    pub(super) topology: Topology,
    pub(super) confirm_timeout: Duration,
    connection: Connection,
    pub(super) publisher: Publisher,
}

impl DeadQueue {
    /// Connects, checks that the DLQ exists and takes the lock.
    pub async fn open(settings: &Settings) -> Result<Self, DlqError> {
        let topology = Topology::new(&settings.namespace, &settings.amqp);
        let connection = broker::connect(&settings.amqp, "hookfleet-dlq").await?;
        let queue = Self {
            publisher: Publisher::new(&settings.amqp, "hookfleet-dlq-replay", None),
            confirm_timeout: settings.amqp.confirm_timeout,
            topology,
            connection,
        };
        queue.ready().await?;
        queue.lock().await?;
        Ok(queue)
    }

    /// The DLQ's name.
    pub fn name(&self) -> String {
        self.topology.dead_queue()
    }

    /// Connects the replay publisher now, so a broker problem shows before the pass.
    pub async fn connect_publisher(&self) -> Result<(), DlqError> {
        self.publisher.connect().await.map_err(DlqError::Replay)
    }

    /// Ready letters (a passive declare: unacked ones are not counted).
    pub async fn ready(&self) -> Result<u64, DlqError> {
        let channel = self.channel("opening a channel").await?;
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        // A failed passive declare closes the channel: it is a throwaway one.
        let queue = channel
            .queue_declare(self.name().into(), options, FieldTable::default())
            .await
            .map_err(|_| DlqError::MissingQueue(self.name()))?;
        let _ = channel.close(200, "counted".into()).await;
        Ok(queue.message_count().into())
    }

    /// Closes `channel`, which returns the `unacked` letters delivered on it to
    /// the front of the queue in their order, and waits (a few seconds at most)
    /// until the broker has put them back, so the next channel's letters go
    /// behind them and the next reader sees the whole queue.
    pub(super) async fn give_back(&self, channel: Channel, unacked: u64) {
        let before = self.ready().await.unwrap_or(0);
        let _ = channel.close(200, "page read".into()).await;
        let returned = before + unacked;
        let deadline = Instant::now() + RETURN_WAIT;
        while self.ready().await.is_ok_and(|ready| ready < returned) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Closes the publisher and the connection.
    pub async fn close(self) {
        self.publisher.close().await;
        let _ = self.connection.close(200, "dlq done".into()).await;
    }

    async fn lock(&self) -> Result<(), DlqError> {
        let lock = format!("{}.lock", self.name());
        let channel = self.channel("opening a channel").await?;
        let options = QueueDeclareOptions {
            // Owned by this connection: a second declare from another connection
            // fails with 405 RESOURCE_LOCKED, and the queue vanishes with us.
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(lock.as_str().into(), options, FieldTable::default())
            .await
            .map_err(|source| DlqError::Busy {
                queue: self.name(),
                lock,
                source: Box::new(source),
            })?;
        let _ = channel.close(200, "locked".into()).await;
        Ok(())
    }

    pub(super) async fn channel(&self, what: &'static str) -> Result<Channel, DlqError> {
        self.connection
            .create_channel()
            .await
            .map_err(|source| DlqError::amqp(what, source))
    }
}
