//! The event page: find one event by message id, or by source and the
//! provider's event id, and show its timeline.
//!
//! The timeline is read from the event's status in Redis: its history (the
//! last status writes, `{ns}:status:{id}:history`) gives when it was
//! received, each attempt, each retry with its error, and how it ended —
//! done, or dead with class, stage, reason and error; the status hash (the
//! record `GET /events/{id}` serves) gives each pipeline's result with its
//! provider, model and whether the output was cut short. An event whose
//! history is gone (written before there was one) shows where it is now.
//! A source + event id lookup uses ingest's dedup record
//! (`{ns}:seen:{source}:{event_id}`), so it works while that record lasts
//! (`ingest.dedup_ttl`).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use hookfleet_common::redis::redis;
use hookfleet_common::redis::status::{Cause, EventState, EventStatus, Transition};
use hookfleet_common::telemetry::error_chain;
use serde::{Deserialize, Serialize};

use super::{Authed, ConsoleState};

/// What ingest's dedup record holds while a claim waits for its confirm.
const PENDING: &str = "pending:";
/// The longest id or source accepted.
const MAX_ID: usize = 200;

/// The page's query.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct EventQuery {
    #[serde(default)]
    id: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    event_id: String,
}

/// One line of the timeline.
#[derive(Debug, Serialize)]
struct Step {
    at: String,
    kind: &'static str,
    title: String,
    detail: String,
}

