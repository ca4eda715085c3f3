//! One page of dead letters, for the web console: the letters the filters match,
//! from an offset, read from the head of `{ns}.dead`.
//!
//! A page only looks, and holds no more than one page of letters in memory. It
//! reads in *windows*: a consumer on a channel of its own with a prefetch of
//! `page_size + 1`, whose letters are looked at and dropped, then the consumer
//! cancelled. A letter delivered and not acked stays checked out *at the
//! broker*, so the next window's consumer gets the letters after it, and this
//! process keeps only the page's own letters (headers and a cut body) and at
//! most one window not yet looked at. (One consumer with a prefetch of the
//! whole scan would let the broker push all of it into the process.) It stops
//! at the page's end (one match past it tells whether there is more), after
//! `scan_limit` letters, or at the queue's end.
//!
//! Nothing is acked, republished or rewritten to be shown: the windows'
//! channels are closed in order, each once the broker has put the previous
//! one's letters back, and a channel close returns its unacked letters to the
//! front in their order, so the queue reads as before. (`basic.get` would hold
//! no window at all, but RabbitMQ 3.10 returns a channel's got letters out of
//! order: measured, `tests/tests/dlq/console.rs` checks the order.)
//!
//! Like every `dlq` command it holds the DLQ's lock ([`DeadQueue`]) while it
//! reads, so a page never sees a replay or purge half done.

use std::time::{Duration, SystemTime};

use crate::config::Settings;
use futures::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use super::DlqError;
use super::dead_queue::DeadQueue;
use super::filter::{Filter, Matcher};
use super::letter::{Letter, value_json};

/// The header naming the pipeline a letter failed in.
const PIPELINE: &str = "hf-pipeline";
/// The most letters a window holds: a page of the largest `page_size` (500)
/// and one more.
const MAX_WINDOW: u16 = 501;
/// The consumer tag of a page's windows.
const CONSUMER_TAG: &str = "hookfleet-console-page";
/// No delivery for this long although the count said more: the queue shrank
/// under us (someone purged it by hand); the page ends there.
const IDLE: Duration = Duration::from_secs(5);
/// After a window's cancel, how long to wait for a delivery already on its way.
const IDLE_AFTER_CANCEL: Duration = Duration::from_millis(500);

/// Which letters a page shows.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// The `dlq` filters.
    pub filter: Filter,
    /// Only letters of this pipeline (`hf-pipeline`), when set.
    pub pipeline: Option<String>,
    /// Matching letters skipped before the page.
    pub offset: u64,
    /// Letters on the page.
    pub size: usize,
    /// Letters read from the head at most.
    pub scan_limit: usize,
    /// The most body bytes kept per letter.
    pub max_body: usize,
}

/// One letter on a page.
#[derive(Debug, Clone)]
pub struct PageLetter {
    /// Its view (class, reason, stage, …).
    pub letter: Letter,
    /// `hf-pipeline`, when one pipeline failed.
    pub pipeline: Option<String>,
    /// Every header, name and value as JSON text, in the message's order.
    pub headers: Vec<(String, String)>,
    /// The body as text (invalid UTF-8 replaced), cut to `max_body` bytes.
    pub body: String,
    /// Whether the body was cut.
    pub body_cut: bool,
}

/// What a page found.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The page's letters, in queue order.
    pub letters: Vec<PageLetter>,
    /// Letters ready in the DLQ when the page was read.
    pub ready: u64,
    /// Letters read.
    pub scanned: u64,
    /// Another matching letter follows the page.
    pub more: bool,
    /// The read stopped at `scan_limit` before the page was full or the queue's
    /// end: deeper letters exist that this page did not look at.
    pub scan_limited: bool,
}

struct PageVisitor {
    matcher: Matcher,
    request: PageRequest,
    now: SystemTime,
    matched: u64,
    scanned: usize,
    page: Page,
}

impl PageVisitor {
    fn matches(&self, letter: &Letter, delivery: &Delivery) -> bool {
        if !self.matcher.matches(letter, self.now) {
            return false;
        }
        match &self.request.pipeline {
            None => true,
            Some(wanted) => pipeline_of(delivery).as_deref() == Some(wanted.as_str()),
        }
    }

    /// Looks at one letter; keeps a copy of it only if it is on the page.
    fn visit(&mut self, delivery: &Delivery) {
        self.scanned += 1;
        let letter = Letter::read(&delivery.properties, delivery.data.len());
        if !self.matches(&letter, delivery) {
            return;
        }
        self.matched += 1;
        if self.matched <= self.request.offset {
            return;
        }
        if self.page.letters.len() < self.request.size {
            self.page
                .letters
                .push(page_letter(&letter, delivery, self.request.max_body));
        } else {
            self.page.more = true;
        }
    }

    fn satisfied(&self) -> bool {
        self.page.more || self.scanned >= self.request.scan_limit
    }
}

