//! The generic scheme, for senders with no named scheme: one header holding an
//! HMAC (SHA-256 or SHA-512) of the body, hex or base64, after an optional prefix
//! such as `sha256=`, all described by the source's [`HmacParams`].
//!
//! The secret's bytes are the key. Hex is accepted in either case, base64 padded or
//! not, and the prefix is matched ignoring ASCII case. No timestamp is signed, so
//! replays are stopped only by deduplication.

use http::HeaderMap;

use super::{HmacParams, SignatureEncoding};
use super::{
    SignatureError, decode_base64, decode_hex, encode_base64, header, tag, tag_len, verify_any,
};

/// The header value a sender configured with `params` would send for `body`
/// (`prefix` followed by lower-case hex or padded base64).
pub fn sign(params: &HmacParams, secret: &str, body: &[u8]) -> String {
    let mac = tag(params.algorithm, secret.as_bytes(), &[body]);
    let encoded = match params.encoding {
        SignatureEncoding::Hex => hex::encode(mac),
        SignatureEncoding::Base64 => encode_base64(&mac),
    };
    format!("{}{encoded}", params.prefix)
}

/// Checks the configured header against `keys`.
pub(super) fn verify(
    params: &HmacParams,
    keys: &[Vec<u8>],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), SignatureError> {
    let name = params.header.as_str();
    let value = header(headers, name)?;
    let signature = strip_prefix_ignoring_case(value, &params.prefix).ok_or_else(|| {
        SignatureError::malformed(name, format!("missing {:?} prefix", params.prefix))
    })?;
    let len = tag_len(params.algorithm);
    let signature = match params.encoding {
        SignatureEncoding::Hex => decode_hex(name, signature, len)?,
        SignatureEncoding::Base64 => decode_base64(name, signature, len)?,
    };
    verify_any(params.algorithm, keys, &[body], &[signature])
}

fn strip_prefix_ignoring_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::HmacAlgorithm;
    use crate::signature::testing::{at, headers, hmac_verifier};

    const SECRET: &str = "hmac-test-secret-4Vb9";
    const OLD_SECRET: &str = "hmac-test-secret-old-Z2c7";
    const BODY: &[u8] = br#"{"event":"order.paid","id":"o_1"}"#;

    fn params(algorithm: HmacAlgorithm, encoding: SignatureEncoding, prefix: &str) -> HmacParams {
        HmacParams {
            header: "X-Signature".into(),
            algorithm,
            encoding,
            prefix: prefix.into(),
        }
    }

    fn sha256_hex() -> HmacParams {
        params(HmacAlgorithm::Sha256, SignatureEncoding::Hex, "sha256=")
    }

    fn check(
        params: &HmacParams,
        secrets: &[&str],
        value: &str,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        hmac_verifier(params.clone(), secrets).verify(
            &headers(&[("x-signature", value)]),
            body,
            at(0),
        )
    }

    #[test]
    fn hmac_accepts_every_algorithm_and_encoding() {
        for algorithm in [HmacAlgorithm::Sha256, HmacAlgorithm::Sha512] {
            for encoding in [SignatureEncoding::Hex, SignatureEncoding::Base64] {
                for prefix in ["", "sha=", "v1:"] {
                    let p = params(algorithm, encoding, prefix);
                    check(&p, &[SECRET], &sign(&p, SECRET, BODY), BODY).unwrap();
                }
            }
        }
    }

    #[test]
    fn hmac_accepts_any_case_for_hex_and_prefix() {
        let p = sha256_hex();
        check(
            &p,
            &[SECRET],
            &sign(&p, SECRET, BODY).to_ascii_uppercase(),
            BODY,
        )
        .unwrap();
    }

    #[test]
    fn hmac_rejects_a_tampered_body() {
        let p = sha256_hex();
        let error = check(&p, &[SECRET], &sign(&p, SECRET, BODY), b"{}").unwrap_err();
        assert!(matches!(error, SignatureError::Mismatch), "{error}");
        assert!(!error.is_malformed());
    }

    #[test]
    fn hmac_rejects_a_wrong_secret() {
        let p = sha256_hex();
        let error = check(&p, &[SECRET], &sign(&p, "other", BODY), BODY).unwrap_err();
        assert!(matches!(error, SignatureError::Mismatch), "{error}");
    }

    #[test]
    fn hmac_rejects_a_signature_made_with_the_other_algorithm() {
        let sha512 = params(HmacAlgorithm::Sha512, SignatureEncoding::Hex, "sha256=");
        let error =
            check(&sha256_hex(), &[SECRET], &sign(&sha512, SECRET, BODY), BODY).unwrap_err();
        assert!(
            error.is_malformed(),
            "a 64-byte signature where 32 belong: {error}"
        );
    }

    #[test]
    fn hmac_accepts_the_second_secret_of_a_rotation() {
        let p = sha256_hex();
        check(&p, &[OLD_SECRET, SECRET], &sign(&p, SECRET, BODY), BODY).unwrap();
    }

    #[test]
    fn hmac_reports_a_missing_header() {
        let error = hmac_verifier(sha256_hex(), &[SECRET])
            .verify(&headers(&[("x-other", "sha256=00")]), BODY, at(0))
            .unwrap_err();
        assert!(
            matches!(&error, SignatureError::MissingHeader(h) if h == "x-signature"),
            "{error}"
        );
        assert!(!error.is_malformed());
    }

    #[test]
    fn hmac_reports_malformed_headers() {
        let p = sha256_hex();
        let hex = "ab".repeat(32);
        for value in [
            hex.clone(),
            format!("sha1={hex}"),
            format!("sha256={}", "g".repeat(64)),
            "sha256=ab".into(),
        ] {
            let error = check(&p, &[SECRET], &value, BODY).unwrap_err();
            assert!(error.is_malformed(), "{value}: {error}");
        }
        let b64 = params(HmacAlgorithm::Sha512, SignatureEncoding::Base64, "");
        for value in ["***", "AAAA"] {
            let error = check(&b64, &[SECRET], value, BODY).unwrap_err();
            assert!(error.is_malformed(), "{value}: {error}");
        }
    }
}
