//! The consumer loop, and the only code that acks or requeues a delivery.
//!
//! **Flow control.** `basic.qos` prefetch = `worker.concurrency`, and a semaphore of
//! the same size is acquired *before* the next delivery is taken from the stream,
//! so at most `concurrency` jobs run at once (including jobs left over from a lost
//! connection) and nothing is ever spawned without bound.
//!
//! **Settling.** A delivery is acked only once its outcome is durable: the result
//! confirmed (done by `job.rs`), or a retry/dead-letter copy confirmed
//! (`reroute.rs`). If that copy cannot be published — the broker may be down — the
//! delivery is *not* acked: after `worker.requeue_delay` it is nacked with requeue,
//! and the jobs queue's `x-delivery-limit` ends a loop for good. An ack or nack on
//! a channel that died returns `Ok(false)` or an error (docs/broker-notes.md); both mean "the
//! broker will redeliver", which the done markers make cheap.
//!
//! **Connection loss.** No lapin auto-recover (its acks after a recovery are
//! `Ok(false)` anyway): when the consumer stream fails or ends, the loop drops the
//! connection and reconnects with exponential backoff and jitter (`backon`),
//! re-declares the topology and consumes again. Jobs in flight on the old channel
//! finish; their copies, redelivered on the new one, wait for them (job.rs).
//!
//! **Shutdown.** On cancellation: `basic.cancel` (no new deliveries), wait for the
//! in-flight jobs up to `worker.shutdown_grace`, then close the channel, which
//! returns every unacked delivery (prefetched or abandoned) to the queue.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::{FutureExt, StreamExt};
use hookfleet_common::broker::{Broker, BrokerError};
use hookfleet_common::config::AmqpConfig;
use hookfleet_common::publisher::Publisher;
use hookfleet_common::telemetry::error_chain;
use hookfleet_common::topology::{Topology, TopologyError};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::delivery::job::{self, JobContext};
use crate::delivery::outcome::{Decision, Outcome};
use crate::delivery::reroute::{self, DeadLetter};
use crate::delivery::status;
use crate::events::{DeadLettered, MarkersUnavailable};

/// Why a consuming session could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// No connection.
    #[error(transparent)]
    Connect(#[from] BrokerError),
    /// The topology could not be declared.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// Opening the channel, setting the prefetch or starting the consumer failed.
    #[error("cannot start consuming")]
    Channel(#[from] lapin::Error),
}

/// Whether the worker is consuming: its readiness. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    consuming: Arc<AtomicBool>,
}

impl Readiness {
    /// True while connected with a live consumer on the jobs queue.
    pub fn is_consuming(&self) -> bool {
        self.consuming.load(Ordering::SeqCst)
    }

    fn set(&self, consuming: bool) {
        self.consuming.store(consuming, Ordering::SeqCst);
    }
}

/// Settings of the loop.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Connection settings.
    pub amqp: AmqpConfig,
    /// The node(s) to connect to (`amqp.urls`), counted.
    pub broker: Broker,
    /// Prefetch and the number of jobs run at once.
    pub concurrency: u16,
    /// How long in-flight jobs may finish after cancellation.
    pub shutdown_grace: Duration,
    /// Pause before requeueing a job whose retry/dead letter was not confirmed.
    pub requeue_delay: Duration,
    /// Reconnection backoff bounds.
    pub reconnect_min_delay: Duration,
    /// Reconnection backoff bounds.
    pub reconnect_max_delay: Duration,
    /// Connection name and consumer tag.
    pub name: String,
}

/// The consumer loop. See the module docs.
pub struct Consumer {
    ctx: Arc<JobContext>,
    publisher: Publisher,
    topology: Topology,
    config: ConsumerConfig,
    readiness: Readiness,
}

/// A live connection with its consuming channel.
struct Session {
    connection: Connection,
    channel: Channel,
}

/// Why `consume` returned.
enum Ended {
    /// The token was cancelled; the consumer is cancelled, the channel still open.
    Stopped,
    /// The connection or channel failed, or the broker cancelled the consumer.
    Lost(String),
}

/// What one spawned job needs.
#[derive(Clone)]
struct Settler {
    ctx: Arc<JobContext>,
    publisher: Publisher,
    topology: Topology,
    requeue_delay: Duration,
    stopping: CancellationToken,
    /// The jobs' tracker: status writes left running after a job's ack are
    /// waited for at shutdown too.
    tracker: TaskTracker,
}

impl Consumer {
    /// A consumer; does no I/O until run.
    pub fn new(
        ctx: Arc<JobContext>,
        publisher: Publisher,
        topology: Topology,
        config: ConsumerConfig,
    ) -> Self {
        Self {
            ctx,
            publisher,
            topology,
            config,
            readiness: Readiness::default(),
        }
    }

