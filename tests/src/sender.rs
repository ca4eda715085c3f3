//! A webhook sender that behaves like a real one under failure: a steady stream
//! of signed events, each retried after a `503` (or `409`, or no answer) until
//! ingest answers `2xx`, honouring `Retry-After`. It records every answer, so a
//! test can account for each event and measure how long ingest refused work.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::webhook;

/// Longest pause between two tries of one event.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One answer (or none: `status` 0 when the request failed).
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// Since the sender started.
    pub at: Duration,
    /// HTTP status, 0 when ingest did not answer.
    pub status: u16,
}

/// Everything the sender saw.
#[derive(Debug, Default)]
pub struct SendLog {
    /// Event ids sent, in order.
    pub sent: Vec<String>,
    /// Event ids ingest answered 2xx.
    pub accepted: HashSet<String>,
    /// Event ids refused for good (a 4xx other than 409/429), with the status.
    pub refused: HashMap<String, u16>,
    /// Every answer, in the order they arrived.
    pub answers: Vec<Answer>,
}

impl SendLog {
    /// Answers with `status`.
    pub fn count(&self, status: u16) -> usize {
        self.answers.iter().filter(|a| a.status == status).count()
    }

    /// The longest stretch from a refusal (503, 409, no answer) to the next
    /// 2xx: how long ingest kept senders waiting.
    pub fn longest_refusal(&self) -> Duration {
        let mut answers = self.answers.clone();
        answers.sort_by_key(|a| a.at);
        let (mut start, mut longest) = (None::<Duration>, Duration::ZERO);
        for answer in answers {
            match answer.status {
                200..=299 => {
                    if let Some(from) = start.take() {
                        longest = longest.max(answer.at - from);
                    }
                }
                _ => {
                    start.get_or_insert(answer.at);
                }
            }
        }
        longest
    }
}

/// A running sender; [`Sender::stop`] ends the stream and waits for every
/// event already sent to be accepted or given up.
pub struct Sender {
    log: Arc<Mutex<SendLog>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Sender {
    /// Sends a new Standard Webhooks event to `url` every `every`, each retried
    /// for up to `give_up` until accepted.
    pub fn start(url: String, secret: String, every: Duration, give_up: Duration) -> Self {
        let log = Arc::new(Mutex::new(SendLog::default()));
        let stop = CancellationToken::new();
        let stream = Stream {
            url,
            secret,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
            log: log.clone(),
            started: Instant::now(),
            give_up,
        };
        let task = tokio::spawn(stream.run(every, stop.clone()));
        Self { log, stop, task }
    }

    /// Events accepted so far.
    pub fn accepted(&self) -> usize {
        self.log.lock().expect("log").accepted.len()
    }

    /// Waits until `n` events were accepted, or panics after `deadline` saying
    /// what ingest answered meanwhile.
    pub async fn wait_accepted(&self, n: usize, deadline: Duration) {
        let until = Instant::now() + deadline;
        let answers_before = self.log.lock().expect("log").answers.len();
        while self.accepted() < n {
            if Instant::now() >= until {
                let log = self.log.lock().expect("log");
                let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
                for answer in &log.answers[answers_before..] {
                    *by_status.entry(answer.status).or_default() += 1;
                }
                panic!(
                    "{} of {n} events accepted within {deadline:?}; answers meanwhile by status \
                     (0: none): {by_status:?}",
                    log.accepted.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops sending new events, waits for the ones in flight, returns the log.
    pub async fn stop(self) -> SendLog {
        self.stop.cancel();
        self.task.await.expect("sender does not panic");
        std::mem::take(&mut *self.log.lock().expect("log"))
    }
}

#[derive(Clone)]
struct Stream {
    url: String,
    secret: String,
    client: reqwest::Client,
    log: Arc<Mutex<SendLog>>,
    started: Instant,
    give_up: Duration,
}

impl Stream {
    async fn run(self, every: Duration, stop: CancellationToken) {
        let mut events = JoinSet::new();
        let mut tick = tokio::time::interval(every);
        for i in 0.. {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let id = format!("evt-{i:06}");
            self.log.lock().expect("log").sent.push(id.clone());
            events.spawn(self.clone().deliver(id));
        }
        while events.join_next().await.is_some() {}
    }

    /// Sends one event until it is accepted, refused for good, or `give_up` passes.
    async fn deliver(self, id: String) {
        let body = webhook::ticket(&id, &format!("ticket {id}: my order never arrived"));
        let until = Instant::now() + self.give_up;
        let mut backoff = Duration::from_millis(100);
        while Instant::now() < until {
            let request =
                webhook::standard_request(&self.client, &self.url, &self.secret, &id, &body);
            let (status, retry_after) = match request.send().await {
                Ok(response) => (response.status().as_u16(), retry_after(&response)),
                Err(_) => (0, None),
            };
            if self.record(&id, status) {
                return;
            }
            tokio::time::sleep(retry_after.unwrap_or(backoff).min(MAX_BACKOFF)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

impl Stream {
    /// Records an answer; true when the event is settled (accepted or refused).
    fn record(&self, id: &str, status: u16) -> bool {
        let at = self.started.elapsed();
        let mut log = self.log.lock().expect("log");
        log.answers.push(Answer { at, status });
        match status {
            200..=299 => {
                log.accepted.insert(id.to_owned());
                true
            }
            0 | 409 | 429 | 500..=599 => false,
            _ => {
                log.refused.insert(id.to_owned(), status);
                true
            }
        }
    }
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get("retry-after")?.to_str().ok()?;
    value.trim().parse().ok().map(Duration::from_secs)
}
