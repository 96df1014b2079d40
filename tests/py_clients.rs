//! `cargo test` runs Phoenix clients nobody here wrote, from PyPI, against
//! the real binary: phxsocket 0.1.5 and phoenix-channels-python-client
//! 0.4.1 on CPython 3.11, phx-events 0.4.1 on CPython 3.9. Each driver in
//! `tests/py/` walks the same script with two instances of its client (see
//! `tests/py/matrix.py`) and records in its docstring what the client's own
//! code does. The first run makes a venv per interpreter under
//! `target/py-clients/` from the pinned, hashed `tests/py/requirements-*.txt`;
//! later runs reuse it while the requirements file is unchanged.
//!
//! The three drivers run at once against one server, so the wait past the
//! heartbeat timeout is paid once.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{Binary, http};
use serde_json::Value;

/// The server's `--heartbeat-timeout` in this test: below Phoenix's (and
/// roomhost's) default of 60 s so the file stays short, above every client's
/// heartbeat and ping interval (phxsocket 5 s, websockets' pings 20 s,
/// phoenix-channels-python-client 30 s).
const HEARTBEAT_TIMEOUT_SECS: u64 = 35;

/// Creating a venv and installing from PyPI, per interpreter.
const INSTALL_LIMIT: Duration = Duration::from_secs(600);

/// One driver, past the heartbeat timeout plus its steps.
const DRIVER_LIMIT: Duration = Duration::from_secs(HEARTBEAT_TIMEOUT_SECS + 60);

fn py_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py")
}

/// `target/`, wherever cargo put it: the binary is `target/<profile>/roomhost`.
fn target_dir() -> PathBuf {
    let binary = Path::new(env!("CARGO_BIN_EXE_roomhost"));
    binary
        .parent()
        .and_then(Path::parent)
        .expect("the binary sits in target/<profile>/")
        .to_path_buf()
}

/// A command's exit status and output, or an error if it outlived `limit`
/// (it is killed then).
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

fn run_bounded(command: &mut Command, limit: Duration) -> Result<Finished, String> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {command:?}: {e}"))?;
    // Read both pipes on threads so a chatty child never blocks on a full one.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = err.join().unwrap_or_default();
                return Err(format!("{command:?} ran past {limit:?}; stderr:\n{stderr}"));
            }
            Err(e) => return Err(format!("waiting for {command:?}: {e}")),
        }
    };
    Ok(Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Whether `python` runs and is version `major.minor`.
fn is_python(python: &Path, (major, minor): (u32, u32)) -> bool {
    let check =
        format!("import sys; sys.exit(0 if sys.version_info[:2] == ({major}, {minor}) else 1)");
    Command::new(python)
        .args(["-c", &check])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// CPython `major.minor`: `$ROOMHOST_PYTHON<major><minor>`, then
/// `python<major>.<minor>` and `python3` on PATH, then pyenv's versions
/// (`$PYENV_ROOT`, default `~/.pyenv`; the machine image ships 3.9 there).
fn find_python(version: (u32, u32)) -> PathBuf {
    let (major, minor) = version;
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = std::env::var_os(format!("ROOMHOST_PYTHON{major}{minor}")) {
        candidates.push(path.into());
    }
    candidates.push(format!("python{major}.{minor}").into());
    candidates.push("python3".into());
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pyenv")));
    if let Some(versions) = pyenv.map(|p| p.join("versions")) {
        let prefix = format!("{major}.{minor}.");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&versions)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path().join("bin").join(format!("python{major}.{minor}")))
            .collect();
        found.sort();
        candidates.extend(found.into_iter().rev());
    }
    candidates
        .into_iter()
        .find(|p| is_python(p, version))
        .unwrap_or_else(|| {
            panic!(
                "tests/py_clients.rs needs CPython {major}.{minor} (looked for \
                 $ROOMHOST_PYTHON{major}{minor}, python{major}.{minor}, python3 and pyenv's \
                 versions/{major}.{minor}.*); install it or point ROOMHOST_PYTHON{major}{minor} at it"
            )
        })
}

/// The venv `target/py-clients/<name>` with `requirements` installed; made
/// (or remade, when the requirements or the interpreter changed) on first use.
fn venv(name: &str, python: &Path, requirements: &Path) -> PathBuf {
    let dir = target_dir().join("py-clients").join(name);
    let venv_python = dir.join("bin/python");
    let wanted = format!(
        "{}\n{}",
        python.display(),
        std::fs::read_to_string(requirements).expect("the requirements file reads")
    );
    let stamp = dir.join("installed-requirements.txt");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) && venv_python.exists() {
        return venv_python;
    }
    eprintln!(
        "py_clients: creating the venv {} with {} and installing {} from PyPI (first run only)",
        dir.display(),
        python.display(),
        requirements.display()
    );
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("the stale venv is removed");
    }
    let run = |command: &mut Command| {
        let done = run_bounded(command, INSTALL_LIMIT).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            done.status.success(),
            "{command:?} failed:\n{}\n{}",
            done.stdout,
            done.stderr
        );
    };
    run(Command::new(python).args(["-m", "venv"]).arg(&dir));
    run(Command::new(&venv_python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--require-hashes", "--no-deps", "--only-binary=:all:", "-r"])
        .arg(requirements));
    // --no-deps installed only the list: a dependency missing from it fails here.
    run(Command::new(&venv_python).args(["-m", "pip", "check"]));
    std::fs::write(&stamp, wanted).expect("the venv's stamp is written");
    venv_python
}