fn pipeline_of(delivery: &Delivery) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(PIPELINE)? {
        lapin::types::AMQPValue::LongString(s) => Some(s.to_string()),
        lapin::types::AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn page_letter(letter: &Letter, delivery: &Delivery, max_body: usize) -> PageLetter {
    let headers = delivery
        .properties
        .headers()
        .as_ref()
        .map(|table| {
            table
                .inner()
                .iter()
                .map(|(name, value)| (name.to_string(), value_json(value).to_string()))
                .collect()
        })
        .unwrap_or_default();
    let cut = delivery.data.len() > max_body;
    let bytes = &delivery.data[..delivery.data.len().min(max_body)];
    PageLetter {
        letter: letter.clone(),
        pipeline: pipeline_of(delivery),
        headers,
        body: String::from_utf8_lossy(bytes).into_owned(),
        body_cut: cut,
    }
}

/// Reads one page of the DLQ (module docs). Like every `dlq` command it holds
/// the DLQ's lock while it reads ([`DlqError::Busy`] when a command or another
/// page has it).
pub async fn read_page(
    settings: &Settings,
    request: PageRequest,
    cancel: &CancellationToken,
) -> Result<Page, DlqError> {
    let matcher = request.filter.compile()?;
    let queue = DeadQueue::open(settings).await?;
    let mut visitor = PageVisitor {
        matcher,
        now: SystemTime::now(),
        matched: 0,
        scanned: 0,
        page: Page::default(),
        request,
    };
    let read = take(&queue, &mut visitor, cancel).await;
    queue.close().await;
    let read = read?;
    let mut page = visitor.page;
    page.ready = read.ready;
    page.scanned = read.scanned;
    page.scan_limited = !page.more && read.scanned < read.ready;
    Ok(page)
}

/// How far a page's read went.
struct Read {
    /// Ready letters when it started: it takes no more than these.
    ready: u64,
    /// Letters taken and looked at.
    scanned: u64,
}

/// Letters one window's consumer took, unacked on its channel.
struct Window {
    channel: Channel,
    taken: u64,
}

/// Takes letters window by window until the visitor is satisfied, then gives
/// every window back in order (module docs).
async fn take(
    queue: &DeadQueue,
    visitor: &mut PageVisitor,
    cancel: &CancellationToken,
) -> Result<Read, DlqError> {
    let mut read = Read {
        ready: queue.ready().await?,
        scanned: 0,
    };
    // A page and the match past it; a page as large as the scan (an action's
    // selection by pipeline) is read in windows of MAX_WINDOW.
    let size = u16::try_from(visitor.request.size.saturating_add(1))
        .unwrap_or(u16::MAX)
        .min(MAX_WINDOW);
    let mut windows = Vec::new();
    let mut result = Ok(());
    while read.scanned < read.ready && !visitor.satisfied() && !cancel.is_cancelled() {
        let before = read.scanned;
        match take_window(queue, visitor, size, &mut read, cancel).await {
            Ok(window) => windows.push(window),
            Err(e) => result = Err(e),
        }
        // Fewer letters than counted (someone emptied the queue), or a failure.
        if result.is_err() || read.scanned == before {
            break;
        }
    }
    // In order, each once the broker has put it back: the queue reads as before.
    for window in windows {
        queue.give_back(window.channel, window.taken).await;
    }
    result.map(|()| read)
}

/// One window: a consumer on a channel of its own with a prefetch of `size`,
/// whose letters are looked at and dropped, then the consumer cancelled — its
/// letters stay unacked on the channel, at the broker.
async fn take_window(
    queue: &DeadQueue,
    visitor: &mut PageVisitor,
    size: u16,
    read: &mut Read,
    cancel: &CancellationToken,
) -> Result<Window, DlqError> {
    let channel = queue.channel("opening a page's channel").await?;
    channel
        .basic_qos(size, BasicQosOptions::default())
        .await
        .map_err(|source| DlqError::amqp("setting a page's prefetch", source))?;
    let mut consumer = channel
        .basic_consume(
            queue.name().into(),
            CONSUMER_TAG.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|source| DlqError::amqp("consuming the DLQ", source))?;
    let mut window = Window { channel, taken: 0 };
    let mut failure = None;
    while window.taken < u64::from(size) && read.scanned < read.ready && !visitor.satisfied() {
        let next = tokio::select! {
            _ = cancel.cancelled() => break,
            next = tokio::time::timeout(IDLE, consumer.next()) => next,
        };
        match next {
            Ok(Some(Ok(delivery))) => {
                window.taken += 1;
                read.scanned += 1;
                visitor.visit(&delivery);
                // Dropped here: the broker keeps the letter, not this process.
            }
            Ok(Some(Err(source))) => {
                failure = Some(DlqError::amqp("consuming the DLQ", source));
                break;
            }
            Ok(None) => {
                failure = Some(DlqError::ConsumerCancelled);
                break;
            }
            // Fewer letters than counted: someone emptied the queue by hand.
            Err(_) => break,
        }
    }
    let _ = window
        .channel
        .basic_cancel(CONSUMER_TAG.into(), BasicCancelOptions::default())
        .await;
    // What the broker pushed before the cancel is unacked on this channel too.
    while let Ok(Some(Ok(_))) = tokio::time::timeout(IDLE_AFTER_CANCEL, consumer.next()).await {
        window.taken += 1;
    }
    match failure {
        // The channel goes with the error; closing it returns its letters.
        Some(e) => {
            let _ = window.channel.close(200, "page read failed".into()).await;
            Err(e)
        }
        None => Ok(window),
    }
}
