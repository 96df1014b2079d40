//! The no-JS floor: the least a Phoenix Channels fan-out server can do for
//! the load generator (`roomhost bench`), so that roomhost's numbers can be
//! read against what tokio + tokio-tungstenite cost by themselves.
//!
//! One thread (a current-thread runtime), no JavaScript, no durability, no
//! presence, no limits beyond a bounded outbound queue per connection. It
//! speaks the Phoenix V2 subset the generator uses, with the semantics of
//! `rooms-js/chat.js`:
//!
//! - `phx_join` on any topic → `phx_reply` ok `{}` (the generator reads only
//!   the status); `phx_leave` → ok `{}`.
//! - `new_msg` `{text}` on a joined topic → the broadcast
//!   `[null,null,topic,"new_msg",{"id","user","text","at"}]` to every member
//!   (the sender too), serialized once and shared, then the sender's
//!   `phx_reply` ok `{"id"}` (after the broadcast, as roomhost orders them).
//! - `heartbeat` on `phoenix` → ok `{}`.
//! - Anything else gets an error reply with a reason.
//!
//! ```sh
//! cargo run --release --example floor -- --port 4300
//! ```
//!
//! It binds 127.0.0.1 only. It is a benchmark reference, not a server to use.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

/// Frames a connection may have queued before it counts as a slow consumer
/// and is closed: the room never waits for one client.
const OUTBOUND_CAPACITY: usize = 4096;
/// Bytes read from a socket at a time: roomhost's value (src/web/socket.rs);
/// tungstenite's 128 KiB default would be most of a connection's memory.
const READ_BUFFER: usize = 1 << 10;

#[derive(Parser, Debug)]
#[command(about = "The no-JS Phoenix V2 fan-out floor for roomhost's side-by-side bench")]
struct Args {
    /// Port to listen on (127.0.0.1 only).
    #[arg(long, default_value_t = 4300)]
    port: u16,
}

/// One joined channel: where its frames go.
struct Member {
    conn: u64,
    outbound: mpsc::Sender<Message>,
    /// Cancelled when this member's queue overflows: its connection closes.
    slow: CancellationToken,
}

/// One topic's members and its message counter (`chat.js`'s `nextId`).
#[derive(Default)]
struct Room {
    members: Vec<Member>,
    next_id: u64,
}

/// Every room, shared by the connection tasks of the one thread: a
/// `RefCell` suffices, and no borrow is held across an `.await`.
type Rooms = Rc<RefCell<HashMap<String, Room>>>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let listener = TcpListener::bind(("127.0.0.1", args.port)).await?;
        eprintln!("floor listening on {}", listener.local_addr()?);
        serve(listener).await
    })
}

/// Accepts connections until the listener fails. Must run on a `LocalSet`.
async fn serve(listener: TcpListener) -> anyhow::Result<()> {
    let rooms: Rooms = Rc::default();
    let mut next_conn = 0u64;
    loop {
        let (stream, _) = listener.accept().await?;
        next_conn += 1;
        let (rooms, conn) = (rooms.clone(), next_conn);
        tokio::task::spawn_local(async move {
            if let Err(e) = connection(stream, conn, rooms).await {
                eprintln!("connection {conn}: {e}");
            }
        });
    }
}

/// The `user` connect parameter of `/socket/websocket?vsn=2.0.0&user=...`.
fn user_of(request: &Request) -> Result<String, String> {
    if request.uri().path() != "/socket/websocket" {
        return Err(format!("no such endpoint: {}", request.uri().path()));
    }
    let query = request.uri().query().unwrap_or("");
    let params: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|e| format!("bad query: {e}"))?;
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    if !param("vsn").is_some_and(|v| v.starts_with("2.")) {
        return Err("only vsn=2.0.0 (array frames) is spoken here".into());
    }
    Ok(param("user").cloned().unwrap_or_else(|| "anon".into()))
}

