//! The real binary with its store on a filesystem that keeps only what was fsynced: a power
//! cut under load (or idle) loses no event that got a 2xx, and the relay starts again on what
//! survived. See `tests/powerfs` for the fault model.
//!
//! Without `/dev/fuse` these tests (and the crash property of `tests/store_model.rs`) skip with a
//! loud message; `GATE_RELAY_REQUIRE_FAULT_TESTS=1` turns that skip, and every other fault
//! test's (`tests/faults_disk.rs` without loop devices), into a failure with the reason. CI sets
//! it, so there a fault test cannot pass by not running.

mod powerfs;
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use powerfs::{Image, Metadata, PowerFs, StoreMount};
use support::{Options, PATH, RelayProcess, SECRET, Topology, now, sign, unique};

/// 2xx answers collected before the cut (a few flush rounds at least).
const ACKED_BEFORE_CUT: usize = 200;
/// Padding per body: several 4 KiB blocks per event, so torn blocks hit event data.
const PAD: usize = 6 * 1024;
/// Torn images checked per idle cut: one image opens by luck often enough (a torn `conf` may
/// keep its old or new bytes); with six, 7 of 8 runs of the idle tests failed without the
/// `conf` fsync.
const IDLE_TORN_IMAGES: u64 = 6;
/// Nothing listens here: a broker "away" during the first run.
const NO_BROKER: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

