//! The dead-letter pages: the DLQ listed with the `dlq` filters and paged, one
//! letter's headers and body, and the replay and purge actions.
//!
//! Every read is a [`read_page`] (letters taken a page at a time and given
//! back in order, never more than a page held) and every change a `dlq replay` or `dlq purge`
//! run through [`dlq::run`]: the same lock (a console page and a CLI command
//! never interleave), loop guard (`--max-replays`), pacing and
//! confirm-then-ack ordering, so a worker killed in the middle of a console
//! replay loses nothing, exactly as a killed CLI does. Actions run in their own
//! task, so a browser that gives up does not cut one short, and they stop
//! cleanly when the worker shuts down. Each action needs the form's CSRF token
//! and claims its one-use nonce first (`audit`).

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use hookfleet_common::telemetry::error_chain;
use serde::Serialize;

use super::audit::{ConsoleAction, Nonces};
use super::selection::Selection;
use super::{Authed, ConsoleState, Operator, csrf_refused};
use crate::dlq::{
    self, DlqCommand, DlqError, PageLetter, PageRequest, PassArgs, PurgeArgs, Rate, ReplayArgs,
    Summary, read_page,
};

/// The most body bytes the letter page shows.
const MAX_BODY: usize = 64 * 1024;
/// Error classes, for the filter's menu.
const CLASSES: [&str; 5] = [
    "permanent",
    "exhausted",
    "poison",
    "delivery-limit",
    "unknown",
];
/// Failure stages, for the filter's menu.
const STAGES: [&str; 7] = [
    "decode", "match", "enrich", "render", "ai", "output", "sink",
];

/// One row of the list.
#[derive(Debug, Serialize)]
struct Row {
    message_id: String,
    /// The message id, percent-encoded for the letter's link.
    link_id: String,
    failed_at: String,
    source: String,
    event_type: String,
    event_id: String,
    pipeline: String,
    class: &'static str,
    stage: String,
    reason: String,
    error: String,
    attempts: String,
    replays: u32,
    headers: Vec<(String, String)>,
    body: String,
    body_bytes: usize,
    body_cut: bool,
}

impl Row {
    fn new(p: PageLetter) -> Self {
        let l = &p.letter;
        let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        let id = text(&l.message_id);
        Self {
            link_id: percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
            message_id: id,
            failed_at: l.failed_at.map_or_else(
                || "-".to_owned(),
                |t| humantime::format_rfc3339_seconds(t).to_string(),
            ),
            source: text(&l.source),
            event_type: text(&l.event_type),
            event_id: text(&l.event_id),
            pipeline: text(&p.pipeline),
            class: l.class.as_str(),
            stage: text(&l.stage),
            reason: l.reason().to_owned(),
            error: l.error.clone(),
            attempts: l.attempts.map_or_else(|| "-".to_owned(), |a| a.to_string()),
            replays: l.replays,
            body_bytes: l.body_bytes,
            headers: p.headers,
            body: p.body,
            body_cut: p.body_cut,
        }
    }
}

/// The list page's figures.
#[derive(Debug, Default, Serialize)]
struct PageView {
    letters: Vec<Row>,
    ready: u64,
    scanned: u64,
    more: bool,
    scan_limited: bool,
}

/// `GET /console/dlq`.
pub async fn list(
    State(state): State<Arc<ConsoleState>>,
    Authed(operator): Authed,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let selection = Selection::from_pairs(&pairs);
    let page_number: u64 = pairs
        .iter()
        .find(|(k, _)| k == "page")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
        .min(10_000);
    let config = &state.settings.worker.console;
    let offset = page_number * config.page_size as u64;
    let (view, message) =
        match read(&state, selection.as_ref().ok(), offset, config.page_size, 0).await {
            Ok(page) => (page, None),
            Err(message) => (PageView::default(), Some(message)),
        };
    let message = message.or_else(|| selection.as_ref().err().map(ToString::to_string));
    let selection = selection.unwrap_or_default();
    let context = minijinja::context! {
        queue => state.topology.dead_queue(),
        page => view,
        filter => selection,
        query => selection.query(),
        page_number => page_number,
        offset => offset,
        scan_limit => config.scan_limit,
        classes => CLASSES,
        stages => STAGES,
        nonce => Nonces::fresh(),
        message => message,
    };
    state.render(&operator, "dlq", "letters.html", context)
}

