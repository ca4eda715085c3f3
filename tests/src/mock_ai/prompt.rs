//! The conversation as the mock sees it, and the deterministic completion made
//! from it.
//!
//! Both endpoints reduce a request to the same [`Prompt`] (Anthropic's `system`
//! becomes a leading `system` message), so one conversation has one hash whichever
//! provider it is sent to. The completion is a pure function of the prompt: the
//! same prompt always gets the same text, which is what lets tests compare
//! outputs and count calls per prompt.
//!
//! Rules later tests rely on:
//! - JSON mode (OpenAI `response_format.type` `json_object`/`json_schema`, or the
//!   prompt contains "json" in any case) answers a JSON object string
//!   `{"summary", "sentiment", "category", "echo", "prompt_hash"}`.
//! - `sentiment` reads the **last user message** only (so instructions in a system
//!   prompt do not sway it), lowercased: any of "angry", "broken", "refund",
//!   "terrible" → `negative` (wins over positive); else any of "thanks", "great",
//!   "love" → `positive`; else `neutral`.
//! - `echo` is the first 40 characters of the last user message.
//! - `category` is picked by the prompt hash from [`CATEGORIES`]: stable, not
//!   meaningful.
//! - Tokens are estimated as `ceil(chars / 4)`: the prompt's over all message
//!   contents, the completion's over its text.

use serde_json::json;
use sha2::{Digest, Sha256};

/// Categories `category` is picked from.
pub const CATEGORIES: [&str; 5] = ["billing", "shipping", "account", "technical", "other"];

const NEGATIVE: [&str; 4] = ["angry", "broken", "refund", "terrible"];
const POSITIVE: [&str; 3] = ["thanks", "great", "love"];

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user`, `assistant`, …
    pub role: String,
    /// The text; content parts are joined with `\n`.
    pub content: String,
}

/// A conversation, system message first when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Prompt {
    /// The messages in order.
    pub messages: Vec<Message>,
}

impl Prompt {
    /// A prompt from `(role, content)` pairs, e.g. to compute the hash a test
    /// expects: `Prompt::from_pairs(&[("user", "hi")]).hash()`.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self {
            messages: pairs
                .iter()
                .map(|&(role, content)| Message {
                    role: role.to_owned(),
                    content: content.to_owned(),
                })
                .collect(),
        }
    }

    /// The canonical text: `"{role}: {content}\n"` per message. The hash is over
    /// this, and markers are searched in it.
    pub fn text(&self) -> String {
        self.messages
            .iter()
            .map(|m| format!("{}: {}\n", m.role, m.content))
            .collect()
    }

    /// Lowercase hex SHA-256 of [`text`](Self::text): the key of
    /// `CountersSnapshot::prompt_calls`.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.text().as_bytes()))
    }

    /// The content of the last `user` message, or "".
    pub fn last_user(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map_or("", |m| m.content.as_str())
    }

    /// Estimated prompt tokens: `ceil(chars / 4)` over all message contents.
    pub fn estimate_tokens(&self) -> u32 {
        estimate_tokens(
            self.messages
                .iter()
                .map(|m| m.content.chars().count())
                .sum(),
        )
    }
}

/// `ceil(chars / 4)`, saturating.
pub fn estimate_tokens(chars: usize) -> u32 {
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
}

/// Sentiment the mock assigns to a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sentiment {
    /// Contains a negative keyword.
    Negative,
    /// Contains a positive keyword and no negative one.
    Positive,
    /// Neither.
    Neutral,
}

impl Sentiment {
    /// The keyword rules of the module doc, applied to `text`.
    pub fn of(text: &str) -> Self {
        let lower = text.to_lowercase();
        if NEGATIVE.iter().any(|k| lower.contains(k)) {
            Self::Negative
        } else if POSITIVE.iter().any(|k| lower.contains(k)) {
            Self::Positive
        } else {
            Self::Neutral
        }
    }

    /// `negative`, `positive` or `neutral`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Negative => "negative",
            Self::Positive => "positive",
            Self::Neutral => "neutral",
        }
    }
}

/// The mock's answer to a prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The assistant's text (a JSON object string in JSON mode).
    pub text: String,
    /// `ceil(chars / 4)` of `text`.
    pub tokens: u32,
    /// The text was cut to `max_tokens` (finish reason `length` / `max_tokens`).
    pub truncated: bool,
}

/// A prose answer to `prompt`, whatever it asked for: a model ignoring JSON mode.
pub fn prose(prompt: &Prompt) -> Completion {
    let echo: String = prompt.last_user().chars().take(40).collect();
    let text = format!("Sure! Here is what I think about \"{echo}\": it looks fine.");
    Completion {
        tokens: estimate_tokens(text.chars().count()),
        text,
        truncated: false,
    }
}

/// The completion for `prompt`. `json_requested` is the request's own JSON flag;
/// a prompt mentioning JSON turns JSON mode on too. A text longer than
/// `max_tokens * 4` characters is cut there, as a real model stops mid-answer.
pub fn complete(prompt: &Prompt, json_requested: bool, max_tokens: Option<u32>) -> Completion {
    let digest = Sha256::digest(prompt.text().as_bytes());
    let hash = hex::encode(digest.as_slice());
    let short = &hash[..8];
    let last_user = prompt.last_user();
    let echo: String = last_user.chars().take(40).collect();
    let sentiment = Sentiment::of(last_user).as_str();
    let category = CATEGORIES[usize::from(digest[0]) % CATEGORIES.len()];
    let json_mode = json_requested || prompt.text().to_lowercase().contains("json");

    let full = if json_mode {
        json!({
            "summary": format!("Mock summary {short}: a {sentiment} {category} message."),
            "sentiment": sentiment,
            "category": category,
            "echo": echo,
            "prompt_hash": hash,
        })
        .to_string()
    } else {
        format!("Mock reply {short}: a {sentiment} {category} message. Echo: {echo}")
    };
    let limit = max_tokens.map(|t| t as usize * 4);
    match limit {
        Some(limit) if full.chars().count() > limit => {
            let text: String = full.chars().take(limit).collect();
            Completion {
                tokens: estimate_tokens(text.chars().count()),
                text,
                truncated: true,
            }
        }
        _ => Completion {
            tokens: estimate_tokens(full.chars().count()),
            text: full,
            truncated: false,
        },
    }
}
