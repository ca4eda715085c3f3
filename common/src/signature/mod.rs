//! Webhook signature schemes: proving, at the edge, that a request came from its provider.
//!
//! Ingest builds one [`Verifier`] per source at start — secrets are decoded then, so
//! a bad secret stops the service instead of failing every request — and calls
//! [`Verifier::verify`] before anything else reads the body. Each scheme lives in its
//! own module next to its `sign` function, which tests, `loadgen` and the worker's
//! HTTP sink (Standard Webhooks) use to sign the way the provider does.
//!
//! Invariants:
//! - Signatures are compared in constant time ([`subtle`]).
//! - Any configured secret verifying is success (rotation), and so is any of the
//!   several signatures Stripe and Standard Webhooks put in one header.
//! - The signature is checked before the timestamp, so [`SignatureError::TooOld`] and
//!   [`SignatureError::TooNew`] always describe a genuine request outside the window
//!   (a replay, or clock skew), never a forgery.
//! - Errors name the header and what is wrong with it, never a secret, a key or the
//!   expected signature. [`Verifier`]'s `Debug` shows how many secrets it has, not them.
//!
//! Not here: event ids, Slack's `url_verification` echo and body limits (ingest).

mod config;
pub mod github;
pub mod hmac;
pub mod shopify;
pub mod slack;
pub mod standard;
pub mod stripe;

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// `::hmac` is the crate; `hmac` alone would be our generic-scheme module above.
use ::hmac::digest::block_api::EagerHash;
use ::hmac::{Hmac, KeyInit, Mac};
use base64::Engine;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use http::HeaderMap;
use subtle::ConstantTimeEq;

pub use config::{HmacAlgorithm, HmacParams, SchemeConfig, SchemeKind, SignatureEncoding};

/// Why a request's signature was not accepted, or a source's secrets cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// A header the scheme needs is absent (401).
    #[error("missing header {0}")]
    MissingHeader(String),
    /// A signature header is present but cannot be parsed (400).
    #[error("malformed header {header}: {reason}")]
    MalformedHeader {
        /// The header, in lower case.
        header: String,
        /// What is wrong with it; never the expected value.
        reason: String,
    },
    /// No configured secret produced any of the request's signatures (401).
    #[error("signature does not match")]
    Mismatch,
    /// The signed timestamp is further in the past than the tolerance (401).
    #[error("signed timestamp is {age_secs}s old, outside the tolerance")]
    TooOld {
        /// How old it is.
        age_secs: u64,
    },
    /// The signed timestamp is further in the future than the tolerance (401).
    #[error("signed timestamp is {ahead_secs}s in the future, outside the tolerance")]
    TooNew {
        /// How far ahead of our clock it is.
        ahead_secs: u64,
    },
    /// A configured secret cannot be used as a key (config time only).
    #[error("secret #{index} is invalid: {reason}")]
    InvalidSecret {
        /// Its position in the source's `secrets`, from 0.
        index: usize,
        /// Why; never the value.
        reason: String,
    },
    /// The source's settings cannot make a verifier (config time only; config
    /// validation catches these first).
    #[error("invalid signature settings: {0}")]
    InvalidConfig(&'static str),
}

impl SignatureError {
    /// True when the request is malformed (ingest answers 400) rather than
    /// unauthenticated (401).
    pub fn is_malformed(&self) -> bool {
        matches!(self, Self::MalformedHeader { .. })
    }

    fn malformed(header: &str, reason: impl Into<String>) -> Self {
        Self::MalformedHeader {
            header: header.to_ascii_lowercase(),
            reason: reason.into(),
        }
    }
}

/// The signature check of one source: its scheme, its decoded keys and its window.
#[derive(Clone)]
pub struct Verifier {
    /// The scheme, with the generic scheme's parameters.
    scheme: Scheme,
    /// The key bytes of each configured secret, in config order.
    keys: Vec<Vec<u8>>,
    /// How far a signed timestamp may be from `now`, either way.
    tolerance: Duration,
}

#[derive(Debug, Clone)]
enum Scheme {
    Stripe,
    Github,
    Shopify,
    Slack,
    Standard,
    Hmac(HmacParams),
}

impl Verifier {
    /// Builds the verifier of a source. Fails for a secret that cannot be used as a
    /// key (empty, or a Standard Webhooks secret that is not base64), naming its index.
    pub fn new(source: &SchemeConfig) -> Result<Self, SignatureError> {
        let scheme = match source.scheme {
            SchemeKind::Stripe => Scheme::Stripe,
            SchemeKind::Github => Scheme::Github,
            SchemeKind::Shopify => Scheme::Shopify,
            SchemeKind::Slack => Scheme::Slack,
            SchemeKind::Standard => Scheme::Standard,
            SchemeKind::Hmac => Scheme::Hmac(source.hmac.clone().ok_or(
                SignatureError::InvalidConfig("scheme \"hmac\" needs an `hmac` table"),
            )?),
        };
        if source.secrets.is_empty() {
            return Err(SignatureError::InvalidConfig(
                "at least one secret is required",
            ));
        }
        let keys = source
            .secrets
            .iter()
            .enumerate()
            .map(|(index, secret)| {
                key(source.scheme, secret.expose())
                    .map_err(|reason| SignatureError::InvalidSecret { index, reason })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            scheme,
            keys,
            tolerance: source.tolerance,
        })
    }