async fn connection(stream: TcpStream, conn: u64, rooms: Rooms) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut user = String::new();
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    // tungstenite's handshake callback returns its own (large) ErrorResponse.
    #[allow(clippy::result_large_err)]
    let accept = |request: &Request, response| match user_of(request) {
        Ok(u) => {
            user = u;
            Ok(response)
        }
        Err(reason) => {
            let mut refusal = ErrorResponse::new(Some(reason));
            *refusal.status_mut() = StatusCode::BAD_REQUEST;
            Err(refusal)
        }
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, accept, Some(config)).await?;
    let (mut sink, mut stream) = ws.split();
    let (outbound, mut queue) = mpsc::channel::<Message>(OUTBOUND_CAPACITY);
    // The writer sends what is queued and flushes once the queue is empty:
    // one write for a burst of frames.
    let writer = tokio::task::spawn_local(async move {
        while let Some(frame) = queue.recv().await {
            sink.feed(frame).await?;
            while let Ok(frame) = queue.try_recv() {
                sink.feed(frame).await?;
            }
            sink.flush().await?;
        }
        anyhow::Ok(())
    });
    let slow = CancellationToken::new();
    let mut channel = Channel {
        conn,
        user,
        joined: HashMap::new(),
        outbound,
        slow: slow.clone(),
        rooms,
    };
    let mut ended = Ok(());
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = slow.cancelled() => None,
        };
        match frame {
            Some(Ok(Message::Text(text))) => channel.handle(text.as_str()),
            Some(Ok(Message::Close(_))) => break,
            Some(Ok(_)) => {}
            // The generator ends its connections by dropping them.
            Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => break,
            Some(Err(e)) => {
                ended = Err(e.into());
                break;
            }
            None => break,
        }
    }
    channel.leave_all();
    drop(channel);
    if slow.is_cancelled() {
        // Its writer may be stuck on a peer that does not read.
        writer.abort();
        return Err(anyhow::anyhow!("slow consumer: outbound queue full"));
    }
    // The writer ends when the last sender of its queue is gone.
    writer.await??;
    ended
}

/// One connection's channels.
struct Channel {
    conn: u64,
    user: String,
    /// Topic → join_ref of the channels this connection joined.
    joined: HashMap<String, Option<String>>,
    outbound: mpsc::Sender<Message>,
    slow: CancellationToken,
    rooms: Rooms,
}

/// The payload of a `new_msg` push.
#[derive(serde::Deserialize)]
struct NewMsg {
    #[serde(default)]
    text: serde_json::Value,
}

