//! One pass over `{ns}.dead`: the only code that takes, acks or republishes dead
//! letters. Every command is a pass with its own [`Visitor`], which looks at each
//! letter in queue order and answers [`Action::Keep`], [`Action::Replay`] or
//! [`Action::Purge`].
//!
//! ## How a pass keeps the letters it does not take, in order
//!
//! Quorum queues cannot be browsed: a letter is read by being delivered, and it
//! stays in the queue only while it is unacked. Measured on RabbitMQ 3.10.8:
//! `nack`/`reject` with requeue puts a quorum-queue message at the **back** — not
//! something to build on: RabbitMQ 4 changed requeue placement again, and counts
//! requeues against a default delivery limit (20), past which a DLQ without a
//! DLX drops the message. A channel close returns every unacked message to the
//! **front**, in its original order. So a pass:
//!
//! 1. counts the ready letters once (`N`, a passive declare) and takes exactly
//!    `N` deliveries — letters arriving meanwhile, and the pass's own
//!    put-back copies, queue up behind them and are not touched;
//! 2. **holds** each letter it keeps unacked, up to `--hold` of them (1,000),
//!    and replays or purges the others (confirm, then ack). If the pass ends
//!    with nothing put back yet (a small DLQ, or `list --limit`/`show` finding
//!    what it wants near the head), closing the channel returns the held letters
//!    to the front in their order: nothing was rewritten;
//! 3. once it must hold more (or one was held five minutes: RabbitMQ closes a
//!    channel that holds a delivery 30 minutes), it **puts back** the oldest held
//!    letter — republishes it, unchanged, to the tail through the default
//!    exchange on one confirm channel (one channel: publishes keep their order),
//!    and acks the original once confirmed — and from then on must finish the
//!    whole pass the same way, so that every kept letter has moved to the tail
//!    in its original order and the queue reads as before.
//!
//! Unacked letters are bounded by the prefetch (`hold` + 256 publishes in flight +
//! 1; less under a slow `--rate`, so no prefetched delivery waits near the
//! consumer timeout): memory stays flat whatever the queue's length.
//!
//! ## Nothing lost, nothing duplicated
//!
//! A letter is acked only after its copy (replayed into the jobs queue, or put
//! back into the DLQ) was confirmed. Cancelling stops taking deliveries, lets the
//! publishes in flight finish (confirmed → ack; failed → left unacked), puts a
//! paced replay that has not started back with the held letters, and — if the
//! pass had started putting letters back — puts the held ones back too, so the
//! queue's order is a rotation of the original. Only a crash between a confirm
//! and its ack duplicates a letter (at-least-once, like every AMQP consumer);
//! the copy has the same message id, and the worker's done markers absorb it
//! (but see below for a broker bug that does the same).
//!
//! ## Acks and the channel close
//!
//! Measured here, and known upstream (rabbitmq/rabbitmq-server#10327, open): a
//! quorum queue can ignore acks sent just before the channel closes. The
//! channel's queue client (`rabbit_fifo_client`, 3.10.8) stashes settles while 32
//! or more of its Raft commands are unapplied, sends them once that drops, and
//! drops the stash if the channel terminates first — the "acked" letters then
//! come back, as duplicates of their copies. Without a pause, 1 full pass in ~7
//! over 50,000 letters left 24–222 duplicates. There is no AMQP barrier for it, so
//! a pass waits after its last ack before closing: four times its slowest publish
//! confirm (Raft latency), 200 ms to 5 s — long enough for the stash to be sent,
//! after which the queue applies it before it sees the channel go. No duplicate
//! in the repeated 50,000-letter passes since; the residual risk (a Raft stall
//! longer than the wait) is a duplicate, never a loss.
//!
//! Two commands interleaving would break both the count and the order, and quorum
//! queues ignore `exclusive` on `basic.consume` (measured), so a pass first
//! declares the exclusive queue `{ns}.dead.lock`: a second pass is refused with
//! RESOURCE_LOCKED, and the lock goes with the connection however the pass ends.

use std::collections::BTreeMap;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use hookfleet_common::publisher::PublishError;
use indicatif::ProgressBar;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Consumer};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::DlqError;
use super::dead_queue::DeadQueue;
use super::letter::{self, Letter};
use super::pace::{Pace, Rate};

