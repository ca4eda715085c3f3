//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, HMAC-SHA256 over `{t}.{body}`.
//!
//! The `whsec_…` signing secret is the HMAC key exactly as written (its bytes, prefix
//! included); it is *not* base64-decoded, unlike a Standard Webhooks `whsec_` secret.
//! During a secret rotation Stripe sends one `v1` per active secret, so any `v1`
//! matching is enough. `v0` (a legacy test-mode scheme) and unknown schemes are
//! ignored. <https://docs.stripe.com/webhooks#verify-manually>

use http::HeaderMap;

use super::HmacAlgorithm;
use super::{SignatureError, decode_hex, header, parse_timestamp, tag, tag_len, verify_any};

/// The header Stripe signs with (lower case, as [`HeaderMap`] stores names).
pub const SIGNATURE_HEADER: &str = "stripe-signature";

const ALGORITHM: HmacAlgorithm = HmacAlgorithm::Sha256;

/// The `Stripe-Signature` value Stripe would send for `body` at `timestamp`:
/// `t={timestamp},v1={hex}`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let mac = tag(
        ALGORITHM,
        secret.as_bytes(),
        &[timestamp.as_bytes(), b".", body],
    );
    format!("t={timestamp},v1={}", hex::encode(mac))
}

/// Checks the header against `keys`; returns the signed timestamp for the window check.
pub(super) fn verify(
    keys: &[Vec<u8>],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<i64, SignatureError> {
    let value = header(headers, SIGNATURE_HEADER)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for (key, item) in value
        .split(',')
        .filter_map(|item| item.trim().split_once('='))
    {
        match key {
            "t" if timestamp.is_none() => timestamp = Some(item),
            "t" => return Err(malformed("more than one t=")),
            "v1" => signatures.push(decode_hex(SIGNATURE_HEADER, item, tag_len(ALGORITHM))?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or_else(|| malformed("no t= timestamp"))?;
    if signatures.is_empty() {
        return Err(malformed("no v1= signature"));
    }
    let signed_at = parse_timestamp(SIGNATURE_HEADER, timestamp)?;
    verify_any(
        ALGORITHM,
        keys,
        &[timestamp.as_bytes(), b".", body],
        &signatures,
    )?;
    Ok(signed_at)
}

fn malformed(reason: &str) -> SignatureError {
    SignatureError::malformed(SIGNATURE_HEADER, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::SchemeKind;
    use crate::signature::testing::{SIGNED_AT, at, headers, verifier};

    const SECRET: &str = "whsec_test_9KQ2mW7pXv3LrT8sYb4N";
    const OLD_SECRET: &str = "whsec_test_old_Hq5Zc1Fj6Ue0Ga2D";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"invoice.paid"}"#;

    fn check(secrets: &[&str], value: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
        verifier(SchemeKind::Stripe, secrets).verify(
            &headers(&[(SIGNATURE_HEADER, value)]),
            body,
            at(now),
        )
    }

    #[test]
    fn stripe_accepts_its_own_signature_within_the_window() {
        check(
            &[SECRET],
            &sign(SECRET, SIGNED_AT, BODY),
            BODY,
            SIGNED_AT + 299,
        )
        .unwrap();
    }

    #[test]
    fn stripe_rejects_a_tampered_body() {
        let value = sign(SECRET, SIGNED_AT, BODY);
        let error = check(&[SECRET], &value, b"{\"id\":\"evt_2\"}", SIGNED_AT).unwrap_err();
        assert!(matches!(error, SignatureError::Mismatch), "{error}");
        assert!(!error.is_malformed());
    }

    #[test]
    fn stripe_rejects_a_wrong_secret() {
        let value = sign("whsec_someone_else", SIGNED_AT, BODY);
        let error = check(&[SECRET], &value, BODY, SIGNED_AT).unwrap_err();
        assert!(matches!(error, SignatureError::Mismatch), "{error}");
    }

    #[test]
    fn stripe_accepts_the_second_secret_of_a_rotation() {
        check(
            &[OLD_SECRET, SECRET],
            &sign(SECRET, SIGNED_AT, BODY),
            BODY,
            SIGNED_AT,
        )
        .unwrap();
    }

    #[test]
    fn stripe_accepts_any_v1_and_ignores_v0_and_unknown_schemes() {
        let ours = sign(SECRET, SIGNED_AT, BODY);
        let v1 = ours.split_once(",v1=").unwrap().1;
        let value = format!(
            "t={SIGNED_AT}, v1={}, v0={v1}, v9=whatever, v1={v1}",
            "00".repeat(32)
        );
        check(&[SECRET], &value, BODY, SIGNED_AT).unwrap();
    }

    #[test]
    fn stripe_rejects_a_stale_timestamp() {
        let value = sign(SECRET, SIGNED_AT, BODY);
        let error = check(&[SECRET], &value, BODY, SIGNED_AT + 301).unwrap_err();
        assert!(
            matches!(error, SignatureError::TooOld { age_secs: 301 }),
            "{error}"
        );
        assert!(!error.is_malformed());
    }

    #[test]
    fn stripe_rejects_a_timestamp_too_far_in_the_future() {
        let value = sign(SECRET, SIGNED_AT, BODY);
        let error = check(&[SECRET], &value, BODY, SIGNED_AT - 301).unwrap_err();
        assert!(
            matches!(error, SignatureError::TooNew { ahead_secs: 301 }),
            "{error}"
        );
    }

    #[test]
    fn stripe_reports_a_missing_header() {
        let error = verifier(SchemeKind::Stripe, &[SECRET])
            .verify(&HeaderMap::new(), BODY, at(SIGNED_AT))
            .unwrap_err();
        assert!(matches!(&error, SignatureError::MissingHeader(h) if h == SIGNATURE_HEADER));
        assert!(!error.is_malformed());
    }

    #[test]
    fn stripe_reports_malformed_headers() {
        let v1 = "ab".repeat(32);
        for value in [
            format!("v1={v1}"),
            format!("t={SIGNED_AT}"),
            format!("t={SIGNED_AT},v0={v1}"),
            format!("t=yesterday,v1={v1}"),
            format!("t={SIGNED_AT},t={SIGNED_AT},v1={v1}"),
            format!("t={SIGNED_AT},v1=not-hex"),
            format!("t={SIGNED_AT},v1=abcd"),
            "garbage".to_owned(),
        ] {
            let error = check(&[SECRET], &value, BODY, SIGNED_AT).unwrap_err();
            assert!(error.is_malformed(), "{value}: {error}");
        }
    }

    #[test]
    fn stripe_errors_do_not_reveal_the_secret_or_expected_signature() {
        let expected = sign(SECRET, SIGNED_AT, BODY);
        let expected_hex = expected.split_once("v1=").unwrap().1;
        let tampered = sign(SECRET, SIGNED_AT, b"other");
        let error = check(&[SECRET], &tampered, BODY, SIGNED_AT).unwrap_err();
        for shown in [error.to_string(), format!("{error:?}")] {
            assert!(
                !shown.contains(SECRET) && !shown.contains(expected_hex),
                "{shown}"
            );
        }
    }
}
