//! A streaming reader of `text/event-stream` on a raw socket that parses
//! events the way `EventSource` does, keeping the comments (keep-alives) it
//! skips.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::WAIT;
use super::raw_http::{parse_response, request_head};

#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }

    pub fn id(&self) -> u64 {
        self.id.as_deref().unwrap().parse().unwrap()
    }
}

pub struct Sse {
    stream: TcpStream,
    pub status: u16,
    headers: Vec<(String, String)>,
    /// Undecoded bytes of the chunked body.
    raw: Vec<u8>,
    /// Decoded body text not yet parsed into events.
    text: String,
    /// Comment lines seen (keep-alives).
    pub comments: Vec<String>,
}

impl Sse {
    pub async fn open(addr: SocketAddr, topic: &str, last_event_id: Option<&str>) -> Sse {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut headers = vec![("Accept", "text/event-stream")];
        if let Some(id) = last_event_id {
            headers.push(("Last-Event-ID", id));
        }
        let head = request_head(
            addr,
            "GET",
            &format!("/api/rooms/{topic}/events"),
            &headers,
            0,
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut sse = Sse {
            stream,
            status: 0,
            headers: Vec::new(),
            raw: Vec::new(),
            text: String::new(),
            comments: Vec::new(),
        };
        let head = loop {
            if let Some(at) = find(&sse.raw, b"\r\n\r\n") {
                let head = String::from_utf8(sse.raw[..at].to_vec()).unwrap();
                sse.raw.drain(..at + 4);
                break head;
            }
            assert!(sse.read_more().await, "connection closed before the head");
        };
        let reply = parse_response(&format!("{head}\r\n\r\n"));
        sse.status = reply.status;
        sse.headers = reply.headers;
        sse
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    async fn read_more(&mut self) -> bool {
        let mut buf = [0u8; 8192];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut buf))
            .await
            .expect("SSE data within the wait")
            .unwrap_or(0);
        self.raw.extend_from_slice(&buf[..n]);
        n > 0
    }

    /// Moves complete chunks from `raw` to `text`; false at the last chunk.
    fn dechunk(&mut self) -> bool {
        loop {
            let Some(eol) = find(&self.raw, b"\r\n") else {
                return true;
            };
            let size = std::str::from_utf8(&self.raw[..eol]).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                return false;
            }
            if self.raw.len() < eol + 2 + size + 2 {
                return true;
            }
            let chunk = self.raw[eol + 2..eol + 2 + size].to_vec();
            self.text.push_str(std::str::from_utf8(&chunk).unwrap());
            self.raw.drain(..eol + 2 + size + 2);
        }
    }

    /// The next event (comments and `retry` are noted and skipped); `None`
    /// when the server ends the stream.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            let open = self.dechunk();
            while let Some(at) = self.text.find("\n\n") {
                let block: String = self.text.drain(..at + 2).collect();
                let mut event = SseEvent {
                    id: None,
                    event: "message".into(),
                    data: String::new(),
                };
                let mut has_data = false;
                for line in block.lines() {
                    if let Some(comment) = line.strip_prefix(':') {
                        self.comments.push(comment.trim().to_string());
                    } else if let Some((field, value)) = line.split_once(':') {
                        let value = value.strip_prefix(' ').unwrap_or(value);
                        match field {
                            "id" => event.id = Some(value.into()),
                            "event" => event.event = value.into(),
                            "data" => {
                                if has_data {
                                    event.data.push('\n');
                                }
                                event.data.push_str(value);
                                has_data = true;
                            }
                            _ => {}
                        }
                    }
                }
                if has_data {
                    return Some(event);
                }
            }
            if !open || !self.read_more().await {
                return None;
            }
        }
    }

    /// The next event named `name`, skipping others.
    pub async fn event(&mut self, name: &str) -> SseEvent {
        loop {
            let event = self.next().await.expect("the stream stays open");
            if event.event == name {
                return event;
            }
        }
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
