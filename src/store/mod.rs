//! The durable dedupe store and outbox, on sled `=0.34.7`.
//!
//! Owns: one record per (environment, event id), the raw bodies of events not yet published, the
//! outbox order, and durability (group commit). Does not own: what the records mean to HTTP or to
//! RabbitMQ. Knows only sled and the filesystem.
//!
//! Layout: tree `events` maps `environment \0 event id` to a JSON [`EventRecord`]; tree `outbox`
//! maps a big-endian sequence number (arrival order) to body size and event key; tree `bodies`
//! maps `sequence ++ chunk number` to at most [`BODY_CHUNK`] bytes of the body; tree `by_seq`
//! maps the sequence of every record to its key (arrival order, for listing and pruning).
//!
//! Guarantees:
//! - [`Store::admit`] writes outbox entry, body chunks and index first and the record last, by
//!   compare-and-swap from absent, all without sled transactions (each transaction costs two
//!   synchronous log writes). After a process crash sled recovers its log up to the first tear
//!   (`LogIter`), a prefix in write order, so a record implies its body and outbox entry; a
//!   crash before the record leaves an outbox entry without a record, which [`Store::open`]
//!   removes (never acknowledged: answers wait for the flush covering the record). After a
//!   power cut, writes since the last fsync may land in any order; a pending record found
//!   without its outbox entry or whole body is replaced by the next delivery of its id instead
//!   of being answered as a duplicate (see `repair`). Admits of one key are serialised by an
//!   in-process stripe lock (sled locks the directory to one process), so concurrent
//!   deliveries of one id yield exactly one `New`; the others see it.
//! - A write is durable once [`Store::admit`] returns: it waits for a flush generation that
//!   started after the write. A flush is sled's `flush` (which on Linux ends in
//!   `sync_file_range`, data only) followed by `fsync` of the data file. One flusher serves
//!   every waiting request (group commit).
//! - Every page stays in sled's log: sled writes items over a quarter segment as separate,
//!   never-synced blob files, and our segment size keeps every page below that (see
//!   `SEGMENT_SIZE`; a test writes bodies up to 1 MiB and finds no blob file). Should a blob
//!   appear anyway, each flush fsyncs new or grown blob files before the data file.
//! - Marking an event published is not waited on: losing it in a crash only means the event is
//!   published again with the same `message_id`, which consumers drop.
//! - Names are durable too: sled fsyncs no directory and writes `conf` without fsync, so
//!   [`Store::open`] fsyncs `conf`, `blobs/`, the store directory and its parent, and each flush
//!   fsyncs the store directory when its entries changed (snapshot renames). Without this a
//!   filesystem with strict POSIX metadata lost the whole store at a power cut
//!   (`tests/power_loss.rs`). A marker beside the store directory makes a lost store loud
//!   ([`Store::recreated`]); where that directory cannot be written, the store opens without
//!   it and says so.
//! - Remaining gap, sled's and about power cuts, not process crashes: sled frees a log segment
//!   once the pages moved out of it are `sync_file_range`-stable, not fsynced, so it may
//!   overwrite the segment before our next flush. Torn power cuts over many cycles of large
//!   bodies (the power-loss tests, thousands of writes into recycled log space) lost no
//!   acknowledged event; that is evidence, not proof.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use sled::transaction::TransactionError;
use tokio::sync::{Notify, watch};

use crate::config::StoreConfig;

mod admit;
mod flush;
mod inspect;
mod keys;
mod outbox;
mod park;
mod publish;
mod record;
mod repair;
mod views;
pub use inspect::{ListFilter, Listing, PruneLimits, PrunePass, Pruned, Replay, Retention};
use keys::{
    chunk_count, chunk_key, outbox_value, parse_outbox_entry, parse_settled_key, settled_key,
};
pub use outbox::OutboxDepth;
pub use park::DropOutcome;
pub use record::{Admission, EventKey, EventRecord, EventState, NewEvent, Pending, PendingBatch};
use record::{decode_record, encode_record};
pub use views::{AdminView, IngestView, PublisherView};

/// Bodies are stored in chunks of at most this size, one sled value each.
pub const BODY_CHUNK: usize = 32 * 1024;

