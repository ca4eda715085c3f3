//! The DLQ selection as form and query fields: the `dlq` command's filters
//! (`source`, `event_type`, `class`, `stage`, `error`, `older_than`,
//! `newer_than`, repeated `id`) plus `pipeline`, which only the console has.
//!
//! Fields arrive as hostile text: unknown names are ignored, values are
//! trimmed and bounded, and a value that does not parse (a class, a duration,
//! a glob) is reported by field name instead of being dropped, so an operator
//! never acts on a wider selection than they typed.

use clap::ValueEnum;
use serde::Serialize;

use crate::dlq::{Class, Filter};

/// The longest value a field may have.
const MAX_FIELD: usize = 200;
/// The most `id` fields one selection may name.
const MAX_IDS: usize = 500;

/// The selection, as the operator typed it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Selection {
    /// Source name.
    pub source: String,
    /// Event-type glob.
    pub event_type: String,
    /// Error class (`exhausted`, …).
    pub class: String,
    /// Failure stage.
    pub stage: String,
    /// Pipeline (`hf-pipeline`).
    pub pipeline: String,
    /// Text the error contains.
    pub error: String,
    /// Minimum age (`1h`).
    pub older_than: String,
    /// Maximum age (`10m`).
    pub newer_than: String,
    /// Message ids.
    #[serde(skip)]
    pub ids: Vec<String>,
}

/// A field that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("`{field}`: {reason}")]
pub struct SelectionError {
    /// The field's name.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl Selection {
    /// Reads the selection's fields out of form or query pairs.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, SelectionError> {
        let mut s = Self::default();
        for (name, value) in pairs {
            let value = value.trim();
            if value.len() > MAX_FIELD {
                return Err(SelectionError {
                    field: "selection",
                    reason: format!("a value longer than {MAX_FIELD} bytes"),
                });
            }
            let slot = match name.as_str() {
                "source" => &mut s.source,
                "event_type" => &mut s.event_type,
                "class" => &mut s.class,
                "stage" => &mut s.stage,
                "pipeline" => &mut s.pipeline,
                "error" => &mut s.error,
                "older_than" => &mut s.older_than,
                "newer_than" => &mut s.newer_than,
                "id" if !value.is_empty() => {
                    if s.ids.len() >= MAX_IDS {
                        return Err(SelectionError {
                            field: "id",
                            reason: format!("at most {MAX_IDS} ids at once"),
                        });
                    }
                    s.ids.push(value.to_owned());
                    continue;
                }
                _ => continue,
            };
            value.clone_into(slot);
        }
        Ok(s)
    }

    /// Whether nothing narrows the selection (it is the whole DLQ).
    pub fn is_everything(&self) -> bool {
        self.as_pairs().is_empty()
    }

    /// The `dlq` engine's filter (everything but `pipeline`).
    pub fn filter(&self) -> Result<Filter, SelectionError> {
        let one = |v: &String| {
            if v.is_empty() {
                vec![]
            } else {
                vec![v.clone()]
            }
        };
        let classes = if self.class.is_empty() {
            vec![]
        } else {
            vec![
                Class::from_str(&self.class, true).map_err(|_| SelectionError {
                    field: "class",
                    reason: format!("no class `{}`", self.class),
                })?,
            ]
        };
        let filter = Filter {
            sources: one(&self.source),
            event_types: one(&self.event_type),
            classes,
            error: (!self.error.is_empty()).then(|| self.error.clone()),
            stages: one(&self.stage),
            ids: self.ids.clone(),
            older_than: duration("older_than", &self.older_than)?,
            newer_than: duration("newer_than", &self.newer_than)?,
        };
        filter.compile().map_err(|e| SelectionError {
            field: "event_type",
            reason: e.to_string(),
        })?;
        Ok(filter)
    }

    /// The pipeline filter, if any.
    pub fn pipeline(&self) -> Option<String> {
        (!self.pipeline.is_empty()).then(|| self.pipeline.clone())
    }

    /// Every non-empty field as a pair, ids last: hidden form fields and links.
    pub fn as_pairs(&self) -> Vec<(String, String)> {
        let fields = [
            ("source", &self.source),
            ("event_type", &self.event_type),
            ("class", &self.class),
            ("stage", &self.stage),
            ("pipeline", &self.pipeline),
            ("error", &self.error),
            ("older_than", &self.older_than),
            ("newer_than", &self.newer_than),
        ];
        let mut pairs: Vec<(String, String)> = fields
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect();
        pairs.extend(self.ids.iter().map(|id| ("id".to_owned(), id.clone())));
        pairs
    }

    /// The selection as a URL query (values percent-encoded).
    pub fn query(&self) -> String {
        self.as_pairs()
            .iter()
            .map(|(k, v)| {
                let v =
                    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC);
                format!("{k}={v}")
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The selection for the audit log (`source=stripe class=exhausted`).
    pub fn describe(&self) -> String {
        let pairs = self.as_pairs();
        if pairs.is_empty() {
            return "all".to_owned();
        }
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn duration(
    field: &'static str,
    value: &str,
) -> Result<Option<std::time::Duration>, SelectionError> {
    if value.is_empty() {
        return Ok(None);
    }
    humantime::parse_duration(value)
        .map(Some)
        .map_err(|e| SelectionError {
            field,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn fields_become_the_engines_filter_and_bad_ones_are_named() {
        let s = Selection::from_pairs(&pairs(&[
            ("source", " stripe "),
            ("class", "exhausted"),
            ("older_than", "1h"),
            ("id", "A"),
            ("id", "B"),
            ("csrf", "ignored"),
        ]))
        .unwrap();
        let f = s.filter().unwrap();
        assert_eq!(f.sources, vec!["stripe"]);
        assert_eq!(f.classes, vec![Class::Exhausted]);
        assert_eq!(f.ids, vec!["A", "B"]);
        assert_eq!(f.older_than, Some(std::time::Duration::from_secs(3600)));
        assert_eq!(
            s.describe(),
            "source=stripe class=exhausted older_than=1h id=A id=B"
        );
        assert!(!s.is_everything());
        let bad = Selection::from_pairs(&pairs(&[("class", "nope")])).unwrap();
        assert_eq!(bad.filter().unwrap_err().field, "class");
        let bad = Selection::from_pairs(&pairs(&[("newer_than", "soon")])).unwrap();
        assert_eq!(bad.filter().unwrap_err().field, "newer_than");
        assert!(Selection::from_pairs(&[]).unwrap().is_everything());
    }
}