/// One client's run: its driver, the room it uses, the venv it runs in.
struct Driver {
    client: &'static str,
    script: &'static str,
    python: PathBuf,
}

impl Driver {
    fn topic(&self) -> String {
        format!("chat:py-{}", self.client)
    }

    fn history(&self) -> String {
        format!("in the room before {} joined", self.client)
    }
}

/// The driver's `MATRIX {...}` report line.
fn report(client: &str, finished: &Finished) -> Value {
    let line = finished
        .stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("MATRIX "))
        .unwrap_or_else(|| panic!("{client} printed no report:\n{}", finished.stdout));
    serde_json::from_str(line).expect("the report is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_python_clients() {
    let py311 = venv(
        "py311",
        &find_python((3, 11)),
        &py_dir().join("requirements-py311.txt"),
    );
    let py39 = venv(
        "py39",
        &find_python((3, 9)),
        &py_dir().join("requirements-py39.txt"),
    );
    let drivers = [
        Driver {
            client: "phxsocket",
            script: "phxsocket_driver.py",
            python: py311.clone(),
        },
        Driver {
            client: "phoenix-channels-python-client",
            script: "pcpc_driver.py",
            python: py311,
        },
        Driver {
            client: "phx-events",
            script: "phx_events_driver.py",
            python: py39,
        },
    ];

    let rooms = common::rooms_dir(&[]);
    let data = tempfile::tempdir().unwrap();
    let timeout = HEARTBEAT_TIMEOUT_SECS.to_string();
    let server = Binary::start(
        rooms.path(),
        data.path(),
        &["--heartbeat-timeout", &timeout],
    )
    .await;
    for driver in &drivers {
        let body = serde_json::json!({
            "event": "new_msg",
            "payload": {"text": driver.history()},
            "user": "seeder",
        })
        .to_string();
        let path = format!("/api/rooms/{}/messages", driver.topic());
        let (status, reply) = http(
            server.addr,
            "POST",
            &path,
            Some(("application/json", &body)),
        )
        .await;
        assert_eq!(status, 200, "seeding {}: {reply}", driver.topic());
    }

    let url = format!("ws://{}/socket/websocket", server.addr);
    let started = Instant::now();
    let runs: Vec<_> = drivers
        .iter()
        .map(|driver| {
            let mut command = Command::new(&driver.python);
            command
                .arg(py_dir().join(driver.script))
                .args(["--url", &url, "--topic", &driver.topic()])
                .args(["--history", &driver.history()])
                .args(["--heartbeat-timeout", &timeout])
                .current_dir(py_dir())
                .env("PYTHONDONTWRITEBYTECODE", "1");
            tokio::task::spawn_blocking(move || run_bounded(&mut command, DRIVER_LIMIT))
        })
        .collect();
    let mut reports = Vec::new();
    for (driver, run) in drivers.iter().zip(runs) {
        let finished = run
            .await
            .expect("the driver's thread")
            .unwrap_or_else(|e| panic!("{e}"));
        // Each driver's step log, shown with --nocapture or on failure.
        eprintln!("{}", finished.stderr);
        assert!(
            finished.status.success(),
            "{} failed ({}):\n{}\n{}\nserver log:\n{}",
            driver.client,
            finished.status,
            finished.stdout,
            finished.stderr,
            server.log()
        );
        reports.push(report(driver.client, &finished));
    }
    let elapsed = started.elapsed();
    eprintln!("py_clients: the three drivers took {elapsed:.1?} together");

    // The script's steps (tests/py/matrix.py), each passed, in order.
    let script = ["history", "push", "broadcast", "presence", "quiet", "leave"];
    for report in &reports {
        let client = report["client"].as_str().unwrap_or("?");
        let steps: Vec<&str> = report["steps"]
            .as_array()
            .map(|s| s.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let scripted: Vec<&str> = steps.iter().copied().filter(|s| *s != "v2").collect();
        assert_eq!(scripted, script, "{client}: {report}");
        let quiet = report["quiet_seconds"].as_f64().unwrap_or(0.0);
        assert!(
            quiet > HEARTBEAT_TIMEOUT_SECS as f64,
            "{client} stayed quiet only {quiet} s: {report}"
        );
    }
    let by_client = |name: &str| {
        reports
            .iter()
            .find(|r| r["client"] == name)
            .unwrap_or_else(|| panic!("no report from {name}"))
    };
    // Every 5 s over the quiet period: the server answered each heartbeat.
    let phxsocket = by_client("phxsocket");
    assert!(
        phxsocket["heartbeat_replies"].as_u64() >= Some(7),
        "{phxsocket}"
    );
    assert_eq!(phxsocket["leave_returned"], false, "{phxsocket}");
    // Its first heartbeat goes at 30 s; its V2 mode was checked too.
    let pcpc = by_client("phoenix-channels-python-client");
    assert!(pcpc["heartbeat_replies"].as_u64() >= Some(1), "{pcpc}");
    assert!(
        pcpc["steps"]
            .as_array()
            .is_some_and(|s| s.contains(&"v2".into())),
        "{pcpc}"
    );
    // No heartbeat at all; websockets' pings keep it up; a clean close.
    let phx_events = by_client("phx-events");
    assert_eq!(phx_events["heartbeat_replies"], 0, "{phx_events}");
    assert_eq!(phx_events["close_code"], 1000, "{phx_events}");
}
