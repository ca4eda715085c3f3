//! How results look: the progress bar (stderr), letter rows (a table for people,
//! JSON lines for scripts) and short ages.
//!
//! The table is written as letters stream by — a 100,000-line listing is never
//! buffered — so its columns have fixed widths and long values are cut with `…`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::letter::{Death, Letter, serialize_time};

/// A progress bar on stderr, or a hidden one (`--json`, `--no-progress`, or
/// stderr is not a terminal).
pub fn progress(wanted: bool) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} letters · {per_sec} · {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(style)
}

/// One letter as a JSON line (`list --json`) or inside `show --json`.
#[derive(Debug, Serialize)]
pub struct LetterJson<'a> {
    /// Message id, null for poison without one.
    pub message_id: Option<&'a str>,
    /// `hf-source`.
    pub source: Option<&'a str>,
    /// `hf-event-type`.
    pub event_type: Option<&'a str>,
    /// `hf-event-id`.
    pub event_id: Option<&'a str>,
    /// `permanent`, `exhausted`, `poison`, `delivery-limit` or `unknown`.
    pub class: &'static str,
    /// The bounded reason code (`ai_http_500`, `delivery_limit`).
    pub reason: &'a str,
    /// The whole error.
    pub error: &'a str,
    /// `hf-stage`.
    pub stage: Option<&'a str>,
    /// When it failed (RFC 3339).
    #[serde(serialize_with = "serialize_time")]
    pub failed_at: Option<SystemTime>,
    /// Seconds since it failed.
    pub age_seconds: Option<u64>,
    /// `hf-received-at`.
    pub received_at: Option<&'a str>,
    /// `hf-attempt`.
    pub attempts: Option<u32>,
    /// `hf-replays`.
    pub replays: u32,
    /// `hf-routing-key`.
    pub routing_key: Option<&'a str>,
    /// RabbitMQ's latest `x-death` entry.
    pub death: Option<&'a Death>,
    /// Body size.
    pub body_bytes: usize,
}

impl<'a> LetterJson<'a> {
    /// The JSON view of `letter` at `now`.
    pub fn new(letter: &'a Letter, now: SystemTime) -> Self {
        Self {
            message_id: letter.message_id.as_deref(),
            source: letter.source.as_deref(),
            event_type: letter.event_type.as_deref(),
            event_id: letter.event_id.as_deref(),
            class: letter.class.as_str(),
            reason: letter.reason(),
            error: &letter.error,
            stage: letter.stage.as_deref(),
            failed_at: letter.failed_at,
            age_seconds: letter.age(now).map(|a| a.as_secs()),
            received_at: letter.received_at.as_deref(),
            attempts: letter.attempts,
            replays: letter.replays,
            routing_key: letter.routing_key.as_deref(),
            death: letter.death.as_ref(),
            body_bytes: letter.body_bytes,
        }
    }
}

/// Column widths of the letter table.
const COLUMNS: [(&str, usize); 7] = [
    ("MESSAGE ID", 26),
    ("AGE", 7),
    ("SOURCE", 12),
    ("EVENT TYPE", 22),
    ("CLASS", 14),
    ("REPLAYS", 7),
    ("REASON", 0),
];

/// The table's header line.
pub fn table_header(out: &mut dyn Write) -> std::io::Result<()> {
    let cells: Vec<String> = COLUMNS.iter().map(|(name, _)| (*name).to_owned()).collect();
    write_row(out, &cells)
}

/// One letter as a table row.
pub fn table_row(out: &mut dyn Write, letter: &Letter, now: SystemTime) -> std::io::Result<()> {
    let cells = [
        letter.message_id.clone().unwrap_or_else(|| "-".into()),
        letter.age(now).map(short_age).unwrap_or_else(|| "?".into()),
        letter.source.clone().unwrap_or_else(|| "-".into()),
        letter.event_type.clone().unwrap_or_else(|| "-".into()),
        letter.class.as_str().to_owned(),
        letter.replays.to_string(),
        cut(&letter.error, 80),
    ];
    write_row(out, &cells)
}

fn write_row(out: &mut dyn Write, cells: &[String]) -> std::io::Result<()> {
    let mut line = String::new();
    for ((_, width), cell) in COLUMNS.iter().zip(cells) {
        if *width == 0 {
            line.push_str(cell);
        } else {
            let cell = cut(cell, *width);
            line.push_str(&format!("{cell:<width$}  "));
        }
    }
    writeln!(out, "{}", line.trim_end())
}

/// `text` cut to `max` characters, ending in `…` when cut.
pub fn cut(text: &str, max: usize) -> String {
    let text = text.replace(['\n', '\r', '\t'], " ");
    if text.chars().count() <= max {
        return text;
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `42s`, `12m5s`, `3h4m`, `2d3h`: the two largest units.
pub fn short_age(age: Duration) -> String {
    let s = age.as_secs();
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m{sec}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// A point in time for people: RFC 3339 to the second.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_show_their_two_largest_units() {
        assert_eq!(short_age(Duration::from_secs(42)), "42s");
        assert_eq!(short_age(Duration::from_secs(725)), "12m5s");
        assert_eq!(short_age(Duration::from_secs(3 * 3600 + 240 + 9)), "3h4m");
        assert_eq!(
            short_age(Duration::from_secs(2 * 86_400 + 3 * 3600)),
            "2d3h"
        );
    }

    #[test]
    fn long_cells_are_cut_on_characters() {
        assert_eq!(cut("éééé", 3), "éé…");
        assert_eq!(cut("a\nb", 5), "a b");
    }
}
