//! Where every accepted event ended: the results and dead letters of a namespace,
//! collected on fresh connections (a node may have died under the test's own),
//! and the accounting failure tests print and assert on.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use hookfleet_common::broker;
use hookfleet_common::config::AmqpConfig;
use hookfleet_common::message::{self, EventMeta};
use hookfleet_common::topology::Topology;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use tokio::time::Instant;

use crate::sender::SendLog;

/// Results and dead letters taken off a namespace's queues.
#[derive(Debug, Default)]
pub struct Landed {
    /// Results per event id.
    pub results: HashMap<String, usize>,
    /// Results per message id (one message, one result: more is a repeat).
    pub results_by_message: HashMap<String, usize>,
    /// Dead letters per event id.
    pub dead: HashMap<String, usize>,
}

impl Landed {
    /// Takes what landed until every event in `accepted` has a result or a dead
    /// letter and `settled(&landed)` holds (nothing left in flight, say), or
    /// `deadline` passes.
    pub async fn collect<F>(
        amqp: &AmqpConfig,
        topology: &Topology,
        accepted: &HashSet<String>,
        deadline: Duration,
        mut settled: F,
    ) -> Self
    where
        F: FnMut(&Self) -> bool,
    {
        let mut landed = Self::default();
        let until = Instant::now() + deadline;
        loop {
            // Errors (a node restarting) only mean "try again on the next pass".
            let _ = landed.take_once(amqp, topology).await;
            let all_here = accepted
                .iter()
                .all(|id| landed.results.contains_key(id) || landed.dead.contains_key(id));
            if (all_here && settled(&landed)) || Instant::now() >= until {
                // One more pass for a copy that landed meanwhile.
                let _ = landed.take_once(amqp, topology).await;
                return landed;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn take_once(
        &mut self,
        amqp: &AmqpConfig,
        topology: &Topology,
    ) -> Result<(), lapin::Error> {
        let Ok(connection) = broker::connect(amqp, "test-accounting").await else {
            return Ok(());
        };
        let channel = connection.create_channel().await?;
        for (queue, dead) in [
            (topology.results_queue(), false),
            (topology.dead_queue(), true),
        ] {
            while let Some(message) = channel
                .basic_get(queue.as_str().into(), BasicGetOptions::default())
                .await?
            {
                self.record(&message.delivery, dead);
                message
                    .delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await?;
            }
        }
        let _ = connection.close(200, "done".into()).await;
        Ok(())
    }

    fn record(&mut self, delivery: &lapin::message::Delivery, dead: bool) {
        if dead {
            let id = EventMeta::from_properties(&delivery.properties)
                .and_then(|m| m.event_id)
                .or_else(|| header(delivery, message::EVENT_ID))
                .unwrap_or_default();
            *self.dead.entry(id).or_default() += 1;
            return;
        }
        let result: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap_or_default();
        let field = |name: &str| result[name].as_str().unwrap_or_default().to_owned();
        *self.results.entry(field("event_id")).or_default() += 1;
        *self
            .results_by_message
            .entry(field("message_id"))
            .or_default() += 1;
    }
}

fn header(delivery: &lapin::message::Delivery, name: &str) -> Option<String> {
    let table = delivery.properties.headers().as_ref()?;
    match table.inner().get(name)? {
        lapin::types::AMQPValue::LongString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The figures a failure test prints and asserts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounting {
    /// Events the sender sent.
    pub sent: usize,
    /// Events ingest answered 2xx (eventually).
    pub accepted: usize,
    /// `503` answers (every try counts).
    pub refused_503: usize,
    /// Tries without an answer or answered `409` (a copy still pending).
    pub other_retries: usize,
    /// Events the sender gave up on or ingest refused for good.
    pub not_accepted: usize,
    /// Result messages.
    pub results: usize,
    /// Dead letters.
    pub dead_letters: usize,
    /// Results beyond the first per event (same or another message id).
    pub duplicates: usize,
    /// Of those, results repeating a message id (a job run twice by the workers).
    pub repeated_messages: usize,
    /// Accepted events with neither a result nor a dead letter.
    pub lost: usize,
    /// The longest stretch from a refusal to the next 2xx.
    pub longest_refusal: Duration,
}

impl Accounting {
    /// The accounting of what was sent against what landed.
    pub fn of(log: &SendLog, landed: &Landed) -> Self {
        let results: usize = landed.results.values().sum();
        Self {
            sent: log.sent.len(),
            accepted: log.accepted.len(),
            refused_503: log.count(503),
            other_retries: log.count(0) + log.count(409),
            not_accepted: log.sent.len() - log.accepted.len(),
            results,
            dead_letters: landed.dead.values().sum(),
            duplicates: landed.results.values().map(|n| n - 1).sum(),
            repeated_messages: landed.results_by_message.values().map(|n| n - 1).sum(),
            lost: log
                .accepted
                .iter()
                .filter(|id| !landed.results.contains_key(*id) && !landed.dead.contains_key(*id))
                .count(),
            longest_refusal: log.longest_refusal(),
        }
    }
}

impl fmt::Display for Accounting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {} · 2xx {} · 503 answers {} · other retries {} · not accepted {} · \
             results {} · dead letters {} · duplicates {} (same message {}) · lost {} · \
             longest 503 window {:.1} s",
            self.sent,
            self.accepted,
            self.refused_503,
            self.other_retries,
            self.not_accepted,
            self.results,
            self.dead_letters,
            self.duplicates,
            self.repeated_messages,
            self.lost,
            self.longest_refusal.as_secs_f64()
        )
    }
}
