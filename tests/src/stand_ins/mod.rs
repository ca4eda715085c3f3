//! Stand-ins that need more than [`crate::stand_in::StandIn`]'s rules: an
//! OAuth 2.0 authorization server with the API it protects, and a server
//! behind mutual TLS.

pub mod oauth;
pub mod tls;
