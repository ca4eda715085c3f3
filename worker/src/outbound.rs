//! The outbound HTTP client of enrichment steps and HTTP sinks, and the rules
//! every request they make obeys: where it may connect, that redirects are not
//! followed by the client, and that errors never carry the request's URL.
//!
//! **Destination policy.** Their URLs are templates over untrusted payloads, so
//! a request to a non-public address (loopback, private, link-local, shared,
//! unspecified; [`is_public`]) is refused unless its host is in
//! `worker.outbound.allow_hosts` or `allow_private` is on. Names are checked
//! after resolution, by the client's own resolver ([`PolicyResolver`]), so the
//! addresses checked are the ones connected to (no second lookup to rebind);
//! an IP-literal URL never reaches a resolver and is checked by
//! [`Policy::check_literal`] before sending.
//!
//! **Redirects.** The client follows none; `request_template` decides what a
//! 3xx means (a failure, or a same-origin hop without credentials).
//!
//! **Redaction.** reqwest's errors print the full URL, whose path or query may
//! hold a token (chat webhooks); [`redact`] keeps scheme, host and port only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::config::OutboundConfig;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A destination the policy refuses.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "destination `{host}` refused: it resolves only to non-public addresses (allow it in worker.outbound)"
)]
pub struct DestinationRefused {
    /// The host as written in the URL.
    pub host: String,
}

/// `worker.outbound`, ready to check hosts and addresses.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow_hosts: Vec<String>,
    allow_private: bool,
}

impl Policy {
    /// The policy `config` describes.
    pub fn new(config: &OutboundConfig) -> Self {
        Self {
            allow_hosts: config.allow_hosts.iter().map(|h| normalize(h)).collect(),
            allow_private: config.allow_private,
        }
    }

    /// Whether `host` (a name or an IP literal) is exempt from the check.
    pub fn exempts(&self, host: &str) -> bool {
        self.allow_private || self.allow_hosts.contains(&normalize(host))
    }

    /// Refuses a URL whose host is a non-public IP literal (names are checked
    /// by the resolver, after resolution).
    pub fn check_literal(&self, url: &reqwest::Url) -> Result<(), DestinationRefused> {
        let host = url.host_str().unwrap_or_default();
        let Ok(ip) = normalize(host).parse::<IpAddr>() else {
            return Ok(());
        };
        if self.exempts(host) || is_public(ip) {
            return Ok(());
        }
        Err(DestinationRefused {
            host: host.to_owned(),
        })
    }
}

/// Lowercase, without an IPv6 literal's brackets or a trailing dot.
fn normalize(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Whether `ip` is a public unicast address: not loopback, private (RFC 1918,
/// `fc00::/7`), link-local (`169.254.0.0/16`, `fe80::/10`), shared
/// (`100.64.0.0/10`), unspecified, `0.0.0.0/8`, broadcast or multicast. An
/// IPv4-mapped IPv6 address is judged as its IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    let shared = a == 100 && (64..128).contains(&b);
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || shared)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    let unique_local = first & 0xfe00 == 0xfc00;
    let link_local = first & 0xffc0 == 0xfe80;
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || unique_local || link_local)
}

/// The client's resolver: the system's (`getaddrinfo`, on a blocking thread),
/// keeping only public addresses unless the name is exempt.
#[derive(Debug)]
pub struct PolicyResolver {
    policy: Policy,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let exempt = self.policy.exempts(&host);
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| exempt || is_public(addr.ip()))
                .collect();
            if found.is_empty() {
                return Err(Box::new(DestinationRefused { host }) as _);
            }
            Ok(Box::new(found.into_iter()) as Addrs)
        })
    }
}

/// The client every enrichment step and HTTP sink sends with: no redirects
/// followed, names resolved through the policy.
pub fn client(policy: &Policy) -> Result<reqwest::Client, reqwest::Error> {
    builder(policy).build()
}

/// [`client`]'s builder, for a step that adds TLS settings (`crate::auth::tls`).
pub fn builder(policy: &Policy) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("hookfleet/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(PolicyResolver {
            policy: policy.clone(),
        }))
}

/// The policy's refusal somewhere in `error`'s chain, if that is what it is.
pub fn refusal(error: &reqwest::Error) -> Option<DestinationRefused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<DestinationRefused>() {
            return Some(refused.clone());
        }
        source = e.source();
    }
    None
}

/// `error` with its URL cut to `url`'s origin (scheme, host, port): reqwest
/// prints the URL it carries, and a path or query may hold a token.
pub fn redact(error: reqwest::Error, url: &reqwest::Url) -> reqwest::Error {
    let error = error.without_url();
    match reqwest::Url::parse(&origin(url)) {
        Ok(origin) if url.has_host() => error.with_url(origin),
        _ => error,
    }
}

/// `scheme://host[:port]` of `url`: what an error may say about a request.
pub fn origin(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!is_public(ip), "{ip} is not public");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "100.128.0.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(is_public(ip), "{ip} is public");
        }
    }

    #[test]
    fn ip_literals_are_checked_unless_exempt() {
        let strict = Policy::default();
        for url in [
            "http://127.0.0.1:8080/x",
            "http://[::1]/x",
            "http://169.254.169.254/latest/meta-data",
            "http://0x7f000001/",
        ] {
            let url = reqwest::Url::parse(url).unwrap();
            assert!(strict.check_literal(&url).is_err(), "{url}");
        }
        let public = reqwest::Url::parse("http://8.8.8.8/").unwrap();
        assert!(strict.check_literal(&public).is_ok());
        let allowed = Policy::new(&OutboundConfig {
            allow_hosts: vec!["127.0.0.1".into(), "[::1]".into()],
            allow_private: false,
        });
        for url in ["http://127.0.0.1:8080/x", "http://[::1]/x"] {
            let url = reqwest::Url::parse(url).unwrap();
            assert!(allowed.check_literal(&url).is_ok(), "{url}");
        }
        let all = Policy::new(&OutboundConfig {
            allow_hosts: Vec::new(),
            allow_private: true,
        });
        let url = reqwest::Url::parse("http://10.0.0.1/").unwrap();
        assert!(all.check_literal(&url).is_ok());
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_exempt() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = format!("http://localhost:{port}/secret-path");
        let strict = client(&Policy::default()).unwrap();
        let error = strict.get(&url).send().await.unwrap_err();
        let refused = refusal(&error).expect("the policy's refusal");
        assert_eq!(refused.host, "localhost");

        let allowed = Policy::new(&OutboundConfig {
            allow_hosts: vec!["LOCALHOST".into()],
            allow_private: false,
        });
        let serve = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        let answer = client(&allowed).unwrap().get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 204);
        serve.await.unwrap();
    }

    #[test]
    fn the_origin_keeps_scheme_host_and_port_only() {
        let url =
            reqwest::Url::parse("https://user:pw@hooks.example.com:8443/T0/B1/secret?k=v").unwrap();
        assert_eq!(origin(&url), "https://hooks.example.com:8443");
    }
}
