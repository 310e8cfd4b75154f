//! The container image, checked from outside by `scripts/docker-smoke`: built from
//! `config/Dockerfile`, then two users chat and talk through it, it stops gracefully and
//! keeps its history over a restart. It needs docker (a running engine) or podman, and
//! debootstrap where no registry is reachable; `.ci/run` installs them. Where neither can
//! be had, `CONFAB_SKIP_CONTAINER=1` skips it (and says so).

use std::process::Command;

#[test]
fn the_image_builds_and_a_team_chats_and_talks_through_it() {
    if std::env::var_os("CONFAB_SKIP_CONTAINER").is_some() {
        eprintln!("CONFAB_SKIP_CONTAINER is set: the container smoke test is skipped");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/docker-smoke");
    let out = Command::new(script)
        .env("CONFAB_CLI", env!("CARGO_BIN_EXE_confab"))
        .output()
        .expect("run scripts/docker-smoke");
    let said = String::from_utf8_lossy(&out.stderr);
    eprintln!("{said}");
    assert!(out.status.success(), "scripts/docker-smoke failed:\n{said}");
    for step in [
        "health check passed",
        "bob saw the message live",
        "received",
        "stop is graceful",
        "history kept",
        "all checks passed",
    ] {
        assert!(said.contains(step), "no '{step}' in:\n{said}");
    }
}
