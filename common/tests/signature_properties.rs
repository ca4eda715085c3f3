//! Property tests: every scheme's header parsing, fed arbitrary header bytes and
//! bodies, answers with an error and never panics — and the error never carries
//! the secret. Inputs mix raw bytes with strings built from the schemes' own
//! tokens (`t=`, `v1,`, `sha256=`, long digit runs, base64 padding) so the parsers
//! are exercised past their first check. The case count is bounded so the suite
//! stays fast in `make test`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookfleet_common::config::Secret;
use hookfleet_common::signature::{
    HmacAlgorithm, HmacParams, SchemeConfig, SchemeKind, SignatureEncoding, Verifier, github,
    shopify, slack, standard, stripe,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestRunner};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const KEY_TEXT: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CASES: u32 = 2048;

/// Pieces of real signature headers, recombined at random.
const TOKENS: &[&str] = &[
    "t=",
    "v1=",
    "v0=",
    "v1,",
    "v1a,",
    "v0:",
    "sha256=",
    "sha512=",
    ",",
    " ",
    "  ",
    "=",
    "==",
    ".",
    ":",
    "-",
    "+",
    "/",
    "0",
    "1700000000",
    "-1700000000",
    "99999999999999999999999",
    "9223372036854775807",
    "-9223372036854775808",
    "1.5",
    "abc",
    "00ff",
    "DEADbeef",
    "AAAA",
    "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    "6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39",
    "é",
    "\t",
    "\u{7f}",
];

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A header value: arbitrary bytes, or a string of scheme tokens. `None` when
/// the bytes cannot be a header value at all (HTTP would not deliver them).
fn value() -> impl Strategy<Value = Option<HeaderValue>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..160)
            .prop_map(|bytes| HeaderValue::from_bytes(&bytes).ok()),
        proptest::collection::vec(select(TOKENS), 0..12)
            .prop_map(|parts| HeaderValue::from_str(&parts.concat()).ok()),
    ]
}

/// Each of `names` absent or carrying a fuzzed value.
fn headers(names: &'static [&'static str]) -> impl Strategy<Value = HeaderMap> {
    proptest::collection::vec(proptest::option::of(value()), names.len()).prop_map(move |values| {
        let mut map = HeaderMap::new();
        for (name, value) in names.iter().zip(values) {
            if let Some(Some(value)) = value {
                map.insert(HeaderName::from_static(name), value);
            }
        }
        map
    })
}

fn verifier(scheme: SchemeKind, secret: &str, hmac: Option<HmacParams>) -> Verifier {
    Verifier::new(&SchemeConfig {
        scheme,
        secrets: vec![Secret::new(secret)],
        hmac,
        tolerance: Duration::from_secs(300),
    })
    .expect("valid test config")
}

/// Runs `verifier` over fuzzed `names` headers, bodies and clocks.
fn never_panics_and_never_verifies(verifier: &Verifier, names: &'static [&'static str]) {
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let inputs = (
        headers(names),
        proptest::collection::vec(any::<u8>(), 0..256),
        any::<u32>(),
    );
    runner
        .run(&inputs, |(headers, body, now)| {
            let result = verifier.verify(&headers, &body, at(u64::from(now)));
            let error = match result {
                Ok(()) => return Err(TestCaseError::fail("a forged request verified")),
                Err(e) => e.to_string(),
            };
            prop_assert!(!error.contains(KEY_TEXT), "{error}");
            Ok(())
        })
        .unwrap();
}

#[test]
fn stripe_header_parsing_never_panics() {
    let names: &'static [&'static str] = &[stripe::SIGNATURE_HEADER];
    never_panics_and_never_verifies(&verifier(SchemeKind::Stripe, SECRET, None), names);
}

#[test]
fn github_header_parsing_never_panics() {
    let names: &'static [&'static str] = &[github::SIGNATURE_HEADER];
    never_panics_and_never_verifies(&verifier(SchemeKind::Github, SECRET, None), names);
}

#[test]
fn shopify_header_parsing_never_panics() {
    let names: &'static [&'static str] = &[shopify::SIGNATURE_HEADER];
    never_panics_and_never_verifies(&verifier(SchemeKind::Shopify, SECRET, None), names);
}

#[test]
fn slack_header_parsing_never_panics() {
    let names: &'static [&'static str] = &[slack::SIGNATURE_HEADER, slack::TIMESTAMP_HEADER];
    never_panics_and_never_verifies(&verifier(SchemeKind::Slack, SECRET, None), names);
}

#[test]
fn standard_and_svix_header_parsing_never_panics() {
    let names: &'static [&'static str] = &[
        standard::ID_HEADER,
        standard::TIMESTAMP_HEADER,
        standard::SIGNATURE_HEADER,
        standard::SVIX_HEADERS[0],
        standard::SVIX_HEADERS[1],
        standard::SVIX_HEADERS[2],
    ];
    never_panics_and_never_verifies(&verifier(SchemeKind::Standard, SECRET, None), names);
}

#[test]
fn generic_hmac_header_parsing_never_panics() {
    let names: &'static [&'static str] = &["x-signature"];
    for (algorithm, encoding, prefix) in [
        (HmacAlgorithm::Sha256, SignatureEncoding::Hex, "sha256="),
        (HmacAlgorithm::Sha512, SignatureEncoding::Base64, ""),
    ] {
        let params = HmacParams {
            header: "x-signature".into(),
            algorithm,
            encoding,
            prefix: prefix.into(),
        };
        never_panics_and_never_verifies(&verifier(SchemeKind::Hmac, SECRET, Some(params)), names);
    }
}
