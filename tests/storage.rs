//! Storage faults: a full disk, a failed write or fsync, a stalled disk.
//! Clients get `storage unavailable: <cause>` at once (never an ok for
//! something not durable, never a timeout), the room neither crashes nor
//! restarts, and it heals by itself when the storage takes writes again.
//!
//! Faults are injected through the store seam ([`roomhost::store::Store`],
//! wrapped with `HostBuilder::wrap_store`): it fails exactly the operation a
//! test names, in-process and deterministically, which an `LD_PRELOAD` shim
//! over libc could only do by guessing which `write` or `fdatasync` is the
//! journal's. The real kernel path (ENOSPC from a full file system) is the
//! tmpfs test at the end, run when the tests run as root.

mod common;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::raw_http::post_message;
use common::{Client, Server, test_config};
use roomhost::store::{Job, Recovered, Store};
use serde_json::{Value, json};

/// A kind that keeps every id it is sent: an acked push is in its state
/// exactly once, or the test fails. `pad` only makes records large.
const LEDGER: &str = r#"
let ids = [];
export const readOnlyJoins = true;
export function onJoin(conn) { return { ids }; }
export function onMessage(conn, event, payload) {
  if (event !== "add") throw new Error(`unknown event ${event}`);
  ids.push(payload.id);
  room.broadcast("added", { id: payload.id });
  return { n: ids.length };
}
export function snapshot() { return { ids }; }
export function restore(state) { ids = state.ids; }
"#;

/// What the test wants the store to do now.
#[derive(Default)]
struct Faults {
    /// `write`s fail with this OS error (0: they succeed).
    write_errno: AtomicI32,
    /// fsyncs (and probes) fail with EIO.
    fail_syncs: AtomicBool,
    /// fsyncs take this long first (ms).
    sync_delay_ms: AtomicU64,
    /// fsyncs started, failed or not.
    syncs: AtomicU64,
}