    /// Verifies a request's signature, then (for schemes that sign one) that its
    /// timestamp is within the tolerance of `now`.
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let keys = &self.keys;
        let signed_at = match &self.scheme {
            Scheme::Stripe => Some(stripe::verify(keys, headers, body)?),
            Scheme::Slack => Some(slack::verify(keys, headers, body)?),
            Scheme::Standard => Some(standard::verify(keys, headers, body)?),
            Scheme::Github => github::verify(keys, headers, body).map(|()| None)?,
            Scheme::Shopify => shopify::verify(keys, headers, body).map(|()| None)?,
            Scheme::Hmac(params) => hmac::verify(params, keys, headers, body).map(|()| None)?,
        };
        match signed_at {
            Some(timestamp) => check_window(timestamp, now, self.tolerance),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme)
            .field("secrets", &self.keys.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

/// The HMAC key of a secret: its bytes, except Standard Webhooks' (base64-decoded).
/// Never empty; the error says why, without the value.
fn key(scheme: SchemeKind, secret: &str) -> Result<Vec<u8>, String> {
    let key = match scheme {
        SchemeKind::Standard => standard::decode_secret(secret)?,
        _ => secret.as_bytes().to_vec(),
    };
    if key.is_empty() {
        return Err("it is empty".to_owned());
    }
    Ok(key)
}

/// `TooOld`/`TooNew` when `timestamp` (Unix seconds) is more than `tolerance` from `now`.
fn check_window(
    timestamp: i64,
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let now = match now.duration_since(UNIX_EPOCH) {
        Ok(since) => i128::from(since.as_secs()),
        Err(before) => -i128::from(before.duration().as_secs()),
    };
    // i128: a hostile timestamp near i64::MIN or MAX cannot overflow the difference.
    let age = now - i128::from(timestamp);
    let tolerance = i128::from(tolerance.as_secs());
    let secs = |d: i128| u64::try_from(d).unwrap_or(u64::MAX);
    if age > tolerance {
        Err(SignatureError::TooOld {
            age_secs: secs(age),
        })
    } else if -age > tolerance {
        Err(SignatureError::TooNew {
            ahead_secs: secs(-age),
        })
    } else {
        Ok(())
    }
}

/// A header's value as text; `MissingHeader` when absent.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, SignatureError> {
    let value = headers
        .get(name)
        .ok_or_else(|| SignatureError::MissingHeader(name.to_ascii_lowercase()))?;
    value
        .to_str()
        .map(str::trim)
        .map_err(|_| SignatureError::malformed(name, "not visible ASCII"))
}

/// A signed Unix timestamp in whole seconds.
fn parse_timestamp(header: &str, text: &str) -> Result<i64, SignatureError> {
    text.parse()
        .map_err(|_| SignatureError::malformed(header, "timestamp is not whole Unix seconds"))
}

/// The HMAC of the concatenated `parts` under `key`.
fn tag(algorithm: HmacAlgorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match algorithm {
        HmacAlgorithm::Sha256 => tag_with::<sha2::Sha256>(key, parts),
        HmacAlgorithm::Sha512 => tag_with::<sha2::Sha512>(key, parts),
    }
}

fn tag_with<D: EagerHash>(key: &[u8], parts: &[&[u8]]) -> Vec<u8>
where
    Hmac<D>: KeyInit + Mac,
{
    // HMAC takes keys of any length (RFC 2104), so this never fails; were it to, an
    // empty tag matches no signature (every candidate's length is checked first).
    let Ok(mut mac) = <Hmac<D> as KeyInit>::new_from_slice(key) else {
        return Vec::new();
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The output length of `algorithm`, in bytes.
fn tag_len(algorithm: HmacAlgorithm) -> usize {
    match algorithm {
        HmacAlgorithm::Sha256 => 32,
        HmacAlgorithm::Sha512 => 64,
    }
}

/// `Ok` when the HMAC of `parts` under any key equals any candidate signature.
fn verify_any(
    algorithm: HmacAlgorithm,
    keys: &[Vec<u8>],
    parts: &[&[u8]],
    candidates: &[Vec<u8>],
) -> Result<(), SignatureError> {
    for key in keys {
        let expected = tag(algorithm, key, parts);
        if candidates
            .iter()
            .any(|candidate| bool::from(expected.as_slice().ct_eq(candidate)))
        {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// A hex signature (either case) of exactly `len` bytes.
fn decode_hex(header: &str, text: &str, len: usize) -> Result<Vec<u8>, SignatureError> {
    let bytes = hex::decode(text)
        .map_err(|_| SignatureError::malformed(header, "signature is not hexadecimal"))?;
    if bytes.len() != len {
        return Err(SignatureError::malformed(
            header,
            format!("signature must be {} hex digits", len * 2),
        ));
    }
    Ok(bytes)
}

/// Standard base64, padded or not: senders differ, and the padding carries nothing.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A base64 signature of exactly `len` bytes.
fn decode_base64(header: &str, text: &str, len: usize) -> Result<Vec<u8>, SignatureError> {
    let bytes = BASE64
        .decode(text)
        .map_err(|_| SignatureError::malformed(header, "signature is not base64"))?;
    if bytes.len() != len {
        return Err(SignatureError::malformed(
            header,
            format!("signature must encode {len} bytes"),
        ));
    }
    Ok(bytes)
}

/// Base64 as senders write it: standard alphabet, padded.
fn encode_base64(bytes: &[u8]) -> String {
    general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod testing {
    //! Builders shared by the schemes' unit tests.

    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use http::{HeaderMap, HeaderName, HeaderValue};

    use super::Verifier;
    use super::{HmacParams, SchemeConfig, SchemeKind};
    use crate::config::Secret;

    /// The time requests are signed at in tests.
    pub const SIGNED_AT: i64 = 1_700_000_000;

    /// A verifier for `scheme` with `secrets` and the default 300 s tolerance.
    pub fn verifier(scheme: SchemeKind, secrets: &[&str]) -> Verifier {
        Verifier::new(&source(scheme, secrets, None)).expect("valid test config")
    }

    /// A generic-scheme verifier.
    pub fn hmac_verifier(params: HmacParams, secrets: &[&str]) -> Verifier {
        Verifier::new(&source(SchemeKind::Hmac, secrets, Some(params))).expect("valid test config")
    }

    /// A scheme config with the default 300 s tolerance.
    pub fn source(scheme: SchemeKind, secrets: &[&str], hmac: Option<HmacParams>) -> SchemeConfig {
        SchemeConfig {
            scheme,
            secrets: secrets.iter().map(|s| Secret::new(*s)).collect(),
            hmac,
            tolerance: Duration::from_secs(300),
        }
    }

    /// `secs` after the epoch.
    pub fn at(secs: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).expect("after the epoch"))
    }

    /// A header map from name/value pairs.
    pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_bytes(name.as_bytes()).expect("valid name"),
                    HeaderValue::from_str(value).expect("valid value"),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{SIGNED_AT, at, source, verifier};
    use super::*;
    use crate::config::Secret;

    #[test]
    fn the_window_is_symmetric_and_inclusive() {
        let tolerance = Duration::from_secs(300);
        assert!(check_window(SIGNED_AT, at(SIGNED_AT + 300), tolerance).is_ok());
        assert!(check_window(SIGNED_AT, at(SIGNED_AT - 300), tolerance).is_ok());
        assert!(matches!(
            check_window(SIGNED_AT, at(SIGNED_AT + 301), tolerance),
            Err(SignatureError::TooOld { age_secs: 301 })
        ));
        assert!(matches!(
            check_window(SIGNED_AT, at(SIGNED_AT - 301), tolerance),
            Err(SignatureError::TooNew { ahead_secs: 301 })
        ));
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let tolerance = Duration::from_secs(300);
        assert!(matches!(
            check_window(i64::MIN, at(SIGNED_AT), tolerance),
            Err(SignatureError::TooOld { .. })
        ));
        assert!(matches!(
            check_window(i64::MAX, at(SIGNED_AT), tolerance),
            Err(SignatureError::TooNew { .. })
        ));
    }

    #[test]
    fn an_empty_secret_is_refused_with_its_index() {
        let mut config = source(SchemeKind::Github, &["good"], None);
        config.secrets.push(Secret::new(""));
        let error = Verifier::new(&config).unwrap_err();
        assert!(
            matches!(error, SignatureError::InvalidSecret { index: 1, .. }),
            "{error}"
        );
    }

    #[test]
    fn the_hmac_scheme_without_parameters_is_refused() {
        let error = Verifier::new(&source(SchemeKind::Hmac, &["s"], None)).unwrap_err();
        assert!(matches!(error, SignatureError::InvalidConfig(_)));
    }

    #[test]
    fn debug_output_does_not_show_keys() {
        let shown = format!("{:?}", verifier(SchemeKind::Stripe, &["whsec_hunter2"]));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("secrets: 1"), "{shown}");
    }

    #[test]
    fn only_malformed_headers_are_malformed() {
        assert!(SignatureError::malformed("x", "y").is_malformed());
        assert!(!SignatureError::Mismatch.is_malformed());
        assert!(!SignatureError::MissingHeader("x".into()).is_malformed());
        assert!(!SignatureError::TooOld { age_secs: 1 }.is_malformed());
        assert!(!SignatureError::TooNew { ahead_secs: 1 }.is_malformed());
    }
}