/// Publishes (replays and put-backs) awaiting their confirm at once, at most.
const IN_FLIGHT: usize = 256;
/// A held letter older than this is put back rather than held on (RabbitMQ's
/// consumer timeout, 30 minutes on 3.10, would close the channel).
const HOLD_MAX_AGE: Duration = Duration::from_secs(300);
/// Under `--rate`, no prefetched delivery should wait longer than this for its turn.
const MAX_QUEUED_WAIT_SECS: f64 = 600.0;
/// No delivery for this long although the count said more: the queue shrank
/// under us (someone purged it by hand); end the pass.
const IDLE: Duration = Duration::from_secs(10);
/// Wait after the last ack before closing the channel: this many times the
/// slowest publish confirm of the pass (a measure of the queue's Raft latency),
/// within the bounds below. See "Acks and the channel close" in the module docs.
const ACK_GRACE_FACTOR: u32 = 4;
/// The shortest wait after the last ack.
const ACK_GRACE_MIN: Duration = Duration::from_millis(200);
/// The longest wait after the last ack.
const ACK_GRACE_MAX: Duration = Duration::from_secs(5);
/// How long a pass waits, at its end, for the letters it held to be ready again.
const RETURN_WAIT: Duration = Duration::from_secs(3);
/// The pass's consumer tag.
const CONSUMER_TAG: &str = "hookfleet-dlq";

/// What a visitor decides for one letter.
#[derive(Debug)]
pub(crate) enum Action {
    /// It stays in the DLQ, in its place.
    Keep,
    /// Publish it to the jobs queue with these properties, then ack it.
    Replay(Box<BasicProperties>),
    /// Ack it: it is gone.
    Purge,
}

/// A command's view of the letters, in queue order.
pub(crate) trait Visitor: Send {
    /// Decides what happens to `letter` (only output errors fail).
    fn visit(&mut self, letter: &Letter, delivery: &Delivery) -> Result<Action, DlqError>;

    /// The command needs no more letters (`--limit` reached, `show` found it).
    fn satisfied(&self) -> bool {
        false
    }
}

/// What a pass did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    /// Ready letters when the pass started: it takes at most this many.
    pub expected: u64,
    /// Letters taken and shown to the visitor.
    pub scanned: u64,
    /// Replays confirmed into the jobs queue (and acked in the DLQ).
    pub replayed: u64,
    /// Letters deleted.
    pub purged: u64,
    /// Replays not confirmed: those letters stayed in the DLQ.
    pub failed: u64,
    /// Letters put back at the tail to keep the queue's order.
    pub requeued: u64,
    /// The pass was cancelled before it finished.
    pub cancelled: bool,
}

/// How a pass runs.
pub(crate) struct PassOptions<'a> {
    /// Letters kept unacked before the pass starts putting them back.
    pub hold: usize,
    /// Pace of replays.
    pub rate: Option<Rate>,
    /// Progress (hidden when not wanted).
    pub progress: &'a ProgressBar,
}

/// Runs one pass of `visitor` over the DLQ. Returns what was done, and why the
/// pass stopped early if it failed (what it did before failing stands).
pub(crate) async fn run(
    queue: &DeadQueue,
    visitor: &mut dyn Visitor,
    options: PassOptions<'_>,
    cancel: &CancellationToken,
) -> (Tally, Result<(), DlqError>) {
    let mut tally = Tally::default();
    let result = run_inner(queue, visitor, &options, cancel, &mut tally).await;
    (tally, result)
}

async fn run_inner(
    queue: &DeadQueue,
    visitor: &mut dyn Visitor,
    options: &PassOptions<'_>,
    cancel: &CancellationToken,
    tally: &mut Tally,
) -> Result<(), DlqError> {
    tally.expected = queue.ready().await?;
    options.progress.set_length(tally.expected);
    if tally.expected == 0 {
        return Ok(());
    }
    let window = Window::new(options.hold, options.rate);
    let mut channels = PassChannels::open(queue, window.prefetch).await?;
    let mut engine = Engine {
        queue,
        requeue: &channels.requeue,
        window,
        held: BTreeMap::new(),
        in_flight: FuturesUnordered::new(),
        acking: FuturesUnordered::new(),
        tally: std::mem::take(tally),
        rotated: false,
        progress: options.progress,
        last_ack: None,
        slowest_confirm: Duration::ZERO,
        pace: Pace::new(options.rate),
        pending: None,
        cancelled: false,
        ran_dry: false,
        failure: None,
    };
    let result = engine.drive(&mut channels.consumer, visitor, cancel).await;
    *tally = std::mem::take(&mut engine.tally);
    // RabbitMQ 3.10 may still hold the last acks back (see the module docs):
    // give it time to send them to the queue before the channel goes down.
    if let Some(last_ack) = engine.last_ack {
        let grace = (engine.slowest_confirm * ACK_GRACE_FACTOR).clamp(ACK_GRACE_MIN, ACK_GRACE_MAX);
        tokio::time::sleep_until(last_ack + grace).await;
    }
    let held = engine.held.len() as u64;
    drop(engine);
    channels.close(queue, held, result.is_ok()).await;
    result
}

