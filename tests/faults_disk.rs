//! The store's disk full: the real binary on a small loop-mounted ext4 image, durable mode, the
//! broker unreachable, sent events until it answers 503. Never a 2xx that is not kept; once
//! space is freed it admits again (after a restart if it fail-stopped), and with the broker back
//! every acknowledged id is published byte-identical. Prints acknowledged / lost / duplicates.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use support::{
    BrokerProxy, Options, PATH, RelayProcess, SECRET, Topology, event_body, now, sign, unique,
};

/// Image size: room for a few of sled's 8 MiB segments once the filler is in.
const IMAGE_MIB: u64 = 64;
/// Written first and removed to free space: the rest of the image fills within ~1000 events.
const FILLER_MIB: usize = 24;
/// Body padding: each event costs about this much disk, so the disk fills in seconds.
const PAD: usize = 32 * 1024;
/// Bound on events sent while filling (about three times what fits).
const MAX_SENDS: usize = 3000;

/// A mounted loop image, unmounted (lazily if busy) when dropped.
struct LoopMount {
    dir: tempfile::TempDir,
}

impl LoopMount {
    fn mount() -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(IMAGE_MIB * 1024 * 1024))
            .expect("image file");
        let mkfs = Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&image)
            .status();
        assert!(mkfs.is_ok_and(|s| s.success()), "mkfs.ext4 failed");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mount point");
        let mount = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mnt)
            .status();
        if !mount.is_ok_and(|s| s.success()) {
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let mnt = self.path();
        let clean = Command::new("umount").arg(&mnt).status();
        if !clean.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&mnt).status();
        }
    }
}

fn padded_body(id: &str) -> Bytes {
    let body = event_body(id, "gate_session.completed");
    let open = body.rfind('}').expect("a JSON object");
    Bytes::from(format!(
        r#"{},"pad":"{}"}}"#,
        &body[..open],
        "x".repeat(PAD)
    ))
}

/// Posts one event; None if the relay did not answer (closed, died).
async fn send(
    client: &support::HttpClient,
    addr: std::net::SocketAddr,
) -> (String, Bytes, Option<u16>) {
    let id = unique("evt");
    let body = padded_body(&id);
    let request = http::Request::post(format!("http://{addr}{PATH}"))
        .header("Gate-Signature", sign(SECRET, now(), &body))
        .body(http_body_util::Full::new(body.clone()))
        .expect("request");
    let status = match tokio::time::timeout(support::WAIT, client.request(request)).await {
        Ok(Ok(r)) => Some(r.status().as_u16()),
        _ => None,
    };
    (id, body, status)
}

fn write_filler(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    std::fs::write(&path, vec![0u8; FILLER_MIB * 1024 * 1024]).expect("filler");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_disk_answers_503_never_a_2xx_it_does_not_keep() {
    let Some(disk) = LoopMount::mount() else {
        support::skip::skip("loop devices are unavailable here (mount -o loop failed)");
        return;
    };
    let filler = write_filler(&disk.path());
    let topology = Topology::declare("faults.disk", &[]).await;
    let proxy = BrokerProxy::start().await;
    proxy.cut();
    let options = Options {
        ack: "durable",
        amqp_url: proxy.url(),
        wait_for_broker: false,
        max_body_bytes: 2 * PAD,
        ..Options::default()
    };
    let config = support::write_config(&options, &topology.exchange, &disk.path());
    let mut relay = RelayProcess::start(&config);
    let client = support::http_client();
    let mut acked: HashMap<String, Bytes> = HashMap::new();
    let mut refused = 0;
    for _ in 0..MAX_SENDS {
        let (id, body, status) = send(&client, relay.addr).await;
        match status {
            Some(s) if (200..300).contains(&s) => {
                acked.insert(id, body);
            }
            Some(503) => {
                refused += 1;
                if refused >= 5 {
                    break;
                }
            }
            other => panic!("a full disk must be a 503, got {other:?}"),
        }
    }
    assert!(
        refused >= 5,
        "the disk never filled: {} acknowledged",
        acked.len()
    );

    // Space comes back: the relay admits again, or (fail-stop after a failed flush) a restart
    // on the same store opens and admits.
    std::fs::remove_file(&filler).expect("remove filler");
    let (id, body, status) = send(&client, relay.addr).await;
    let restarted = !status.is_some_and(|s| (200..300).contains(&s));
    if restarted {
        drop(relay);
        relay = RelayProcess::start(&config);
        let (id, body, status) = send(&client, relay.addr).await;
        assert!(
            status.is_some_and(|s| (200..300).contains(&s)),
            "after freeing space a restart admits again, got {status:?}"
        );
        acked.insert(id, body);
    } else {
        acked.insert(id, body);
    }

    proxy.restore();
    let arrivals = topology.arrivals(&acked, Duration::ZERO).await;
    let (lost, duplicates) = (arrivals.missing.len(), arrivals.duplicates);
    println!(
        "disk full: acknowledged {} refused {refused} lost {lost} duplicates {duplicates} restart needed {restarted}",
        acked.len()
    );
    assert_eq!(lost, 0, "acknowledged events were lost on a full disk");
    drop(relay);
    topology.delete().await;
}
