//! The broker's own ceilings on this machine, with bare lapin and nothing of
//! hookfleet but its topology (declared by `TestEnv` through `Topology`, so the
//! quorum arguments are ours) and its message shape (`EventMeta` properties, a
//! ticket body of the same size, persistent, `mandatory`).
//!
//! - [`publish`]: publishes with confirms, a fixed number in flight — what ingest
//!   could reach if HTTP, signatures and Redis were free.
//! - [`consume`]: consumes a pre-filled jobs queue with a prefetch, acking each
//!   delivery on its own — what a worker could reach if jobs were free.
//! - [`relay`]: consumes, publishes one result per delivery with confirm, then
//!   acks — the broker work a worker cannot avoid, without Redis or HTTP.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection, ConnectionProperties};
use serde::Serialize;

use super::cpu::{self, CpuMeter, CpuSplit};
use crate::env::TestEnv;
use crate::fleet;
use crate::loadgen;

/// Messages per second over a run.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Messages moved (and verified to have landed).
    pub messages: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// `messages / seconds`.
    pub per_second: f64,
    /// Where the CPU went meanwhile.
    pub cpu: CpuSplit,
}

impl Throughput {
    pub(crate) fn new(messages: u64, elapsed: Duration, cpu: CpuSplit) -> Self {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Self {
            messages,
            seconds,
            per_second: messages as f64 / seconds,
            cpu,
        }
    }
}

/// How to publish.
#[derive(Debug, Clone, Copy)]
pub struct PublishParams {
    /// Messages to publish.
    pub messages: u64,
    /// Publishes awaiting their confirm at any time.
    pub in_flight: usize,
    /// Confirm channels they are spread over (round robin).
    pub channels: usize,
    /// Body size.
    pub body_bytes: usize,
}

/// Publishes `params.messages` jobs into `env`'s jobs queue and measures the rate;
/// fails unless every one was confirmed and landed.
pub async fn publish(env: &TestEnv, params: &PublishParams) -> anyhow::Result<Throughput> {
    let connection = connect(env).await?;
    let mut meter = None;
    let elapsed = publish_jobs(env, &connection, params, || meter = Some(start_meter())).await?;
    let cpu = meter.map(|m| m.finish()).unwrap_or_default();
    let _ = connection.close(200, "done".into()).await;
    let landed = env.ready_count(&env.topology().jobs_queue()).await;
    ensure!(
        u64::from(landed) == params.messages,
        "{landed} of {} published messages landed",
        params.messages
    );
    Ok(Throughput::new(params.messages, elapsed, cpu))
}

/// Fills `env`'s jobs queue with `messages` jobs as ingest would publish them,
/// as fast as the broker takes them (many in flight).
pub async fn prefill(env: &TestEnv, messages: u64, body_bytes: usize) -> anyhow::Result<()> {
    let connection = connect(env).await?;
    let params = PublishParams {
        messages,
        in_flight: 1024,
        channels: 1,
        body_bytes,
    };
    publish_jobs(env, &connection, &params, || {}).await?;
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

/// Consumes and acks `messages` jobs from `env`'s (pre-filled) jobs queue.
pub async fn consume(env: &TestEnv, messages: u64, prefetch: u16) -> anyhow::Result<Throughput> {
    let connection = connect(env).await?;
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions { global: false })
        .await?;
    let meter = start_meter();
    let started = Instant::now();
    let mut deliveries = channel
        .basic_consume(
            env.topology().jobs_queue().into(),
            "bench-consume".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // Acks go out concurrently with the next deliveries, as a worker's jobs do.
    let mut acks = FuturesUnordered::new();
    let (mut received, mut acked) = (0u64, 0u64);
    while acked < messages {
        tokio::select! {
            delivery = deliveries.next(), if received < messages => {
                let delivery = delivery.context("the consumer ended")??;
                received += 1;
                acks.push(async move { delivery.acker.ack(BasicAckOptions::default()).await });
            }
            Some(ack) = acks.next() => {
                ensure!(ack?, "an ack was refused (channel gone)");
                acked += 1;
            }
        }
    }
    let elapsed = started.elapsed();
    let cpu = meter.finish();
    close(&connection, &channel).await;
    let left = env.ready_count(&env.topology().jobs_queue()).await;
    ensure!(left == 0, "{left} jobs left in the queue");
    Ok(Throughput::new(messages, elapsed, cpu))
}

/// Consumes `messages` jobs; for each, publishes a result of the same size to the
/// results exchange with confirm (on a second connection, as the worker's
/// publisher does), then acks it.
pub async fn relay(env: &TestEnv, messages: u64, prefetch: u16) -> anyhow::Result<Throughput> {
    let topology = env.topology();
    let consuming = connect(env).await?;
    let publishing = connect(env).await?;
    let channel = consuming.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions { global: false })
        .await?;
    let results = confirm_channel(&publishing).await?;
    let exchange = topology.results_exchange();
    let meter = start_meter();
    let started = Instant::now();
    let relay = |delivery: Delivery| {
        let (results, exchange) = (results.clone(), exchange.clone());
        async move { answer(&results, &exchange, &delivery.data, &delivery).await }
    };
    drain(&channel, &topology.jobs_queue(), messages, relay).await?;
    let elapsed = started.elapsed();
    let cpu = meter.finish();
    close(&consuming, &channel).await;
    let _ = publishing.close(200, "done".into()).await;
    let relayed = env.ready_count(&topology.results_queue()).await;
    ensure!(
        u64::from(relayed) == messages,
        "{relayed} results for {messages} jobs"
    );
    Ok(Throughput::new(messages, elapsed, cpu))
}

