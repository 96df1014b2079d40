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
use axum::http::{Extensions, HeaderMap, StatusCode};
use serde_json::value::RawValue;

use crate::conn::{Conn, random_handle};
use crate::host::Shared;
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
}

/// The identity of a client, from its connect params and request headers.
/// Each call mints a new connection id.
pub(crate) fn identify(
    _shared: &Shared,
    params: &HashMap<String, String>,
    _headers: &HeaderMap,
    transport: Transport,
) -> Result<Conn, Refusal> {
    let user = user_param(params.get("user").map(String::as_str)).map_err(Refusal::bad_request)?;
    let meta = RawValue::from_string(transport.meta().to_string()).expect("valid JSON");
    Ok(Conn::new(user, meta))
}

/// [`identify`] plus the serializer version: what a Phoenix socket (WebSocket
/// or long-poll) needs before its first frame.
pub(crate) fn connect(
    shared: &Shared,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    transport: Transport,
) -> Result<(Conn, Vsn), Refusal> {
    let vsn =
        Vsn::from_param(params.get("vsn").map(String::as_str)).map_err(Refusal::bad_request)?;
    let conn = identify(shared, params, headers, transport)?;
    Ok((conn, vsn))
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

/// One connection counted against its address; uncounted when dropped, so
/// every way a connection ends gives its slot back.
pub(crate) struct AddressSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.shared.client_addresses.map();
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
    shared: &Arc<Shared>,
    extensions: &Extensions,
) -> Result<Option<AddressSlot>, Refusal> {
    let max = shared.config.max_conns_per_ip;
    let Some(ConnectInfo(peer)) = extensions.get::<ConnectInfo<SocketAddr>>() else {
        return Ok(None);
    };
    let ip = peer.ip().to_canonical();
    if max == 0 || (ip.is_loopback() && !shared.config.limit_loopback) {
        return Ok(None);
    }
    let mut map = shared.client_addresses.map();
    let open = map.entry(ip).or_insert(0);
    if *open >= max {
        tracing::info!(%ip, max, "connection refused: too many connections from this address");
        return Err(Refusal {
            status: StatusCode::TOO_MANY_REQUESTS,
            reason: format!("too many connections from this address (limit {max})"),
        });
    }
    *open += 1;
    Ok(Some(AddressSlot {
        shared: shared.clone(),
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
    fn transport_meta_is_json() {
        for t in [Transport::WebSocket, Transport::LongPoll, Transport::Http] {
            let v: serde_json::Value = serde_json::from_str(t.meta()).unwrap();
            assert!(v["transport"].is_string());
        }
    }
}
