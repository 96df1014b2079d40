//! Test support: an in-process server on an ephemeral loopback port, the
//! real binary as a child process, a small Phoenix V2 client over
//! tokio-tungstenite, and (in submodules) a raw HTTP/1.1 client and an SSE
//! reader. Every test crate includes this module and uses part of it.
#![allow(dead_code)]

pub mod cluster;
pub mod raw_http;
pub mod sse;

pub use raw_http::http;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomhost::{Config, Durability, Host, HostBuilder};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for any one expected frame.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Server {
    pub addr: SocketAddr,
    pub host: Host,
    pub rooms: tempfile::TempDir,
    pub data: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<()>>,
}

/// The repository's rooms-js, copied into a temp dir with extra kinds.
pub fn rooms_dir(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("rooms-js");
    copy_dir(&repo, dir.path());
    for (name, source) in extra {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, source).unwrap();
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A config for tests: temp dirs filled in by `start`. The per-connection
/// message rate limit is off, because load tests send as fast as replies
/// come back; `tests/limits.rs` tests it with its own settings.
pub fn test_config() -> Config {
    Config {
        durability: Durability::Strict,
        msg_rate: 0,
        ..Config::default()
    }
}

impl Server {
    pub async fn start(extra: &[(&str, &str)], config: Config) -> Server {
        let rooms = rooms_dir(extra);
        let data = tempfile::tempdir().unwrap();
        Self::start_in(rooms, data, config).await
    }

    pub async fn start_in(
        rooms: tempfile::TempDir,
        data: tempfile::TempDir,
        config: Config,
    ) -> Server {
        let dir = data.path().to_path_buf();
        Self::launch(rooms, data, &dir, config, |b| b).await
    }

    /// [`Server::start`] with a host builder changed by `build` (e.g. its
    /// stores wrapped).
    pub async fn start_with(
        extra: &[(&str, &str)],
        config: Config,
        build: impl FnOnce(HostBuilder) -> HostBuilder,
    ) -> Server {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().to_path_buf();
        Self::launch(rooms_dir(extra), data, &dir, config, build).await
    }

    /// A server whose data directory is `data_dir` (a file system of the
    /// test's own), not a temporary directory.
    pub async fn start_at(rooms: tempfile::TempDir, data_dir: &Path, config: Config) -> Server {
        let unused = tempfile::tempdir().unwrap();
        Self::launch(rooms, unused, data_dir, config, |b| b).await
    }

    async fn launch(
        rooms: tempfile::TempDir,
        data: tempfile::TempDir,
        data_dir: &Path,
        mut config: Config,
        build: impl FnOnce(HostBuilder) -> HostBuilder,
    ) -> Server {
        config.scripts_dir = rooms.path().to_path_buf();
        config.data_dir = data_dir.to_path_buf();
        let host = build(Host::builder().config(config)).build().await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving_host = host.clone();
        let serving = tokio::spawn(async move {
            serving_host
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Server {
            addr,
            host,
            rooms,
            data,
            stop: Some(stop),
            serving: Some(serving),
        }
    }

    /// Graceful shutdown; returns the directories for a restart.
    pub async fn stop(mut self) -> (tempfile::TempDir, tempfile::TempDir) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = self.serving.take() {
            tokio::time::timeout(Duration::from_secs(30), serving)
                .await
                .expect("server stops")
                .unwrap();
        }
        let rooms = std::mem::replace(&mut self.rooms, tempfile::tempdir().unwrap());
        let data = std::mem::replace(&mut self.data, tempfile::tempdir().unwrap());
        (rooms, data)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn scripts(&self) -> PathBuf {
        self.rooms.path().to_path_buf()
    }

    pub async fn client(&self, user: &str) -> Client {
        Client::connect(self.addr, &format!("vsn=2.0.0&user={user}")).await
    }

    pub async fn kill(&self, topic: &str) -> Value {
        http(self.addr, "POST", &format!("/api/rooms/{topic}/kill"), None)
            .await
            .1
    }

    pub async fn api(&self, path: &str) -> Value {
        http(self.addr, "GET", path, None).await.1
    }

    /// The `/metrics` text; asserts it was served.
    pub async fn metrics(&self) -> String {
        let (status, body) = http(self.addr, "GET", "/metrics", None).await;
        assert_eq!(status, 200, "{body}");
        body.as_str().expect("text").to_string()
    }
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_ref: u64,
    /// Frames read while waiting for something else.
    pending: VecDeque<Value>,
    /// Binary frames read while waiting for text ones, in order.
    binaries: VecDeque<Vec<u8>>,
    /// `read` stops at a binary frame (for `next_binary`).
    want_binary: bool,
    /// The close frame the server sent, if any.
    pub closed: Option<(u16, String)>,
}

impl Client {
    pub async fn connect(addr: SocketAddr, query: &str) -> Client {
        let url = format!("ws://{addr}/socket/websocket?{query}");
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Client {
            ws,
            next_ref: 0,
            pending: VecDeque::new(),
            binaries: VecDeque::new(),
            want_binary: false,
            closed: None,
        }
    }

    /// A client over an already opened WebSocket (e.g. one connected with
    /// extra handshake headers).
    pub fn from_stream(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        Client {
            ws,
            next_ref: 0,
            pending: VecDeque::new(),
            binaries: VecDeque::new(),
            want_binary: false,
            closed: None,
        }
    }

    pub fn next_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).await.unwrap();
    }

    /// Sends a V2 frame; `None` if the connection is gone.
    pub async fn try_push(
        &mut self,
        join_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> Option<String> {
        let r = self.next_ref();
        let frame = json!([join_ref, r, topic, event, payload]);
        self.ws.send(Message::text(frame.to_string())).await.ok()?;
        Some(r)
    }

    /// Sends a V2 frame; returns its ref.
    pub async fn push(
        &mut self,
        join_ref: Option<&str>,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> String {
        let r = self.next_ref();
        let frame = json!([join_ref, r, topic, event, payload]);
        self.send_text(&frame.to_string()).await;
        r
    }

    /// Joins; returns (join_ref, reply payload `{status, response}`).
    pub async fn join(&mut self, topic: &str, params: Value) -> (String, Value) {
        let r = self.next_ref();
        let frame = json!([r, r, topic, "phx_join", params]);
        self.send_text(&frame.to_string()).await;
        let reply = self.reply(&r).await;
        (r, reply)
    }

    /// Joins and asserts ok; returns (join_ref, response).
    pub async fn join_ok(&mut self, topic: &str) -> (String, Value) {
        let (jr, reply) = self.join(topic, json!({})).await;
        assert_eq!(reply["status"], "ok", "join {topic}: {reply}");
        (jr, reply["response"].clone())
    }

    /// Pushes and waits for the reply payload.
    pub async fn call(
        &mut self,
        join_ref: &str,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> Value {
        let r = self.push(Some(join_ref), topic, event, payload).await;
        self.reply(&r).await
    }

    /// The next frame, as JSON; `None` once the server closed.
    pub async fn next(&mut self) -> Option<Value> {
        if let Some(v) = self.pending.pop_front() {
            return Some(v);
        }
        self.read().await
    }

    async fn read(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame within the wait")?;
            match msg {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(t.as_str()).unwrap()),
                Ok(Message::Binary(b)) => {
                    self.binaries.push_back(b.to_vec());
                    if self.want_binary {
                        return None;
                    }
                }
                Ok(Message::Close(frame)) => {
                    self.closed = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                    return None;
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Waits for a frame matching `pred`, keeping the others for later.
    pub async fn until(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Value {
        if let Some(at) = self.pending.iter().position(&mut pred) {
            return self.pending.remove(at).unwrap();
        }
        loop {
            let v = self.read().await.expect("connection open");
            if pred(&v) {
                return v;
            }
            self.pending.push_back(v);
        }
    }

    /// The `phx_reply` payload for `r`.
    pub async fn reply(&mut self, r: &str) -> Value {
        let frame = self.until(|v| v[3] == "phx_reply" && v[1] == r).await;
        frame[4].clone()
    }

    /// The next push or broadcast of `event` on `topic`.
    pub async fn event(&mut self, topic: &str, event: &str) -> Value {
        self.until(|v| v[2] == topic && v[3] == event).await
    }

    /// Reads until the server closes; returns the close frame (code, reason).
    pub async fn closed(&mut self) -> Option<(u16, String)> {
        while self.read().await.is_some() {}
        self.closed.clone()
    }

    /// Whether no frame matching `pred` arrives within `quiet` (others are
    /// kept for later).
    pub async fn none_within(
        &mut self,
        quiet: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> bool {
        if self.pending.iter().any(&mut pred) {
            return false;
        }
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next()).await;
            let Ok(Some(Ok(Message::Text(t)))) = next else {
                return next.is_err();
            };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if pred(&v) {
                return false;
            }
            self.pending.push_back(v);
        }
    }

    /// The next binary frame (text frames read meanwhile are kept).
    pub async fn next_binary(&mut self) -> Vec<u8> {
        self.want_binary = true;
        while self.binaries.is_empty() {
            match self.read().await {
                Some(v) => self.pending.push_back(v),
                None if self.binaries.is_empty() => panic!("connection closed"),
                None => {}
            }
        }
        self.want_binary = false;
        self.binaries.pop_front().expect("a binary frame")
    }

    /// Forgets frames read so far but not yet consumed.
    pub fn clear(&mut self) {
        self.pending.clear();
    }

    /// Sends a raw text frame whose bytes need not be UTF-8.
    pub async fn send_raw_text(&mut self, bytes: Vec<u8>) {
        use tokio_tungstenite::tungstenite::protocol::frame::{Frame, coding};
        let frame = Frame::message(bytes, coding::OpCode::Data(coding::Data::Text), true);
        self.ws.send(Message::Frame(frame)).await.unwrap();
    }

    /// The next frame's text exactly as it came over the wire.
    pub async fn next_text(&mut self) -> String {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame within the wait")
                .expect("connection open")
                .expect("a frame");
            if let Message::Text(t) = msg {
                return t.to_string();
            }
        }
    }

    /// Closes with `code` and returns the server's answering close frame.
    pub async fn close_with(&mut self, code: u16, reason: &str) -> Option<(u16, String)> {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        let frame = CloseFrame {
            code: code.into(),
            reason: reason.into(),
        };
        self.ws.send(Message::Close(Some(frame))).await.unwrap();
        self.closed().await
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The `text` of every message in a chat message list (a join reply's
/// `messages`, or the `messages` of a chat room's state).
pub fn texts(messages: &Value) -> Vec<String> {
    messages
        .as_array()
        .expect("a list of messages")
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect()
}

/// The real `roomhost` binary, started on an ephemeral port.
pub struct Binary {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    /// Everything the server logged (stderr), collected in the background.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Binary {
    pub async fn start(rooms: &Path, data: &Path, extra: &[&str]) -> Binary {
        Binary::start_logging(rooms, data, extra, "info").await
    }

    /// As [`Binary::start`], with `filter` as `RUST_LOG`.
    pub async fn start_logging(rooms: &Path, data: &Path, extra: &[&str], filter: &str) -> Binary {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_roomhost"))
            .arg("serve")
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .arg("--rooms")
            .arg(rooms)
            .arg("--data")
            .arg(data)
            .args(extra)
            .env("RUST_LOG", filter)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the roomhost binary starts");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .expect("the server prints its address")
            .unwrap()
            .expect("a line on stdout");
        let addr = line
            .rsplit("http://")
            .next()
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {line}"));
        Binary { child, addr, log }
    }

    pub async fn client(&self, user: &str) -> Client {
        Client::connect(self.addr, &format!("vsn=2.0.0&user={user}")).await
    }

    pub async fn api(&self, path: &str) -> Value {
        http(self.addr, "GET", path, None).await.1
    }

    /// SIGKILL: no chance to flush or snapshot.
    pub async fn kill_9(mut self) {
        self.child.kill().await.unwrap();
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running") as i32;
        // SAFETY: sending a signal to our own child process.
        unsafe { libc_kill(pid, 15) };
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .unwrap()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether the log mentions `needle` within a few seconds (stderr is
    /// read in the background).
    pub async fn logged(&self, needle: &str) -> bool {
        for _ in 0..50 {
            if self.log().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
