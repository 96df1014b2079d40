//! A minimal Phoenix Channels V2 client over tokio-tungstenite: just what the
//! load generator needs (connect, join, push, leave, heartbeat) and a cheap
//! classifier for the frames the server sends back.
//!
//! Messages carry their send time as the `text` of a `new_msg` push, in
//! microseconds on the generator's own clock ([`now_us`]); `chat.js`
//! broadcasts the text back unchanged, so every receiver can measure the
//! end-to-end latency of every delivery.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::value::RawValue;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a join or leave may take before the bench gives up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Microseconds since the generator started: the clock messages carry.
pub fn now_us() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// The instant `us` microseconds after the generator started.
pub fn instant_at(us: u64) -> Instant {
    epoch() + Duration::from_micros(us)
}

/// A server frame, as far as the generator cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A `new_msg` broadcast whose text is a send time in µs.
    Stamp(u64),
    /// A `phx_reply` to one of our refs.
    Reply { msg_ref: u64, ok: bool },
    /// `phx_error` or `phx_close`: the server ended one of our channels.
    ChannelEnded,
    /// Presence, room_info, heartbeat replies to other refs, ...
    Other,
    /// Not a V2 frame at all.
    Malformed,
}

/// Classifies a V2 text frame. Broadcasts (null join_ref and ref) take a
/// fast path without a JSON parse: the generator must keep up with the
/// server on one core.
pub fn classify(text: &str) -> Frame {
    if let Some(rest) = text.strip_prefix("[null,null,") {
        if !rest.contains(r#","new_msg",{"#) {
            return Frame::Other;
        }
        let Some(at) = rest.find(r#""text":""#) else {
            return Frame::Malformed;
        };
        let digits = &rest[at + 8..];
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        return match digits[..end].parse() {
            Ok(stamp) => Frame::Stamp(stamp),
            Err(_) => Frame::Other, // someone else's chat message
        };
    }
    let Ok([_, msg_ref, _, event, payload]) = serde_json::from_str::<[&RawValue; 5]>(text) else {
        return Frame::Malformed;
    };
    match event.get() {
        r#""phx_reply""# => {
            let Some(msg_ref) = msg_ref
                .get()
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .and_then(|r| r.parse().ok())
            else {
                return Frame::Other;
            };
            let ok = payload.get().ends_with(r#""status":"ok"}"#);
            Frame::Reply { msg_ref, ok }
        }
        r#""phx_error""# | r#""phx_close""# => Frame::ChannelEnded,
        _ => Frame::Other,
    }
}

/// One WebSocket connection speaking Phoenix V2.
pub struct Client {
    pub ws: Ws,
    next_ref: u64,
}

impl Client {
    /// Connects as `user` (TCP_NODELAY on, as browsers do).
    pub async fn connect(url: &str, user: &str) -> anyhow::Result<Client> {
        let sep = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{sep}vsn=2.0.0&user={user}");
        let config = WebSocketConfig::default().read_buffer_size(16 << 10);
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true)
                .await
                .with_context(|| format!("connecting to {url}"))?;
        Ok(Client { ws, next_ref: 1 })
    }

    /// A fresh ref.
    pub fn next_ref(&mut self) -> u64 {
        let r = self.next_ref;
        self.next_ref += 1;
        r
    }

    /// Joins `topic`; returns the join_ref (to push and leave with) and the
    /// time from sending the join to its reply.
    pub async fn join(&mut self, topic: &str) -> anyhow::Result<(u64, Duration)> {
        let join_ref = self.next_ref();
        let frame = format!(r#"["{join_ref}","{join_ref}","{topic}","phx_join",{{}}]"#);
        let started = Instant::now();
        self.ws.send(Message::text(frame)).await?;
        if !self.await_reply(join_ref).await? {
            bail!("joining {topic} was refused");
        }
        Ok((join_ref, started.elapsed()))
    }

    /// Leaves `topic` and waits for the reply.
    pub async fn leave(&mut self, topic: &str, join_ref: u64) -> anyhow::Result<()> {
        let msg_ref = self.next_ref();
        let frame = format!(r#"["{join_ref}","{msg_ref}","{topic}","phx_leave",{{}}]"#);
        self.ws.send(Message::text(frame)).await?;
        if !self.await_reply(msg_ref).await? {
            bail!("leaving {topic} was refused");
        }
        Ok(())
    }

    /// Reads frames until the reply to `msg_ref`; returns whether it is ok.
    pub async fn await_reply(&mut self, msg_ref: u64) -> anyhow::Result<bool> {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .context("no reply within 10 s")?;
            match next {
                Some(Ok(Message::Text(text))) => {
                    if let Frame::Reply { msg_ref: r, ok } = classify(text.as_str())
                        && r == msg_ref
                    {
                        return Ok(ok);
                    }
                }
                Some(Ok(Message::Close(close))) => bail!("server closed the connection: {close:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => bail!("server closed the connection"),
            }
        }
    }

    /// A `new_msg` push whose text is `stamp`; returns its ref.
    pub fn push_stamp(&mut self, topic: &str, join_ref: u64, stamp: u64) -> (u64, Message) {
        let msg_ref = self.next_ref();
        let frame =
            format!(r#"["{join_ref}","{msg_ref}","{topic}","new_msg",{{"text":"{stamp}"}}]"#);
        (msg_ref, Message::text(frame))
    }

    /// A heartbeat frame (keeps idle connections open past 60 s) and its ref.
    pub fn heartbeat(&mut self) -> (u64, Message) {
        let msg_ref = self.next_ref();
        let frame = format!(r#"[null,"{msg_ref}","phoenix","heartbeat",{{}}]"#);
        (msg_ref, Message::text(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_server_frames() {
        let bc = r#"[null,null,"chat:a","new_msg",{"id":3,"user":"b1","text":"123456","at":17}]"#;
        assert_eq!(classify(bc), Frame::Stamp(123456));
        let other = r#"[null,null,"chat:a","new_msg",{"id":3,"user":"u","text":"hi","at":17}]"#;
        assert_eq!(classify(other), Frame::Other);
        let diff = r#"[null,null,"chat:a","presence_diff",{"joins":{},"leaves":{}}]"#;
        assert_eq!(classify(diff), Frame::Other);
        let ok = r#"["1","7","chat:a","phx_reply",{"response":{"id":1},"status":"ok"}]"#;
        assert_eq!(
            classify(ok),
            Frame::Reply {
                msg_ref: 7,
                ok: true
            }
        );
        let err = r#"["1","8","chat:a","phx_reply",{"response":{},"status":"error"}]"#;
        assert_eq!(
            classify(err),
            Frame::Reply {
                msg_ref: 8,
                ok: false
            }
        );
        assert_eq!(
            classify(r#"["1","1","chat:a","phx_error",{}]"#),
            Frame::ChannelEnded
        );
        assert_eq!(classify("garbage"), Frame::Malformed);
    }
}
