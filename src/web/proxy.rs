//! The client's address behind a reverse proxy: when the TCP peer is one of
//! `trusted_proxies`, the request's [`ConnectInfo`] becomes the address the
//! proxy reported in `X-Forwarded-For`, so that everything reading it — the
//! admin API's loopback rule, the per-address connection and post limits,
//! the logs — sees the browser's address instead of the proxy's.
//!
//! `X-Forwarded-For` is trusted only from a listed proxy, and only as far as
//! it was written by one: the walk goes from the right (the entry the
//! nearest proxy appended) and stops at the first address that is not a
//! trusted proxy. Entries left of it were written by the client and could be
//! anything. This module never decides whether a request may go on.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use super::WebState;

/// The proxy a request came through, kept for the logs when its
/// `ConnectInfo` was replaced by the forwarded client address.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ViaProxy(pub SocketAddr);

/// The address a request came from: `peer`, or — when `peer` is a trusted
/// proxy — the rightmost `X-Forwarded-For` address that is not one. An entry
/// that is not an address ends the walk at the hop that reported it: a
/// trusted proxy writes only addresses, so only a client could have put it
/// there. The port is the proxy's (the client's is not forwarded).
pub(crate) fn client_address(
    trusted: &[IpAddr],
    peer: SocketAddr,
    headers: &HeaderMap,
) -> SocketAddr {
    // Canonical on both sides: an IPv4 peer of a dual-stack listener is
    // `::ffff:a.b.c.d`, and an embedder's list may be written either way.
    let is_trusted = |ip: IpAddr| {
        trusted
            .iter()
            .any(|t| t.to_canonical() == ip.to_canonical())
    };
    if !is_trusted(peer.ip()) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer.ip();
    for entry in entries.iter().rev() {
        let Some(ip) = parse_entry(entry) else { break };
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    SocketAddr::new(client, peer.port())
}

/// `1.2.3.4`, `2001:db8::1`, `1.2.3.4:5678` or `[2001:db8::1]:5678`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .map(|ip| ip.to_canonical())
}

/// Middleware: replaces a trusted proxy's `ConnectInfo` with the client's
/// address and records the proxy as [`ViaProxy`]. Requests from other peers
/// (and servers run without connect info) pass unchanged.
pub(crate) async fn forwarded_client(
    State(web): State<Arc<WebState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let trusted = &web.config.trusted_proxies;
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    if let Some(peer) = peer.filter(|_| !trusted.is_empty()) {
        let client = client_address(trusted, peer, request.headers());
        if client != peer {
            request.extensions_mut().insert(ConnectInfo(client));
            request.extensions_mut().insert(ViaProxy(peer));
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    const PROXY: &str = "127.0.0.1:40000";

    fn client(trusted: &[&str], peer: &str, values: &[&str]) -> String {
        let trusted: Vec<IpAddr> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        client_address(&trusted, peer.parse().unwrap(), &forwarded(values))
            .ip()
            .to_string()
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        assert_eq!(
            client(&["127.0.0.1"], PROXY, &["203.0.113.7"]),
            "203.0.113.7"
        );
        assert_eq!(
            client(
                &["127.0.0.1"],
                "[::ffff:127.0.0.1]:1",
                &["[2001:db8::1]:443"]
            ),
            "2001:db8::1",
            "v4-mapped peers and bracketed entries"
        );
    }

    #[test]
    fn a_proxy_listed_as_v4_mapped_is_still_trusted() {
        assert_eq!(
            client(&["::ffff:127.0.0.1"], PROXY, &["203.0.113.7"]),
            "203.0.113.7"
        );
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        assert_eq!(client(&[], PROXY, &["203.0.113.7"]), "127.0.0.1");
        assert_eq!(
            client(&["10.0.0.1"], "198.51.100.2:9", &["127.0.0.1"]),
            "198.51.100.2"
        );
    }

    #[test]
    fn entries_written_by_the_client_are_not_believed() {
        // The client sent "X-Forwarded-For: 127.0.0.1"; nginx appended its
        // real address.
        assert_eq!(
            client(&["127.0.0.1"], PROXY, &["127.0.0.1, 203.0.113.7"]),
            "203.0.113.7"
        );
        // Two trusted proxies in a row, across two header lines.
        assert_eq!(
            client(
                &["127.0.0.1", "10.0.0.2"],
                PROXY,
                &["192.0.2.1, 198.51.100.9", "10.0.0.2"]
            ),
            "198.51.100.9"
        );
    }

    #[test]
    fn without_a_usable_header_the_last_reporting_hop_is_the_client() {
        assert_eq!(client(&["127.0.0.1"], PROXY, &[]), "127.0.0.1");
        assert_eq!(client(&["127.0.0.1"], PROXY, &["unknown"]), "127.0.0.1");
        assert_eq!(
            client(&["127.0.0.1", "10.0.0.2"], PROXY, &["junk, 10.0.0.2"]),
            "10.0.0.2"
        );
    }
}
