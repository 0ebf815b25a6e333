//! The store directory writable, the directory holding it read-only: how containers mount a
//! volume (a read-only root with the volume at, say, `/var/lib/gate-relay`). The relay keeps a
//! marker beside the store to notice a lost store (`src/store/mod.rs`); where it cannot write
//! one, it must still start, say so, and keep the delivery promise. Found by
//! `deploy/test-image.sh`: the image, compose and Kubernetes configs all failed to start with
//! "Read-only file system" once the marker existed.
//!
//! Needs root and `mount` (a read-only tmpfs with a writable bind mount inside); skips loudly
//! without, and fails instead when `GATE_RELAY_REQUIRE_FAULT_TESTS=1`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Options, RelayProcess, Topology};

/// A read-only tmpfs at `parent` with a writable directory bind-mounted at `parent/store`;
/// both unmounted (lazily if busy) when dropped.
struct ReadOnlyParent {
    dir: tempfile::TempDir,
}

fn run(args: &[&str], path: &Path) -> bool {
    Command::new("mount")
        .args(args)
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

impl ReadOnlyParent {
    fn mount() -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let this = Self { dir };
        let (parent, writable) = (this.parent(), this.dir.path().join("writable"));
        std::fs::create_dir(&parent).expect("parent");
        std::fs::create_dir(&writable).expect("writable");
        if !run(&["-t", "tmpfs", "tmpfs"], &parent) {
            return None;
        }
        std::fs::create_dir(this.store()).expect("store mount point");
        let bind = Command::new("mount")
            .arg("--bind")
            .arg(&writable)
            .arg(this.store())
            .status()
            .is_ok_and(|s| s.success());
        if !bind || !run(&["-o", "remount,ro"], &parent) {
            return None;
        }
        Some(this)
    }

    fn parent(&self) -> PathBuf {
        self.dir.path().join("ro")
    }

    fn store(&self) -> PathBuf {
        self.parent().join("store")
    }
}

impl Drop for ReadOnlyParent {
    fn drop(&mut self) {
        for path in [self.store(), self.parent()] {
            let clean = Command::new("umount").arg(&path).status();
            if !clean.is_ok_and(|s| s.success()) {
                let _ = Command::new("umount").arg("-l").arg(&path).status();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_parent_is_read_only_starts_and_keeps_events() {
    let Some(mounts) = ReadOnlyParent::mount() else {
        support::skip::skip("mount (tmpfs, bind, remount ro) failed: it needs root");
        return;
    };
    assert!(
        std::fs::write(mounts.parent().join("probe"), b"").is_err(),
        "the parent must be read-only for this test to mean anything"
    );
    let topology = Topology::declare("store.parent.ro", &[]).await;
    let options = Options {
        ack: "durable",
        ..Options::default()
    };
    let config = mounts.dir.path().join("config.toml");
    let text = support::config_text(
        &options,
        &topology.exchange,
        &mounts.store(),
        "127.0.0.1:0",
        "127.0.0.1:0",
    );
    std::fs::write(&config, text).expect("write config");

    // Twice: the first start creates the store, the second opens it.
    for start in ["first", "second"] {
        let mut relay = RelayProcess::start(&config);
        assert!(
            relay
                .startup
                .iter()
                .any(|l| l.contains("cannot keep the store marker")),
            "{start} start: the relay says it cannot keep its marker: {:?}",
            relay.startup
        );
        let id = support::unique("evt");
        let body = support::event_body(&id, "gate_session.completed");
        let reply = support::post(
            &support::http_client(),
            &format!("http://{}{}", relay.addr, support::PATH),
            body.clone().into(),
            Some(&support::sign(
                support::SECRET,
                support::now(),
                body.as_bytes(),
            )),
        )
        .await;
        assert_eq!(reply.status, 200, "{start} start: {:?}", reply.body);
        let acked = [(id, bytes::Bytes::from(body))].into_iter().collect();
        let arrivals = topology.arrivals(&acked, std::time::Duration::ZERO).await;
        assert!(arrivals.missing.is_empty(), "{start} start: event lost");
        relay.signal("TERM");
        let deadline = std::time::Instant::now() + support::WAIT;
        let status = loop {
            if let Some(status) = relay.child.0.try_wait().expect("wait") {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{start} start: no exit after SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert!(status.success(), "{start} start: exit {status}");
    }
    topology.delete().await;
}
