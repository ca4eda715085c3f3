//! The HTTP sink: a templated request made once the AI answered (update a CRM
//! record, post to a chat channel), optionally only `when` a condition holds.
//!
//! Every request carries `webhook-id: msg_{message_id}_{pipeline}_{sink}` — the
//! same on every attempt and redelivery of one event, so a receiver can
//! deduplicate the rare repeat (a crash between its 2xx and our delivery marker)
//! — and `webhook-timestamp` (the attempt's time). With a `signing_secret` it is
//! signed by the Standard Webhooks scheme: `webhook-signature: v1,<base64
//! HMAC-SHA256 of "{id}.{timestamp}.{body}">`, so the receiver can check it with
//! any Standard Webhooks library (or hookfleet's own ingest).
//!
//! Without a `body` template the body is the result JSON the results exchange
//! gets. `content-type: application/json` is sent unless a header sets another.
//! Success is a 2xx — and, with `success_when`, an answer the expression
//! accepts: Slack's Web API and GraphQL APIs report errors inside an HTTP 200,
//! which would otherwise count as delivered. Anything else is a [`RequestError`]
//! classified by `outcome::classify`.

use crate::config::{HttpSinkConfig, OutboundConfig, UndefinedMode};
use hookfleet_common::signature::standard;
use minijinja::{Environment, UndefinedBehavior, Value, context};
use reqwest::header::{CONTENT_TYPE, HeaderValue};

use super::{Delivery, SinkError};
use crate::auth::TokenStore;
use crate::pipeline::PipelineError;
use crate::pipeline::request_template::{
    MAX_ERROR_BODY, RequestError, RequestParts, RequestTemplate,
};
use crate::pipeline::templates;

/// One configured HTTP sink, compiled.
pub struct HttpSink {
    name: String,
    request: RequestTemplate,
    /// Holds the `when` expression's source; compiled per event (microseconds)
    /// because a compiled expression borrows its environment.
    conditions: Environment<'static>,
    when: Option<String>,
    /// Checks the answer's body: chainable, so `response.data.x.userErrors`
    /// on an answer without `data` is false rather than an error.
    answers: Environment<'static>,
    success_when: Option<String>,
    signing_secret: Option<hookfleet_common::config::Secret>,
}

impl HttpSink {
    /// Compiles the sink configured at `field` (`worker.pipelines[0].sinks[1]`).
    pub fn build(
        field: &str,
        config: &HttpSinkConfig,
        undefined: UndefinedMode,
        outbound: &OutboundConfig,
        tokens: &TokenStore,
    ) -> Result<Self, PipelineError> {
        let request = RequestTemplate::compile(
            field,
            RequestParts {
                method: &config.method,
                url: &config.url,
                headers: &config.headers,
                body: config.body.as_deref(),
                auth: config.auth.as_ref(),
                timeout: config.timeout,
                follow_redirects: config.follow_redirects,
                outbound,
                tls: config.tls.as_ref(),
                tokens,
            },
            undefined,
        )?;
        let conditions = templates::environment(undefined);
        if let Some(when) = &config.when {
            conditions
                .compile_expression(when)
                .map_err(|source| PipelineError::Template {
                    field: format!("{field}.when"),
                    source,
                })?;
        }
        let answers = answer_environment();
        if let Some(success) = &config.success_when {
            answers
                .compile_expression(success)
                .map_err(|source| PipelineError::Template {
                    field: format!("{field}.success_when"),
                    source,
                })?;
        }
        Ok(Self {
            name: config.name.clone(),
            request,
            conditions,
            when: config.when.clone(),
            answers,
            success_when: config.success_when.clone(),
            signing_secret: config.signing_secret.clone(),
        })
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this event's result goes to this sink (its `when` holds).
    pub fn wanted(&self, delivery: &Delivery<'_>) -> Result<bool, SinkError> {
        let Some(when) = &self.when else {
            return Ok(true);
        };
        self.conditions
            .compile_expression(when)
            .and_then(|e| e.eval(delivery.context))
            .map(|value| value.is_true())
            .map_err(|source| {
                self.error(RequestError::Render {
                    template: "when".into(),
                    source,
                })
            })
    }

    /// Sends the request; returns once the endpoint answered 2xx (and the
    /// answer satisfied `success_when`).
    pub async fn deliver(&self, delivery: &Delivery<'_>) -> Result<(), SinkError> {
        let mut request = self
            .request
            .render(delivery.context)
            .map_err(|e| self.error(e))?;
        let body = match request.body.take() {
            Some(body) => body,
            None => serde_json::to_string(delivery.result).unwrap_or_default(),
        };
        let id = webhook_id(
            &delivery.result.message_id,
            &delivery.result.pipeline,
            &self.name,
        );
        let timestamp = unix_now();
        let headers = &mut request.headers;
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let value = |text: &str| header_value(text).map_err(|e| self.error(e));
        headers.insert(standard::ID_HEADER, value(&id)?);
        headers.insert(standard::TIMESTAMP_HEADER, value(&timestamp.to_string())?);
        if let Some(secret) = &self.signing_secret {
            // The secret was checked at start; a failure here cannot happen.
            let signature = standard::sign(secret.expose(), &id, timestamp, body.as_bytes())
                .map_err(|e| {
                    self.error(RequestError::Invalid {
                        what: "signing_secret".into(),
                        reason: e.to_string(),
                    })
                })?;
            headers.insert(standard::SIGNATURE_HEADER, value(&signature)?);
        }
        request.body = Some(body);
        let answer = self
            .request
            .send(request)
            .await
            .map_err(|e| self.error(e))?;
        self.accept(&answer).map_err(|e| self.error(e))
    }

    /// Whether a 2xx answer's body satisfies `success_when`.
    fn accept(&self, answer: &[u8]) -> Result<(), RequestError> {
        let Some(condition) = &self.success_when else {
            return Ok(());
        };
        let response: Option<serde_json::Value> = serde_json::from_slice(answer).ok();
        let verdict = self
            .answers
            .compile_expression(condition)
            .and_then(|e| e.eval(context! { response => Value::from_serialize(&response) }));
        let body = match verdict {
            Ok(value) if value.is_true() => return Ok(()),
            Ok(_) => crate::providers::truncate(&String::from_utf8_lossy(answer), MAX_ERROR_BODY),
            Err(e) => format!("cannot evaluate it: {e}"),
        };
        Err(RequestError::Declined {
            condition: condition.clone(),
            body,
        })
    }

    fn error(&self, error: RequestError) -> SinkError {
        SinkError::Http {
            sink: self.name.clone(),
            error,
        }
    }
}

/// Where `success_when` is evaluated: a missing field is false, not an error.
fn answer_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env
}

