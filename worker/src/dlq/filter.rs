//! Which dead letters a command acts on: the filter flags every `dlq` command
//! shares, compiled once into a [`Matcher`].
//!
//! Within one flag, repeated values are alternatives (`--source a --source b`);
//! different flags must all hold. Age is measured from the letter's failure time
//! (`hf-failed-at`, or RabbitMQ's `x-death` time); a letter whose failure time is
//! unknown matches no age filter, so `purge --older-than 7d` never removes a
//! letter it cannot date.

use std::time::{Duration, SystemTime};

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::letter::{Class, Letter};

/// The filter flags (`dlq stats|list|replay|purge`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filter {
    /// Only letters from this source (repeatable).
    #[arg(long = "source", value_name = "NAME")]
    pub sources: Vec<String>,
    /// Only this event type; `*` and `?` globs allowed (repeatable).
    #[arg(long = "event-type", value_name = "GLOB")]
    pub event_types: Vec<String>,
    /// Only this error class (repeatable).
    #[arg(long = "class", value_enum, value_name = "CLASS")]
    pub classes: Vec<Class>,
    /// Only letters whose error (`hf-error`) contains this text, ignoring case.
    #[arg(long, value_name = "TEXT")]
    pub error: Option<String>,
    /// Only letters that failed at this stage: decode, match, enrich, render, ai,
    /// output, sink (repeatable).
    #[arg(long = "stage", value_name = "STAGE")]
    pub stages: Vec<String>,
    /// Only the letter with this message id (repeatable).
    #[arg(long = "id", value_name = "MESSAGE_ID")]
    pub ids: Vec<String>,
    /// Only letters that failed at least this long ago (`1h`, `2d 4h`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub older_than: Option<Duration>,
    /// Only letters that failed at most this long ago (`10m`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub newer_than: Option<Duration>,
}

/// A filter could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("invalid --event-type pattern `{pattern}`")]
pub struct FilterError {
    pattern: String,
    #[source]
    source: globset::Error,
}

/// A compiled [`Filter`].
#[derive(Debug, Clone)]
pub struct Matcher {
    filter: Filter,
    event_types: Option<GlobSet>,
    error: Option<String>,
}

impl Filter {
    /// Whether no flag is set (everything matches).
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
            && self.event_types.is_empty()
            && self.classes.is_empty()
            && self.error.is_none()
            && self.stages.is_empty()
            && self.ids.is_empty()
            && self.older_than.is_none()
            && self.newer_than.is_none()
    }

    /// Compiles the globs.
    pub fn compile(&self) -> Result<Matcher, FilterError> {
        let event_types = if self.event_types.is_empty() {
            None
        } else {
            let mut set = GlobSetBuilder::new();
            for pattern in &self.event_types {
                let glob = Glob::new(pattern).map_err(|source| FilterError {
                    pattern: pattern.clone(),
                    source,
                })?;
                set.add(glob);
            }
            Some(set.build().map_err(|source| FilterError {
                pattern: self.event_types.join(", "),
                source,
            })?)
        };
        Ok(Matcher {
            filter: self.clone(),
            event_types,
            error: self.error.as_ref().map(|e| e.to_lowercase()),
        })
    }
}

impl Matcher {
    /// Whether `letter` passes every flag, judged at `now`.
    pub fn matches(&self, letter: &Letter, now: SystemTime) -> bool {
        let f = &self.filter;
        let one_of = |wanted: &[String], value: &Option<String>| {
            wanted.is_empty() || value.as_ref().is_some_and(|v| wanted.contains(v))
        };
        if !one_of(&f.sources, &letter.source)
            || !one_of(&f.stages, &letter.stage)
            || !one_of(&f.ids, &letter.message_id)
        {
            return false;
        }
        if !f.classes.is_empty() && !f.classes.contains(&letter.class) {
            return false;
        }
        if let Some(set) = &self.event_types
            && !letter
                .event_type
                .as_ref()
                .is_some_and(|t| set.is_match(t.as_str()))
        {
            return false;
        }
        if let Some(text) = &self.error
            && !letter.error.to_lowercase().contains(text.as_str())
        {
            return false;
        }
        if f.older_than.is_some() || f.newer_than.is_some() {
            let Some(age) = letter.age(now) else {
                return false;
            };
            if f.older_than.is_some_and(|min| age < min)
                || f.newer_than.is_some_and(|max| age > max)
            {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(source: &str, event_type: &str, class: Class, error: &str, age_secs: u64) -> Letter {
        Letter {
            message_id: Some(format!("id-{source}")),
            source: Some(source.into()),
            event_type: Some(event_type.into()),
            event_id: None,
            class,
            error: error.into(),
            stage: Some("ai".into()),
            failed_at: Some(now() - Duration::from_secs(age_secs)),
            received_at: None,
            attempts: Some(3),
            replays: 0,
            routing_key: None,
            death: None,
            body_bytes: 2,
        }
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000)
    }

    #[test]
    fn an_empty_filter_matches_everything() {
        let m = Filter::default().compile().unwrap();
        let mut l = letter("a", "x", Class::Poison, "", 0);
        l.failed_at = None;
        assert!(m.matches(&l, now()));
    }

    #[test]
    fn values_of_one_flag_are_alternatives_and_flags_combine() {
        let m = Filter {
            sources: vec!["stripe".into(), "github".into()],
            event_types: vec!["invoice.*".into()],
            classes: vec![Class::Exhausted],
            error: Some("HTTP_500".into()),
            ..Filter::default()
        }
        .compile()
        .unwrap();
        let hit = letter(
            "stripe",
            "invoice.paid",
            Class::Exhausted,
            "ai_http_500: x",
            5,
        );
        assert!(m.matches(&hit, now()));
        let cases = [
            letter(
                "shopify",
                "invoice.paid",
                Class::Exhausted,
                "ai_http_500",
                5,
            ),
            letter(
                "stripe",
                "charge.failed",
                Class::Exhausted,
                "ai_http_500",
                5,
            ),
            letter("stripe", "invoice.paid", Class::Permanent, "ai_http_500", 5),
            letter("stripe", "invoice.paid", Class::Exhausted, "ai_http_429", 5),
        ];
        for miss in cases {
            assert!(!m.matches(&miss, now()), "{miss:?}");
        }
    }

    #[test]
    fn age_bounds_use_the_failure_time_and_skip_undated_letters() {
        let m = Filter {
            older_than: Some(Duration::from_secs(3600)),
            newer_than: Some(Duration::from_secs(7200)),
            ..Filter::default()
        }
        .compile()
        .unwrap();
        assert!(m.matches(&letter("a", "x", Class::Exhausted, "", 5000), now()));
        assert!(!m.matches(&letter("a", "x", Class::Exhausted, "", 60), now()));
        assert!(!m.matches(&letter("a", "x", Class::Exhausted, "", 9000), now()));
        let mut undated = letter("a", "x", Class::Exhausted, "", 5000);
        undated.failed_at = None;
        assert!(!m.matches(&undated, now()));
    }

    #[test]
    fn a_bad_glob_is_named() {
        let err = Filter {
            event_types: vec!["a[".into()],
            ..Filter::default()
        }
        .compile()
        .unwrap_err();
        assert!(err.to_string().contains("a["), "{err}");
    }
}
