//! Records the git commit of the source tree at build time, so a report names the code that
//! was measured (not whatever the tree holds when the binary runs).
//!
//! Sets `LOCKSTEP_BUILD_COMMIT` to `git rev-parse --short HEAD`, suffixed `-dirty` when tracked
//! files differ from it, or to an empty string outside a git checkout. Rebuilds when HEAD, the
//! branch it points to or the index changes (a commit or `git add` touches one of them).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let mut commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_default();
    if !commit.is_empty() {
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
            .is_some_and(|changes| !changes.is_empty());
        if dirty {
            commit.push_str("-dirty");
        }
        let mut watched = vec!["HEAD".to_string(), "index".to_string()];
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(branch);
        }
        for name in watched {
            if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name]) {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-env=LOCKSTEP_BUILD_COMMIT={commit}");
}