    /// The handle `/readyz` reads.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Consumes until `token` is cancelled, reconnecting whenever the connection is
    /// lost, then drains in-flight jobs within the grace period and closes.
    pub async fn run_until_stopped(self, token: CancellationToken) {
        let tracker = TaskTracker::new();
        let semaphore = Arc::new(Semaphore::new(usize::from(self.config.concurrency)));
        let abandon = CancellationToken::new();
        let settler = Settler {
            ctx: self.ctx.clone(),
            publisher: self.publisher.clone(),
            topology: self.topology.clone(),
            requeue_delay: self.config.requeue_delay,
            stopping: token.clone(),
            tracker: tracker.clone(),
        };
        let mut backoff = self.backoff();
        let mut connected_before = false;
        let session = loop {
            if token.is_cancelled() {
                break None;
            }
            let (session, stream) = match self.open().await {
                Ok(opened) => opened,
                Err(e) => {
                    let pause = backoff.next().unwrap_or(self.config.reconnect_max_delay);
                    tracing::warn!(error = %error_chain(&e), retry_in = ?pause, "Cannot consume from RabbitMQ.");
                    if !sleep_unless(pause, &token).await {
                        break None;
                    }
                    continue;
                }
            };
            if connected_before {
                self.ctx.metrics.broker_reconnects.inc();
            }
            connected_before = true;
            backoff = self.backoff();
            self.readiness.set(true);
            tracing::info!(queue = %self.topology.jobs_queue(), prefetch = self.config.concurrency, "Consuming.");
            let ended = self
                .consume(
                    &session, stream, &token, &semaphore, &tracker, &abandon, &settler,
                )
                .await;
            self.readiness.set(false);
            match ended {
                Ended::Stopped => break Some(session),
                Ended::Lost(why) => {
                    let pause = backoff.next().unwrap_or(self.config.reconnect_max_delay);
                    tracing::warn!(reason = %why, retry_in = ?pause, "Lost the RabbitMQ consumer; reconnecting. Unacked jobs will be redelivered.");
                    drop(session);
                    if !sleep_unless(pause, &token).await {
                        break None;
                    }
                }
            }
        };
        self.drain(&tracker, &abandon, session).await;
    }

