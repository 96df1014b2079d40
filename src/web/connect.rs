//! Who is connecting: the checks every transport runs before it serves a
//! client — the WebSocket upgrade, a new long-poll session, an SSE stream and
//! an HTTP post alike.
//!
//! This is the one place that decides a client's identity and whether it may
//! connect at all. Token authentication, the `Origin` check and per-client
//! connection limits belong here, so that every transport applies them the
//! same way. It never touches rooms.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::ConnectInfo;
use axum::http::{Extensions, HeaderMap, StatusCode, header};
use serde_json::value::RawValue;

use super::WebState;
use super::proxy::ViaProxy;
use crate::auth::{self, AuthError};
use crate::conn::{Conn, random_handle};
use crate::protocol::Vsn;

/// The transport a client connects over, as room scripts see it in
/// `conn.meta.transport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    WebSocket,
    LongPoll,
    /// SSE streams and HTTP posts.
    Http,
}

impl Transport {
    /// The metrics label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::LongPoll => "longpoll",
            Transport::Http => "http",
        }
    }

    fn meta(self) -> &'static str {
        match self {
            Transport::WebSocket => r#"{"transport":"websocket"}"#,
            Transport::LongPoll => r#"{"transport":"longpoll"}"#,
            Transport::Http => r#"{"transport":"http"}"#,
        }
    }
}

/// Why a client may not connect: the HTTP status and a reason it can show.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub reason: String,
}

impl Refusal {
    fn bad_request(reason: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            reason: reason.into(),
        }
    }

    fn forbidden(reason: impl Into<String>) -> Refusal {
        Refusal {
            status: StatusCode::FORBIDDEN,
            reason: reason.into(),
        }
    }
}

/// The header phoenix.js's `LongPoll` carries its `authToken` in.
const AUTH_TOKEN_HEADER: header::HeaderName =
    header::HeaderName::from_static("x-phoenix-authtoken");

/// The connection token a client presents, wherever it put it: the `token`
/// connect param, Phoenix's `base64url.bearer.phx.<token>` WebSocket
/// subprotocol, phoenix.js long-poll's `X-Phoenix-AuthToken` header, or
/// `Authorization: Bearer`.
fn presented_token(params: &HashMap<String, String>, headers: &HeaderMap) -> Option<String> {
    let header = |name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
    };
    params
        .get("token")
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .or_else(|| {
            header(header::SEC_WEBSOCKET_PROTOCOL)
                .into_iter()
                .find_map(auth::from_subprotocols)
        })
        .or_else(|| {
            header(AUTH_TOKEN_HEADER)
                .first()
                .map(|t| t.trim().to_string())
        })
        .or_else(|| {
            header(header::AUTHORIZATION)
                .into_iter()
                .find_map(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()))
        })
        .filter(|t| !t.is_empty())
}

/// The user a client may connect as: the token's `sub` when a secret is
/// configured (the `user` param is then ignored), else the `user` param.
fn authenticate(
    web: &WebState,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<String, Refusal> {
    let Some(secret) = &web.config.auth_secret else {
        return user_param(params.get("user").map(String::as_str)).map_err(|reason| {
            web.metrics.refused("bad_request");
            Refusal::bad_request(reason)
        });
    };
    let verified = match presented_token(params, headers) {
        Some(token) => auth::verify(secret, &token),
        None => Err(AuthError::Missing),
    };
    verified.map(|claims| claims.user).map_err(|e| {
        web.metrics.auth_failed(e.label());
        web.metrics.refused("auth");
        Refusal::forbidden(e.to_string())
    })
}

/// The identity of a client, from its connect params and request headers.
/// Each call mints a new connection id.
pub(crate) fn identify(
    web: &WebState,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    transport: Transport,
) -> Result<Conn, Refusal> {
    if let Err(reason) = super::origin::check(&web.config.allowed_origins, headers) {
        web.metrics.refused("origin");
        return Err(Refusal::forbidden(reason));
    }
    let user = authenticate(web, params, headers)?;
    let meta = RawValue::from_string(transport.meta().to_string()).expect("valid JSON");
    Ok(Conn::new(user, meta))
}

/// [`identify`] plus the serializer version: what a Phoenix socket (WebSocket
/// or long-poll) needs before its first frame.
pub(crate) fn connect(
    web: &WebState,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    transport: Transport,
) -> Result<(Conn, Vsn), Refusal> {
    let conn = identify(web, params, headers, transport)?;
    let vsn = Vsn::from_param(params.get("vsn").map(String::as_str)).map_err(|reason| {
        web.metrics.refused("bad_request");
        Refusal::bad_request(reason)
    })?;
    Ok((conn, vsn))
}

/// The request's client, for logs ("-" without connect info: an
/// embedder's own router). Behind a trusted proxy it is the forwarded
/// address, with the proxy beside it; behind any other proxy it is the
/// proxy, and its `X-Forwarded-For` (not trusted for limits) is shown beside it.
pub(crate) fn peer_label(extensions: &Extensions, headers: &HeaderMap) -> String {
    let peer = extensions.get::<ConnectInfo<SocketAddr>>();
    if let (Some(ConnectInfo(client)), Some(ViaProxy(proxy))) = (peer, extensions.get::<ViaProxy>())
    {
        // The port is the proxy's: only the address is the client's.
        return format!("{} (via {proxy})", client.ip());
    }
    let peer = peer.map_or_else(|| "-".to_string(), |ConnectInfo(peer)| peer.to_string());
    match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(forwarded) => format!("{peer} (for {forwarded})"),
        None => peer,
    }
}

