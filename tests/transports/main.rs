//! The fallback transports against a real server: Phoenix long-poll and
//! SSE + POST, each on its own and together with WebSocket clients in one
//! room, plus the errors bad input gets.

#[path = "../common/mod.rs"]
mod common;
mod longpoll;
mod longpoll_client;
mod sse;

use std::time::Duration;

use common::{Server, test_config};

pub const ROSTER: &str = r#"
export function onJoin(conn) { return { transport: conn.meta.transport }; }
export function onMessage(conn, event, payload) {
  room.broadcast(event, { user: conn.user, transport: conn.meta.transport, ...payload });
  return { ok: true };
}
export function onLeave(conn, reason) {
  room.broadcast("left", { user: conn.user, transport: conn.meta.transport, reason });
}
"#;

pub fn config() -> roomhost::Config {
    roomhost::Config {
        longpoll_window: Duration::from_millis(500),
        ..test_config()
    }
}

pub async fn server() -> Server {
    Server::start(&[("roster.js", ROSTER)], config()).await
}
