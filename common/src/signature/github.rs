//! GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 over the body.
//!
//! The secret's bytes are the key. There is no signed timestamp, so a captured
//! delivery verifies forever; deduplication on `X-GitHub-Delivery` is what stops a
//! replay from being processed twice. The legacy SHA-1 `X-Hub-Signature` header is
//! not accepted. <https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries>

use http::HeaderMap;

use super::HmacAlgorithm;
use super::{SignatureError, decode_hex, header, tag, tag_len, verify_any};

/// The header GitHub signs with (lower case).
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

const ALGORITHM: HmacAlgorithm = HmacAlgorithm::Sha256;
const PREFIX: &str = "sha256=";

/// The `X-Hub-Signature-256` value GitHub would send for `body`: `sha256={hex}`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    format!(
        "{PREFIX}{}",
        hex::encode(tag(ALGORITHM, secret.as_bytes(), &[body]))
    )
}

/// Checks the header against `keys`.
pub(super) fn verify(
    keys: &[Vec<u8>],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), SignatureError> {
    let value = header(headers, SIGNATURE_HEADER)?;
    let signature = value
        .strip_prefix(PREFIX)
        .ok_or_else(|| SignatureError::malformed(SIGNATURE_HEADER, "missing sha256= prefix"))?;
    let signature = decode_hex(SIGNATURE_HEADER, signature, tag_len(ALGORITHM))?;
    verify_any(ALGORITHM, keys, &[body], &[signature])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::SchemeKind;
    use crate::signature::testing::{at, headers, verifier};

    const SECRET: &str = "gh-test-secret-7Jd2kQ";
    const OLD_SECRET: &str = "gh-test-secret-old-R5t1";
    const BODY: &[u8] = br#"{"action":"opened","number":1}"#;

    fn check(secrets: &[&str], value: &str, body: &[u8]) -> Result<(), SignatureError> {
        // No timestamp: any `now` will do, even one far from when it was signed.
        verifier(SchemeKind::Github, secrets).verify(
            &headers(&[(SIGNATURE_HEADER, value)]),
            body,
            at(4_000_000_000),
        )
    }

    #[test]
    fn github_accepts_its_own_signature() {
        check(&[SECRET], &sign(SECRET, BODY), BODY).unwrap();
    }

    #[test]
    fn github_accepts_upper_case_hex() {
        let value = sign(SECRET, BODY);
        let upper = format!("sha256={}", value["sha256=".len()..].to_ascii_uppercase());
        check(&[SECRET], &upper, BODY).unwrap();
    }

    #[test]
    fn github_rejects_a_tampered_body() {
        let error = check(&[SECRET], &sign(SECRET, BODY), b"{}").unwrap_err();
        assert!(matches!(error, SignatureError::Mismatch), "{error}");
        assert!(!error.is_malformed());
    }

    #[test]
    fn github_rejects_a_wrong_secret() {
        let error = check(&[SECRET], &sign("not-the-secret", BODY), BODY).unwrap_err();
        assert!(matches!(error, SignatureError::Mismatch), "{error}");
    }

    #[test]
    fn github_accepts_the_second_secret_of_a_rotation() {
        check(&[OLD_SECRET, SECRET], &sign(SECRET, BODY), BODY).unwrap();
    }

    #[test]
    fn github_reports_a_missing_header() {
        let error = verifier(SchemeKind::Github, &[SECRET])
            .verify(&headers(&[("x-hub-signature", "sha1=00")]), BODY, at(0))
            .unwrap_err();
        assert!(matches!(&error, SignatureError::MissingHeader(h) if h == SIGNATURE_HEADER));
        assert!(!error.is_malformed());
    }

    #[test]
    fn github_reports_malformed_headers() {
        let hex = "ab".repeat(32);
        for value in [
            hex.clone(),
            format!("sha1={hex}"),
            format!("sha256={}", "zz".repeat(32)),
            "sha256=abcd".to_owned(),
        ] {
            let error = check(&[SECRET], &value, BODY).unwrap_err();
            assert!(error.is_malformed(), "{value}: {error}");
        }
    }
}