/// Logs a refused connection attempt with its reason and peer: at info, as
/// an operator looks for these (a wrong origin setting, an expired token).
pub(crate) fn log_refusal(
    refusal: &Refusal,
    transport: Transport,
    extensions: &Extensions,
    headers: &HeaderMap,
) {
    tracing::info!(
        peer = %peer_label(extensions, headers),
        transport = transport.label(),
        status = refusal.status.as_u16(),
        reason = %refusal.reason,
        "connection refused"
    );
}

/// Open connections (WebSockets, long-poll sessions, SSE streams) per
/// client address, for `max_conns_per_ip`. A std mutex held for one map
/// update, never across an await.
#[derive(Default)]
pub(crate) struct ClientAddresses(Mutex<HashMap<IpAddr, usize>>);

impl ClientAddresses {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Every update is one insert or decrement: poisoning cannot leave a
        // half-done change behind.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The request's peer address when per-address limits apply to it: not for
/// loopback peers (unless `limit_loopback`: a reverse proxy on the same
/// machine would put every user behind one address), nor without connect
/// info (an embedder's own router).
pub(crate) fn limited_peer(web: &WebState, extensions: &Extensions) -> Option<IpAddr> {
    let ConnectInfo(peer) = extensions.get::<ConnectInfo<SocketAddr>>()?;
    let ip = peer.ip().to_canonical();
    (!ip.is_loopback() || web.config.limit_loopback).then_some(ip)
}

/// One connection counted against its address; uncounted when dropped, so
/// every way a connection ends gives its slot back.
pub(crate) struct AddressSlot {
    web: Arc<WebState>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.web.client_addresses.map();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Counts a new connection from the request's peer against
/// `max_conns_per_ip`. `Ok(None)` when the peer is exempt: the limit is 0,
/// the peer is loopback (unless `limit_loopback`), or the server was not
/// started with connect info (an embedder's own router).
pub(crate) fn admit(
    web: &Arc<WebState>,
    extensions: &Extensions,
) -> Result<Option<AddressSlot>, Refusal> {
    let max = web.config.max_conns_per_ip;
    let Some(ip) = limited_peer(web, extensions).filter(|_| max > 0) else {
        return Ok(None);
    };
    let mut map = web.client_addresses.map();
    let open = map.entry(ip).or_insert(0);
    if *open >= max {
        web.metrics.refused("conns_per_ip");
        return Err(Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            reason: format!("too many connections from this address (limit {max})"),
        });
    }
    *open += 1;
    Ok(Some(AddressSlot {
        web: web.clone(),
        ip,
    }))
}

/// The `user` connect param: 1–64 printable characters, or a random handle.
pub(crate) fn user_param(user: Option<&str>) -> Result<String, String> {
    let Some(user) = user.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(random_handle());
    };
    if user.chars().count() > 64 || user.chars().any(char::is_control) {
        return Err("invalid user: 1 to 64 printable characters".into());
    }
    Ok(user.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_param_rules() {
        assert_eq!(user_param(Some(" alice ")).unwrap(), "alice");
        assert!(user_param(None).unwrap().contains('-'));
        assert!(user_param(Some("")).unwrap().contains('-'));
        assert!(user_param(Some("a\u{7}b")).is_err());
        assert!(user_param(Some(&"x".repeat(65))).is_err());
    }

    #[test]
    fn tokens_are_found_wherever_clients_put_them() {
        let params = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, v.parse().unwrap());
            }
            h
        };
        let none = HeaderMap::new();
        assert_eq!(presented_token(&params(&[]), &none), None);
        assert_eq!(presented_token(&params(&[("token", " ")]), &none), None);
        assert_eq!(
            presented_token(
                &params(&[("token", "p")]),
                &headers(&[("authorization", "Bearer h")])
            ),
            Some("p".into()),
            "the param first"
        );
        // "s" in base64url is "cw".
        let protocols = headers(&[("sec-websocket-protocol", "phoenix, base64url.bearer.phx.cw")]);
        assert_eq!(presented_token(&params(&[]), &protocols), Some("s".into()));
        let longpoll = headers(&[("x-phoenix-authtoken", "x")]);
        assert_eq!(presented_token(&params(&[]), &longpoll), Some("x".into()));
        let bearer = headers(&[("authorization", "Bearer b ")]);
        assert_eq!(presented_token(&params(&[]), &bearer), Some("b".into()));
        let basic = headers(&[("authorization", "Basic YTpi")]);
        assert_eq!(presented_token(&params(&[]), &basic), None);
    }

    #[test]
    fn transport_meta_is_json() {
        for t in [Transport::WebSocket, Transport::LongPoll, Transport::Http] {
            let v: serde_json::Value = serde_json::from_str(t.meta()).unwrap();
            assert!(v["transport"].is_string());
        }
    }
}
