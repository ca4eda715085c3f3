//! One page of dead letters, for the web console: the letters the filters match,
//! from an offset, read from the head of `{ns}.dead`.
//!
//! A page only looks, and holds no more than itself in memory. It takes letters
//! one at a time with `basic.get` (no ack): a consumer's prefetch would let the
//! broker push up to the whole scan ahead into this process, while a got letter
//! that is not acked stays checked out *at the broker*, so the process drops
//! it as soon as it has looked at it. It stops at the page's end (one match past
//! it tells whether there is more), after `scan_limit` letters, or at the
//! queue's end. Closing the channel then returns every letter it took to the
//! front of the queue, in order: nothing is acked, republished or rewritten to
//! be shown. Only the page's own letters (headers and a cut body) are kept.
//!
//! Like every `dlq` command it holds the DLQ's lock ([`DeadQueue`]) while it
//! reads, so a page never sees a replay or purge half done.

use std::time::SystemTime;

use crate::config::Settings;
use lapin::message::Delivery;
use lapin::options::BasicGetOptions;
use tokio_util::sync::CancellationToken;

use super::DlqError;
use super::dead_queue::DeadQueue;
use super::filter::{Filter, Matcher};
use super::letter::{Letter, value_json};

/// The header naming the pipeline a letter failed in.
const PIPELINE: &str = "hf-pipeline";

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

/// Takes letters one `basic.get` at a time until the visitor is satisfied,
/// then closes the channel, which returns them all to the front in order.
async fn take(
    queue: &DeadQueue,
    visitor: &mut PageVisitor,
    cancel: &CancellationToken,
) -> Result<Read, DlqError> {
    let mut read = Read {
        ready: queue.ready().await?,
        scanned: 0,
    };
    if read.ready == 0 {
        return Ok(read);
    }
    let channel = queue.channel("opening the page's channel").await?;
    let name = queue.name();
    let mut result = Ok(());
    while read.scanned < read.ready && !visitor.satisfied() && !cancel.is_cancelled() {
        // no_ack = false: the letter stays checked out to this channel, unacked.
        let got = channel
            .basic_get(name.as_str().into(), BasicGetOptions { no_ack: false })
            .await;
        match got {
            Ok(Some(message)) => {
                read.scanned += 1;
                visitor.visit(&message.delivery);
                // Dropped here: the broker keeps the letter, not this process.
            }
            // Fewer letters than counted: someone emptied the queue by hand.
            Ok(None) => break,
            Err(source) => {
                result = Err(DlqError::amqp("reading a dead letter", source));
                break;
            }
        }
    }
    queue.give_back(channel, read.scanned).await;
    result.map(|()| read)
}
