//! One isolated test environment: a unique namespace (`t-{ulid}`) on the shared
//! RabbitMQ and Redis, settings tuned for tests, and helpers to read queues.
//!
//! Every queue is declared with `x-expires` and every Redis key the services write
//! has a TTL, so an aborted run cleans itself up; dropping the environment (at the
//! end of a test, passing or panicking) removes everything at once.

use std::time::Duration;

use hookfleet_common::config::Secret;

use crate::settings::Settings;
use hookfleet_common::redis::{self as hredis, redis};
use hookfleet_common::topology::Topology;
use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};

/// The broker and Redis every test uses (started by `deploy/local/start.sh`).
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Redis for tests.
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The status API's bearer token in tests.
pub const STATUS_TOKEN: &str = "test-status-token";

/// A test's own namespace and settings.
pub struct TestEnv {
    /// `t-{ulid}`, unique per test.
    pub namespace: String,
    /// Settings every service of this test starts from.
    pub settings: Settings,
    connection: Connection,
    channel: Channel,
    cleaned: bool,
}

impl TestEnv {
    /// A fresh namespace with its topology declared.
    pub async fn new() -> Self {
        let namespace = format!("t-{}", ulid::Ulid::new().to_string().to_lowercase());
        let mut settings = Settings {
            namespace: namespace.clone(),
            ..Settings::default()
        };
        settings.amqp.url = AMQP_URL.into();
        settings.amqp.queue_expires = Some(Duration::from_secs(600));
        settings.amqp.retry_tiers = vec![Duration::from_millis(200), Duration::from_secs(1)];
        settings.amqp.confirm_timeout = Duration::from_secs(3);
        settings.amqp.connect_timeout = Duration::from_secs(2);
        settings.redis.url = REDIS_URL.into();
        settings.ingest.listen = "127.0.0.1:0".parse().expect("valid address");
        settings.ingest.admin_listen = "127.0.0.1:0".parse().expect("valid address");
        settings.ingest.status_token = Some(Secret::new(STATUS_TOKEN));
        settings.ingest.drain_delay = Duration::from_millis(100);
        settings.ingest.shutdown_grace = Duration::from_secs(5);
        settings.worker.admin_listen = "127.0.0.1:0".parse().expect("valid address");
        settings.worker.shutdown_grace = Duration::from_secs(10);
        // Stand-ins listen on 127.0.0.1, which the outbound policy refuses
        // unless allowed.
        settings.worker.outbound.allow_hosts = vec!["127.0.0.1".into()];
        let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .expect("RabbitMQ at 127.0.0.1:5672 (run deploy/local/start.sh)");
        let channel = connection.create_channel().await.expect("channel");
        let env = Self {
            namespace,
            settings,
            connection,
            channel,
            cleaned: false,
        };
        env.topology()
            .declare(&env.channel)
            .await
            .expect("declare topology");
        env
    }

    /// The topology of this test's namespace and settings.
    pub fn topology(&self) -> Topology {
        Topology::new(&self.namespace, &self.settings.amqp)
    }

    /// A channel on the test's own connection (not through any proxy).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// A Redis pool for assertions.
    pub fn redis(&self) -> deadpool_redis::Pool {
        hredis::pool(&self.settings.redis).expect("redis pool")
    }

    /// Ready messages in a queue (a passive declare does not count unacked ones).
    pub async fn ready_count(&self, queue: &str) -> u32 {
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        // A failed passive declare closes the channel; use a throwaway one.
        let channel = self.connection.create_channel().await.expect("channel");
        let queue = channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .expect("queue exists");
        let _ = channel.close(200, "done".into()).await;
        queue.message_count()
    }

    /// Waits until `queue` holds at least `n` ready messages, or panics at `deadline`.
    pub async fn wait_for_count(&self, queue: &str, n: u32, deadline: Duration) -> u32 {
        let start = tokio::time::Instant::now();
        loop {
            let count = self.ready_count(queue).await;
            if count >= n {
                return count;
            }
            assert!(
                start.elapsed() < deadline,
                "queue {queue} has {count} messages, expected {n} within {deadline:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Takes (and acks) every ready message of `queue`, in order.
    pub async fn drain(&self, queue: &str) -> Vec<BasicGetMessage> {
        let mut out = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .expect("basic.get")
        {
            message
                .delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .expect("ack");
            out.push(message);
        }
        out
    }

    /// Deletes the namespace's queues, exchanges and Redis keys now (dropping the
    /// environment does the same).
    pub async fn cleanup(mut self) {
        remove_namespace(&self.namespace, &self.settings).await;
        let _ = self.connection.close(200, "test done".into()).await;
        self.cleaned = true;
    }
}

impl Drop for TestEnv {
    /// Removes the namespace on a thread of its own, with its own runtime and
    /// connections: the test's runtime may be a single thread that this call blocks.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let (namespace, settings) = (self.namespace.clone(), self.settings.clone());
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(remove_namespace(&namespace, &settings));
        });
        let _ = cleanup.join();
    }
}

/// Deletes `namespace`'s queues and exchanges (on a connection of its own) and its
/// Redis keys.
async fn remove_namespace(namespace: &str, settings: &Settings) {
    let topology = Topology::new(namespace, &settings.amqp);
    if let Ok(connection) = Connection::connect(AMQP_URL, ConnectionProperties::default()).await {
        if let Ok(channel) = connection.create_channel().await {
            let _ = topology.delete(&channel).await;
        }
        let _ = connection.close(200, "test done".into()).await;
    }
    let Ok(pool) = hredis::pool(&settings.redis) else {
        return;
    };
    let pattern = format!("{namespace}:*");
    let mut cursor: u64 = 0;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000);
        let Ok((next, keys)) =
            hredis::run::<(u64, Vec<String>)>(&pool, Duration::from_secs(2), &cmd).await
        else {
            break;
        };
        if !keys.is_empty() {
            let mut del = redis::cmd("DEL");
            del.arg(keys);
            let _ = hredis::run::<i64>(&pool, Duration::from_secs(2), &del).await;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}