/// Reads one page for `selection`, as rows, or a message for the operator.
async fn read(
    state: &ConsoleState,
    selection: Option<&Selection>,
    offset: u64,
    size: usize,
    max_body: usize,
) -> Result<PageView, String> {
    let Some(selection) = selection else {
        return Err("The filters do not parse.".to_owned());
    };
    let filter = selection.filter().map_err(|e| e.to_string())?;
    let request = PageRequest {
        filter,
        pipeline: selection.pipeline(),
        offset,
        size,
        scan_limit: state.settings.worker.console.scan_limit,
        max_body,
    };
    let page = read_page(&state.settings, request, &state.stopping)
        .await
        .map_err(|e| describe(&e))?;
    Ok(PageView {
        ready: page.ready,
        scanned: page.scanned,
        more: page.more,
        scan_limited: page.scan_limited,
        letters: page.letters.into_iter().map(Row::new).collect(),
    })
}

fn describe(error: &DlqError) -> String {
    match error {
        DlqError::Busy { .. } => {
            "Another console page or `dlq` command is reading the DLQ right now; reload in a moment.".to_owned()
        }
        other => error_chain(other),
    }
}

/// `GET /console/dlq/letter?id=…`.
pub async fn show(
    State(state): State<Arc<ConsoleState>>,
    Authed(operator): Authed,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let id = pairs
        .iter()
        .find(|(k, _)| k == "id")
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let selection = Selection {
        ids: vec![id.clone()],
        ..Selection::default()
    };
    let found = if id.is_empty() || id.len() > 200 {
        Err("Give the letter's message id.".to_owned())
    } else {
        read(&state, Some(&selection), 0, 1, MAX_BODY).await
    };
    let (letter, message) = match found {
        Ok(mut page) if !page.letters.is_empty() => (Some(page.letters.remove(0)), None),
        Ok(page) if page.scan_limited => (
            None,
            Some(format!(
                "Not among the first {} dead letters.",
                page.scanned
            )),
        ),
        Ok(_) => (
            None,
            Some("No such dead letter (replayed or purged already?).".to_owned()),
        ),
        Err(message) => (None, Some(message)),
    };
    let status = if letter.is_some() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    let context = minijinja::context! {
        id => id,
        letter => letter,
        message => message,
        nonce => Nonces::fresh(),
    };
    state.render_status(status, &operator, "dlq", "letter.html", context)
}

/// A checked action form: its operator, selection and nonce.
struct Submitted {
    operator: Operator,
    selection: Selection,
    nonce: String,
    pairs: Vec<(String, String)>,
}

fn field<'a>(pairs: &'a [(String, String)], name: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// Checks the CSRF token and the nonce's shape, and reads the selection.
fn check(
    state: &ConsoleState,
    operator: Operator,
    pairs: Vec<(String, String)>,
) -> Result<Submitted, Box<Response>> {
    if !state.credentials.csrf_ok(&operator, field(&pairs, "csrf")) {
        return Err(Box::new(csrf_refused()));
    }
    let nonce = field(&pairs, "nonce").to_owned();
    if !Nonces::well_formed(&nonce) {
        return Err(Box::new(state.render_status(
            StatusCode::BAD_REQUEST,
            &operator,
            "dlq",
            "action.html",
            minijinja::context! { title => "Not sent", outcome => "error", result => "The form is incomplete; reload the page." },
        )));
    }
    let selection = Selection::from_pairs(&pairs).map_err(|e| {
        Box::new(result_page(
            state,
            &operator,
            "Not sent",
            "error",
            &e.to_string(),
        ))
    })?;
    Ok(Submitted {
        operator,
        selection,
        nonce,
        pairs,
    })
}

