//! The client's address: the TCP peer, or — when the peer is a trusted proxy —
//! the address that proxy names in its forwarding header.
//!
//! Each proxy appends the address it received the request from, so the list
//! reads `client, proxy1, proxy2` and only its right end was written by proxies
//! we trust; anything further left may be the client's own invention. The client
//! is therefore the rightmost address that is not itself a trusted proxy. Only
//! the one header `ingest.client_ip_header` names is read: a proxy that writes
//! `X-Forwarded-For` passes a client's `Forwarded` header through untouched, so
//! reading both would let a client choose its own address. A hop that is not an
//! address (`unknown`, an obfuscated RFC 7239 name, garbage) ends the walk; the
//! client is then the trusted proxy that reported it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::config::ClientIpHeader;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

/// Which proxies to believe, and which header they write.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
    header: ClientIpHeader,
}

impl TrustedProxies {
    /// Proxies in `networks` that name the client in `header`.
    pub fn new(networks: Vec<IpNet>, header: ClientIpHeader) -> Self {
        Self { networks, header }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request from `peer` carrying `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for hop in self.hops(headers).iter().rev() {
            match hop {
                Some(ip) if self.trusts(*ip) => client = *ip,
                Some(ip) => return *ip,
                None => return client,
            }
        }
        client
    }

    /// The addresses of the configured header, left to right, across all its
    /// lines; `None` for a hop that is not an address.
    fn hops(&self, headers: &HeaderMap) -> Vec<Option<IpAddr>> {
        let name = match self.header {
            ClientIpHeader::XForwardedFor => "x-forwarded-for",
            ClientIpHeader::Forwarded => "forwarded",
        };
        let mut hops = Vec::new();
        for line in headers.get_all(name) {
            let Ok(line) = line.to_str() else {
                hops.push(None);
                continue;
            };
            for element in line.split(',') {
                let node = match self.header {
                    ClientIpHeader::XForwardedFor => Some(element),
                    ClientIpHeader::Forwarded => forwarded_for(element),
                };
                hops.push(node.and_then(parse_node));
            }
        }
        hops
    }
}

/// The `for=` value of one RFC 7239 element (`for=1.2.3.4;proto=https`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:80`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim();
    node.parse::<IpAddr>()
        .ok()
        .or_else(|| node.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            node.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<IpAddr>()
                .ok()
        })
}

/// Extractor: the client's address (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// A router state that knows the trusted proxies, so [`ClientAddr`] can be
/// extracted from its requests.
pub trait HasProxies {
    /// The proxies whose forwarding header is believed.
    fn proxies(&self) -> &TrustedProxies;
}

impl<S: HasProxies + Send + Sync> FromRequestParts<Arc<S>> for ClientAddr {
    type Rejection = <ConnectInfo<SocketAddr> as FromRequestParts<Arc<S>>>::Rejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<S>,
    ) -> Result<Self, Self::Rejection> {
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, state).await?;
        Ok(Self(state.proxies().client(peer.ip(), &parts.headers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(header: ClientIpHeader) -> TrustedProxies {
        let nets = ["10.0.0.0/8", "192.168.1.1", "fd00::/8"];
        TrustedProxies::new(
            nets.iter()
                .map(|n| {
                    n.parse()
                        .unwrap_or_else(|_| IpNet::from(n.parse::<IpAddr>().unwrap()))
                })
                .collect(),
            header,
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let p = proxies(ClientIpHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(p.client(ip("198.51.100.7"), &h), ip("198.51.100.7"));
        let h = headers(&[("forwarded", "for=203.0.113.9")]);
        assert_eq!(p.client(ip("198.51.100.7"), &h), ip("198.51.100.7"));
    }

    #[test]
    fn a_trusted_peer_names_the_client() {
        let p = proxies(ClientIpHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "203.0.113.9")]);
        assert_eq!(p.client(ip("10.1.2.3"), &h), ip("203.0.113.9"));
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        let p = proxies(ClientIpHeader::XForwardedFor);
        assert_eq!(p.client(ip("10.1.2.3"), &HeaderMap::new()), ip("10.1.2.3"));
    }

    #[test]
    fn multi_hop_chains_give_the_rightmost_untrusted_address() {
        let p = proxies(ClientIpHeader::XForwardedFor);
        // The client forged "1.1.1.1"; the edge proxy appended the real address.
        let h = headers(&[(
            "x-forwarded-for",
            "1.1.1.1, 203.0.113.9, 192.168.1.1, 10.9.9.9",
        )]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("203.0.113.9"));
        // The same chain split over several header lines.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1, 203.0.113.9"),
            ("x-forwarded-for", "192.168.1.1"),
        ]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("203.0.113.9"));
        // Every hop trusted: the leftmost one is the furthest we know.
        let h = headers(&[("x-forwarded-for", "10.5.5.5, 192.168.1.1")]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("10.5.5.5"));
    }

    #[test]
    fn a_hop_that_is_not_an_address_stops_at_the_proxy_that_reported_it() {
        let p = proxies(ClientIpHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "203.0.113.9, unknown, 10.9.9.9")]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("10.9.9.9"));
    }

    #[test]
    fn forwarded_elements_with_ports_and_ipv6_are_read() {
        let p = proxies(ClientIpHeader::Forwarded);
        let h = headers(&[(
            "forwarded",
            "for=1.1.1.1, for=\"[2001:db8:cafe::17]:4711\";proto=https, For=10.9.9.9:80",
        )]);
        assert_eq!(p.client(ip("fd00::1"), &h), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "proto=https;for=203.0.113.9:443")]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("203.0.113.9"));
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let p = proxies(ClientIpHeader::XForwardedFor);
        let h = headers(&[
            ("forwarded", "for=1.1.1.1"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("203.0.113.9"));
        let p = proxies(ClientIpHeader::Forwarded);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("1.1.1.1"));
    }
}
