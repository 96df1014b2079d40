//! Cluster mode over real processes on loopback: 3 clustered nats-servers
//! (the pinned binary, installed on first use) and 3 roomhost nodes. Each
//! room runs on exactly one node; a node's death (`kill -9`), a paused
//! owner (`SIGSTOP` past its lease) and a NATS server's death lose nothing
//! acknowledged, and an old owner sends nothing after the takeover.
//!
//! Any node serves any room: a node that does not run a room forwards its
//! channels' joins, pushes and leaves to the owner and delivers the room's
//! broadcasts (one ordered stream per room) to them.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::cluster::{NatsCluster, Node, SIGCONT, SIGTERM};
use common::{http, rooms_dir};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A room that records every `add` in order: `{sender, n}` → `"sender:n"`.
const SEQ_JS: &str = r#"
let log = [];
let ids = {};
export function onJoin(conn, params) {
  ids[conn.user] = conn.id;
  return { count: log.length, node: conn.meta.node ?? null };
}
export function onMessage(conn, event, payload) {
  if (event === "shout") {
    room.broadcast("shouted", { from: conn.user }, { except: conn.id });
    return {};
  }
  if (event === "poke") {
    room.push(ids[payload.to], "poked", { from: conn.user });
    return {};
  }
  if (event === "add") {
    const item = `${payload.sender}:${payload.n}`;
    log.push(item);
    room.broadcast("added", { item });
    return { count: log.length };
  }
  if (event === "get") return { log };
  throw new Error(`unknown event ${event}`);
}
export function snapshot() { return { log }; }
export function restore(state) { log = state.log; }
"#;

/// How long any one step may take before the test fails.
const STEP: Duration = Duration::from_secs(30);

struct Cluster {
    nats: NatsCluster,
    nodes: Vec<Node>,
    _rooms: tempfile::TempDir,
}

impl Cluster {
    async fn start(lease_secs: f64, extra: &[&str]) -> Cluster {
        let rooms = rooms_dir(&[("seq.js", SEQ_JS)]);
        let nats = NatsCluster::start(3);
        let mut nodes = Vec::new();
        for name in ["n1", "n2", "n3"] {
            nodes.push(Node::start(rooms.path(), &nats, name, lease_secs, extra).await);
        }
        Cluster {
            nats,
            nodes,
            _rooms: rooms,
        }
    }

    fn addrs(&self) -> HashMap<String, SocketAddr> {
        self.nodes
            .iter()
            .filter(|n| n.bin.is_some())
            .map(|n| (n.name.clone(), n.addr))
            .collect()
    }

    fn node(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .expect("a node of this name")
    }
}

/// A Phoenix V2 client that reports failures instead of panicking (nodes
/// die under it).
struct Ws {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_ref: u64,
    /// Broadcasts seen, in order.
    broadcasts: Vec<Value>,
    /// Every other push or broadcast seen (`[event, payload]`), in order.
    events: Vec<(String, Value)>,
}

impl Ws {
    async fn connect(addr: SocketAddr, user: &str) -> Option<Ws> {
        let url = format!("ws://{addr}/socket/websocket?vsn=2.0.0&user={user}");
        let connect = tokio_tungstenite::connect_async(url);
        let (ws, _) = tokio::time::timeout(Duration::from_secs(5), connect)
            .await
            .ok()?
            .ok()?;
        Some(Ws {
            ws,
            next_ref: 0,
            broadcasts: Vec::new(),
            events: Vec::new(),
        })
    }

