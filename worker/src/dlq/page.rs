//! One page of dead letters, for the web console: the letters the filters match,
//! from an offset, read from the head of `{ns}.dead` by an ordinary pass.
//!
//! A page only looks: its visitor keeps every letter, and it stops at the page's
//! end (one match past it tells whether there is more) or after `scan_limit`
//! letters, whichever comes first. `scan_limit` is also the pass's hold, so a
//! page never starts putting letters back: the queue is never rewritten to be
//! shown, and closing the channel returns the held letters to the front in
//! order. Only the page's own letters (headers and a cut body) are kept; the
//! rest are counted and dropped as they arrive.

use std::time::SystemTime;

use crate::config::Settings;
use indicatif::ProgressBar;
use lapin::message::Delivery;
use tokio_util::sync::CancellationToken;

use super::DlqError;
use super::dead_queue::DeadQueue;
use super::filter::{Filter, Matcher};
use super::letter::{Letter, value_json};
use super::pass::{self, Action, PassOptions, Visitor};

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
}

impl Visitor for PageVisitor {
    fn visit(&mut self, letter: &Letter, delivery: &Delivery) -> Result<Action, DlqError> {
        self.scanned += 1;
        if !self.matches(letter, delivery) {
            return Ok(Action::Keep);
        }
        self.matched += 1;
        if self.matched <= self.request.offset {
            return Ok(Action::Keep);
        }
        if self.page.letters.len() < self.request.size {
            self.page
                .letters
                .push(page_letter(letter, delivery, self.request.max_body));
        } else {
            self.page.more = true;
        }
        Ok(Action::Keep)
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

/// Reads one page of the DLQ. Like every pass it holds the DLQ's lock while it
/// reads ([`DlqError::Busy`] when a `dlq` command or another page has it).
pub async fn read_page(
    settings: &Settings,
    request: PageRequest,
    cancel: &CancellationToken,
) -> Result<Page, DlqError> {
    let matcher = request.filter.compile()?;
    let queue = DeadQueue::open(settings).await?;
    let progress = ProgressBar::hidden();
    let mut visitor = PageVisitor {
        matcher,
        now: SystemTime::now(),
        matched: 0,
        scanned: 0,
        page: Page::default(),
        request,
    };
    let options = PassOptions {
        // Never more kept than the pass may hold: a page never rewrites the queue.
        hold: visitor.request.scan_limit,
        rate: None,
        progress: &progress,
    };
    let (tally, result) = pass::run(&queue, &mut visitor, options, cancel).await;
    queue.close().await;
    result?;
    let mut page = visitor.page;
    page.ready = tally.expected;
    page.scanned = tally.scanned;
    page.scan_limited = !page.more && tally.scanned < tally.expected;
    Ok(page)
}
