//! The configuration of a signature scheme: which scheme, the generic HMAC
//! scheme's parameters, the secrets and the timestamp window. Ingest reads it from
//! each source's section and builds a [`super::Verifier`] from it.

use std::time::Duration;

use serde::Deserialize;

use crate::config::Secret;

/// What a [`super::Verifier`] is built from.
#[derive(Debug, Clone)]
pub struct SchemeConfig {
    /// The signature scheme.
    pub scheme: SchemeKind,
    /// Active signing secrets; any one of them verifies (several during rotation).
    pub secrets: Vec<Secret>,
    /// Parameters of the generic `hmac` scheme (required when `scheme = Hmac`).
    pub hmac: Option<HmacParams>,
    /// How far a signed timestamp may be from now, either way.
    pub tolerance: Duration,
}

/// The signature schemes hookfleet verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemeKind {
    /// `Stripe-Signature: t=…,v1=…`, HMAC-SHA256 hex over `{t}.{body}`.
    Stripe,
    /// `X-Hub-Signature-256: sha256=<hex>` over the body.
    Github,
    /// `X-Shopify-Hmac-Sha256: <base64>` over the body.
    Shopify,
    /// `X-Slack-Signature: v0=<hex>` over `v0:{ts}:{body}`.
    Slack,
    /// Standard Webhooks / Svix: `webhook-signature: v1,<base64>` over `{id}.{ts}.{body}`.
    Standard,
    /// A generic HMAC header, described by the source's `hmac` table.
    Hmac,
}

/// Parameters of the generic `hmac` scheme.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacParams {
    /// The header carrying the signature.
    pub header: String,
    /// `sha256` (default) or `sha512`.
    #[serde(default)]
    pub algorithm: HmacAlgorithm,
    /// `hex` (default) or `base64`.
    #[serde(default)]
    pub encoding: SignatureEncoding,
    /// A prefix before the encoded signature, e.g. `sha256=`.
    #[serde(default)]
    pub prefix: String,
}

/// Hash functions of the generic HMAC scheme.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    /// HMAC-SHA256.
    #[default]
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// How a signature is written in its header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    /// Lower- or upper-case hexadecimal.
    #[default]
    Hex,
    /// Standard base64 with padding.
    Base64,
}