impl Channel {
    /// Handles one client frame.
    fn handle(&mut self, text: &str) {
        type V2<'a> = (Option<String>, Option<String>, String, String, &'a RawValue);
        let (join_ref, msg_ref, topic, event, payload) = match serde_json::from_str::<V2>(text) {
            Ok(frame) => frame,
            Err(e) => {
                let reason = format!("malformed frame: {e}");
                let frame = json!([null, null, "phoenix", "phx_error", { "reason": reason }]);
                self.send(frame.to_string());
                return;
            }
        };
        let reply = |status: &str, response: serde_json::Value| {
            json!([join_ref, msg_ref, topic, "phx_reply", { "response": response, "status": status }])
            .to_string()
        };
        match (topic.as_str(), event.as_str()) {
            ("phoenix", "heartbeat") => self.send(reply("ok", json!({}))),
            (_, "phx_join") => {
                if self.joined.contains_key(&topic) {
                    self.send(reply("error", json!({ "reason": "already joined" })));
                    return;
                }
                self.joined.insert(topic.clone(), join_ref.clone());
                let member = Member {
                    conn: self.conn,
                    outbound: self.outbound.clone(),
                    slow: self.slow.clone(),
                };
                self.rooms
                    .borrow_mut()
                    .entry(topic.clone())
                    .or_default()
                    .members
                    .push(member);
                self.send(reply("ok", json!({})))
            }
            (_, "phx_leave") => {
                if self.joined.remove(&topic).is_some() {
                    self.leave(&topic);
                }
                self.send(reply("ok", json!({})))
            }
            (_, "new_msg") if self.joined.contains_key(&topic) => {
                let text = match serde_json::from_str::<NewMsg>(payload.get()) {
                    Ok(NewMsg {
                        text: serde_json::Value::String(s),
                    }) => s.chars().take(4000).collect::<String>(),
                    Ok(NewMsg { text }) if text.is_null() => String::new(),
                    Ok(NewMsg { text }) => text.to_string(),
                    Err(e) => {
                        let reason = format!("bad payload: {e}");
                        self.send(reply("error", json!({ "reason": reason })));
                        return;
                    }
                };
                let id = self.broadcast(&topic, text);
                self.send(reply("ok", json!({ "id": id })))
            }
            (_, "new_msg") => self.send(reply("error", json!({ "reason": "unmatched topic" }))),
            _ => self.send(reply("error", json!({ "reason": "unknown event" }))),
        }
    }

    /// Broadcasts a chat message to every member of `topic`, serialized
    /// once; returns its id. A member whose queue is full leaves the room
    /// and its connection is closed.
    fn broadcast(&self, topic: &str, text: String) -> u64 {
        let mut rooms = self.rooms.borrow_mut();
        let Some(room) = rooms.get_mut(topic) else {
            return 0;
        };
        room.next_id += 1;
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let msg = json!({ "id": room.next_id, "user": self.user, "text": text, "at": at });
        let frame = Message::text(json!([null, null, topic, "new_msg", msg]).to_string());
        room.members.retain(|m| {
            let queued = m.outbound.try_send(frame.clone()).is_ok();
            if !queued {
                m.slow.cancel();
            }
            queued
        });
        room.next_id
    }

    /// Queues one frame to this connection; a full queue closes it.
    fn send(&self, frame: String) {
        if self.outbound.try_send(Message::text(frame)).is_err() {
            self.slow.cancel();
        }
    }

    fn leave(&self, topic: &str) {
        let mut rooms = self.rooms.borrow_mut();
        if let Some(room) = rooms.get_mut(topic) {
            room.members.retain(|m| m.conn != self.conn);
            if room.members.is_empty() {
                rooms.remove(topic);
            }
        }
    }

    fn leave_all(&mut self) {
        for topic in std::mem::take(&mut self.joined).into_keys() {
            self.leave(&topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

    async fn next_text(ws: &mut Client) -> String {
        let next = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
        match next.expect("a frame within 5 s") {
            Some(Ok(Message::Text(text))) => text.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    async fn connect(url: &str, user: &str) -> Client {
        let url = format!("{url}?vsn=2.0.0&user={user}");
        tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap()
            .0
    }

    /// The frames `roomhost bench` relies on, byte for byte where its
    /// classifier reads bytes (src/bench/client.rs).
    #[tokio::test(flavor = "current_thread")]
    async fn speaks_the_generators_phoenix_subset() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/socket/websocket", listener.local_addr().unwrap());
        let local = tokio::task::LocalSet::new();
        local.spawn_local(serve(listener));
        local
            .run_until(async {
                let (mut a, mut b) = (connect(&url, "ann").await, connect(&url, "bob").await);
                for ws in [&mut a, &mut b] {
                    ws.send(Message::text(r#"["1","1","chat:x","phx_join",{}]"#))
                        .await
                        .unwrap();
                    assert_eq!(
                        next_text(ws).await,
                        r#"["1","1","chat:x","phx_reply",{"response":{},"status":"ok"}]"#
                    );
                }
                a.send(Message::text(
                    r#"["1","2","chat:x","new_msg",{"text":"12345"}]"#,
                ))
                .await
                .unwrap();
                for ws in [&mut a, &mut b] {
                    let frame = next_text(ws).await;
                    assert!(
                        frame.starts_with(r#"[null,null,"chat:x","new_msg",{"#),
                        "{frame}"
                    );
                    let msg: serde_json::Value = serde_json::from_str(&frame).unwrap();
                    assert_eq!(msg[4]["text"], "12345");
                    assert_eq!(msg[4]["user"], "ann");
                    assert_eq!(msg[4]["id"], 1);
                }
                // The sender's reply comes after the broadcast.
                assert_eq!(
                    next_text(&mut a).await,
                    r#"["1","2","chat:x","phx_reply",{"response":{"id":1},"status":"ok"}]"#
                );
                a.send(Message::text(r#"[null,"3","phoenix","heartbeat",{}]"#))
                    .await
                    .unwrap();
                assert_eq!(
                    next_text(&mut a).await,
                    r#"[null,"3","phoenix","phx_reply",{"response":{},"status":"ok"}]"#
                );
                // Bad input: a clear error, and the connection stays usable.
                a.send(Message::text(
                    r#"["1","4","chat:y","new_msg",{"text":"1"}]"#,
                ))
                .await
                .unwrap();
                let refused = next_text(&mut a).await;
                assert!(
                    refused.contains(r#""reason":"unmatched topic""#),
                    "{refused}"
                );
                assert!(refused.ends_with(r#""status":"error"}]"#), "{refused}");
                a.send(Message::text("not json")).await.unwrap();
                let malformed = next_text(&mut a).await;
                assert!(malformed.contains("phx_error") && malformed.contains("malformed frame"));
                // After bob leaves, only ann receives ann's next message.
                b.send(Message::text(r#"["1","5","chat:x","phx_leave",{}]"#))
                    .await
                    .unwrap();
                assert!(next_text(&mut b).await.contains(r#""status":"ok""#));
                a.send(Message::text(
                    r#"["1","6","chat:x","new_msg",{"text":"7"}]"#,
                ))
                .await
                .unwrap();
                assert!(next_text(&mut a).await.contains(r#""id":2,"#));
                let silent = tokio::time::timeout(Duration::from_millis(200), b.next()).await;
                assert!(silent.is_err(), "bob left: {silent:?}");
            })
            .await;
    }
}