    /// Waits for the in-flight jobs up to the grace period (then abandons
    /// them), and closes the session, returning every unacked delivery.
    async fn drain(
        &self,
        tracker: &TaskTracker,
        abandon: &CancellationToken,
        session: Option<Session>,
    ) {
        tracker.close();
        let grace = self.config.shutdown_grace;
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                ?grace,
                in_flight = tracker.len(),
                "Shutdown grace ended with jobs in flight; the broker will redeliver them."
            );
            abandon.cancel();
            tracker.wait().await;
        }
        if let Some(session) = session {
            // Closing the channel returns every unacked delivery to the queue.
            let _ = session.channel.close(200, "shutting down".into()).await;
            let _ = session.connection.close(200, "shutting down".into()).await;
        }
        tracing::info!("Consumer stopped.");
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.config.reconnect_min_delay)
            .with_max_delay(self.config.reconnect_max_delay)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }

    async fn open(&self) -> Result<(Session, lapin::Consumer), ConsumerError> {
        let connection = self.config.broker.connect(&self.config.name).await?;
        // Idempotent; makes a fresh or wiped broker usable before the first delivery.
        self.topology.declare_on(&connection).await?;
        let channel = connection.create_channel().await?;
        // Per-consumer prefetch (global=false): the broker sends at most this many
        // unacked deliveries, matching the semaphore.
        channel
            .basic_qos(self.config.concurrency, BasicQosOptions { global: false })
            .await?;
        let stream = channel
            .basic_consume(
                self.topology.jobs_queue().into(),
                self.config.name.as_str().into(),
                // Manual acks (no_ack=false); not exclusive, so replicas share the queue.
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((
            Session {
                connection,
                channel,
            },
            stream,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    async fn consume(
        &self,
        session: &Session,
        mut stream: lapin::Consumer,
        token: &CancellationToken,
        semaphore: &Arc<Semaphore>,
        tracker: &TaskTracker,
        abandon: &CancellationToken,
        settler: &Settler,
    ) -> Ended {
        loop {
            let permit = tokio::select! {
                biased;
                _ = token.cancelled() => return self.cancel(session).await,
                permit = semaphore.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    // The semaphore is never closed.
                    Err(_) => return self.cancel(session).await,
                },
            };
            let next = tokio::select! {
                biased;
                _ = token.cancelled() => return self.cancel(session).await,
                next = stream.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    let span = tracing::info_span!(
                        "job",
                        message_id = delivery
                            .properties
                            .message_id()
                            .as_ref()
                            .map(|s| s.as_str())
                            .unwrap_or(""),
                        redelivered = delivery.redelivered,
                    );
                    // Boxed: the job's future is tens of KB (the pipeline, its HTTP and
                    // Redis calls), and tokio moves a task's future several times
                    // on its way into the task's cell; a box makes each move a
                    // pointer's (`bench/callgrind.sh worker`: memcpy was 40% of
                    // the instructions per job).
                    let task =
                        Box::pin(run_job(settler.clone(), delivery, permit, abandon.clone()));
                    tracker.spawn(task.instrument(span));
                }
                Some(Err(e)) => return Ended::Lost(error_chain(&e)),
                None => return Ended::Lost("the broker cancelled the consumer".into()),
            }
        }
    }

    /// Stops deliveries (`basic.cancel`) and keeps the channel open for the acks
    /// of the jobs still in flight.
    async fn cancel(&self, session: &Session) -> Ended {
        let tag = self.config.name.as_str().into();
        if let Err(e) = session
            .channel
            .basic_cancel(tag, BasicCancelOptions::default())
            .await
        {
            tracing::warn!(error = %error_chain(&e), "Cannot cancel the consumer; closing the channel will stop it.");
        }
        Ended::Stopped
    }
}

/// Decrements `inflight_jobs` however the job ends.
struct InFlight(prometheus::IntGauge);

impl InFlight {
    fn new(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// One job: process, settle. A panic requeues the delivery instead of leaking a
/// prefetch slot; abandonment (grace over) leaves it unacked for redelivery and
/// releases its leases so the copy does not wait for them.
async fn run_job(
    settler: Settler,
    delivery: Delivery,
    permit: OwnedSemaphorePermit,
    abandon: CancellationToken,
) {
    let _permit = permit;
    let _inflight = InFlight::new(&settler.ctx.metrics.inflight);
    let acker = delivery.acker.clone();
    let work = AssertUnwindSafe(async {
        // Boxed, each into its own allocation: a future is moved into its
        // caller's state when it is first awaited, and these two are the big ones.
        let decision = Box::pin(job::process_one(
            &settler.ctx,
            &delivery.properties,
            &delivery.data,
        ))
        .await;
        Box::pin(settler.settle(&delivery, decision)).await;
    })
    .catch_unwind();
    tokio::select! {
        finished = work => if finished.is_err() {
            tracing::error!("Job panicked; returning it to the queue.");
            let _ = acker.nack(BasicNackOptions { requeue: true, multiple: false }).await;
        },
        _ = abandon.cancelled() => {
            job::release_claims(&settler.ctx, &delivery.properties).await;
        }
    }
}

impl Settler {
    /// Carries out a decision: publish the copies it needs (each failed
    /// pipeline's dead letter, then the retry or the job's dead letter), record
    /// the delivery as settled, release the leases its failed pipelines held,
    /// then ack — or requeue. Once acked, the event's status records the outcome.
    async fn settle(&self, delivery: &Delivery, decision: Decision) {
        let held: Vec<&str> = decision.held.iter().map(String::as_str).collect();
        let message_id = decision.meta.as_ref().map_or("", |m| m.message_id.as_str());
        // The failed pipelines' leases stay ours (renewed) until the delivery is
        // settled: a copy waiting for them then finds the settlement.
        let published = tokio::select! {
            biased;
            published = self.publish_copies(delivery, &decision) => published,
            never = job::keep_leases(&self.ctx, &held, message_id) => match never {},
        };
        let durable = published.is_some();
        // Checked by a redelivery of this very copy: no second AI call and no
        // second copy if the ack below is lost.
        if let (Some(copies), Some(id)) = (published, decision.delivery())
            && copies > 0
            && let Err(e) = self.ctx.markers.settle(&id, self.ctx.done_ttl).await
        {
            MarkersUnavailable {
                message_id,
                pipeline: None,
                consequence: "Cannot record the job as settled; a redelivery would repeat it.",
                error: &e,
            }
            .emit(&self.ctx.metrics);
        }
        job::release_held(&self.ctx, &decision).await;
        if durable {
            if self.ack(delivery).await {
                self.count_settled(&decision.outcome);
            }
            let next_in = match &decision.outcome {
                Outcome::Retry { after } => Some(self.topology.retry_queue_for(*after).1),
                _ => None,
            };
            // Off the job's slot: the status is for people, the ack is done.
            // A job whose pipelines all published wrote `done` already.
            if !decision.status_recorded {
                let ctx = Arc::clone(&self.ctx);
                self.tracker.spawn(Box::pin(async move {
                    status::settled(&ctx.statuses, &ctx.metrics, &decision, next_in).await
                }));
            }
        } else {
            self.requeue(delivery).await;
        }
    }

    /// `deliveries_settled_total{outcome}`: one per acked delivery.
    fn count_settled(&self, outcome: &Outcome) {
        let outcome = match outcome {
            Outcome::Ack => "completed",
            Outcome::Retry { .. } => "retried",
            Outcome::DeadLetter { .. } => "dead_lettered",
        };
        self.ctx
            .metrics
            .deliveries_settled
            .with_label_values(&[outcome])
            .inc();
    }

    /// Publishes the copies `decision` needs; how many, or `None` if one was
    /// not confirmed. A pipeline's confirmed dead letter is recorded at once
    /// (`{ns}:failed:…`), so whatever happens next never sends it twice.
    async fn publish_copies(&self, delivery: &Delivery, decision: &Decision) -> Option<usize> {
        for letter in &decision.letters {
            self.dead_letter(delivery, decision, Some(&letter.pipeline), &letter.outcome)
                .await?;
            if let Some(id) = decision.delivery()
                && let Err(e) = self
                    .ctx
                    .markers
                    .fail(&letter.pipeline, &id, self.ctx.done_ttl)
                    .await
            {
                MarkersUnavailable {
                    message_id: id.message_id,
                    pipeline: Some(&letter.pipeline),
                    consequence: "Cannot record the pipeline's dead letter; a retry would run it again.",
                    error: &e,
                }
                .emit(&self.ctx.metrics);
            }
        }
        let letters = decision.letters.len();
        match &decision.outcome {
            Outcome::Ack => Some(letters),
            // The failed pipelines' letters are the job's.
            Outcome::DeadLetter { .. } if letters > 0 => Some(letters),
            outcome @ Outcome::DeadLetter { .. } => {
                self.dead_letter(delivery, decision, decision.pipeline.as_deref(), outcome)
                    .await?;
                Some(1)
            }
            Outcome::Retry { after } => {
                match reroute::to_retry(
                    &self.publisher,
                    &self.topology,
                    &delivery.properties,
                    &delivery.data,
                    decision.attempt,
                    *after,
                )
                .await
                {
                    Ok(queue) => {
                        tracing::debug!(%queue, attempt = decision.attempt, "Job sent to a retry tier.");
                        Some(letters + 1)
                    }
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), "Cannot publish the retry; returning the job to the queue.");
                        None
                    }
                }
            }
        }
    }

    /// Publishes one dead letter (`outcome` is a [`Outcome::DeadLetter`]).
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        decision: &Decision,
        pipeline: Option<&str>,
        outcome: &Outcome,
    ) -> Option<()> {
        let Outcome::DeadLetter {
            reason,
            detail,
            class,
            stage,
        } = outcome
        else {
            return Some(());
        };
        let dead = DeadLetter {
            reason,
            detail,
            class: *class,
            stage: *stage,
            pipeline,
            attempts: decision.attempt,
        };
        match reroute::to_dead(
            &self.publisher,
            &self.topology,
            &delivery.properties,
            &delivery.data,
            delivery.routing_key.as_str(),
            dead,
        )
        .await
        {
            Ok(()) => {
                DeadLettered {
                    reason: reason.as_str(),
                    class: class.as_str(),
                    stage: stage.as_str(),
                    pipeline,
                }
                .emit(&self.ctx.metrics);
                Some(())
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "Cannot publish the dead letter; returning the job to the queue.");
                None
            }
        }
    }

    /// Acks `delivery`; true if the ack went out on the delivery's channel.
    async fn ack(&self, delivery: &Delivery) -> bool {
        match delivery.acker.ack(BasicAckOptions::default()).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::info!("Channel gone before the ack; the broker will redeliver the job.");
                false
            }
            Err(e) => {
                tracing::info!(error = %error_chain(&e), "Ack failed; the broker will redeliver the job.");
                false
            }
        }
    }

    /// Nack with requeue after a pause (skipped when shutting down).
    async fn requeue(&self, delivery: &Delivery) {
        sleep_unless(self.requeue_delay, &self.stopping).await;
        let options = BasicNackOptions {
            requeue: true,
            multiple: false,
        };
        match delivery.acker.nack(options).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!("Channel gone before the nack; the broker will redeliver the job.")
            }
            Err(e) => {
                tracing::info!(error = %error_chain(&e), "Nack failed; the broker will redeliver the job.")
            }
        }
    }
}

/// Sleeps for `pause`; false if `token` was cancelled first.
async fn sleep_unless(pause: Duration, token: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(pause) => true,
        _ = token.cancelled() => false,
    }
}
