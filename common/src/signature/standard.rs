//! Standard Webhooks (and Svix, which sends the same headers as `svix-*`):
//! `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64> [v1,<base64>…]`,
//! HMAC-SHA256 over `{id}.{timestamp}.{body}`.
//!
//! The secret is `whsec_` followed by the *base64* of the key: the prefix is dropped
//! and the rest decoded — unlike Stripe, whose `whsec_` string is the key as is. A
//! sender may list several space-separated signatures (one per active secret during a
//! rotation); any `v1` matching is enough, and other versions (`v1a`, asymmetric) are
//! skipped. The id and timestamp are hashed as the header text received.
//! The worker's HTTP sink signs its outbound requests with [`sign`].
//! <https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md>

use base64::Engine as _;
use http::HeaderMap;

use super::{
    BASE64, SignatureError, decode_base64, encode_base64, header, parse_timestamp, tag, tag_len,
    verify_any,
};
use super::{HmacAlgorithm, SchemeKind};

/// The message id header (lower case); part of the signed content.
pub const ID_HEADER: &str = "webhook-id";
/// The signed Unix timestamp header (lower case).
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The signature header (lower case).
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// Svix's names for the same three headers, accepted when `webhook-signature` is absent.
pub const SVIX_HEADERS: [&str; 3] = ["svix-id", "svix-timestamp", "svix-signature"];

const ALGORITHM: HmacAlgorithm = HmacAlgorithm::Sha256;
const SECRET_PREFIX: &str = "whsec_";

/// The `webhook-signature` value for `body` sent as message `msg_id` at `timestamp`
/// (the values of `webhook-id` and `webhook-timestamp`): `v1,{base64}`.
/// Fails when `secret` is not (`whsec_` followed by) non-empty base64.
pub fn sign(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SignatureError> {
    let key = super::key(SchemeKind::Standard, secret)
        .map_err(|reason| SignatureError::InvalidSecret { index: 0, reason })?;
    let timestamp = timestamp.to_string();
    let mac = tag(ALGORITHM, &key, &signed_content(msg_id, &timestamp, body));
    Ok(format!("v1,{}", encode_base64(&mac)))
}

/// The key bytes of a secret: `whsec_` (optional) dropped, the rest base64-decoded.
pub(super) fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    BASE64.decode(encoded).map_err(|_| {
        format!("a Standard Webhooks secret is base64 after the {SECRET_PREFIX} prefix")
    })
}

/// The id, timestamp and signature header names of a request: `webhook-*`, or
/// Svix's `svix-*` when `webhook-signature` is absent and `svix-signature` present.
/// The event id is read from the same id header the signature covers.
pub fn header_names(headers: &HeaderMap) -> [&'static str; 3] {
    if !headers.contains_key(SIGNATURE_HEADER) && headers.contains_key(SVIX_HEADERS[2]) {
        SVIX_HEADERS
    } else {
        [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER]
    }
}

/// `{id}.{timestamp}.{body}`, in parts.
fn signed_content<'a>(id: &'a str, timestamp: &'a str, body: &'a [u8]) -> [&'a [u8]; 5] {
    [id.as_bytes(), b".", timestamp.as_bytes(), b".", body]
}