fn result_page(
    state: &ConsoleState,
    operator: &Operator,
    title: &str,
    outcome: &str,
    result: &str,
) -> Response {
    let status = if outcome == "error" {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    state.render_status(
        status,
        operator,
        "dlq",
        "action.html",
        minijinja::context! { title => title, outcome => outcome, result => result },
    )
}

/// The engine's filter for a submitted selection; a `pipeline` (which the
/// engine does not know) is resolved to the ids of the letters it matches
/// within the scan limit. `None`: nothing matches.
async fn engine_filter(
    state: &ConsoleState,
    selection: &Selection,
) -> Result<Option<dlq::Filter>, String> {
    let mut filter = selection.filter().map_err(|e| e.to_string())?;
    if selection.pipeline().is_none() {
        return Ok(Some(filter));
    }
    let limit = state.settings.worker.console.scan_limit;
    let page = read(state, Some(selection), 0, limit, 0).await?;
    if page.letters.is_empty() {
        return Ok(None);
    }
    filter.ids = page.letters.into_iter().map(|r| r.message_id).collect();
    Ok(Some(filter))
}

/// Runs one `dlq` command in its own task (a closed browser does not cut it
/// short), stopping cleanly on shutdown.
async fn run_command(state: &ConsoleState, command: DlqCommand) -> Result<Summary, DlqError> {
    let settings = state.settings.clone();
    let stopping = state.stopping.clone();
    let task =
        tokio::spawn(
            async move { dlq::run(&settings, command, stopping, &mut std::io::sink()).await },
        );
    match task.await {
        Ok(result) => result,
        Err(e) => Err(DlqError::Output(std::io::Error::other(e.to_string()))),
    }
}

/// Whether `error` happened before the pass changed anything (the form may be
/// sent again).
fn changed_nothing(error: &DlqError) -> bool {
    matches!(
        error,
        DlqError::Connect(_)
            | DlqError::MissingQueue(_)
            | DlqError::Busy { .. }
            | DlqError::Filter(_)
    )
}

fn quiet() -> PassArgs {
    PassArgs {
        json: true,
        no_progress: true,
        ..PassArgs::default()
    }
}

fn summary_line(summary: &Summary) -> String {
    let mut out = Vec::new();
    let _ = summary.write(&mut out, false);
    String::from_utf8_lossy(&out).trim().to_owned()
}

/// `POST /console/dlq/replay`: replay the selection (`dry_run`, `rate`).
pub async fn replay(
    State(state): State<Arc<ConsoleState>>,
    Authed(operator): Authed,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let form = match check(&state, operator, pairs) {
        Ok(form) => form,
        Err(response) => return *response,
    };
    let dry_run = field(&form.pairs, "dry_run") == "1";
    let action = if dry_run { "dry_run" } else { "replay" };
    let rate_text = field(&form.pairs, "rate").trim();
    let rate = match (!rate_text.is_empty())
        .then(|| rate_text.parse::<Rate>())
        .transpose()
    {
        Ok(rate) => rate,
        Err(e) => {
            return result_page(
                &state,
                &form.operator,
                "Not sent",
                "error",
                &format!("`rate`: {e}"),
            );
        }
    };
    if form.selection.is_everything() && !dry_run {
        let text = "Narrow the selection first: the console does not replay the whole DLQ at once (`dlq replay --all` does).";
        return result_page(&state, &form.operator, "Not sent", "error", text);
    }
    let filter = match engine_filter(&state, &form.selection).await {
        Ok(Some(filter)) => filter,
        Ok(None) => {
            return result_page(
                &state,
                &form.operator,
                "Replay",
                "done",
                "No dead letter matches the selection.",
            );
        }
        Err(message) => return result_page(&state, &form.operator, "Not sent", "error", &message),
    };
    let command = DlqCommand::Replay(ReplayArgs {
        filter,
        all: true,
        rate,
        dry_run,
        pass: quiet(),
        ..ReplayArgs::default()
    });
    act(&state, &form, action, "Replay", command).await
}

/// Claims the form's nonce, runs `command`, logs and counts it, and shows what
/// it did.
async fn act(
    state: &ConsoleState,
    form: &Submitted,
    action: &'static str,
    title: &str,
    command: DlqCommand,
) -> Response {
    let selection = form.selection.describe();
    let audit = |outcome, summary: Option<&Summary>| {
        ConsoleAction {
            operator: &form.operator.name,
            action,
            selection: &selection,
            outcome,
            summary,
        }
        .emit(&state.console_metrics)
    };
    match state.nonces.claim(&form.nonce).await {
        Ok(true) => {}
        Ok(false) => {
            audit("duplicate", None);
            let text = "This form was already sent; nothing was done a second time.";
            return result_page(state, &form.operator, title, "duplicate", text);
        }
        Err(e) => {
            audit("failed", None);
            let text = format!(
                "Cannot record the action in Redis, so it was not started: {}",
                error_chain(&e)
            );
            return result_page(state, &form.operator, title, "error", &text);
        }
    }
    match run_command(state, command).await {
        Ok(summary) => {
            audit("done", Some(&summary));
            result_page(
                state,
                &form.operator,
                title,
                "done",
                &summary_line(&summary),
            )
        }
        Err(e) => {
            if changed_nothing(&e) {
                state.nonces.release(&form.nonce).await;
            }
            audit("failed", None);
            result_page(state, &form.operator, title, "error", &describe(&e))
        }
    }
}

/// `POST /console/dlq/purge`: without `confirm=yes`, counts the selection and
/// asks; with it, deletes the selection.
pub async fn purge(
    State(state): State<Arc<ConsoleState>>,
    Authed(operator): Authed,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let form = match check(&state, operator, pairs) {
        Ok(form) => form,
        Err(response) => return *response,
    };
    let filter = match engine_filter(&state, &form.selection).await {
        Ok(Some(filter)) => filter,
        Ok(None) => {
            return result_page(
                &state,
                &form.operator,
                "Purge",
                "done",
                "No dead letter matches the selection.",
            );
        }
        Err(message) => return result_page(&state, &form.operator, "Not sent", "error", &message),
    };
    let confirmed = field(&form.pairs, "confirm") == "yes";
    let command = DlqCommand::Purge(PurgeArgs {
        filter,
        yes: confirmed,
        pass: quiet(),
        ..PurgeArgs::default()
    });
    if confirmed {
        return act(&state, &form, "purge", "Purge", command).await;
    }
    purge_preview(&state, &form, command).await
}

/// Counts what a purge would delete and asks for the confirmation.
async fn purge_preview(state: &ConsoleState, form: &Submitted, command: DlqCommand) -> Response {
    match run_command(state, command).await {
        Err(DlqError::NotConfirmed(count)) => {
            let text = format!(
                "{count} dead letters match {}. Deleting them cannot be undone.",
                form.selection.describe()
            );
            state.render(
                &form.operator,
                "dlq",
                "action.html",
                minijinja::context! {
                    title => "Purge?",
                    outcome => "confirm",
                    result => text,
                    confirm => count > 0,
                    fields => form.selection.as_pairs(),
                    nonce => form.nonce.clone(),
                },
            )
        }
        Ok(summary) => result_page(
            state,
            &form.operator,
            "Purge",
            "done",
            &summary_line(&summary),
        ),
        Err(e) => result_page(state, &form.operator, "Purge", "error", &describe(&e)),
    }
}