/// The channels of one pass: the consumer's, and the confirming put-back one.
struct PassChannels {
    consume: Channel,
    requeue: Channel,
    consumer: Consumer,
}

impl PassChannels {
    async fn open(queue: &DeadQueue, prefetch: u16) -> Result<Self, DlqError> {
        let consume = queue.channel("opening the consumer channel").await?;
        consume
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|source| DlqError::amqp("setting the prefetch", source))?;
        let requeue = queue.channel("opening the put-back channel").await?;
        requeue
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|source| DlqError::amqp("enabling confirms", source))?;
        let consumer = consume
            .basic_consume(
                queue.name().into(),
                CONSUMER_TAG.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| DlqError::amqp("consuming the DLQ", source))?;
        Ok(Self {
            consume,
            requeue,
            consumer,
        })
    }

    /// Closing the channel returns every letter still unacked — `held` ones and
    /// prefetched ones — to the front of the queue, in order, but the broker does
    /// it after the close: after a pass that went well, wait until they are back,
    /// so the next command (or anyone counting) sees the whole queue.
    async fn close(mut self, queue: &DeadQueue, held: u64, wait_for_return: bool) {
        let _ = self
            .consume
            .basic_cancel(CONSUMER_TAG.into(), BasicCancelOptions::default())
            .await;
        let mut prefetched = 0u64;
        while let Ok(Some(Ok(_))) =
            tokio::time::timeout(Duration::from_secs(1), self.consumer.next()).await
        {
            prefetched += 1;
        }
        let before = queue.ready().await.unwrap_or(0);
        let _ = self.consume.close(200, "pass done".into()).await;
        let _ = self.requeue.close(200, "pass done".into()).await;
        if !wait_for_return {
            return;
        }
        let returned = before + held + prefetched;
        let deadline = Instant::now() + RETURN_WAIT;
        while queue.ready().await.is_ok_and(|ready| ready < returned) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::debug!(
            held,
            prefetched,
            returned,
            "Pass over; held letters are back in the queue."
        );
    }
}

/// Prefetch, hold and in-flight bounds of a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    prefetch: u16,
    hold: usize,
    in_flight: usize,
}

impl Window {
    fn new(hold: usize, rate: Option<Rate>) -> Self {
        let mut hold = hold.clamp(1, 60_000);
        let mut in_flight = IN_FLIGHT;
        if let Some(rate) = rate {
            // The last prefetched delivery waits for every paced replay ahead of it.
            let cap = ((rate.as_per_second() * MAX_QUEUED_WAIT_SECS).ceil() as usize).max(16);
            if hold + in_flight + 1 > cap {
                in_flight = in_flight.min((cap / 4).max(1));
                hold = hold.min(cap.saturating_sub(in_flight + 1).max(1));
            }
        }
        Self {
            prefetch: u16::try_from(hold + in_flight + 1).unwrap_or(u16::MAX),
            hold,
            in_flight,
        }
    }
}

struct Held {
    delivery: Delivery,
    letter: Letter,
    since: Instant,
}

#[derive(Debug, Clone, Copy)]
enum Effect {
    Replay,
    Requeue,
    Purge,
}

struct Settled {
    delivery: Delivery,
    letter: Letter,
    effect: Effect,
    result: Result<(), PublishError>,
    /// From publish to confirm.
    took: Duration,
}

/// An ack whose frame is being sent.
type Acking<'a> = BoxFuture<'a, (Effect, Result<bool, lapin::Error>)>;

// One value per loop turn, on the stack: boxing deliveries would only add an
// allocation per letter.
#[allow(clippy::large_enum_variant)]
enum Event {
    Cancelled,
    Settled(Settled),
    Acked(Effect, Result<bool, lapin::Error>),
    Launch,
    Delivery(Option<Result<Delivery, lapin::Error>>),
    Idle,
    Stalled,
}