/// Publishes `body` as the result of `delivery` to `exchange` with confirm,
/// then acks the delivery: a job's last broker work.
pub(crate) async fn answer(
    results: &Channel,
    exchange: &str,
    body: &[u8],
    delivery: &Delivery,
) -> anyhow::Result<()> {
    let confirm = results
        .basic_publish(
            exchange.into(),
            "triage.support.ticket.created".into(),
            mandatory(),
            body,
            delivery.properties.clone(),
        )
        .await?;
    expect_ack(confirm.await?)?;
    ensure!(
        delivery.acker.ack(BasicAckOptions::default()).await?,
        "an ack was refused (channel gone)"
    );
    Ok(())
}

/// Consumes `messages` deliveries of `queue` on `channel` and runs `job` on
/// each, as many at once as the channel's prefetch lets through; fails on the
/// first job that fails.
pub(crate) async fn drain<F, Fut>(
    channel: &Channel,
    queue: &str,
    messages: u64,
    job: F,
) -> anyhow::Result<()>
where
    F: Fn(Delivery) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut deliveries = channel
        .basic_consume(
            queue.into(),
            "bench-drain".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut running = FuturesUnordered::new();
    let (mut received, mut done) = (0u64, 0u64);
    while done < messages {
        tokio::select! {
            delivery = deliveries.next(), if received < messages => {
                let delivery = delivery.context("the consumer ended")??;
                received += 1;
                running.push(job(delivery));
            }
            Some(finished) = running.next() => {
                finished?;
                done += 1;
            }
        }
    }
    Ok(())
}

/// Publishes jobs with `params.in_flight` awaiting confirms; `started` is called
/// once the channels are open, just before the first publish. Returns the time
/// from the first publish to the last confirm.
async fn publish_jobs(
    env: &TestEnv,
    connection: &Connection,
    params: &PublishParams,
    started: impl FnOnce(),
) -> anyhow::Result<Duration> {
    let topology = env.topology();
    let exchange = topology.events_exchange();
    let mut channels = Vec::new();
    for _ in 0..params.channels.max(1) {
        channels.push(confirm_channel(connection).await?);
    }
    let body = loadgen::ticket_body("evt_bench", params.body_bytes);
    let mut pending = FuturesUnordered::new();
    started();
    let clock = Instant::now();
    for i in 0..params.messages {
        if pending.len() >= params.in_flight.max(1)
            && let Some(confirmation) = pending.next().await
        {
            expect_ack(confirmation?)?;
        }
        // Fresh metadata per message, as ingest gives each event.
        let meta = fleet::event("support", "ticket.created");
        let channel = &channels[usize::try_from(i).unwrap_or(0) % channels.len()];
        let confirm = channel
            .basic_publish(
                exchange.as_str().into(),
                meta.routing_key().into(),
                mandatory(),
                &body,
                meta.to_properties(),
            )
            .await?;
        pending.push(confirm);
    }
    while let Some(confirmation) = pending.next().await {
        expect_ack(confirmation?)?;
    }
    Ok(clock.elapsed())
}

/// Closes `channel`, then its connection, a moment after the last ack. RabbitMQ
/// (3.10 here) may ignore a quorum queue's acks that arrive just before the
/// channel closes and put those messages back (rabbitmq/rabbitmq-server#10327;
/// seen here: a few of 300 acked jobs back in the queue); the pause lets the
/// queue settle them first, so the check that the queue is empty holds.
pub async fn close(connection: &Connection, channel: &Channel) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = channel.close(200, "done".into()).await;
    let _ = connection.close(200, "done".into()).await;
}

pub(crate) async fn connect(env: &TestEnv) -> anyhow::Result<Connection> {
    Connection::connect(&env.settings.amqp.url, ConnectionProperties::default())
        .await
        .context("cannot connect to RabbitMQ")
}

pub(crate) async fn confirm_channel(connection: &Connection) -> anyhow::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// `mandatory`, as our publisher sends: an unroutable message is an error.
pub(crate) fn mandatory() -> BasicPublishOptions {
    BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    }
}

pub(crate) fn expect_ack(confirmation: Confirmation) -> anyhow::Result<()> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => bail!(
            "returned unroutable: {} {}",
            returned.reply_code,
            returned.reply_text
        ),
        Confirmation::Nack(_) => bail!("the broker nacked a publish"),
        Confirmation::NotRequested => bail!("the channel is not in confirm mode"),
    }
}

fn start_meter() -> CpuMeter {
    CpuMeter::start(&[cpu::this_process("bench")])
}
