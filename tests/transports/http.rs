//! A raw HTTP/1.1 client: requests with headers, the room message POST,
//! and a streaming reader of `text/event-stream` that parses events the
//! way `EventSource` does.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::WAIT;

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn request_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body_len: usize,
) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if method != "GET" || body_len > 0 {
        head.push_str(&format!("Content-Length: {body_len}\r\n"));
    }
    head.push_str("\r\n");
    head
}

pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = request_head(addr, method, path, headers, body.len());
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413) before reading everything; keep going.
    let _ = stream.write_all(body).await;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .expect("an HTTP response in time")
        .unwrap();
    parse_response(&String::from_utf8_lossy(&response))
}

pub fn parse_response(text: &str) -> Reply {
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

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

/// POSTs to a room's messages endpoint; returns (status, JSON answer).
pub async fn post_message(
    addr: SocketAddr,
    topic: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let reply = request(
        addr,
        "POST",
        &format!("/api/rooms/{topic}/messages"),
        &[("Content-Type", content_type)],
        body.as_bytes(),
    )
    .await;
    (reply.status, reply.json())
}

pub async fn say(addr: SocketAddr, topic: &str, user: &str, text: &str) -> Value {
    let body = json!({"event": "new_msg", "payload": {"text": text}, "user": user});
    let (status, reply) = post_message(addr, topic, "application/json", &body.to_string()).await;
    assert_eq!(status, 200, "{reply}");
    reply
}