struct Engine<'a> {
    queue: &'a DeadQueue,
    requeue: &'a Channel,
    window: Window,
    /// Kept letters not yet put back, by delivery tag (= queue order).
    held: BTreeMap<u64, Held>,
    /// Publishes awaiting their confirm.
    in_flight: FuturesUnordered<BoxFuture<'a, Settled>>,
    /// Acks being sent; all are finished before the channel closes, or the
    /// close could overtake them (acks go through lapin's internal RPC queue).
    acking: FuturesUnordered<Acking<'a>>,
    tally: Tally,
    /// Whether a letter was put back: the pass must then go all the way round.
    rotated: bool,
    progress: &'a ProgressBar,
    /// When the last ack was sent.
    last_ack: Option<Instant>,
    /// The slowest publish confirm so far.
    slowest_confirm: Duration,
    /// The pace of replays under `--rate`.
    pace: Pace,
    /// A replay waiting for its turn under `--rate`.
    pending: Option<Pending>,
    /// Cancelled: take no more letters, finish what is in flight.
    cancelled: bool,
    /// The queue gave nothing for [`IDLE`] although the count said more.
    ran_dry: bool,
    /// The first failure; the pass stops taking letters and winds down.
    failure: Option<DlqError>,
}

/// A replay waiting for its turn under `--rate`.
struct Pending {
    delivery: Delivery,
    letter: Letter,
    properties: Box<BasicProperties>,
}

/// Which events one turn of the pass's loop waits for.
struct Turn {
    launch: bool,
    take: bool,
    watch_idle: bool,
    publishing: bool,
    acking: bool,
}

impl<'a> Engine<'a> {
    async fn drive(
        &mut self,
        consumer: &mut Consumer,
        visitor: &mut dyn Visitor,
        cancel: &CancellationToken,
    ) -> Result<(), DlqError> {
        // One timer, pushed back by every delivery (not one per loop turn).
        let idle = tokio::time::sleep(IDLE);
        tokio::pin!(idle);
        while let Some(turn) = self.plan(&*visitor) {
            let pace = self.pace.next();
            let cancelled = self.cancelled;
            let event = tokio::select! {
                biased;
                _ = cancel.cancelled(), if !cancelled => Event::Cancelled,
                Some((effect, result)) = self.acking.next(), if turn.acking => Event::Acked(effect, result),
                Some(settled) = self.in_flight.next(), if turn.publishing => Event::Settled(settled),
                _ = tokio::time::sleep_until(pace), if turn.launch => Event::Launch,
                next = consumer.next(), if turn.take => Event::Delivery(next),
                _ = &mut idle, if turn.watch_idle => Event::Idle,
                else => Event::Stalled,
            };
            if let Event::Delivery(Some(Ok(_))) = &event {
                idle.as_mut().reset(Instant::now() + IDLE);
            }
            if !self.apply(event, visitor) {
                break;
            }
        }
        self.failure.take().map_or(Ok(()), Err)
    }

    /// Whether the pass has seen every letter it will look at.
    fn scanned_enough(&self, visitor: &dyn Visitor) -> bool {
        self.tally.scanned >= self.tally.expected
            || self.ran_dry
            || (visitor.satisfied() && !self.rotated)
    }

    /// Puts back what must go, then says what this turn waits for; `None` when
    /// the pass is over (nothing to take, publish, ack or put back).
    fn plan(&mut self, visitor: &dyn Visitor) -> Option<Turn> {
        if self.failure.is_none() {
            let flush = self.rotated && (self.cancelled || self.scanned_enough(visitor));
            self.put_back(flush);
        }
        if self.failure.is_some()
            && let Some(pending) = self.pending.take()
        {
            self.hold(pending.delivery, pending.letter);
        }
        let taking = !self.cancelled
            && self.failure.is_none()
            && self.pending.is_none()
            && !self.scanned_enough(visitor);
        let held_done = self.held.is_empty() || !self.rotated || self.failure.is_some();
        let idle = self.in_flight.is_empty() && self.acking.is_empty();
        if !taking && self.pending.is_none() && idle && held_done {
            return None;
        }
        let room = self.in_flight.len() < self.window.in_flight;
        Some(Turn {
            launch: self.pending.is_some() && !self.cancelled && room,
            take: taking && room,
            watch_idle: taking && room && idle,
            publishing: !self.in_flight.is_empty(),
            acking: !self.acking.is_empty(),
        })
    }

