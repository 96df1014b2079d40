//! Records the git commit being built as `ROOMHOST_GIT_COMMIT`, for
//! `roomhost_build_info` and `--version`. Outside a git checkout (a crate
//! from a registry, a tarball) nothing is set and the commit reads "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo:rustc-env=ROOMHOST_GIT_COMMIT={commit}");
    }
    // Rebuild when HEAD moves (a commit, a checkout): HEAD and the ref it names.
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={head}");
    }
    if let Some(path) = git(&["symbolic-ref", "-q", "HEAD"])
        .and_then(|name| git(&["rev-parse", "--git-path", &name]))
    {
        println!("cargo:rerun-if-changed={path}");
    }
}