/// `msg_{message_id}_{pipeline}_{sink}`: stable across attempts and redeliveries.
pub fn webhook_id(message_id: &str, pipeline: &str, sink: &str) -> String {
    format!("msg_{message_id}_{pipeline}_{sink}")
}

fn header_value(text: &str) -> Result<HeaderValue, RequestError> {
    // Ids are ULIDs and config names ([A-Za-z0-9_-]); signatures are base64.
    HeaderValue::from_str(text).map_err(|e| RequestError::Invalid {
        what: "webhook headers".into(),
        reason: e.to_string(),
    })
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(success_when: &str) -> Result<HttpSink, PipelineError> {
        let config: HttpSinkConfig = serde_json::from_value(serde_json::json!({
            "name": "chat",
            "url": "https://chat.test/post",
            "success_when": success_when,
        }))
        .unwrap();
        HttpSink::build(
            "worker.pipelines[0].sinks[1]",
            &config,
            UndefinedMode::SemiStrict,
            &OutboundConfig::default(),
            Box::leak(Box::new(crate::auth::tokens::tests::store())),
        )
    }

    #[test]
    fn a_success_when_that_does_not_compile_fails_at_start_naming_the_field() {
        let Err(error) = sink("response.ok ==") else {
            panic!("compiled");
        };
        assert!(
            error
                .to_string()
                .contains("worker.pipelines[0].sinks[1].success_when"),
            "{error}"
        );
    }

    #[test]
    fn success_when_reads_the_answer_and_a_missing_field_is_false() {
        let slack = sink("response.ok").unwrap();
        assert!(slack.accept(br#"{"ok": true, "ts": "1"}"#).is_ok());
        for refused in [
            &br#"{"ok": false, "error": "channel_not_found"}"#[..],
            br#"{"error": "no ok field"}"#,
            b"<html>not json</html>",
            b"",
        ] {
            let error = slack.accept(refused).unwrap_err();
            assert!(matches!(error, RequestError::Declined { .. }), "{error}");
        }
        let shop = sink("response.data.tagsAdd and not response.data.tagsAdd.userErrors").unwrap();
        assert!(
            shop.accept(br#"{"data": {"tagsAdd": {"userErrors": []}}}"#)
                .is_ok()
        );
        assert!(shop.accept(br#"{"data": null}"#).is_err());
    }
}
