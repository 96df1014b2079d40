//! A raw HTTP/1.1 client on a plain `TcpStream`: requests with any headers
//! and bodies (also ones a real client would not send), the reply's status,
//! headers and de-chunked body, the room message POST, and `http`, the JSON
//! shorthand most tests use. The SSE reader (`super::sse`) builds on its
//! request head and response parsing.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    // Longer than the default long-poll window (10 s), which a poll may wait.
    tokio::time::timeout(Duration::from_secs(40), stream.read_to_end(&mut response))
        .await
        .expect("an HTTP response in time")
        .unwrap();
    parse_response(&String::from_utf8_lossy(&response))
}

/// A request with an optional `(content type, body)` (JSON by default):
/// (status, JSON body or the text as a string).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
) -> (u16, Value) {
    let (content_type, body) = body.unwrap_or(("application/json", ""));
    let reply = request(
        addr,
        method,
        path,
        &[("Content-Type", content_type)],
        body.as_bytes(),
    )
    .await;
    let value = serde_json::from_str(&reply.body).unwrap_or(Value::String(reply.body));
    (reply.status, value)
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