    /// Handles one event; false ends the loop.
    fn apply(&mut self, event: Event, visitor: &mut dyn Visitor) -> bool {
        match event {
            Event::Cancelled => {
                self.cancelled = true;
                self.tally.cancelled = true;
                // Not started: it stays, with the letters around it.
                if let Some(pending) = self.pending.take() {
                    self.hold(pending.delivery, pending.letter);
                }
            }
            Event::Acked(effect, result) => self.acked(effect, result),
            Event::Settled(settled) => {
                if let Err(e) = self.settle(settled) {
                    self.failure.get_or_insert(e);
                }
            }
            Event::Launch => {
                if let Some(pending) = self.pending.take() {
                    self.pace.taken(Instant::now());
                    self.replay(pending.delivery, pending.letter, pending.properties);
                }
            }
            Event::Delivery(None) => {
                self.failure.get_or_insert(DlqError::ConsumerCancelled);
            }
            Event::Delivery(Some(Err(source))) => {
                let error = DlqError::amqp("consuming the DLQ", source);
                self.failure.get_or_insert(error);
            }
            Event::Delivery(Some(Ok(delivery))) => self.visit(delivery, visitor),
            Event::Idle => {
                self.ran_dry = true;
                tracing::warn!(
                    queue = %self.queue.name(),
                    expected = self.tally.expected,
                    scanned = self.tally.scanned,
                    "The dead-letter queue ran dry before the pass took every letter it counted; was it purged meanwhile?"
                );
            }
            Event::Stalled => return false,
        }
        true
    }

    /// An ack was sent (or could not be).
    fn acked(&mut self, effect: Effect, result: Result<bool, lapin::Error>) {
        match result {
            Ok(true) => {
                self.last_ack = Some(Instant::now());
                self.count(effect);
            }
            Ok(false) => {
                self.failure.get_or_insert(DlqError::AckNotSent);
            }
            Err(source) => {
                let error = DlqError::amqp("acking a dead letter", source);
                self.failure.get_or_insert(error);
            }
        }
    }

    /// Shows a taken letter to the visitor and carries out its decision.
    fn visit(&mut self, delivery: Delivery, visitor: &mut dyn Visitor) {
        self.tally.scanned += 1;
        self.progress.inc(1);
        let letter = Letter::read(&delivery.properties, delivery.data.len());
        match visitor.visit(&letter, &delivery) {
            Ok(Action::Keep) => self.hold(delivery, letter),
            Ok(Action::Purge) => self.ack(delivery, Effect::Purge),
            Ok(Action::Replay(properties)) => {
                let now = Instant::now();
                if self.pace.ready(now) {
                    self.pace.taken(now);
                    self.replay(delivery, letter, properties);
                } else {
                    self.pending = Some(Pending {
                        delivery,
                        letter,
                        properties,
                    });
                }
            }
            Err(e) => {
                self.hold(delivery, letter);
                self.failure.get_or_insert(e);
            }
        }
    }

    /// Keeps a letter unacked, in queue order.
    fn hold(&mut self, delivery: Delivery, letter: Letter) {
        self.held.insert(
            delivery.delivery_tag,
            Held {
                delivery,
                letter,
                since: Instant::now(),
            },
        );
    }

    /// Puts held letters back at the tail: the oldest ones while more are held
    /// than the window allows (or held too long), or all of them with `flush`.
    fn put_back(&mut self, flush: bool) {
        while self.in_flight.len() < self.window.in_flight {
            let over = self.held.len() > self.window.hold;
            let Some(oldest) = self.held.first_entry() else {
                break;
            };
            if !(flush || over || oldest.get().since.elapsed() > HOLD_MAX_AGE) {
                break;
            }
            let held = oldest.remove();
            self.rotated = true;
            self.requeue(held.delivery, held.letter);
        }
    }

