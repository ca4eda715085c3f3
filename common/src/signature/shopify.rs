//! Shopify: `X-Shopify-Hmac-Sha256: <base64>`, HMAC-SHA256 over the body.
//!
//! The app's client secret (its bytes) is the key. Base64, not hex — the usual
//! mistake when porting a GitHub verifier. There is no signed timestamp; duplicates
//! are caught by deduplication on `X-Shopify-Webhook-Id`.
//! <https://shopify.dev/docs/apps/build/webhooks/subscribe/https#step-2-validate-the-origin-of-your-webhook-to-ensure-its-coming-from-shopify>

use http::HeaderMap;

use super::HmacAlgorithm;
use super::{SignatureError, decode_base64, encode_base64, header, tag, tag_len, verify_any};

/// The header Shopify signs with (lower case).
pub const SIGNATURE_HEADER: &str = "x-shopify-hmac-sha256";

const ALGORITHM: HmacAlgorithm = HmacAlgorithm::Sha256;

/// The `X-Shopify-Hmac-Sha256` value Shopify would send for `body` (padded base64).
pub fn sign(secret: &str, body: &[u8]) -> String {
    encode_base64(&tag(ALGORITHM, secret.as_bytes(), &[body]))
}

/// Checks the header against `keys`.
pub(super) fn verify(
    keys: &[Vec<u8>],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), SignatureError> {
    let value = header(headers, SIGNATURE_HEADER)?;
    let signature = decode_base64(SIGNATURE_HEADER, value, tag_len(ALGORITHM))?;
    verify_any(ALGORITHM, keys, &[body], &[signature])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::SchemeKind;
    use crate::signature::testing::{at, headers, verifier};

    const SECRET: &str = "shpss_test_c2F5LWhlbGxv";
    const OLD_SECRET: &str = "shpss_test_old_b2xkLXNl";
    const BODY: &[u8] = br#"{"id":820982911946154508,"email":"jon@example.com"}"#;

    fn check(secrets: &[&str], value: &str, body: &[u8]) -> Result<(), SignatureError> {
        verifier(SchemeKind::Shopify, secrets).verify(
            &headers(&[(SIGNATURE_HEADER, value)]),
            body,
            at(0),
        )
    }

    #[test]
    fn shopify_accepts_its_own_signature_padded_or_not() {
        let value = sign(SECRET, BODY);
        check(&[SECRET], &value, BODY).unwrap();
        check(&[SECRET], value.trim_end_matches('='), BODY).unwrap();
    }

    #[test]
    fn shopify_rejects_a_tampered_body() {
        let error = check(&[SECRET], &sign(SECRET, BODY), b"{}").unwrap_err();
        assert!(matches!(error, SignatureError::Mismatch), "{error}");
        assert!(!error.is_malformed());
    }

    #[test]
    fn shopify_rejects_a_wrong_secret() {
        let error = check(&[SECRET], &sign("shpss_other", BODY), BODY).unwrap_err();
        assert!(matches!(error, SignatureError::Mismatch), "{error}");
    }

    #[test]
    fn shopify_accepts_the_second_secret_of_a_rotation() {
        check(&[OLD_SECRET, SECRET], &sign(SECRET, BODY), BODY).unwrap();
    }

    #[test]
    fn shopify_reports_a_missing_header() {
        let error = verifier(SchemeKind::Shopify, &[SECRET])
            .verify(&HeaderMap::new(), BODY, at(0))
            .unwrap_err();
        assert!(matches!(&error, SignatureError::MissingHeader(h) if h == SIGNATURE_HEADER));
        assert!(!error.is_malformed());
    }

    #[test]
    fn shopify_reports_malformed_headers() {
        // Hex where base64 belongs decodes to the wrong length; the rest is not base64.
        let hex = hex::encode(tag(ALGORITHM, SECRET.as_bytes(), &[BODY]));
        for value in [hex.as_str(), "not base64!", "AAAA"] {
            let error = check(&[SECRET], value, BODY).unwrap_err();
            assert!(error.is_malformed(), "{value}: {error}");
        }
    }
}