/// sled writes any log item over a quarter segment as a separate blob file, outside its log
/// (and so outside the log's fsync and its tear detection). A whole leaf page is one item, and
/// a leaf splits above 16 entries, so with the default 512 KiB segments a leaf of five body
/// chunks became a blob. With 8 MiB segments the limit is 2 MiB, far above the largest leaf
/// (17 chunks ≈ 560 KiB): no page becomes a blob. sled fixes the segment size when it creates
/// a store.
const SEGMENT_SIZE: usize = 8 << 20;

/// Request ids kept per record: enough to trace a retry storm, bounded so a record stays small.
pub const MAX_REQUEST_IDS: usize = 16;

#[derive(Debug, Clone, Copy, Default)]
struct FlushState {
    generation: u64,
    stopped: bool,
    /// A flush failed: writes since the last good one may not be on disk.
    failed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the outbox is full ({events} events, {bytes} bytes)")]
    OutboxFull { events: u64, bytes: u64 },
    #[error("storage failure: {0}")]
    Storage(#[from] sled::Error),
    #[error("storage i/o failure: {0}")]
    Io(#[from] std::io::Error),
    #[error("a stored record is unreadable: {0}")]
    Corrupt(String),
    #[error("the store is shutting down")]
    Closed,
}

pub struct Store {
    db: sled::Db,
    events: sled::Tree,
    outbox: sled::Tree,
    bodies: sled::Tree,
    /// Arrival order over all records: sequence → event key. Listing and pruning walk it.
    by_seq: sled::Tree,
    /// Parked events: event key → nothing. Small (an operator clears it), so its length is the
    /// parked gauge.
    parked: sled::Tree,
    /// Settled events by when: `settled_at_ms ++ seq` → event key. The pruner walks it oldest
    /// first, so pending events never stand in its way.
    settled: sled::Tree,
    /// Small bookkeeping values (the pruner's cursor).
    meta: sled::Tree,
    path: PathBuf,
    max_outbox_events: u64,
    max_outbox_bytes: u64,
    outbox_events: AtomicU64,
    outbox_bytes: AtomicU64,
    /// The same depth per environment (key: the environment's bytes): the outbox bounds apply
    /// to each environment alone, so one environment's backlog never refuses another's events.
    depth_by_env: Mutex<HashMap<Vec<u8>, OutboxDepth>>,
    events_stored: AtomicU64,
    /// Generation requested by the newest write; the flusher covers it on its next round.
    written: AtomicU64,
    wake_flusher: Notify,
    /// Highest generation made durable, and whether the flusher has stopped for good (shut down,
    /// or a failed flush: after a failed fsync the kernel may have dropped the dirty pages, so a
    /// later fsync that succeeds proves nothing; only a restart, replaying sled's log, is safe).
    flushed: watch::Sender<FlushState>,
    /// Blob files already fsynced, with their length then, so each round syncs only new or
    /// grown ones.
    synced_blobs: Mutex<HashMap<std::ffi::OsString, u64>>,
    /// The store directory's entries as last fsynced: a round fsyncs the directory again only
    /// when sled has created, renamed or removed a file (snapshots) since.
    synced_names: Mutex<Vec<std::ffi::OsString>>,
    /// This open created an empty store where its marker said one had existed.
    recreated: bool,
    /// Wakes the publisher when the outbox gains an event.
    outbox_grew: Notify,
    /// Lowest sequence admitted since the publisher last asked. Sequences are drawn before the
    /// record is written, so admits can complete out of order: a reader that only moves forward
    /// would miss an event committed behind it. See [`Store::take_lowest_admitted`].
    lowest_admitted: AtomicU64,
    /// Admits of one key take the same stripe (see [`Store::admit_lock`]).
    admit_locks: Box<[Mutex<()>]>,
    admit_hasher: std::hash::RandomState,
}

/// Stripes for admit locks: far more than concurrent admits, so distinct keys rarely wait.
const ADMIT_STRIPES: usize = 256;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The result of one of our transactions: they never abort on purpose, so only storage errors
/// come out of them.
fn committed<T>(outcome: sled::transaction::TransactionResult<T, ()>) -> Result<T, StoreError> {
    outcome.map_err(|e| match e {
        TransactionError::Storage(e) => e.into(),
        TransactionError::Abort(()) => unreachable!("store transactions never abort"),
    })
}

/// Unix milliseconds, the unit of every time the store keeps.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    let since_epoch = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

fn now_ms() -> u64 {
    unix_ms(std::time::SystemTime::now())
}

/// A file beside the store directory, created once the first store there is durable: a later
/// open that finds the marker but no store knows a store was lost or replaced, and says so.
/// Beside, not inside, because whatever removes or loses the directory takes its contents too.
fn marker_path(store: &std::path::Path) -> PathBuf {
    let name = store
        .file_name()
        .map_or_else(|| "store".into(), |n| n.to_string_lossy().into_owned());
    store.with_file_name(format!(".{name}.gate-relay-store"))
}

/// The directory holding the store cannot take the marker: read-only, or not ours to write.
fn unwritable(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
    )
}

impl Store {
    /// Opens (or creates) the store and rebuilds the outbox counters.
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        // sled writes `conf` when it creates a store: without it, this open starts empty.
        let creating = !config.path.join("conf").exists();
        let marker = marker_path(&config.path);
        let recreated = creating && marker.exists();
        if recreated {
            tracing::error!(
                path = %config.path.display(),
                marker = %marker.display(),
                "store missing where one existed; starting an empty store (events it held are lost)"
            );
        }
        std::fs::create_dir_all(&config.path)?;
        let db = sled::Config::new()
            .path(&config.path)
            .segment_size(SEGMENT_SIZE)
            .cache_capacity(config.cache_capacity_bytes)
            .open()?;
        let store = Self {
            events: db.open_tree("events")?,
            outbox: db.open_tree("outbox")?,
            bodies: db.open_tree("bodies")?,
            by_seq: db.open_tree("by_seq")?,
            parked: db.open_tree("parked")?,
            settled: db.open_tree("settled")?,
            meta: db.open_tree("meta")?,
            db,
            path: config.path.clone(),
            max_outbox_events: config.max_outbox_events,
            max_outbox_bytes: config.max_outbox_bytes,
            outbox_events: AtomicU64::new(0),
            outbox_bytes: AtomicU64::new(0),
            depth_by_env: Mutex::new(HashMap::new()),
            events_stored: AtomicU64::new(0),
            written: AtomicU64::new(0),
            wake_flusher: Notify::new(),
            flushed: watch::Sender::new(FlushState::default()),
            synced_blobs: Mutex::new(HashMap::new()),
            synced_names: Mutex::new(Vec::new()),
            recreated,
            outbox_grew: Notify::new(),
            lowest_admitted: AtomicU64::new(u64::MAX),
            admit_locks: (0..ADMIT_STRIPES).map(|_| Mutex::new(())).collect(),
            admit_hasher: std::hash::RandomState::new(),
        };
        store.remove_stale_outbox_entries()?;
        store.reconcile_parked()?;
        store.index_settled_once()?;
        // One pass over the records at start; after that the count is kept in memory.
        store
            .events_stored
            .store(store.events.len() as u64, Ordering::SeqCst);
        // The files sled just created, and their names, must survive a power cut too (on a
        // filesystem that makes a name durable only with its directory, an unsynced store
        // directory vanishes whole, and the relay would start on an empty store).
        store.sync_all()?;
        store.sync_layout()?;
        if !marker.exists() {
            // Written after the store is durable, and made durable with its directory, so a
            // marker never outlives a store that never existed.
            match File::create(&marker).and_then(|f| f.sync_all()) {
                Ok(()) => store.sync_parent()?,
                // A container's read-only root, or a parent owned by someone else: the store
                // itself is fine, only the check for a lost store is off.
                Err(e) if unwritable(&e) => tracing::warn!(
                    marker = %marker.display(),
                    error = %e,
                    "cannot keep the store marker beside the store; a lost store will not be \
                     noticed (give the store a directory of its own inside the volume)"
                ),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(store)
    }

    /// True when this open created an empty store where one had existed (see [`marker_path`]).
    pub(crate) fn recreated(&self) -> bool {
        self.recreated
    }

    /// True when a flush failed (while running, or the last one at shutdown).
    pub(crate) fn flush_failed(&self) -> bool {
        self.flushed.borrow().failed
    }

    /// False once the flusher has stopped (shutdown or a failed flush): nothing new is durable.
    pub(crate) fn is_writable(&self) -> bool {
        !self.flushed.borrow().stopped
    }

    /// The outbox depth of one environment.
    fn depth_of(&self, environment: &[u8]) -> OutboxDepth {
        self.depth_by_env
            .lock()
            .expect("no panics while holding the lock")
            .get(environment)
            .copied()
            .unwrap_or(OutboxDepth {
                events: 0,
                bytes: 0,
            })
    }

    /// The record for `key`, if any.
    pub fn record(&self, key: &EventKey) -> Result<Option<EventRecord>, StoreError> {
        self.events
            .get(&key.0)?
            .map(|v| decode_record(&v))
            .transpose()
    }

    /// The body stored under `seq`, if it has not been pruned.
    pub fn body(&self, seq: u64, size: u64) -> Result<Option<Bytes>, StoreError> {
        let mut body = BytesMut::with_capacity(usize::try_from(size).unwrap_or(0));
        for chunk in self
            .bodies
            .range(chunk_key(seq, 0)..=chunk_key(seq, u32::MAX))
        {
            body.extend_from_slice(&chunk?.1);
        }
        if body.is_empty() && size > 0 {
            return Ok(None);
        }
        if body.len() as u64 != size {
            return Err(StoreError::Corrupt(format!(
                "the body of {seq} is incomplete"
            )));
        }
        Ok(Some(body.freeze()))
    }

    /// Removes the outbox entry `seq`, if present, and takes it off the outbox counters.
    fn dequeue(&self, seq: u64) -> Result<(), StoreError> {
        let seq_key = seq.to_be_bytes();
        if let Some(entry) = self.outbox.remove(seq_key)? {
            // An entry that does not parse was never counted in (open fails on it).
            if let Ok((_, size, key)) = parse_outbox_entry(&seq_key, &entry) {
                self.count_out(&key, size);
            }
        }
        Ok(())
    }

    /// Bytes the store takes on disk.
    pub(crate) fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::event::EventId;

    #[test]
    fn a_state_reads_as_it_serialises() {
        use EventState::*;
        for state in [Pending, Published, Parked, Dropped] {
            let json = serde_json::to_string(&state).expect("serialise");
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
    }

    pub(super) fn open(dir: &std::path::Path, max_events: u64) -> Arc<Store> {
        let config = StoreConfig {
            path: dir.to_path_buf(),
            max_outbox_events: max_events,
            max_outbox_bytes: 1 << 30,
            retain_bodies: Duration::from_secs(60),
            retain_events: None,
            cache_capacity_bytes: crate::config::DEFAULT_CACHE_CAPACITY_BYTES,
        };
        // sled releases its directory lock only when its last internal reference goes, which
        // can trail the drop of a `Db` by a moment (deferred epoch cleanup on its I/O threads).
        // Reopening in the same process must wait for that; a real restart is a new process.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Store::open(&config) {
                Ok(store) => return Arc::new(store),
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("open store: {e}"),
            }
        }
    }