    async fn send(
        &mut self,
        join_ref: &str,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> Option<String> {
        self.next_ref += 1;
        let r = self.next_ref.to_string();
        let join_ref = if event == "phx_join" {
            r.clone()
        } else {
            join_ref.to_string()
        };
        let frame = json!([join_ref, r, topic, event, payload]);
        self.ws.send(Message::text(frame.to_string())).await.ok()?;
        Some(r)
    }

    /// The reply to `r` (`{status, response}`), or `Err` with why there is
    /// none: the channel errored or closed, the socket died, or `within`
    /// passed.
    async fn reply(&mut self, r: &str, within: Duration) -> Result<Value, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(reply) = self.read_one(r, deadline).await? {
                return Ok(reply);
            }
        }
    }

    /// Reads one frame, recording pushes and broadcasts: `Some` if it is
    /// the reply to `r`.
    async fn read_one(
        &mut self,
        r: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Value>, String> {
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| "no reply in time".to_string())?;
            let text = match next {
                Some(Ok(Message::Text(t))) => t.to_string(),
                Some(Ok(Message::Close(_))) | None => return Err("closed".into()),
                Some(Err(e)) => return Err(format!("socket: {e}")),
                Some(Ok(_)) => continue,
            };
            let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            match v[3].as_str() {
                Some("phx_reply") if v[1] == r => return Ok(Some(v[4].clone())),
                Some("phx_error") | Some("phx_close") => return Err(format!("{}", v[3])),
                Some("added") => self.broadcasts.push(v[4].clone()),
                Some("phx_reply") => {}
                Some(event) => self.events.push((event.to_string(), v[4].clone())),
                None => {}
            }
            return Ok(None);
        }
    }

    /// Reads until `done` holds (`Ok`), or the channel ends or `within`
    /// passes (`Err` with why).
    async fn until(&mut self, within: Duration, done: impl Fn(&Ws) -> bool) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + within;
        while !done(self) {
            match self.read_one("never", deadline).await {
                Ok(_) => {}
                Err(why) if why == "no reply in time" => return Err("not in time".into()),
                Err(why) => return Err(why),
            }
        }
        Ok(())
    }

    /// The users the last `presence_state` listed.
    fn present(&self) -> Vec<String> {
        let state = self
            .events
            .iter()
            .rev()
            .find(|(event, _)| event == "presence_state")
            .map(|(_, state)| state.clone())
            .unwrap_or_default();
        let mut users: Vec<String> = state
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        users.sort();
        users
    }

    async fn join(&mut self, topic: &str) -> Result<(String, Value), String> {
        let r = self
            .send("", topic, "phx_join", json!({}))
            .await
            .ok_or("send failed")?;
        let reply = self.reply(&r, Duration::from_secs(15)).await?;
        Ok((r, reply))
    }
}