/// `GET /console/events`.
pub async fn page(
    State(state): State<Arc<ConsoleState>>,
    Authed(operator): Authed,
    Query(query): Query<EventQuery>,
) -> Response {
    let found = find(&state, &query).await;
    let (status, mut message) = match found {
        Ok(status) => (status, None),
        Err(message) => (None, Some(message)),
    };
    let history = match &status {
        Some(status) => match state.statuses.history(&status.id).await {
            Ok(history) => history,
            Err(e) => {
                message = Some(format!("Redis (history): {}", error_chain(&e)));
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let timeline = status
        .as_ref()
        .map(|s| timeline(s, &history))
        .unwrap_or_default();
    let context = minijinja::context! {
        query => query,
        status => status,
        timeline => timeline,
        message => message,
    };
    state.render(&operator, "event", "event.html", context)
}

async fn find(state: &ConsoleState, query: &EventQuery) -> Result<Option<EventStatus>, String> {
    let (id, source, event_id) = (query.id.trim(), query.source.trim(), query.event_id.trim());
    if [id, source, event_id].iter().any(|v| v.len() > MAX_ID) {
        return Err(format!("Ids and sources are at most {MAX_ID} bytes."));
    }
    let id = if !id.is_empty() {
        id.to_owned()
    } else if !source.is_empty() && !event_id.is_empty() {
        match message_id_of(state, source, event_id).await? {
            Some(id) => id,
            None => {
                return Err(format!(
                    "No event `{event_id}` from `{source}` is remembered (it is kept for ingest.dedup_ttl)."
                ));
            }
        }
    } else if source.is_empty() && event_id.is_empty() {
        return Ok(None);
    } else {
        return Err("Give a message id, or both a source and an event id.".to_owned());
    };
    if !state.statuses.enabled() {
        return Err("Event status is off (status.enabled = false).".to_owned());
    }
    match state.statuses.get(&id).await {
        Ok(Some(status)) => Ok(Some(status)),
        Ok(None) => Err(format!(
            "No status for message `{id}` (unknown, or older than status.ttl)."
        )),
        Err(e) => Err(format!("Redis: {}", error_chain(&e))),
    }
}

async fn message_id_of(
    state: &ConsoleState,
    source: &str,
    event_id: &str,
) -> Result<Option<String>, String> {
    let mut cmd = redis::cmd("GET");
    cmd.arg(state.topology.redis_key(&["seen", source, event_id]));
    let held: Option<String> = state
        .redis
        .query(state.settings.redis.timeout, &cmd)
        .await
        .map_err(|e| format!("Redis: {}", error_chain(&e)))?;
    Ok(held.filter(|v| !v.starts_with(PENDING)))
}

/// The status and its history as dated steps, oldest first (a stable sort:
/// writes made in the same millisecond keep their order).
fn timeline(status: &EventStatus, history: &[Transition]) -> Vec<Step> {
    let step = |at: &str, kind, title: String, detail: String| Step {
        at: at.to_owned(),
        kind,
        title,
        detail,
    };
    let mut steps = Vec::new();
    if let Some(event) = &status.event {
        steps.push(step(
            &event.received_at,
            "received",
            "received".into(),
            format!("{} {}", event.source, event.event_type),
        ));
    }
    for p in &status.pipelines {
        let via = match p.fallback {
            Some(i) => format!(" (fallback {i})"),
            None => String::new(),
        };
        let cached = if p.cached { ", from the cache" } else { "" };
        let cut = if p.truncated {
            ", output cut short"
        } else {
            ""
        };
        steps.push(step(
            &p.completed_at,
            "pipeline",
            format!("pipeline {} answered, its sinks delivered", p.pipeline),
            format!("{} / {}{via}{cached}{cut}", p.provider, p.model),
        ));
    }
    if history.is_empty() {
        steps.push(now_step(status));
    }
    steps.extend(history.iter().map(transition_step));
    steps.sort_by(|a, b| a.at.cmp(&b.at));
    steps
}

/// One history entry as a step: the state written, and for a failed attempt
/// its cause.
fn transition_step(t: &Transition) -> Step {
    let replay = if t.replays > 0 {
        format!(" (replay {})", t.replays)
    } else {
        String::new()
    };
    let (kind, title, detail) = match &t.state {
        EventState::Accepted { .. } => ("accepted", "accepted".to_owned(), String::new()),
        EventState::Processing { attempt, .. } => (
            "processing",
            format!("processing, attempt {attempt}{replay}"),
            String::new(),
        ),
        EventState::Retrying {
            attempt,
            next_attempt_at,
        } => {
            let (title, detail) = retry_text(t, *attempt, next_attempt_at);
            ("retrying", format!("{title}{replay}"), detail)
        }
        EventState::Done { attempts, .. } => {
            ("done", format!("done{replay}"), done_detail(t, *attempts))
        }
        EventState::Dead {
            class,
            reason,
            stage,
            ..
        } => (
            "dead",
            format!("dead: {class} at {stage} ({reason}){replay}"),
            dead_detail(t),
        ),
    };
    Step {
        at: t.at.clone(),
        kind,
        title,
        detail,
    }
}

/// A retry's title and detail: the failed attempt's cause and error, and
/// about when the next attempt starts.
fn retry_text(t: &Transition, attempt: u32, next_attempt_at: &str) -> (String, String) {
    match &t.cause {
        Some(c) => (
            format!("attempt {} failed: {}", t.attempt, cause_title(c)),
            format!("{}; next attempt about {next_attempt_at}", c.error),
        ),
        None => (
            format!("retry after attempt {attempt}"),
            format!("next attempt about {next_attempt_at}"),
        ),
    }
}

/// The attempts a `done` took, and the pipelines that published in its run.
fn done_detail(t: &Transition, attempts: u32) -> String {
    let published: Vec<String> = t
        .pipelines
        .iter()
        .map(|p| format!("{} ({} / {})", p.pipeline, p.provider, p.model))
        .collect();
    if published.is_empty() {
        format!("{attempts} attempt(s)")
    } else {
        format!("{attempts} attempt(s); published: {}", published.join(", "))
    }
}

/// A `dead` state's pipeline (with its provider and model when the cause
/// names them), error and attempts.
fn dead_detail(t: &Transition) -> String {
    let EventState::Dead {
        pipeline,
        error,
        attempts,
        ..
    } = &t.state
    else {
        return String::new();
    };
    let failed = match (&t.cause, pipeline) {
        (
            Some(Cause {
                pipeline: Some(p),
                provider: Some(provider),
                model: Some(model),
                ..
            }),
            _,
        ) => format!("pipeline {p} ({provider} / {model}): "),
        (_, Some(p)) => format!("pipeline {p}: "),
        _ => String::new(),
    };
    format!("{failed}{error}; {attempts} attempt(s)")
}

/// `ai_http_503 at ai in pipeline triage (openai / gpt-4o)`.
fn cause_title(c: &Cause) -> String {
    let mut title = format!("{} at {}", c.reason, c.stage);
    if let Some(p) = &c.pipeline {
        title.push_str(&format!(" in pipeline {p}"));
    }
    if let (Some(provider), Some(model)) = (&c.provider, &c.model) {
        title.push_str(&format!(" ({provider} / {model})"));
    }
    title
}

/// Where the event is now, as the timeline's last step.
fn now_step(status: &EventStatus) -> Step {
    let step = |at: &str, kind, title: String, detail: String| Step {
        at: at.to_owned(),
        kind,
        title,
        detail,
    };
    match &status.state {
        EventState::Accepted { accepted_at } => step(
            accepted_at,
            "accepted",
            "accepted".into(),
            "waiting for a worker".into(),
        ),
        EventState::Processing {
            attempt,
            started_at,
        } => step(
            started_at,
            "processing",
            format!("processing, attempt {attempt}"),
            String::new(),
        ),
        EventState::Retrying {
            attempt,
            next_attempt_at,
        } => step(
            next_attempt_at,
            "retrying",
            format!("retry after attempt {attempt}"),
            "next attempt about then".into(),
        ),
        EventState::Done {
            attempts,
            completed_at,
        } => step(
            completed_at,
            "done",
            "done".into(),
            format!("{attempts} attempt(s), {} replay(s)", status.replays),
        ),
        EventState::Dead {
            class,
            reason,
            stage,
            pipeline,
            error,
            attempts,
            failed_at,
        } => step(
            failed_at,
            "dead",
            format!("dead: {class} at {stage} ({reason})"),
            format!(
                "{}{error}; {attempts} attempt(s)",
                pipeline
                    .as_ref()
                    .map(|p| format!("pipeline {p}: "))
                    .unwrap_or_default()
            ),
        ),
    }
}
