//! A Phoenix long-poll client (V2 frames) that behaves as phoenix.js's
//! `LongPoll` transport: one GET opens the session, GETs poll, POSTs carry
//! ndjson batches.

use std::collections::VecDeque;
use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::common::WAIT;
use crate::common::raw_http::request;

pub struct LongPoll {
    addr: SocketAddr,
    pub token: String,
    next_ref: u64,
    /// Frames polled while waiting for something else.
    pending: VecDeque<Value>,
}

impl LongPoll {
    pub async fn open(addr: SocketAddr, user: &str) -> LongPoll {
        let reply = request(
            addr,
            "GET",
            &format!("/socket/longpoll?vsn=2.0.0&user={user}"),
            &[],
            b"",
        )
        .await;
        assert_eq!(reply.status, 200);
        let body = reply.json();
        assert_eq!(body["status"], 410, "a new session: {body}");
        assert_eq!(body["messages"], json!([]));
        let token = body["token"].as_str().expect("a token").to_string();
        assert_eq!(reply.header("x-phoenix-longpoll-token"), Some(&*token));
        LongPoll {
            addr,
            token,
            next_ref: 0,
            pending: VecDeque::new(),
        }
    }

    pub fn path(&self) -> String {
        format!("/socket/longpoll?vsn=2.0.0&token={}", self.token)
    }

    /// One poll: the JSON answer.
    pub async fn poll(&self) -> Value {
        let reply = request(self.addr, "GET", &self.path(), &[], b"").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.json()
    }

    /// Posts frames as ndjson; returns (HTTP status, JSON answer).
    pub async fn post_raw(&self, content_type: &str, body: &str) -> (u16, Value) {
        let reply = request(
            self.addr,
            "POST",
            &self.path(),
            &[("Content-Type", content_type)],
            body.as_bytes(),
        )
        .await;
        (reply.status, reply.json())
    }

    pub async fn post(&self, frames: &[Value]) -> Value {
        let body: Vec<String> = frames.iter().map(Value::to_string).collect();
        let (status, answer) = self
            .post_raw("application/x-ndjson", &body.join("\n"))
            .await;
        assert_eq!((status, &answer["status"]), (200, &json!(200)), "{answer}");
        answer
    }

    pub fn next_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    /// Sends one frame; returns its ref.
    pub async fn push(
        &mut self,
        join_ref: &str,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> String {
        let r = self.next_ref();
        self.post(&[json!([join_ref, r, topic, event, payload])])
            .await;
        r
    }

    pub async fn join(&mut self, topic: &str) -> (String, Value) {
        let r = self.next_ref();
        self.post(&[json!([r, r, topic, "phx_join", {}])]).await;
        let reply = self.reply(&r).await;
        assert_eq!(reply["status"], "ok", "join {topic}: {reply}");
        (r, reply["response"].clone())
    }

    /// Polls until a frame matches `pred`, keeping the others.
    pub async fn until(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Value {
        if let Some(at) = self.pending.iter().position(&mut pred) {
            return self.pending.remove(at).unwrap();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            assert!(tokio::time::Instant::now() < deadline, "no matching frame");
            let answer = self.poll().await;
            assert!(
                answer["status"] == 200 || answer["status"] == 204,
                "{answer}"
            );
            for message in answer["messages"].as_array().unwrap() {
                let frame: Value = serde_json::from_str(message.as_str().unwrap()).unwrap();
                self.pending.push_back(frame);
            }
            if let Some(at) = self.pending.iter().position(&mut pred) {
                return self.pending.remove(at).unwrap();
            }
        }
    }

    pub async fn reply(&mut self, r: &str) -> Value {
        self.until(|v| v[3] == "phx_reply" && v[1] == r).await[4].clone()
    }

    pub async fn event(&mut self, topic: &str, event: &str) -> Value {
        self.until(|v| v[2] == topic && v[3] == event).await
    }
}