    /// Republishes a kept letter to the tail of the DLQ, on the one put-back
    /// channel. Its publish frames are queued here, in queue order: lapin queues
    /// them synchronously on the first poll of `basic_publish` (checked against
    /// lapin 4.12; `tests/tests/dlq/replay.rs` fails if a put-back pass reorders),
    /// so the future is polled once before it joins the others awaiting confirms.
    fn requeue(&mut self, delivery: Delivery, letter: Letter) {
        let channel = self.requeue.clone();
        let queue = self.queue.name();
        let deadline = self.queue.confirm_timeout;
        let mut publish: BoxFuture<'a, Settled> = Box::pin(async move {
            let started = Instant::now();
            let properties = letter::for_requeue(&delivery.properties, &letter);
            let sent = channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    // The default exchange routes by queue name; mandatory turns a
                    // missing queue into a return instead of a silent drop.
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &delivery.data,
                    properties,
                )
                .await;
            let result = match sent {
                Ok(confirm) => match tokio::time::timeout(deadline, confirm).await {
                    Ok(Ok(Confirmation::Ack(None))) => Ok(()),
                    Ok(Ok(Confirmation::Ack(Some(returned)))) => Err(PublishError::Returned {
                        code: returned.reply_code,
                        text: returned.reply_text.to_string(),
                    }),
                    Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
                    Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::Unavailable(
                        "the put-back channel is not in confirm mode".into(),
                    )),
                    Ok(Err(e)) => Err(PublishError::Unavailable(Box::new(e))),
                    Err(_) => Err(PublishError::Timeout(deadline)),
                },
                Err(e) => Err(PublishError::Unavailable(Box::new(e))),
            };
            Settled {
                delivery,
                letter,
                effect: Effect::Requeue,
                result,
                took: started.elapsed(),
            }
        });
        let mut context = Context::from_waker(Waker::noop());
        if let Poll::Ready(settled) = publish.as_mut().poll(&mut context) {
            publish = Box::pin(std::future::ready(settled));
        }
        self.in_flight.push(publish);
    }

    /// Publishes a letter to the jobs queue (through the confirming publisher).
    fn replay(&mut self, delivery: Delivery, letter: Letter, properties: Box<BasicProperties>) {
        let publisher = self.queue.publisher.clone();
        let jobs = self.queue.topology.jobs_queue();
        self.in_flight.push(Box::pin(async move {
            let started = Instant::now();
            // The default exchange, routing key = the jobs queue: straight to the
            // jobs queue, never re-fanned to other bindings of `{ns}.events`.
            let result = publisher
                .publish("", &jobs, &delivery.data, *properties)
                .await;
            Settled {
                delivery,
                letter,
                effect: Effect::Replay,
                result,
                took: started.elapsed(),
            }
        }));
    }

    /// A publish finished: ack the letter if its copy is confirmed.
    fn settle(&mut self, settled: Settled) -> Result<(), DlqError> {
        let Settled {
            delivery,
            letter,
            effect,
            result,
            took,
        } = settled;
        self.slowest_confirm = self.slowest_confirm.max(took);
        match (effect, result) {
            (effect, Ok(())) => self.ack(delivery, effect),
            (Effect::Replay, Err(e)) => {
                self.tally.failed += 1;
                let message_id = letter.message_id.clone().unwrap_or_default();
                let unavailable = matches!(e, PublishError::Unavailable(_));
                // It stays in the DLQ, among the letters around it.
                self.hold(delivery, letter);
                if unavailable {
                    return Err(DlqError::Replay(e));
                }
                tracing::warn!(%message_id, error = %hookfleet_common::telemetry::error_chain(&e), "Cannot replay a dead letter; it stays in the DLQ.");
            }
            // Left unacked: the close returns it.
            (_, Err(e)) => return Err(DlqError::Requeue(e)),
        }
        Ok(())
    }

    /// Acks a letter whose copy is confirmed (or that is purged). The ack is
    /// queued now; its completion is counted when it comes.
    fn ack(&mut self, delivery: Delivery, effect: Effect) {
        let acker = delivery.acker;
        self.acking.push(Box::pin(async move {
            (effect, acker.ack(BasicAckOptions::default()).await)
        }));
    }

    fn count(&mut self, effect: Effect) {
        match effect {
            Effect::Replay => self.tally.replayed += 1,
            Effect::Requeue => self.tally.requeued += 1,
            Effect::Purge => self.tally.purged += 1,
        }
        if !matches!(effect, Effect::Requeue) {
            self.progress.set_message(format!(
                "replayed {} · purged {} · failed {}",
                self.tally.replayed, self.tally.purged, self.tally.failed
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_holds_what_was_asked_when_unpaced() {
        let w = Window::new(1000, None);
        assert_eq!((w.hold, w.in_flight, w.prefetch), (1000, 256, 1257));
        let w = Window::new(8, None);
        assert_eq!((w.hold, w.prefetch), (8, 265));
    }

    #[test]
    fn a_slow_rate_shrinks_the_window_below_the_consumer_timeout() {
        let w = Window::new(1000, Some(Rate::per_second(1.0)));
        assert!(usize::from(w.prefetch) <= 600, "{w:?}");
        assert!(w.hold >= 1 && w.in_flight >= 1);
        let w = Window::new(1000, Some(Rate::per_second(0.01)));
        assert!(usize::from(w.prefetch) <= 16, "{w:?}");
        assert!(w.hold >= 1 && w.in_flight >= 1);
    }
}