impl Faults {
    fn sync(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        let delay = self.sync_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc_eio()));
        }
        Ok(())
    }

    fn write(&self) -> io::Result<()> {
        match self.write_errno.load(Ordering::SeqCst) {
            0 => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    fn heal(&self) {
        self.write_errno.store(0, Ordering::SeqCst);
        self.fail_syncs.store(false, Ordering::SeqCst);
        self.sync_delay_ms.store(0, Ordering::SeqCst);
    }
}

fn libc_eio() -> i32 {
    5
}

const ENOSPC: i32 = 28;

/// The room's real disk store, failing on command.
struct Faulty {
    inner: Box<dyn Store>,
    faults: Arc<Faults>,
}

impl Store for Faulty {
    fn recover(&mut self, keep_upto: Option<u64>) -> io::Result<Recovered> {
        self.inner.recover(keep_upto)
    }

    fn read(&self, keep_upto: Option<u64>) -> io::Result<Recovered> {
        self.inner.read(keep_upto)
    }

    fn append(&mut self, framed: &[u8], first_seq: u64) -> io::Result<()> {
        self.faults.write()?;
        self.inner.append(framed, first_seq)
    }

    fn sync_job(&mut self) -> Option<Job> {
        let job = self.inner.sync_job()?;
        let faults = self.faults.clone();
        Some(Box::new(move || {
            faults.sync()?;
            job()
        }))
    }

    fn rotate(&mut self) {
        self.inner.rotate();
    }

    fn snapshot_job(&mut self, seq: u64, snapshot: Vec<u8>) -> Job {
        self.inner.snapshot_job(seq, snapshot)
    }

    fn probe_job(&mut self) -> Job {
        let job = self.inner.probe_job();
        let faults = self.faults.clone();
        Box::new(move || {
            faults.write()?;
            faults.sync()?;
            job()
        })
    }

    fn bytes(&self) -> u64 {
        self.inner.bytes()
    }

    fn set_wakeup(&mut self, at: Option<i64>) -> io::Result<()> {
        self.faults.write()?;
        self.inner.set_wakeup(at)
    }
}

async fn faulty_server(config: roomhost::Config) -> (Server, Arc<Faults>) {
    let faults = Arc::new(Faults::default());
    let layer_faults = faults.clone();
    let server = Server::start_with(&[("ledger.js", LEDGER)], config, move |builder| {
        builder.wrap_store(move |_topic, inner| {
            Box::new(Faulty {
                inner,
                faults: layer_faults.clone(),
            })
        })
    })
    .await;
    (server, faults)
}

/// Pushes `add` with `id`; returns the reply payload.
async fn add(client: &mut Client, join_ref: &str, topic: &str, id: u64) -> Value {
    client
        .call(join_ref, topic, "add", json!({ "id": id }))
        .await
}

/// The ids the room holds, from its state.
async fn ids(server: &Server, topic: &str) -> Vec<u64> {
    let state = server.api(&format!("/api/rooms/{topic}/state")).await;
    let mut ids: Vec<u64> = state["state"]["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no ids in {state}"))
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

/// Waits for the `storage` notice whose `available` is `available`.
async fn storage_notice(client: &mut Client, topic: &str, available: bool) -> Value {
    let frame = client
        .until(|f| f[2] == topic && f[3] == "storage" && f[4]["available"] == available)
        .await;
    frame[4].clone()
}

fn assert_refused(reply: &Value, cause: &str) {
    assert_eq!(reply["status"], "error", "{reply}");
    let reason = reply["response"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("storage unavailable: ") && reason.contains(cause),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_acknowledges_none_of_its_senders_and_the_room_heals_by_itself() {
    let (server, faults) = faulty_server(test_config()).await;
    let topic = "ledger:fsync";
    let mut clients = Vec::new();
    for user in ["ann", "bob", "cyd"] {
        let mut c = server.client(user).await;
        let (jr, _) = c.join_ok(topic).await;
        clients.push((c, jr));
    }
    let (first, jr) = &mut clients[0];
    assert_eq!(add(first, jr, topic, 1).await["status"], "ok");

    // Every sender's event waits behind one slow fsync that then fails.
    faults.sync_delay_ms.store(300, Ordering::SeqCst);
    faults.fail_syncs.store(true, Ordering::SeqCst);
    let mut refs = Vec::new();
    for (i, (c, jr)) in clients.iter_mut().enumerate() {
        for k in 0..3 {
            let id = 100 + (i as u64) * 10 + k;
            refs.push((i, c.push(Some(jr), topic, "add", json!({ "id": id })).await));
        }
    }
    for (i, r) in &refs {
        let reply = clients[*i].0.reply(r).await;
        assert_refused(&reply, "journal sync failed");
    }
    faults.sync_delay_ms.store(0, Ordering::SeqCst);
    let (c0, _) = &mut clients[0];
    let notice = storage_notice(c0, topic, false).await;
    assert_eq!(notice["state"], "fault");

    // While faulted: refused at once, reads still work, nothing restarts.
    let (c0, jr0) = &mut clients[0];
    let asked = Instant::now();
    assert_refused(&add(c0, jr0, topic, 2).await, "journal sync failed");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "an error, not a wait"
    );
    assert_eq!(ids(&server, topic).await, [1]);
    let room = server.api(&format!("/api/rooms/{topic}")).await;
    assert_eq!(
        (room["restarts"].as_u64(), room["generation"].as_u64()),
        (Some(0), Some(1)),
        "{room}"
    );
    assert_eq!(room["state"], "running");
    assert_eq!(room["storage"]["state"], "fault", "{room}");
    let post = json!({"event": "add", "payload": {"id": 3}}).to_string();
    let (status, body) = post_message(server.addr, topic, "application/json", &post).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .starts_with("storage unavailable")
    );

    // A tab joining now reads the history; its push waits for the storage.
    let mut dan = server.client("dan").await;
    let (dan_ref, joined) = dan.join_ok(topic).await;
    assert_eq!(joined["ids"], json!([1]));
    assert_refused(&add(&mut dan, &dan_ref, topic, 4).await, "");

    // The storage comes back: the room heals without a reset.
    faults.heal();
    let (c0, jr0) = &mut clients[0];
    storage_notice(c0, topic, true).await;
    assert_eq!(add(c0, jr0, topic, 5).await["status"], "ok");
    assert_eq!(add(&mut dan, &dan_ref, topic, 6).await["status"], "ok");
    let room = server.api(&format!("/api/rooms/{topic}")).await;
    assert_eq!(room["restarts"], 0, "{room}");
    assert!(room["storage"].is_null(), "{room}");
    assert_eq!(ids(&server, topic).await, [1, 5, 6]);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("roomhost_storage_faults_total{what=\"sync\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("roomhost_room_crashes_total{reason=\"storage\"} 0"));

    // Only what was acknowledged survives a restart, each once.
    let (rooms, data) = server.stop().await;
    let server = Server::start_in(rooms, data, test_config()).await;
    assert_eq!(ids(&server, topic).await, [1, 5, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_an_error_reply_naming_the_cause_and_joins_wait_for_the_storage() {
    let (server, faults) = faulty_server(test_config()).await;
    // counter journals its joins (no readOnlyJoins): a join needs the disk.
    let topic = "counter:write";
    let mut ann = server.client("ann").await;
    let (jr, _) = ann.join_ok(topic).await;
    let inc = |c: &'static str| json!({ "by": c.len() });
    assert_eq!(ann.call(&jr, topic, "inc", inc("a")).await["status"], "ok");
    faults.write_errno.store(ENOSPC, Ordering::SeqCst);
    let refused = ann.call(&jr, topic, "inc", inc("ab")).await;
    assert_refused(&refused, "journal write failed: No space left on device");
    let mut bob = server.client("bob").await;
    let (_, reply) = bob.join(topic, json!({})).await;
    assert_refused(&reply, "No space left on device");
    faults.heal();
    storage_notice(&mut ann, topic, true).await;
    let (bob_ref, joined) = bob.join_ok(topic).await;
    assert_eq!(joined["value"], 1, "the refused inc left no trace");
    assert_eq!(
        bob.call(&bob_ref, topic, "inc", inc("abc")).await["response"]["value"],
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_fsync_turns_new_events_away_instead_of_queueing_them() {
    let config = roomhost::Config {
        fsync_stall: Duration::from_millis(300),
        ..test_config()
    };
    let (server, faults) = faulty_server(config).await;
    let topic = "ledger:stall";
    let mut ann = server.client("ann").await;
    let (ann_ref, _) = ann.join_ok(topic).await;
    let mut bob = server.client("bob").await;
    let (bob_ref, _) = bob.join_ok(topic).await;
    faults.sync_delay_ms.store(2000, Ordering::SeqCst);
    let slow = ann
        .push(Some(&ann_ref), topic, "add", json!({"id": 1}))
        .await;
    let notice = storage_notice(&mut bob, topic, false).await;
    assert_eq!(notice["state"], "stalled", "{notice}");
    let asked = Instant::now();
    assert_refused(&add(&mut bob, &bob_ref, topic, 2).await, "disk stalled");
    assert!(
        asked.elapsed() < Duration::from_millis(1000),
        "not queued behind the fsync"
    );
    let room = server.api(&format!("/api/rooms/{topic}")).await;
    assert_eq!(room["storage"]["state"], "stalled", "{room}");
    // The stalled fsync finishes: its event is acknowledged after all.
    assert_eq!(ann.reply(&slow).await["status"], "ok");
    faults.heal();
    storage_notice(&mut bob, topic, true).await;
    assert_eq!(add(&mut bob, &bob_ref, topic, 3).await["status"], "ok");
    assert_eq!(ids(&server, topic).await, [1, 3]);
    assert!(
        server
            .metrics()
            .await
            .contains("roomhost_storage_faults_total{what=\"stall\"} 1")
    );
}

/// A small tmpfs mounted for one test; unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map_err(|e| format!("running mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount -t tmpfs failed: {status}"));
        }
        Ok(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_with_a_clear_error_and_heals_when_space_returns() {
    let disk = match Tmpfs::mount("2m") {
        Ok(disk) => disk,
        Err(why) => {
            println!("skipped: a full disk needs a tmpfs ({why})");
            return;
        }
    };
    let data = disk.0.path().join("data");
    let filler = disk.0.path().join("filler");
    std::fs::write(&filler, vec![1u8; 512 << 10]).unwrap();
    let rooms = common::rooms_dir(&[("ledger.js", LEDGER)]);
    let server = Server::start_at(rooms, &data, test_config()).await;
    let topic = "ledger:full";
    let mut c = server.client("ann").await;
    let (jr, _) = c.join_ok(topic).await;
    let pad = "x".repeat(2000);
    let mut acked = Vec::new();
    let mut refusal = None;
    for id in 0..5000u64 {
        let reply = c
            .call(&jr, topic, "add", json!({"id": id, "pad": pad}))
            .await;
        if reply["status"] == "ok" {
            acked.push(id);
        } else {
            refusal = Some(reply);
            break;
        }
    }
    let refusal = refusal.expect("the disk filled up within 5000 pushes");
    assert_refused(&refusal, "No space left on device");
    assert!(
        acked.len() > 100,
        "{} acked before the disk was full",
        acked.len()
    );
    let room = server.api(&format!("/api/rooms/{topic}")).await;
    assert_eq!(room["restarts"], 0, "{room}");
    assert_eq!(room["storage"]["state"], "fault", "{room}");
    std::fs::remove_file(&filler).unwrap();
    storage_notice(&mut c, topic, true).await;
    let after = 100_000;
    let healed = add(&mut c, &jr, topic, after).await;
    assert_eq!(healed["status"], "ok", "{healed}");
    acked.push(after);
    acked.sort_unstable();
    assert_eq!(ids(&server, topic).await, acked, "each acked push once");
    let room = server.api(&format!("/api/rooms/{topic}")).await;
    assert_eq!(
        (room["restarts"].as_u64(), room["state"].as_str()),
        (Some(0), Some("running"))
    );
    drop(c);
    let (rooms, _) = server.stop().await;
    let server = Server::start_at(rooms, &data, test_config()).await;
    assert_eq!(ids(&server, topic).await, acked, "and after a restart");
    server.stop().await;
}