/// Joins `topic` on whichever node owns it, starting at `first`: a
/// `not_owner` refusal names the node to go to; a dead node or a lease not
/// yet expired is retried until `STEP` passes. Returns the client, its
/// join ref and the node it joined on.
async fn join_owner(
    addrs: &HashMap<String, SocketAddr>,
    first: &str,
    topic: &str,
    user: &str,
) -> (Ws, String, String) {
    let deadline = Instant::now() + STEP;
    let names: Vec<String> = addrs.keys().cloned().collect();
    let mut target = first.to_string();
    let mut round = 0usize;
    loop {
        assert!(
            Instant::now() < deadline,
            "{user} could not join {topic} on any node"
        );
        if let Some(addr) = addrs.get(&target)
            && let Some(mut ws) = Ws::connect(*addr, user).await
            && let Ok((join_ref, reply)) = ws.join(topic).await
        {
            if reply["status"] == "ok" {
                return (ws, join_ref, target);
            }
            let named = reply["response"]["node"].as_str().map(str::to_string);
            if reply["response"]["reason"] == "not_owner"
                && let Some(node) = named.filter(|n| addrs.contains_key(n) && *n != target)
            {
                target = node;
                continue;
            }
        }
        // The owner is dead or its lease has not run out yet: try the
        // others in turn.
        round += 1;
        target = names[round % names.len()].clone();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The room's log, read through its owner.
async fn room_log(addrs: &HashMap<String, SocketAddr>, first: &str, topic: &str) -> Vec<String> {
    let (mut ws, join_ref, _) = join_owner(addrs, first, topic, "reader").await;
    let r = ws
        .send(&join_ref, topic, "get", json!({}))
        .await
        .expect("sent");
    let reply = ws.reply(&r, STEP).await.expect("the log");
    assert_eq!(reply["status"], "ok", "{reply}");
    reply["response"]["log"]
        .as_array()
        .expect("a log")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// What one sender of `add`s learned.
#[derive(Default)]
struct Sent {
    /// `n`s answered ok, in order.
    acked: Vec<u64>,
    /// When each ok came.
    acked_at: Vec<Instant>,
    /// `n`s sent whose answer never came (or was an error).
    unknown: Vec<u64>,
}

/// Checks the log against what the senders learned: every acknowledged
/// push exactly once, each sender's items in its send order, nothing that
/// was never sent.
fn check_log(log: &[String], senders: &BTreeMap<String, Sent>) {
    let mut seen: HashMap<&str, Vec<u64>> = HashMap::new();
    for item in log {
        let (sender, n) = item.split_once(':').expect("sender:n");
        seen.entry(sender)
            .or_default()
            .push(n.parse().expect("a number"));
    }
    for (name, sent) in senders {
        let got = seen.remove(name.as_str()).unwrap_or_default();
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "{name}'s items are out of order or doubled: {got:?}"
        );
        for n in &sent.acked {
            assert!(
                got.contains(n),
                "{name}:{n} was acknowledged and is lost (the room holds {got:?}; acknowledged {:?})",
                sent.acked
            );
        }
        for n in &got {
            assert!(
                sent.acked.contains(n) || sent.unknown.contains(n),
                "{name}:{n} is in the room but was never sent"
            );
        }
    }
    assert!(seen.is_empty(), "items of unknown senders: {seen:?}");
}

/// Pushes `add`s to `topic` as `name` until `stop`, rejoining wherever the
/// room runs whenever the channel dies; each `n` is sent once.
async fn send_until(
    addrs: HashMap<String, SocketAddr>,
    first: String,
    topic: &'static str,
    name: String,
    stop: tokio::sync::watch::Receiver<bool>,
    acks: Arc<AtomicUsize>,
) -> Sent {
    let mut sent = Sent::default();
    let mut n = 0;
    'outer: while !*stop.borrow() {
        let (mut ws, join_ref, _) = join_owner(&addrs, &first, topic, &name).await;
        while !*stop.borrow() {
            n += 1;
            let Some(r) = ws
                .send(&join_ref, topic, "add", json!({ "sender": name, "n": n }))
                .await
            else {
                sent.unknown.push(n);
                continue 'outer;
            };
            match ws.reply(&r, Duration::from_secs(25)).await {
                Ok(reply) if reply["status"] == "ok" => {
                    sent.acked.push(n);
                    sent.acked_at.push(Instant::now());
                    acks.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    sent.unknown.push(n);
                    continue 'outer;
                }
            }
        }
    }
    sent
}

/// Waits (bounded) until `acks` grew by `more` from now.
async fn until_acked(acks: &AtomicUsize, more: usize, within: Duration) {
    let target = acks.load(Ordering::Relaxed) + more;
    let deadline = Instant::now() + within;
    while acks.load(Ordering::Relaxed) < target {
        assert!(
            Instant::now() < deadline,
            "pushes were not acknowledged within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The owner of `topic` as each live node's `GET /api/rooms/{topic}` says:
/// 200 with `"node"` on the owner, 421 with `"node"` elsewhere.
async fn owners(cluster: &Cluster, topic: &str) -> Vec<(String, u16, Option<String>)> {
    let mut out = Vec::new();
    for node in cluster.nodes.iter().filter(|n| n.bin.is_some()) {
        let (status, body) = http(node.addr, "GET", &format!("/api/rooms/{topic}"), None).await;
        out.push((
            node.name.clone(),
            status,
            body["node"].as_str().map(str::to_string),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_simultaneous_first_joins_start_the_room_on_one_node() {
    let cluster = Cluster::start(3.0, &[]).await;
    let topic = "seq:race";
    let mut joins = Vec::new();
    for i in 0..60 {
        let node = &cluster.nodes[i % 3];
        let (addr, name) = (node.addr, node.name.clone());
        joins.push(tokio::spawn(async move {
            let mut ws = Ws::connect(addr, &format!("u{i}")).await.expect("connects");
            let (_, reply) = ws.join(topic).await.expect("a join reply");
            (name, reply, ws)
        }));
    }
    let mut ok_on: BTreeMap<String, usize> = BTreeMap::new();
    let mut clients = Vec::new();
    for join in joins {
        let (node, reply, ws) = join.await.unwrap();
        assert_eq!(reply["status"], "ok", "a join on {node}: {reply}");
        *ok_on.entry(node).or_default() += 1;
        clients.push(ws);
    }
    assert_eq!(ok_on.values().sum::<usize>(), 60, "{ok_on:?}");
    // One node runs the room; the others forward to it.
    let seen = owners(&cluster, topic).await;
    let owner = seen
        .iter()
        .find(|(_, status, _)| *status == 200)
        .map(|(node, _, _)| node.clone())
        .expect("one node answers 200");
    for (node, status, named) in &seen {
        assert_eq!(named.as_deref(), Some(owner.as_str()), "{seen:?}");
        let expected = if *node == owner { 200 } else { 421 };
        assert_eq!(*status, expected, "{seen:?}");
    }
    let running = cluster.nodes[cluster.node(&owner)].log();
    assert_eq!(running.matches("room running").count(), 1, "{running}");
    for node in cluster.nodes.iter().filter(|n| n.name != owner) {
        assert!(
            !node.log().contains("room running"),
            "{} ran it too",
            node.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_owner_loses_no_acknowledged_push() {
    // Snapshots every 25 events: the new owner recovers from a snapshot
    // and the events after it (some stored before the snapshot itself).
    let mut cluster = Cluster::start(2.0, &["--snapshot-events", "25"]).await;
    let topic = "seq:k9";
    let addrs = cluster.addrs();
    // n1 takes the room; three senders push to it.
    let (_first, _, owner) = join_owner(&addrs, "n1", topic, "opener").await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let acks = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for s in 0..3 {
        senders.push(tokio::spawn(send_until(
            addrs.clone(),
            owner.clone(),
            topic,
            format!("s{s}"),
            stop.clone(),
            acks.clone(),
        )));
    }
    until_acked(&acks, 100, STEP).await;
    let owner_index = cluster.node(&owner);
    cluster.nodes[owner_index].kill_9().await;
    // Once it is dead: an ack that was on its way does not count as after.
    let killed_at = Instant::now();
    // The senders find the new owner by themselves.
    let survivors: HashMap<String, SocketAddr> = cluster.addrs();
    until_acked(&acks, 100, STEP).await;
    stop_tx.send(true).unwrap();
    let mut outcome = BTreeMap::new();
    for (s, sender) in senders.into_iter().enumerate() {
        outcome.insert(format!("s{s}"), sender.await.unwrap());
    }
    let first_after = outcome
        .values()
        .flat_map(|s| s.acked_at.iter())
        .filter(|at| **at > killed_at)
        .min()
        .copied()
        .expect("a push was acknowledged after the kill");
    let total: usize = outcome.values().map(|s| s.acked.len()).sum();
    eprintln!(
        "kill -9 of the owner (lease 2 s): first acknowledged push {} ms after the kill ({total} pushes acknowledged)",
        first_after.duration_since(killed_at).as_millis()
    );
    let log = room_log(&survivors, "n2", topic).await;
    check_log(&log, &outcome);
    // The new owner read the purged subject without dropping anything.
    for node in cluster.nodes.iter().filter(|n| n.bin.is_some()) {
        let logged = node.log();
        assert!(
            !logged.contains("journal repaired"),
            "{} repaired the journal of a room that lost no data:\n{logged}",
            node.name
        );
    }
    // Purges behind snapshots keep the room's subject short.
    let held = cluster.nats.messages_on("ROOMHOST", "rh.j.seq_ck9").await;
    assert!(
        held < (log.len() as u64) / 2,
        "the subject holds {held} messages for {} events: snapshots do not purge it",
        log.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_owner_sends_nothing_after_the_takeover() {
    let cluster = Cluster::start(2.0, &[]).await;
    let topic = "seq:pause";
    let addrs = cluster.addrs();
    let (mut old, old_ref, owner) = join_owner(&addrs, "n1", topic, "a").await;
    let r = old
        .send(&old_ref, topic, "add", json!({"sender": "a", "n": 1}))
        .await
        .unwrap();
    assert_eq!(old.reply(&r, STEP).await.unwrap()["status"], "ok");
    let paused = &cluster.nodes[cluster.node(&owner)];
    paused.stop().await;
    // Pushes to the paused owner wait in its socket.
    let mut late = Vec::new();
    for n in 2..=4 {
        late.push(
            old.send(&old_ref, topic, "add", json!({"sender": "a", "n": n}))
                .await
                .unwrap(),
        );
    }
    // Another node takes the room once the lease ran out.
    let others: HashMap<String, SocketAddr> = addrs
        .iter()
        .filter(|(n, _)| **n != owner)
        .map(|(n, a)| (n.clone(), *a))
        .collect();
    let first_other = others.keys().next().unwrap().clone();
    let (mut new, new_ref, new_owner) = join_owner(&others, &first_other, topic, "b").await;
    assert_ne!(new_owner, owner);
    let mut b = Sent::default();
    for n in 1..=5 {
        let r = new
            .send(&new_ref, topic, "add", json!({"sender": "b", "n": n}))
            .await
            .unwrap();
        assert_eq!(new.reply(&r, STEP).await.unwrap()["status"], "ok");
        b.acked.push(n);
    }
    paused.signal(SIGCONT);
    // The old owner answers none of the late pushes with ok, and
    // broadcasts nothing of them.
    for r in &late {
        match old.reply(r, Duration::from_secs(10)).await {
            Ok(reply) => assert_ne!(
                reply["status"], "ok",
                "the old owner acknowledged {r}: {reply}"
            ),
            Err(_) => break, // the channel or the socket ended
        }
    }
    assert!(
        old.broadcasts.iter().all(|b| b["item"] == "a:1"),
        "the old owner broadcast after the takeover: {:?}",
        old.broadcasts
    );
    let log = room_log(&others, &new_owner, topic).await;
    let mut senders = BTreeMap::new();
    senders.insert(
        "a".to_string(),
        Sent {
            acked: vec![1],
            ..Sent::default()
        },
    );
    senders.insert("b".to_string(), b);
    check_log(&log, &senders);
    assert!(
        !log.iter()
            .any(|i| ["a:2", "a:3", "a:4"].contains(&i.as_str())),
        "a push the old owner refused is in the room: {log:?}"
    );
    assert!(
        cluster.nodes[cluster.node(&owner)]
            .log()
            .contains("room lost to another node"),
        "the old owner says it stopped the room"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_nats_server_loses_no_acknowledged_push() {
    // A lease well above the engine's leader election (4–9 s).
    let mut cluster = Cluster::start(10.0, &[]).await;
    let topic = "seq:natskill";
    let addrs = cluster.addrs();
    let (_first, _, owner) = join_owner(&addrs, "n1", topic, "opener").await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let acks = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for s in 0..2 {
        senders.push(tokio::spawn(send_until(
            addrs.clone(),
            owner.clone(),
            topic,
            format!("s{s}"),
            stop.clone(),
            acks.clone(),
        )));
    }
    until_acked(&acks, 100, STEP).await;
    // The worst case: the server that leads the journal stream.
    let leader = cluster.nats.stream_leader("ROOMHOST").await;
    let killed_at = Instant::now();
    cluster.nats.servers[leader].kill_9();
    // Writes resume once the engine elected new leaders.
    until_acked(&acks, 100, Duration::from_secs(45)).await;
    stop_tx.send(true).unwrap();
    let mut outcome = BTreeMap::new();
    for (s, sender) in senders.into_iter().enumerate() {
        outcome.insert(format!("s{s}"), sender.await.unwrap());
    }
    // The longest pause between two acks of a sender around the kill.
    let mut gap = Duration::ZERO;
    for sent in outcome.values() {
        for w in sent.acked_at.windows(2) {
            if w[1] > killed_at {
                gap = gap.max(w[1].duration_since(w[0].max(killed_at)));
                break;
            }
        }
    }
    let after = outcome
        .values()
        .flat_map(|s| s.acked_at.iter())
        .filter(|at| **at > killed_at)
        .count();
    assert!(after > 0, "writes resumed after the NATS server's kill");
    eprintln!(
        "kill -9 of the journal stream's leader (1 of 3 NATS servers): writes resumed {} ms after the kill ({after} pushes acknowledged after it)",
        gap.as_millis()
    );
    let log = room_log(&addrs, &owner, topic).await;
    check_log(&log, &outcome);
}

/// Joins `topic` on the node at `addr` (whichever node runs the room),
/// retrying a refused or failed join until `STEP` passes: during a
/// failover a join waits for the dead owner's lease. Returns the client,
/// its join ref and the join's response.
async fn join_on(addr: SocketAddr, topic: &str, user: &str) -> (Ws, String, Value) {
    let deadline = Instant::now() + STEP;
    loop {
        assert!(
            Instant::now() < deadline,
            "{user} could not join {topic} on {addr}"
        );
        if let Some(mut ws) = Ws::connect(addr, user).await {
            loop {
                match ws.join(topic).await {
                    Ok((join_ref, reply)) if reply["status"] == "ok" => {
                        return (ws, join_ref, reply["response"].clone());
                    }
                    Ok(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    _ => break,
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `add`s `n`s from `name`, each acknowledged.
async fn add_all(ws: &mut Ws, join_ref: &str, topic: &str, name: &str, ns: std::ops::Range<u64>) {
    for n in ns {
        let r = ws
            .send(join_ref, topic, "add", json!({ "sender": name, "n": n }))
            .await
            .expect("sent");
        let reply = ws.reply(&r, STEP).await.expect("a reply");
        assert_eq!(reply["status"], "ok", "{name}:{n}: {reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_on_every_node_share_one_room() {
    let mut cluster = Cluster::start(3.0, &[]).await;
    let topic = "seq:fan";
    let at = |i: usize| cluster.nodes[i].addr;
    // a starts the room on n1; b and c join through n2 and n3, a2 on n1.
    let (mut a, a_ref, a_join) = join_on(at(0), topic, "a").await;
    let (mut b, b_ref, b_join) = join_on(at(1), topic, "b").await;
    let (mut c, c_ref, c_join) = join_on(at(2), topic, "c").await;
    let (mut a2, _, _) = join_on(at(0), topic, "a2").await;
    let seen = owners(&cluster, topic).await;
    assert!(
        seen.iter().all(|(_, _, n)| n.as_deref() == Some("n1")),
        "{seen:?}"
    );
    // The owner's script sees which node a remote connection is on.
    assert_eq!(a_join["node"], Value::Null, "{a_join}");
    assert_eq!(b_join["node"], "n2", "{b_join}");
    assert_eq!(c_join["node"], "n3", "{c_join}");
    // Presence lists the users of every node, on every node.
    c.until(STEP, |ws| ws.present().len() == 3)
        .await
        .unwrap_or_else(|why| panic!("{why}: {:?}", ws_events(&c)));
    assert_eq!(c.present(), ["a", "b", "c"]);
    let everyone = ["a", "a2", "b", "c"];
    b.until(STEP, |ws| {
        ws.events
            .iter()
            .filter(|(e, _)| e == "presence_diff")
            .any(|(_, d)| d["joins"].get("a2").is_some())
    })
    .await
    .unwrap();
    // Broadcasts from senders on all three nodes at once.
    let started = Instant::now();
    let (a, b, c) = tokio::join!(
        async move {
            add_all(&mut a, &a_ref, topic, "a", 1..21).await;
            (a, a_ref)
        },
        async move {
            add_all(&mut b, &b_ref, topic, "b", 1..21).await;
            (b, b_ref)
        },
        async move {
            add_all(&mut c, &c_ref, topic, "c", 1..21).await;
            (c, c_ref)
        },
    );
    let took = started.elapsed();
    let (mut a, a_ref) = a;
    let (mut b, b_ref) = b;
    let (mut c, _c_ref) = c;
    let mut orders = Vec::new();
    for (name, ws) in [("a", &mut a), ("a2", &mut a2), ("b", &mut b), ("c", &mut c)] {
        ws.until(STEP, |ws| ws.broadcasts.len() >= 60)
            .await
            .unwrap_or_else(|why| panic!("{name} got {} broadcasts: {why}", ws.broadcasts.len()));
        // Nothing more comes (no broadcast twice).
        let _ = ws.until(Duration::from_millis(300), |_| false).await;
        let items: Vec<String> = ws
            .broadcasts
            .iter()
            .map(|b| b["item"].as_str().unwrap_or("?").to_string())
            .collect();
        assert_eq!(items.len(), 60, "{name} got {items:?}");
        orders.push((name, items));
    }
    eprintln!(
        "3 nodes, one room: 60 pushes from 3 nodes acknowledged in {} ms, 240 broadcasts delivered",
        took.as_millis()
    );
    let (_, first) = &orders[0];
    for (name, items) in &orders {
        assert_eq!(items, first, "{name} saw another order than a");
    }
    for sender in ["a", "b", "c"] {
        let mine: Vec<&String> = first
            .iter()
            .filter(|i| i.starts_with(&format!("{sender}:")))
            .collect();
        let expected: Vec<String> = (1..21).map(|n| format!("{sender}:{n}")).collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>());
    }
    // broadcast with except, across nodes: everyone but b hears b's shout.
    let r = b
        .send(&b_ref, topic, "shout", json!({}))
        .await
        .expect("sent");
    assert_eq!(b.reply(&r, STEP).await.unwrap()["status"], "ok");
    let shouted = |ws: &Ws| ws.events.iter().any(|(e, _)| e == "shouted");
    for ws in [&mut a, &mut a2, &mut c] {
        ws.until(STEP, shouted).await.unwrap();
    }
    let _ = b.until(Duration::from_millis(300), |_| false).await;
    assert!(!shouted(&b), "b heard its own shout");
    // A push to one connection of another node reaches it alone.
    let r = a
        .send(&a_ref, topic, "poke", json!({"to": "c"}))
        .await
        .expect("sent");
    assert_eq!(a.reply(&r, STEP).await.unwrap()["status"], "ok");
    let poked = |ws: &Ws| ws.events.iter().any(|(e, _)| e == "poked");
    c.until(STEP, poked).await.unwrap();
    let _ = b.until(Duration::from_millis(200), |_| false).await;
    assert!(!poked(&b) && !poked(&a2), "a push to c went elsewhere");
    // A leave through a forwarding node is the room's: the others see it.
    drop(b);
    a.until(STEP, |ws| {
        ws.events
            .iter()
            .filter(|(e, _)| e == "presence_diff")
            .any(|(_, d)| d["leaves"].get("b").is_some())
    })
    .await
    .unwrap();
    // A forwarding node dies: its channels leave the room within the
    // owner's heartbeat window.
    cluster.nodes[2].kill_9().await;
    let killed_at = Instant::now();
    a.until(STEP, |ws| {
        ws.events
            .iter()
            .filter(|(e, _)| e == "presence_diff")
            .any(|(_, d)| d["leaves"].get("c").is_some())
    })
    .await
    .unwrap();
    eprintln!(
        "kill -9 of a forwarding node: its user left the room {} ms later",
        killed_at.elapsed().as_millis()
    );
    let (mut late, _, _) = join_on(cluster.nodes[1].addr, topic, "late").await;
    late.until(STEP, |ws| !ws.present().is_empty())
        .await
        .unwrap();
    let mut present = everyone.to_vec();
    present.retain(|u| *u != "b" && *u != "c");
    present.push("late");
    assert_eq!(late.present(), present);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channels_on_surviving_nodes_rejoin_after_the_owners_kill_9() {
    let mut cluster = Cluster::start(2.0, &[]).await;
    let topic = "seq:failover";
    let (mut a, a_ref, _) = join_on(cluster.nodes[0].addr, topic, "a").await;
    let (mut b, b_ref, _) = join_on(cluster.nodes[1].addr, topic, "b").await;
    let (mut c, _c_ref, _) = join_on(cluster.nodes[2].addr, topic, "c").await;
    add_all(&mut a, &a_ref, topic, "a", 1..6).await;
    add_all(&mut b, &b_ref, topic, "b", 1..6).await;
    c.until(STEP, |ws| ws.broadcasts.len() >= 10).await.unwrap();
    drop(a);
    let killed_at = Instant::now();
    cluster.nodes[0].kill_9().await;
    // b pushes (its push fails), c stays quiet (its node notices the owner's
    // silence): both channels get phx_error.
    let r = b
        .send(&b_ref, topic, "add", json!({"sender": "b", "n": 6}))
        .await
        .expect("sent");
    match b.reply(&r, STEP).await {
        Ok(reply) => {
            assert_ne!(reply["status"], "ok", "a push to a dead owner: {reply}");
            let error = b.until(STEP, |_| false).await.unwrap_err();
            assert_eq!(error, "\"phx_error\"");
        }
        Err(why) => assert_eq!(why, "\"phx_error\""),
    }
    let error = c.until(STEP, |_| false).await.unwrap_err();
    assert_eq!(error, "\"phx_error\"", "c's channel");
    let errored = killed_at.elapsed();
    // They rejoin where they are; the room runs again with its history.
    let (mut b, b_ref, b_join) = join_on(cluster.nodes[1].addr, topic, "b").await;
    let (mut c, _, c_join) = join_on(cluster.nodes[2].addr, topic, "c").await;
    let serving = killed_at.elapsed();
    for join in [&b_join, &c_join] {
        assert!(
            join["count"] == 10 || join["count"] == 11,
            "the room lost its history: {join}"
        );
    }
    add_all(&mut b, &b_ref, topic, "b", 7..9).await;
    c.until(STEP, |ws| ws.broadcasts.len() >= 2).await.unwrap();
    let items: Vec<&str> = c
        .broadcasts
        .iter()
        .filter_map(|b| b["item"].as_str())
        .collect();
    assert_eq!(items, ["b:7", "b:8"]);
    eprintln!(
        "owner kill -9 (lease 2 s): survivors' channels errored within {} ms, joined again after {} ms",
        errored.as_millis(),
        serving.as_millis()
    );
    // n3's channel was told to rejoin, and n2 counts what it forwarded.
    let (_, text) = http(cluster.nodes[2].addr, "GET", "/metrics", None).await;
    let text = text.as_str().unwrap_or_default().to_string();
    let rejoins: f64 = text
        .lines()
        .filter(|l| l.starts_with("roomhost_cluster_rejoins_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(rejoins >= 1.0, "{text}");
    let (_, text) = http(cluster.nodes[1].addr, "GET", "/metrics", None).await;
    let pushes = text
        .as_str()
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("roomhost_cluster_forwarded_total{op=\"push\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(pushes >= 5.0, "n2 forwarded {pushes} pushes");
    let log = room_log(&cluster.addrs(), "n2", topic).await;
    assert!(
        log.starts_with(
            &[
                "a:1", "a:2", "a:3", "a:4", "a:5", "b:1", "b:2", "b:3", "b:4", "b:5"
            ]
            .map(String::from)
        ),
        "{log:?}"
    );
}

fn ws_events(ws: &Ws) -> &[(String, Value)] {
    &ws.events
}

/// `GET /api/cluster` on `addr`, polled (bounded) until `ok` holds.
async fn cluster_until(addr: SocketAddr, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + STEP;
    loop {
        let (status, body) = http(addr, "GET", "/api/cluster", None).await;
        if status == 200 && ok(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: GET /api/cluster said {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn node_of<'a>(cluster: &'a Value, name: &str) -> Option<&'a Value> {
    cluster["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_lists_the_cluster_and_sees_a_dead_node_go() {
    let mut cluster = Cluster::start(2.0, &[]).await;
    let addrs = cluster.addrs();
    let (_ws, _, owner) = join_owner(&addrs, "n1", "seq:nodes", "ada").await;
    // Every node lists all three, alive, with their URLs; the owner says it
    // holds the room and its connection.
    for node in &cluster.nodes {
        let body = cluster_until(node.addr, "all three alive", |c| {
            ["n1", "n2", "n3"]
                .iter()
                .all(|n| node_of(c, n).is_some_and(|v| v["alive"] == true))
                && node_of(c, &owner).is_some_and(|v| v["rooms"] == 1 && v["connections"] == 1)
        })
        .await;
        assert_eq!(body["node"], node.name.as_str(), "{body}");
        for other in &cluster.nodes {
            let view = node_of(&body, &other.name).unwrap();
            assert_eq!(view["url"], format!("http://{}", other.addr), "{body}");
            assert!(view["last_seen"].as_i64().unwrap() >= view["started_at"].as_i64().unwrap());
        }
    }
    let (_, metrics) = http(cluster.nodes[0].addr, "GET", "/metrics", None).await;
    let metrics = metrics.as_str().expect("the metrics text");
    assert!(
        metrics.contains("roomhost_cluster_nats_connected 1"),
        "{metrics}"
    );

    // kill -9: its record stays but ages; every survivor says it is dead.
    let n3 = cluster.node("n3");
    cluster.nodes[n3].kill_9().await;
    let killed = Instant::now();
    for name in ["n1", "n2"] {
        let addr = cluster.nodes[cluster.node(name)].addr;
        cluster_until(addr, "n3 not alive", |c| {
            node_of(c, "n3").is_some_and(|v| v["alive"] == false)
                && node_of(c, name).is_some_and(|v| v["alive"] == true)
        })
        .await;
    }
    eprintln!(
        "kill -9 of a node: listed as not alive after {} ms",
        killed.elapsed().as_millis()
    );
    assert!(
        killed.elapsed() < Duration::from_secs(6),
        "liveness window is 3 s"
    );

    // A graceful stop deletes its record: it leaves the list.
    let n2 = cluster.node("n2");
    cluster.nodes[n2].signal(SIGTERM);
    let n1 = cluster.nodes[cluster.node("n1")].addr;
    let body = cluster_until(n1, "n2 gone after SIGTERM", |c| node_of(c, "n2").is_none()).await;
    assert!(
        node_of(&body, "n3").is_some(),
        "a dead node stays listed: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_stop_of_the_owner_hands_the_room_over() {
    let cluster = Cluster::start(2.0, &[]).await;
    let topic = "seq:handover";
    let (mut a, a_ref, _) = join_on(cluster.nodes[0].addr, topic, "a").await;
    let (mut b, _, _) = join_on(cluster.nodes[1].addr, topic, "b").await;
    add_all(&mut a, &a_ref, topic, "a", 1..4).await;
    b.until(STEP, |ws| ws.broadcasts.len() >= 3).await.unwrap();
    let stopped_at = Instant::now();
    cluster.nodes[0].signal(SIGTERM);
    // b's channel is told to rejoin (not closed for good)...
    let error = b.until(STEP, |_| false).await.unwrap_err();
    assert_eq!(error, "\"phx_error\"");
    // ... and its rejoin finds the room, with its history, on a survivor.
    let (mut b, b_ref, joined) = join_on(cluster.nodes[1].addr, topic, "b").await;
    assert_eq!(joined["count"], 3, "{joined}");
    add_all(&mut b, &b_ref, topic, "b", 1..2).await;
    eprintln!(
        "SIGTERM of the owner: a channel of another node served again after {} ms",
        stopped_at.elapsed().as_millis()
    );
}
