//! `cargo test` runs the Node suites in `tests/js/`: the official `phoenix`
//! npm client (WebSocket, long-poll, Presence) and the `y-phoenix-channel`
//! Yjs provider against the real binary, and unit tests of the browser UI's
//! own client. `npm ci` installs the pinned
//! packages (tests/package-lock.json) the first time.

use std::path::Path;
use std::process::Command;

#[test]
fn official_phoenix_client_suite() {
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    // Any pinned package missing (e.g. one added since the last install):
    // install them all again from the lockfile.
    let installed = ["phoenix", "ws", "yjs", "y-phoenix-channel"]
        .iter()
        .all(|p| tests.join("node_modules").join(p).is_dir());
    if !installed {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&tests)
            .status()
            .expect("tests/js needs Node.js 20+ and npm on PATH");
        assert!(status.success(), "npm ci in tests/ failed");
    }
    let output = Command::new("node")
        .args([
            "--test",
            "--test-concurrency=1",
            "--test-timeout=120000",
            "js/",
        ])
        .current_dir(&tests)
        .env("ROOMHOST_BIN", env!("CARGO_BIN_EXE_roomhost"))
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Show the node test report either way (cargo captures it on success).
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "node --test js/ failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("# fail 0"),
        "the node suite reported failures"
    );
}