    pub(super) fn admit_sync(
        store: &Store,
        id: &str,
        body: &Bytes,
    ) -> Result<Admission, StoreError> {
        let event_id = EventId::parse(id).expect("valid id");
        let key = EventKey::new("live", &event_id);
        store.admit_in_memory(&NewEvent {
            key: &key,
            environment: "live",
            event_id: &event_id,
            event_type: "a.b",
            endpoint: "ep",
            received_at_ms: 1,
            request_id: "r",
            signature: "t=1,v1=00",
            body,
        })
    }

    /// The outbox holds exactly one event, with `body`.
    pub(super) fn assert_only_queued(store: &Store, body: &Bytes) {
        let pending = store
            .pending_after(None, 10, |_| false)
            .expect("read")
            .events;
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].body, *body);
    }

    #[test]
    fn large_bodies_round_trip_in_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), 10);
        let body = Bytes::from(
            (0..BODY_CHUNK * 3 + 17)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            admit_sync(&store, "e1", &body).expect("admit"),
            Admission::New
        );
        let pending = store
            .pending_after(None, 10, |_| false)
            .expect("pending")
            .events;
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].body, body);
        assert_eq!(
            store.outbox_depth(),
            OutboxDepth {
                events: 1,
                bytes: body.len() as u64
            }
        );
        store
            .mark_published(&[(pending[0].seq, pending[0].key.clone())])
            .expect("mark");
        assert_eq!(
            store.outbox_depth(),
            OutboxDepth {
                events: 0,
                bytes: 0
            }
        );
        assert_eq!(store.outbox.len(), 0, "published events leave the outbox");
        assert_eq!(
            admit_sync(&store, "e1", &body).expect("again"),
            Admission::Seen(EventState::Published)
        );
    }

    #[test]
    fn outbox_bound_refuses_new_events_but_not_duplicates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), 1);
        let body = Bytes::from_static(b"{}");
        admit_sync(&store, "e1", &body).expect("first");
        assert!(matches!(
            admit_sync(&store, "e2", &body),
            Err(StoreError::OutboxFull { .. })
        ));
        assert_eq!(
            admit_sync(&store, "e1", &body).expect("dup"),
            Admission::Seen(EventState::Pending)
        );
    }

    #[test]
    fn outbox_survives_reopen_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = open(dir.path(), 10);
            for id in ["a", "b", "c"] {
                admit_sync(&store, id, &Bytes::from_static(b"xy")).expect("admit");
            }
            store.sync_all().expect("flush");
        }
        let store = open(dir.path(), 10);
        let ids: Vec<String> = store
            .pending_after(None, 10, |_| false)
            .expect("pending")
            .events
            .into_iter()
            .map(|p| p.record.event_id)
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(
            store.outbox_depth(),
            OutboxDepth {
                events: 3,
                bytes: 6
            }
        );
    }

    #[test]
    fn reads_skip_without_loading_and_report_where_they_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), 10);
        for id in ["a", "b", "c", "d"] {
            admit_sync(&store, id, &Bytes::from_static(b"xy")).expect("admit");
        }
        let all = store.pending_after(None, 10, |_| false).expect("read");
        let seqs: Vec<u64> = all.events.iter().map(|p| p.seq).collect();
        let batch = store
            .pending_after(None, 2, |seq| seq == seqs[0])
            .expect("read");
        let ids: Vec<&str> = batch
            .events
            .iter()
            .map(|p| p.record.event_id.as_str())
            .collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(batch.last_seq, Some(seqs[2]));
        assert!(!batch.exhausted);
        let rest = store
            .pending_after(batch.last_seq, 2, |_| false)
            .expect("read");
        assert_eq!(rest.events.len(), 1);
        assert!(rest.exhausted);
        assert_eq!(store.take_lowest_admitted(), Some(seqs[0]));
        assert_eq!(store.take_lowest_admitted(), None);
    }

    #[test]
    fn an_admit_cut_short_before_its_record_is_removed_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = Bytes::from(vec![7u8; BODY_CHUNK + 1]);
        let (kept_seq, cut_seq) = {
            let store = open(dir.path(), 10);
            admit_sync(&store, "kept", &body).expect("admit");
            let kept_seq = store
                .pending_after(None, 10, |_| false)
                .expect("read")
                .events[0]
                .seq;
            // What a crash after the body and index writes, before the record, leaves on disk.
            let id = EventId::parse("cut").expect("valid");
            let key = EventKey::new("live", &id);
            let cut_seq = store.db.generate_id().expect("id");
            store
                .outbox
                .insert(cut_seq.to_be_bytes(), outbox_value(body.len() as u64, &key))
                .expect("outbox");
            for (i, chunk) in body.chunks(BODY_CHUNK).enumerate() {
                store
                    .bodies
                    .insert(chunk_key(cut_seq, i as u32), chunk)
                    .expect("chunk");
            }
            store
                .by_seq
                .insert(cut_seq.to_be_bytes(), key.0.as_slice())
                .expect("index");
            // Until its record is in, a reader passes over it without loading it.
            let batch = store.pending_after(None, 10, |_| false).expect("read");
            assert_eq!(batch.events.len(), 1);
            assert_eq!(batch.last_seq, Some(cut_seq));
            store.sync_all().expect("flush");
            (kept_seq, cut_seq)
        };
        let store = open(dir.path(), 10);
        assert_eq!(store.outbox.len(), 1, "only the whole admit stays queued");
        assert!(
            store
                .outbox
                .contains_key(kept_seq.to_be_bytes())
                .expect("get")
        );
        assert!(
            !store
                .by_seq
                .contains_key(cut_seq.to_be_bytes())
                .expect("get")
        );
        assert_eq!(
            store.bodies.len(),
            2,
            "the cut admit's two chunks are gone, the kept one's remain"
        );
        assert_eq!(
            store.outbox_depth(),
            OutboxDepth {
                events: 1,
                bytes: body.len() as u64
            }
        );
        // The id was never acknowledged, so its next delivery is a first sight.
        assert_eq!(
            admit_sync(&store, "cut", &body).expect("admit"),
            Admission::New
        );
    }

    #[test]
    fn bodies_up_to_the_largest_make_no_blob_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), 1_000);
        for (i, size) in [600, BODY_CHUNK, BODY_CHUNK * 3, 1 << 20]
            .iter()
            .enumerate()
        {
            for j in 0..40 {
                let body = Bytes::from(vec![b'x'; *size]);
                admit_sync(&store, &format!("e{i}_{j}"), &body).expect("admit");
                if j % 8 == 0 {
                    store.sync_all().expect("flush");
                }
            }
        }
        store.sync_all().expect("flush");
        let blobs = std::fs::read_dir(dir.path().join("blobs")).map_or(0, |d| d.count());
        assert_eq!(blobs, 0, "every page stays in sled's log");
    }

    #[test]
    fn a_blob_file_removed_while_flushing_does_not_fail_the_flush() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), 100);
        // Several chunks per leaf page: sled writes such pages as blob files.
        for i in 0..40 {
            let body = Bytes::from(vec![b'x'; BODY_CHUNK * 3]);
            admit_sync(&store, &format!("e{i}"), &body).expect("admit");
        }
        store.sync_all().expect("flush");
        // What the flusher sees when sled deletes a blob between listing and opening it: an
        // entry that is listed but no longer opens.
        let blobs = dir.path().join("blobs");
        std::fs::create_dir_all(&blobs).expect("blob dir");
        std::os::unix::fs::symlink(blobs.join("gone"), blobs.join("9999999")).expect("symlink");
        store
            .sync_all()
            .expect("a vanished blob is skipped, not a failed flush");
    }

    #[test]
    fn racing_admits_on_threads_record_each_id_once_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), 10_000);
        let ids: Vec<String> = (0..200).map(|i| format!("evt_{i}")).collect();
        let threads = 6;
        let barrier = std::sync::Barrier::new(threads);
        let new_per_thread: Vec<usize> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        let body = Bytes::from_static(b"{}");
                        ids.iter()
                            .filter(|id| {
                                admit_sync(&store, id, &body).expect("admit") == Admission::New
                            })
                            .count()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        assert_eq!(new_per_thread.iter().sum::<usize>(), ids.len());
        assert_eq!(store.events.len(), ids.len());
        assert_eq!(store.outbox.len(), ids.len());
        assert_eq!(store.by_seq.len(), ids.len());
        assert_eq!(store.bodies.len(), ids.len());
        assert_eq!(store.outbox_depth().events, ids.len() as u64);
        let record = store
            .record(&EventKey::new(
                "live",
                &EventId::parse("evt_0").expect("id"),
            ))
            .expect("read")
            .expect("present");
        assert_eq!(record.deliveries, threads as u64);
    }

    #[tokio::test]
    async fn concurrent_admits_of_one_id_record_it_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path(), 100);
        let shutdown = CancellationToken::new();
        let flusher = tokio::spawn(
            Arc::clone(&store)
                .run_flusher(shutdown.clone(), crate::metrics::Metrics::new().store_flush),
        );
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let id = EventId::parse("same").expect("valid");
                let key = EventKey::new("live", &id);
                let body = Bytes::from_static(b"{}");
                store
                    .admit(NewEvent {
                        key: &key,
                        environment: "live",
                        event_id: &id,
                        event_type: "t",
                        endpoint: "ep",
                        received_at_ms: 1,
                        request_id: "r",
                        signature: "s",
                        body: &body,
                    })
                    .await
            }));
        }
        let mut new = 0;
        for task in tasks {
            if task.await.expect("join").expect("admit") == Admission::New {
                new += 1;
            }
        }
        assert_eq!(new, 1);
        assert_eq!(store.outbox_depth().events, 1);
        shutdown.cancel();
        flusher.await.expect("flusher");
    }
}
