//! OpenAI-compatible chat completions: `POST {base_url}/chat/completions`.
//!
//! Sends `Authorization: Bearer {key}` when a key is configured (local and
//! self-hosted endpoints often need none). A JSON pipeline asks for
//! `response_format: {"type": "json_object"}`; whether the answer really parses is
//! checked by the job, for every provider alike.

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::json;

use super::{AiError, AiRequest, AiResponse, Http, read_usage};

/// An OpenAI-compatible endpoint.
#[derive(Debug)]
pub struct OpenAi {
    pub(super) http: Http,
}

impl OpenAi {
    pub(super) fn new(http: Http) -> Self {
        Self { http }
    }

    /// Sends one chat completion.
    pub async fn complete(&self, request: &AiRequest) -> Result<AiResponse, AiError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &self.http.api_key {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                    AiError::InvalidResponse("the API key is not a valid header".into())
                })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let body = self
            .http
            .post("/chat/completions", headers, &request_body(request))
            .await?;
        parse_response(&body)
    }
}

/// The chat-completions request for `request`.
pub fn request_body(request: &AiRequest) -> serde_json::Value {
    let mut messages = Vec::new();
    if let Some(system) = &request.system {
        messages.push(json!({ "role": "system", "content": system }));
    }
    messages.push(json!({ "role": "user", "content": request.user }));
    let mut body = json!({ "model": request.model, "messages": messages });
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(n) = request.max_tokens {
        body["max_tokens"] = json!(n);
    }
    if request.json {
        body["response_format"] = json!({ "type": "json_object" });
    }
    body
}

/// Reads a chat-completions answer: the first choice's content and the usage.
pub fn parse_response(body: &[u8]) -> Result<AiResponse, AiError> {
    #[derive(Deserialize)]
    struct Completion {
        model: Option<String>,
        choices: Vec<Choice>,
        usage: Option<serde_json::Value>,
    }
    #[derive(Deserialize)]
    struct Choice {
        message: Message,
    }
    #[derive(Deserialize)]
    struct Message {
        content: Option<String>,
        refusal: Option<String>,
    }
    let completion: Completion = serde_json::from_slice(body)
        .map_err(|e| AiError::InvalidResponse(format!("not a chat completion: {e}")))?;
    let message = completion
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| AiError::InvalidResponse("no choices".into()))?
        .message;
    let text = match (message.content, message.refusal) {
        (Some(content), _) => content,
        (None, Some(refusal)) => {
            return Err(AiError::InvalidResponse(format!(
                "the model refused: {refusal}"
            )));
        }
        (None, None) => return Err(AiError::InvalidResponse("no content".into())),
    };
    let usage = read_usage(
        completion.usage.as_ref(),
        "prompt_tokens",
        "completion_tokens",
    );
    Ok(AiResponse {
        text,
        usage: usage.unwrap_or_default(),
        usage_reported: usage.is_some(),
        model: completion.model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Usage;

    #[test]
    fn a_json_pipeline_asks_for_a_json_object() {
        let request = AiRequest {
            model: "gpt-4o-mini".into(),
            system: Some("Be brief.".into()),
            user: "Hi".into(),
            temperature: Some(0.0),
            max_tokens: Some(64),
            json: true,
        };
        let body = request_body(&request);
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["content"], "Hi");
        assert_eq!(body["max_tokens"], 64);
        assert_eq!(body["response_format"]["type"], "json_object");
        let plain = request_body(&AiRequest {
            system: None,
            json: false,
            temperature: None,
            max_tokens: None,
            ..request
        });
        assert_eq!(plain["messages"].as_array().map(Vec::len), Some(1));
        assert!(plain.get("response_format").is_none() && plain.get("temperature").is_none());
    }

    #[test]
    fn a_documented_completion_parses_with_its_usage() {
        let body = br#"{
          "id": "chatcmpl-123", "object": "chat.completion", "created": 1677652288,
          "model": "gpt-4o-mini-2024-07-18",
          "choices": [{ "index": 0, "finish_reason": "stop",
            "message": { "role": "assistant", "content": "{\"priority\":\"high\"}", "refusal": null } }],
          "usage": { "prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21 }
        }"#;
        let response = parse_response(body).unwrap();
        assert_eq!(response.text, r#"{"priority":"high"}"#);
        assert_eq!(
            response.usage,
            Usage {
                input_tokens: 9,
                output_tokens: 12
            }
        );
        assert_eq!(response.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    }

    #[test]
    fn a_missing_or_unreadable_usage_is_reported_as_missing() {
        let with = |usage: &str| {
            let body = format!(r#"{{"choices": [{{"message": {{"content": "hi"}}}}]{usage}}}"#);
            parse_response(body.as_bytes()).unwrap()
        };
        let none = with("");
        assert!(!none.usage_reported);
        assert_eq!(none.usage, Usage::default());
        for usage in [
            r#", "usage": null"#,
            r#", "usage": {"prompt_tokens": -1, "completion_tokens": 2}"#,
            r#", "usage": {"prompt_tokens": 1e30, "completion_tokens": 2}"#,
            r#", "usage": {"prompt_tokens": 184467440737095516160, "completion_tokens": 2}"#,
            r#", "usage": {"completion_tokens": 2}"#,
        ] {
            let answer = with(usage);
            assert!(!answer.usage_reported, "{usage}");
            assert_eq!(answer.text, "hi", "the answer is kept: {usage}");
        }
        let max = with(
            r#", "usage": {"prompt_tokens": 18446744073709551615, "completion_tokens": 18446744073709551615}"#,
        );
        assert!(max.usage_reported);
        assert_eq!(max.usage.input_tokens, u64::MAX);
    }

    #[test]
    fn an_answer_without_choices_or_content_is_invalid() {
        for body in [
            &br#"{"choices": []}"#[..],
            br#"{"choices": [{"message": {"role": "assistant", "content": null}}]}"#,
            br#"{"choices": [{"message": {"content": null, "refusal": "I cannot."}}]}"#,
            b"<html>",
        ] {
            assert!(matches!(
                parse_response(body),
                Err(AiError::InvalidResponse(_))
            ));
        }
    }
}
