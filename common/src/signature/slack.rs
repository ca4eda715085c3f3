//! Slack: `X-Slack-Signature: v0=<hex>` with `X-Slack-Request-Timestamp`,
//! HMAC-SHA256 over `v0:{timestamp}:{body}`.
//!
//! The app's signing secret (its bytes) is the key; Slack sends one signature per
//! request. The timestamp is signed as the header's text, so it is hashed exactly as
//! received and parsed only for the window check (Slack recommends 5 minutes).
//! <https://docs.slack.dev/authentication/verifying-requests-from-slack/>

use http::HeaderMap;

use super::HmacAlgorithm;
use super::{SignatureError, decode_hex, header, parse_timestamp, tag, tag_len, verify_any};

/// The header carrying the signature (lower case).
pub const SIGNATURE_HEADER: &str = "x-slack-signature";
/// The header carrying the signed Unix timestamp (lower case).
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";

const ALGORITHM: HmacAlgorithm = HmacAlgorithm::Sha256;
const VERSION: &str = "v0";

/// The `X-Slack-Signature` value Slack would send for `body` at `timestamp` (which
/// goes in `X-Slack-Request-Timestamp`): `v0={hex}`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let mac = tag(
        ALGORITHM,
        secret.as_bytes(),
        &signed_content(&timestamp, body),
    );
    format!("{VERSION}={}", hex::encode(mac))
}

/// `v0:{timestamp}:{body}`, in parts.
fn signed_content<'a>(timestamp: &'a str, body: &'a [u8]) -> [&'a [u8]; 5] {
    [VERSION.as_bytes(), b":", timestamp.as_bytes(), b":", body]
}

/// Checks the headers against `keys`; returns the signed timestamp for the window check.
pub(super) fn verify(
    keys: &[Vec<u8>],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<i64, SignatureError> {
    let value = header(headers, SIGNATURE_HEADER)?;
    let timestamp = header(headers, TIMESTAMP_HEADER)?;
    let signature = value
        .strip_prefix(VERSION)
        .and_then(|rest| rest.strip_prefix('='))
        .ok_or_else(|| SignatureError::malformed(SIGNATURE_HEADER, "missing v0= prefix"))?;
    let signature = decode_hex(SIGNATURE_HEADER, signature, tag_len(ALGORITHM))?;
    let signed_at = parse_timestamp(TIMESTAMP_HEADER, timestamp)?;
    verify_any(
        ALGORITHM,
        keys,
        &signed_content(timestamp, body),
        &[signature],
    )?;
    Ok(signed_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::SchemeKind;
    use crate::signature::testing::{SIGNED_AT, at, headers, verifier};

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const OLD_SECRET: &str = "0d1f6a5e2c9b4a7d8e3f1c2b5a6d9e0f";
    const BODY: &[u8] = br#"{"type":"event_callback","event_id":"Ev1","event":{"type":"message"}}"#;

    fn check(
        secrets: &[&str],
        timestamp: &str,
        value: &str,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        verifier(SchemeKind::Slack, secrets).verify(
            &headers(&[(TIMESTAMP_HEADER, timestamp), (SIGNATURE_HEADER, value)]),
            body,
            at(now),
        )
    }

    fn signed_now(secret: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
        let ts = SIGNED_AT.to_string();
        check(&[SECRET], &ts, &sign(secret, SIGNED_AT, BODY), body, now)
    }

    #[test]
    fn slack_accepts_its_own_signature_within_the_window() {
        signed_now(SECRET, BODY, SIGNED_AT - 300).unwrap();
        signed_now(SECRET, BODY, SIGNED_AT + 300).unwrap();
    }

    #[test]
    fn slack_rejects_a_tampered_body() {
        let error = signed_now(SECRET, b"{}", SIGNED_AT).unwrap_err();
        assert!(matches!(error, SignatureError::Mismatch), "{error}");
        assert!(!error.is_malformed());
    }

    #[test]
    fn slack_rejects_a_wrong_secret() {
        let error = signed_now(OLD_SECRET, BODY, SIGNED_AT).unwrap_err();
        assert!(matches!(error, SignatureError::Mismatch), "{error}");
    }

    #[test]
    fn slack_rejects_a_timestamp_other_than_the_signed_one() {
        let value = sign(SECRET, SIGNED_AT, BODY);
        let error = check(
            &[SECRET],
            &(SIGNED_AT + 1).to_string(),
            &value,
            BODY,
            SIGNED_AT,
        );
        assert!(matches!(error, Err(SignatureError::Mismatch)), "{error:?}");
    }

    #[test]
    fn slack_accepts_the_second_secret_of_a_rotation() {
        let ts = SIGNED_AT.to_string();
        check(
            &[OLD_SECRET, SECRET],
            &ts,
            &sign(SECRET, SIGNED_AT, BODY),
            BODY,
            SIGNED_AT,
        )
        .unwrap();
    }

    #[test]
    fn slack_rejects_a_stale_timestamp() {
        let error = signed_now(SECRET, BODY, SIGNED_AT + 301).unwrap_err();
        assert!(
            matches!(error, SignatureError::TooOld { age_secs: 301 }),
            "{error}"
        );
        assert!(!error.is_malformed());
    }

    #[test]
    fn slack_rejects_a_timestamp_too_far_in_the_future() {
        let error = signed_now(SECRET, BODY, SIGNED_AT - 301).unwrap_err();
        assert!(
            matches!(error, SignatureError::TooNew { ahead_secs: 301 }),
            "{error}"
        );
    }

    #[test]
    fn slack_reports_missing_headers() {
        let value = sign(SECRET, SIGNED_AT, BODY);
        let ts = SIGNED_AT.to_string();
        let verifier = verifier(SchemeKind::Slack, &[SECRET]);
        for (present, missing) in [
            ((SIGNATURE_HEADER, value.as_str()), TIMESTAMP_HEADER),
            ((TIMESTAMP_HEADER, ts.as_str()), SIGNATURE_HEADER),
        ] {
            let error = verifier
                .verify(&headers(&[present]), BODY, at(SIGNED_AT))
                .unwrap_err();
            assert!(
                matches!(&error, SignatureError::MissingHeader(h) if h == missing),
                "{error}"
            );
            assert!(!error.is_malformed());
        }
    }

    #[test]
    fn slack_reports_malformed_headers() {
        let hex = "ab".repeat(32);
        let ts = SIGNED_AT.to_string();
        for (timestamp, value) in [
            (ts.as_str(), hex.clone()),
            (ts.as_str(), format!("v1={hex}")),
            (ts.as_str(), "v0=xyz".to_owned()),
            (ts.as_str(), "v0=abcd".to_owned()),
            ("soon", format!("v0={hex}")),
        ] {
            let error = check(&[SECRET], timestamp, &value, BODY, SIGNED_AT).unwrap_err();
            assert!(error.is_malformed(), "{timestamp} {value}: {error}");
        }
    }
}
