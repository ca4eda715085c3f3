//! Anthropic messages: `POST {base_url}/messages` with `x-api-key` and
//! `anthropic-version`.
//!
//! The API requires `max_tokens`; a pipeline without one gets
//! [`DEFAULT_MAX_TOKENS`]. There is no JSON mode: a JSON pipeline relies on its
//! prompt, and the job checks that the answer parses.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::json;

use super::{AiError, AiRequest, AiResponse, Http, read_usage};

/// `max_tokens` sent when the pipeline sets none (the API requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// Anthropic's messages API.
#[derive(Debug)]
pub struct Anthropic {
    pub(super) http: Http,
    version: String,
}

impl Anthropic {
    pub(super) fn new(http: Http, version: String) -> Self {
        Self { http, version }
    }

    /// Sends one message request.
    pub async fn complete(&self, request: &AiRequest) -> Result<AiResponse, AiError> {
        let invalid =
            |what: &str| AiError::InvalidResponse(format!("{what} is not a valid header"));
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_str(&self.version).map_err(|_| invalid("anthropic_version"))?,
        );
        if let Some(key) = &self.http.api_key {
            let mut value =
                HeaderValue::from_str(key.expose()).map_err(|_| invalid("the API key"))?;
            value.set_sensitive(true);
            headers.insert(HeaderName::from_static("x-api-key"), value);
        }
        let body = self
            .http
            .post("/messages", headers, &request_body(request))
            .await?;
        parse_response(&body)
    }
}

/// The messages request for `request`.
pub fn request_body(request: &AiRequest) -> serde_json::Value {
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "messages": [{ "role": "user", "content": request.user }],
    });
    if let Some(system) = &request.system {
        body["system"] = json!(system);
    }
    if let Some(t) = request.temperature {
        // Anthropic accepts 0–1.
        body["temperature"] = json!(t.min(1.0));
    }
    body
}

/// Reads a messages answer: the text blocks joined, and the usage.
pub fn parse_response(body: &[u8]) -> Result<AiResponse, AiError> {
    #[derive(Deserialize)]
    struct Message {
        model: Option<String>,
        content: Vec<Block>,
        usage: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct Block {
        #[serde(rename = "type")]
        kind: String,
        text: Option<String>,
    }
    let message: Message = serde_json::from_slice(body)
        .map_err(|e| AiError::InvalidResponse(format!("not a message: {e}")))?;
    let texts: Vec<String> = message
        .content
        .into_iter()
        .filter(|b| b.kind == "text")
        .filter_map(|b| b.text)
        .collect();
    if texts.is_empty() {
        return Err(AiError::InvalidResponse("no text content".into()));
    }
    let usage = read_usage(message.usage.as_ref(), "input_tokens", "output_tokens");
    Ok(AiResponse {
        text: texts.concat(),
        usage: usage.unwrap_or_default(),
        usage_reported: usage.is_some(),
        model: message.model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Usage;

    #[test]
    fn the_system_prompt_is_a_top_level_field_and_max_tokens_is_always_sent() {
        let body = request_body(&AiRequest {
            model: "claude-sonnet-4-5".into(),
            system: Some("Be brief.".into()),
            user: "Hi".into(),
            temperature: Some(1.5),
            max_tokens: None,
            json: true,
        });
        assert_eq!(body["system"], "Be brief.");
        assert_eq!(body["messages"][0]["role"], "user");
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(body["temperature"], 1.0);
        assert!(body.get("response_format").is_none());
    }

    #[test]
    fn a_documented_message_parses_with_its_usage() {
        let body = br#"{
          "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
          "content": [{ "type": "text", "text": "Hello" }, { "type": "text", "text": " there" }],
          "stop_reason": "end_turn", "stop_sequence": null,
          "usage": { "input_tokens": 10, "output_tokens": 25 }
        }"#;
        let response = parse_response(body).unwrap();
        assert_eq!(response.text, "Hello there");
        assert_eq!(
            response.usage,
            Usage {
                input_tokens: 10,
                output_tokens: 25
            }
        );
    }

    #[test]
    fn a_message_without_text_is_invalid() {
        let body = br#"{"content": [{"type": "tool_use", "id": "x", "name": "f", "input": {}}]}"#;
        assert!(matches!(
            parse_response(body),
            Err(AiError::InvalidResponse(_))
        ));
    }
}