/// Checks the headers against `keys`; returns the signed timestamp for the window check.
pub(super) fn verify(
    keys: &[Vec<u8>],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<i64, SignatureError> {
    let [id_header, timestamp_header, signature_header] = header_names(headers);
    let value = header(headers, signature_header)?;
    let id = header(headers, id_header)?;
    let timestamp = header(headers, timestamp_header)?;
    let mut signatures = Vec::new();
    for entry in value.split(' ').filter(|entry| !entry.is_empty()) {
        let (version, signature) = entry.split_once(',').ok_or_else(|| {
            SignatureError::malformed(signature_header, "an entry is not version,signature")
        })?;
        if version == "v1" {
            signatures.push(decode_base64(
                signature_header,
                signature,
                tag_len(ALGORITHM),
            )?);
        }
    }
    if signatures.is_empty() {
        return Err(SignatureError::malformed(
            signature_header,
            "no v1 signature",
        ));
    }
    let signed_at = parse_timestamp(timestamp_header, timestamp)?;
    verify_any(
        ALGORITHM,
        keys,
        &signed_content(id, timestamp, body),
        &signatures,
    )?;
    Ok(signed_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::signature::Verifier;
    use crate::signature::testing::{SIGNED_AT, at, headers, source, verifier};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const OLD_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
    const BODY: &[u8] = br#"{"type":"ticket.created","id":"t_1"}"#;

    fn request(id: &str, timestamp: &str, value: &str) -> HeaderMap {
        headers(&[
            (ID_HEADER, id),
            (TIMESTAMP_HEADER, timestamp),
            (SIGNATURE_HEADER, value),
        ])
    }

    fn check(secrets: &[&str], value: &str, body: &[u8], now: i64) -> Result<(), SignatureError> {
        verifier(SchemeKind::Standard, secrets).verify(
            &request(ID, &SIGNED_AT.to_string(), value),
            body,
            at(now),
        )
    }

    fn signature(secret: &str) -> String {
        sign(secret, ID, SIGNED_AT, BODY).unwrap()
    }

    #[test]
    fn standard_accepts_its_own_signature_within_the_window() {
        check(&[SECRET], &signature(SECRET), BODY, SIGNED_AT + 300).unwrap();
        check(&[SECRET], &signature(SECRET), BODY, SIGNED_AT - 300).unwrap();
    }

    #[test]
    fn standard_accepts_svix_header_names() {
        let svix = headers(&[
            ("svix-id", ID),
            ("svix-timestamp", &SIGNED_AT.to_string()),
            ("svix-signature", &signature(SECRET)),
        ]);
        verifier(SchemeKind::Standard, &[SECRET])
            .verify(&svix, BODY, at(SIGNED_AT))
            .unwrap();
    }

    #[test]
    fn the_svix_libraries_published_vector_verifies_with_svix_header_names() {
        let svix = headers(&[
            ("svix-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("svix-timestamp", "1614265330"),
            (
                "svix-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ]);
        assert_eq!(header_names(&svix), SVIX_HEADERS);
        verifier(SchemeKind::Standard, &[SECRET])
            .verify(&svix, br#"{"test": 2432232314}"#, at(1_614_265_330))
            .unwrap();
    }

    #[test]
    fn standard_accepts_any_of_several_signatures() {
        let value = format!("v1,{} v1a,c2lnbmVk  {}", "A".repeat(43), signature(SECRET));
        check(&[SECRET], &value, BODY, SIGNED_AT).unwrap();
    }

    #[test]
    fn standard_accepts_a_secret_without_the_prefix() {
        let bare = SECRET.strip_prefix("whsec_").unwrap();
        check(&[bare], &signature(SECRET), BODY, SIGNED_AT).unwrap();
    }

    #[test]
    fn standard_rejects_a_tampered_body() {
        let error = check(&[SECRET], &signature(SECRET), b"{}", SIGNED_AT).unwrap_err();
        assert!(matches!(error, SignatureError::Mismatch), "{error}");
        assert!(!error.is_malformed());
    }

    #[test]
    fn standard_rejects_a_different_message_id() {
        let error = verifier(SchemeKind::Standard, &[SECRET])
            .verify(
                &request("msg_other", &SIGNED_AT.to_string(), &signature(SECRET)),
                BODY,
                at(SIGNED_AT),
            )
            .unwrap_err();
        assert!(matches!(error, SignatureError::Mismatch), "{error}");
    }

    #[test]
    fn standard_rejects_a_wrong_secret() {
        let error = check(&[SECRET], &signature(OLD_SECRET), BODY, SIGNED_AT).unwrap_err();
        assert!(matches!(error, SignatureError::Mismatch), "{error}");
    }

    #[test]
    fn standard_key_is_the_decoded_secret_not_its_text() {
        // Signing with the secret's text as the key (Stripe's convention) must not verify.
        let mac = tag(
            ALGORITHM,
            SECRET.as_bytes(),
            &signed_content(ID, &SIGNED_AT.to_string(), BODY),
        );
        let value = format!("v1,{}", encode_base64(&mac));
        let error = check(&[SECRET], &value, BODY, SIGNED_AT).unwrap_err();
        assert!(matches!(error, SignatureError::Mismatch), "{error}");
    }

    #[test]
    fn standard_accepts_the_second_secret_of_a_rotation() {
        check(&[OLD_SECRET, SECRET], &signature(SECRET), BODY, SIGNED_AT).unwrap();
    }

    #[test]
    fn standard_rejects_a_stale_timestamp() {
        let error = check(&[SECRET], &signature(SECRET), BODY, SIGNED_AT + 301).unwrap_err();
        assert!(
            matches!(error, SignatureError::TooOld { age_secs: 301 }),
            "{error}"
        );
        assert!(!error.is_malformed());
    }

    #[test]
    fn standard_rejects_a_timestamp_too_far_in_the_future() {
        let error = check(&[SECRET], &signature(SECRET), BODY, SIGNED_AT - 301).unwrap_err();
        assert!(
            matches!(error, SignatureError::TooNew { ahead_secs: 301 }),
            "{error}"
        );
    }

    #[test]
    fn standard_reports_missing_headers() {
        let verifier = verifier(SchemeKind::Standard, &[SECRET]);
        let all = request(ID, &SIGNED_AT.to_string(), &signature(SECRET));
        for missing in [ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER] {
            let mut partial = all.clone();
            partial.remove(missing);
            let error = verifier.verify(&partial, BODY, at(SIGNED_AT)).unwrap_err();
            assert!(
                matches!(&error, SignatureError::MissingHeader(h) if h == missing),
                "{error}"
            );
            assert!(!error.is_malformed());
        }
    }

    #[test]
    fn standard_reports_malformed_headers() {
        let ours = signature(SECRET);
        let ts = SIGNED_AT.to_string();
        for (timestamp, value) in [
            (ts.as_str(), ours.trim_start_matches("v1,").to_owned()),
            (ts.as_str(), ours.replacen("v1,", "v2,", 1)),
            (ts.as_str(), "v1,***".to_owned()),
            (ts.as_str(), "v1,AAAA".to_owned()),
            ("1700000000.5", ours.clone()),
        ] {
            let error = verifier(SchemeKind::Standard, &[SECRET])
                .verify(&request(ID, timestamp, &value), BODY, at(SIGNED_AT))
                .unwrap_err();
            assert!(error.is_malformed(), "{timestamp} {value}: {error}");
        }
    }

    #[test]
    fn a_secret_that_is_not_base64_is_refused_with_its_index() {
        let mut config = source(SchemeKind::Standard, &[SECRET], None);
        config.secrets.push(Secret::new("whsec_not*base64"));
        let error = Verifier::new(&config).unwrap_err();
        assert!(
            matches!(error, SignatureError::InvalidSecret { index: 1, .. }),
            "{error}"
        );
        assert!(!error.to_string().contains("not*base64"), "{error}");
        assert!(matches!(
            sign("whsec_not*base64", ID, SIGNED_AT, BODY),
            Err(SignatureError::InvalidSecret { .. })
        ));
    }

    #[test]
    fn an_empty_key_is_refused() {
        let error = Verifier::new(&source(SchemeKind::Standard, &["whsec_"], None)).unwrap_err();
        assert!(
            matches!(error, SignatureError::InvalidSecret { index: 0, .. }),
            "{error}"
        );
    }
}