/// Every acknowledged id reaches the queue byte-identical; returns the duplicates seen. On a
/// loss, prints what the restarted relay's admin API says of the outbox and the first lost id.
async fn assert_all_delivered(
    topology: &Topology,
    acked: &HashMap<String, Bytes>,
    admin: Option<SocketAddr>,
) -> usize {
    let arrivals = topology.arrivals(acked, Duration::ZERO).await;
    let missing = &arrivals.missing;
    if let (false, Some(admin)) = (missing.is_empty(), admin) {
        for path in ["/outbox".to_owned(), format!("/events/{}", missing[0])] {
            let body = support::admin_get(admin, &path).await;
            eprintln!("after the loss, {path}: {}", String::from_utf8_lossy(&body));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events were lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    arrivals.duplicates
}

fn write_config(
    dir: &Path,
    store: &Path,
    exchange: &str,
    ack: &'static str,
    url: &str,
) -> std::path::PathBuf {
    let options = Options {
        ack,
        amqp_url: url.to_owned(),
        max_body_bytes: 64 * 1024,
        ..Options::default()
    };
    let path = dir.join("config.toml");
    let text = support::config_text(&options, exchange, store, "127.0.0.1:0", "127.0.0.1:0");
    std::fs::write(&path, text).expect("write config");
    path
}

/// The value of `gate_relay_store_recreated` on the admin listener.
async fn store_recreated(admin: SocketAddr) -> i64 {
    let body = support::admin_get(admin, "/metrics").await;
    let text = String::from_utf8(body.to_vec()).expect("utf-8 metrics");
    text.lines()
        .find_map(|line| line.strip_prefix("gate_relay_store_recreated "))
        .expect("gate_relay_store_recreated exported")
        .trim()
        .parse()
        .expect("an integer gauge")
}

#[derive(Debug, Clone, Copy)]
struct Case {
    ack: &'static str,
    model: Metadata,
    torn: bool,
    broker_away: bool,
    idle: bool,
}

async fn cut_power_and_restart(case: Case) {
    if !powerfs::fuse_available() {
        return;
    }
    let topology = Topology::declare(&format!("power.{}", case.ack), &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // The store's parent is on the mount too, made durable as an operator's directory would be.
    let StoreMount {
        fs,
        mounted,
        mountpoint,
        store,
    } = StoreMount::new(dir.path(), case.model);

    let first_url = if case.broker_away {
        NO_BROKER
    } else {
        support::BROKER
    };
    let config = write_config(dir.path(), &store, &topology.exchange, case.ack, first_url);
    let mut relay = RelayProcess::start(&config);
    let stop = tokio_util::sync::CancellationToken::new();
    let load = (!case.idle).then(|| support::load::Load::start(relay.addr, stop.clone(), PAD));
    if let Some(load) = &load {
        support::eventually("enough deliveries were acknowledged", || {
            load.count() >= ACKED_BEFORE_CUT
        })
        .await;
    }
    let seed = case.torn.then(|| {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos() as u64;
        eprintln!("power cut: torn, seed {seed}");
        seed
    });
    // An idle cut tears only what sled wrote at start (`conf` among it): several torn images
    // of the same instant, so a store that opens only by luck fails the test.
    let images: Vec<Image> = match seed {
        Some(seed) if case.idle => (0..IDLE_TORN_IMAGES)
            .map(|i| fs.cut_power(Some(seed + i)))
            .collect(),
        _ => vec![fs.cut_power(seed)],
    };
    relay.child.0.kill().expect("SIGKILL");
    relay.child.0.wait().expect("reaped");
    stop.cancel();
    let acked = match load {
        Some(load) => load.finish().await,
        None => HashMap::new(),
    };
    drop(mounted);

    let config = write_config(
        dir.path(),
        &store,
        &topology.exchange,
        case.ack,
        support::BROKER,
    );
    for image in images {
        let fs = PowerFs::from_image(image, case.model);
        let _mounted = fs.mount(&mountpoint).expect("remount powerfs");
        for file in ["conf", "db"] {
            assert!(
                store.join(file).exists(),
                "the store's {file} did not survive the power cut"
            );
        }
        let relay = RelayProcess::start(&config);
        let duplicates = assert_all_delivered(&topology, &acked, Some(relay.admin_addr)).await;
        support::assert_outbox_drains(relay.admin_addr).await;
        assert_eq!(
            store_recreated(relay.admin_addr).await,
            0,
            "the relay reports a lost store after the power cut"
        );
        eprintln!(
            "{case:?}: acknowledged {}, lost 0, duplicates {duplicates}",
            acked.len()
        );
        drop(relay);
    }
    topology.delete().await;
}

const fn case(ack: &'static str, model: Metadata, torn: bool) -> Case {
    Case {
        ack,
        model,
        torn,
        broker_away: false,
        idle: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_under_load_loses_nothing_acknowledged_in_durable_mode_on_strict_metadata_torn() {
    cut_power_and_restart(case("durable", Metadata::Strict, true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_under_load_loses_nothing_acknowledged_in_durable_mode_on_ext4_metadata() {
    cut_power_and_restart(case("durable", Metadata::Ext4Like, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_with_the_broker_away_loses_nothing_acknowledged_on_strict_metadata() {
    cut_power_and_restart(Case {
        broker_away: true,
        ..case("durable", Metadata::Strict, false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_with_the_broker_away_loses_nothing_acknowledged_on_ext4_metadata_torn() {
    cut_power_and_restart(Case {
        broker_away: true,
        ..case("durable", Metadata::Ext4Like, true)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_under_load_loses_nothing_acknowledged_in_confirmed_mode_on_strict_metadata() {
    cut_power_and_restart(case("confirmed", Metadata::Strict, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_under_load_loses_nothing_acknowledged_in_confirmed_mode_on_ext4_metadata_torn() {
    cut_power_and_restart(case("confirmed", Metadata::Ext4Like, true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_right_after_the_first_start_keeps_a_store_that_opens_on_strict_metadata_torn() {
    cut_power_and_restart(Case {
        idle: true,
        ..case("durable", Metadata::Strict, true)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cut_right_after_the_first_start_keeps_a_store_that_opens_on_ext4_metadata_torn() {
    cut_power_and_restart(Case {
        idle: true,
        ..case("durable", Metadata::Ext4Like, true)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_vanished_is_recreated_loudly_not_silently() {
    let topology = Topology::declare("power.recreated", &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("data");
    let config = write_config(
        dir.path(),
        &store,
        &topology.exchange,
        "durable",
        support::BROKER,
    );
    let relay = RelayProcess::start(&config);
    assert_eq!(
        store_recreated(relay.admin_addr).await,
        0,
        "a first store is no loss"
    );
    drop(relay);
    let relay = RelayProcess::start(&config);
    assert_eq!(
        store_recreated(relay.admin_addr).await,
        0,
        "a reopened store is no loss"
    );
    drop(relay);

    std::fs::remove_dir_all(&store).expect("lose the store");
    let relay = RelayProcess::start(&config);
    assert_eq!(
        store_recreated(relay.admin_addr).await,
        1,
        "the loss is exported"
    );
    drop(relay);
    topology.delete().await;
}

/// Bodies of about 48 KiB: two chunks each, so sled moves and rewrites many large pages.
const CYCLE_PAD: usize = 48 * 1024;
/// Events acknowledged per cycle: about 30 MiB of body data, several 8 MiB segments.
const CYCLE_EVENTS: usize = 600;
/// Bound on acknowledging them.
const CYCLE_LOAD_BOUND: Duration = Duration::from_secs(90);

/// sled frees a log segment once the pages moved out of it are `sync_file_range`-stable (not
/// fsynced) and may overwrite it before our next fsync. Torn power cuts after several cycles of
/// large bodies on one store, published and removed in between so segments get recycled: no
/// acknowledged event may be lost. `POWER_CYCLES` raises the number of cycles (default 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_power_cuts_over_many_cycles_of_large_bodies_lose_nothing_acknowledged() {
    if !powerfs::fuse_available() {
        return;
    }
    let cycles: usize = std::env::var("POWER_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let topology = Topology::declare("power.cycles", &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mountpoint = dir.path().join("mnt");
    std::fs::create_dir(&mountpoint).expect("mountpoint");
    let store = mountpoint.join("relay").join("data");
    let config = write_config(
        dir.path(),
        &store,
        &topology.exchange,
        "durable",
        support::BROKER,
    );
    let mut image = Image::empty();
    let (mut total_acked, mut total_duplicates, mut total_reuse) = (0, 0, 0);
    for cycle in 0..cycles {
        let fs = PowerFs::from_image(image, Metadata::Strict);
        let mounted = fs.mount(&mountpoint).expect("mount powerfs");
        if cycle == 0 {
            std::fs::create_dir(mountpoint.join("relay")).expect("store parent");
            std::fs::File::open(&mountpoint)
                .and_then(|root| root.sync_all())
                .expect("fsync the mount root");
        }
        let mut relay = RelayProcess::start(&config);
        let stop = tokio_util::sync::CancellationToken::new();
        let load = support::load::Load::start(relay.addr, stop.clone(), CYCLE_PAD);
        // 600 bodies of 48 KiB take 15-25 s on 2 busy cores, past `support::WAIT`.
        let deadline = tokio::time::Instant::now() + CYCLE_LOAD_BOUND;
        while load.count() < CYCLE_EVENTS {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {CYCLE_EVENTS} deliveries acknowledged within {CYCLE_LOAD_BOUND:?}",
                load.count()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seed = u64::try_from(cycle).expect("small") * 7919 + 1;
        image = fs.cut_power(Some(seed));
        relay.child.0.kill().expect("SIGKILL");
        relay.child.0.wait().expect("reaped");
        stop.cancel();
        let acked = load.finish().await;
        let reuse = fs.reuse_writes();
        drop(mounted);

        // Recover on what survived, then let the relay drain (and sled recycle) before the next
        // cycle's cut.
        let fs = PowerFs::from_image(image, Metadata::Strict);
        let mounted = fs.mount(&mountpoint).expect("remount powerfs");
        let relay = RelayProcess::start(&config);
        let duplicates = assert_all_delivered(&topology, &acked, Some(relay.admin_addr)).await;
        support::assert_outbox_drains(relay.admin_addr).await;
        assert_eq!(
            store_recreated(relay.admin_addr).await,
            0,
            "the store was lost"
        );
        drop(relay);
        image = fs.cut_power(None);
        drop(mounted);
        eprintln!(
            "cycle {cycle} (torn seed {seed}): acknowledged {}, lost 0, duplicates {duplicates}, writes into recycled space {reuse}",
            acked.len()
        );
        total_acked += acked.len();
        total_duplicates += duplicates;
        total_reuse += reuse;
    }
    eprintln!(
        "{cycles} cycles: acknowledged {total_acked}, lost 0, duplicates {total_duplicates}, writes into recycled space {total_reuse}"
    );
    assert!(
        total_reuse > 0,
        "sled never wrote into recycled log space: the cycles did not test segment reuse"
    );
    topology.delete().await;
}

/// After a power cut the store's filesystem fails every operation; SIGTERM must still end the
/// relay, within its shutdown bound, with exit status 1 (a flush failed). Written after the
/// soak's first smoke run left a relay hanging in sled's drop (waiting for sled's own flusher
/// thread) after SIGTERM while its FUSE store went away; this case does not reproduce that
/// hang (see RELIABILITY.md, Soak).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_after_the_store_filesystem_failed_exits_1_within_the_shutdown_bound() {
    if !powerfs::fuse_available() {
        return;
    }
    let topology = Topology::declare("power.sigterm", &[]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let StoreMount {
        fs, mounted, store, ..
    } = StoreMount::new(dir.path(), Metadata::Strict);
    let config = write_config(
        dir.path(),
        &store,
        &topology.exchange,
        "durable",
        support::BROKER,
    );
    let mut relay = RelayProcess::start(&config);
    let client = support::http_client();
    let url = format!("http://{}{PATH}", relay.addr);
    let send = |id: String| {
        let body = Bytes::from(support::load::padded_body(&id, 0));
        let request = http::Request::post(&url)
            .header("Gate-Signature", sign(SECRET, now(), &body))
            .body(http_body_util::Full::new(body))
            .expect("request");
        client.request(request)
    };
    let before = send(unique("evt")).await.expect("answered");
    assert!(before.status().is_success(), "accepted before the cut");
    let _ = fs.cut_power(None);
    // A delivery after the cut makes a flush fail.
    let after = send(unique("evt")).await.expect("answered");
    assert_eq!(
        after.status().as_u16(),
        503,
        "nothing is durable after the cut"
    );

    relay.signal("TERM");
    // The shutdown grace (5 s in the test config) plus the publisher's and store's bounds.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = relay.child.0.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(relay);
    drop(mounted);
    topology.delete().await;
    let status = status.expect("the relay exits after SIGTERM although its store failed");
    assert_eq!(status.code(), Some(1), "a failed flush exits 1: {status}");
}
