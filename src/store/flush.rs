//! Group commit: one flusher makes every waiting write durable with one flush.
//!
//! Owns: sled's flush plus the fsyncs it leaves out, the flush generations writers wait for,
//! and stopping for good after a failed flush. See the guarantees in the `store` module
//! documentation.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;

use super::{Store, StoreError};

impl Store {
    /// Waits until a flush that started after this call has completed.
    pub(super) async fn wait_durable(&self) -> Result<(), StoreError> {
        let ticket = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake_flusher.notify_one();
        let mut flushed = self.flushed.subscribe();
        let state = *flushed
            .wait_for(|s| s.generation >= ticket || s.stopped)
            .await
            .map_err(|_| StoreError::Closed)?;
        if state.generation >= ticket {
            Ok(())
        } else {
            Err(StoreError::Closed)
        }
    }

    /// sled's flush, then the fsyncs it leaves out (see the module guarantee). Blocking.
    ///
    /// New blob files are fsynced before the data file, so a log entry that this flush makes
    /// durable never points at a blob that is not.
    pub(super) fn sync_all(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        self.sync_new_blobs()?;
        File::open(self.path.join("db"))?.sync_all()?;
        self.sync_dir_if_changed()?;
        Ok(())
    }

    /// Once, after open: fsyncs what sled writes without fsync and the directories holding
    /// the store. sled writes `conf` without fsync, and a torn (zeroed) `conf` makes every
    /// later open fail with `Corruption`; `blobs/`, the store directory and its parent hold
    /// the names of everything else.
    pub(super) fn sync_layout(&self) -> Result<(), StoreError> {
        File::open(self.path.join("conf"))?.sync_all()?;
        let blob_dir = self.path.join("blobs");
        if blob_dir.is_dir() {
            File::open(&blob_dir)?.sync_all()?;
        }
        File::open(&self.path)?.sync_all()?;
        self.sync_parent()
    }

    /// Fsyncs the directory holding the store directory (and its marker).
    pub(super) fn sync_parent(&self) -> Result<(), StoreError> {
        if let Some(parent) = self.path.parent() {
            // A relative path like `data` has the empty parent: the working directory.
            let parent = if parent.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                parent
            };
            File::open(parent)?.sync_all()?;
        }
        Ok(())
    }

    /// Fsyncs the store directory when its entries changed since the last round: sled writes
    /// a snapshot as `snap.*.generating`, fsyncs it and renames it, and removes old ones; the
    /// rename is durable only with the directory.
    fn sync_dir_if_changed(&self) -> Result<(), StoreError> {
        let mut names = std::fs::read_dir(&self.path)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<Result<Vec<_>, _>>()?;
        names.sort();
        let mut synced = self
            .synced_names
            .lock()
            .expect("no panics while holding the lock");
        if *synced != names {
            File::open(&self.path)?.sync_all()?;
            *synced = names;
        }
        Ok(())
    }

    /// Fsyncs blob files that are new or have grown since the last round (sled may still have
    /// been writing one when it was last synced). With our segment size sled writes no blobs
    /// (see `SEGMENT_SIZE`); this is the safety net if one ever appears.
    fn sync_new_blobs(&self) -> Result<(), StoreError> {
        let blob_dir = self.path.join("blobs");
        let mut synced = self
            .synced_blobs
            .lock()
            .expect("no panics while holding the lock");
        let mut present = HashMap::new();
        let mut any_new = false;
        let entries = match std::fs::read_dir(&blob_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let file = match File::open(entry.path()) {
                Ok(file) => file,
                // sled removes a blob once a newer version of its page replaces it; a blob
                // gone between listing and opening holds nothing the log still needs.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let len = file.metadata()?.len();
            if synced.get(&name) != Some(&len) {
                file.sync_all()?;
                any_new = true;
            }
            present.insert(name, len);
        }
        if any_new {
            File::open(&blob_dir)?.sync_all()?;
        }
        *synced = present;
        Ok(())
    }

    /// Group commit: one flush per round covers every write made before the round started.
    /// Runs until `shutdown`, then flushes once more.
    /// `flush_seconds` observes each round's duration.
    pub async fn run_flusher(
        self: Arc<Self>,
        shutdown: CancellationToken,
        flush_seconds: prometheus::Histogram,
    ) {
        loop {
            tokio::select! {
                () = self.wake_flusher.notified() => {}
                () = shutdown.cancelled() => break,
            }
            let target = self.written.load(Ordering::SeqCst);
            if target <= self.flushed.borrow().generation {
                continue;
            }
            let started = std::time::Instant::now();
            let flushed = self.flush_blocking().await;
            flush_seconds.observe(started.elapsed().as_secs_f64());
            if let Err(e) = flushed {
                // Waiters get an error (503), readiness turns false; restart to recover.
                tracing::error!(error = %e, "store flush failed; the store accepts nothing more until restarted");
                self.flushed.send_modify(|s| {
                    s.stopped = true;
                    s.failed = true;
                });
                return;
            }
            self.flushed.send_modify(|s| s.generation = target);
        }
        let target = self.written.load(Ordering::SeqCst);
        let failed = match self.flush_blocking().await {
            Ok(()) => {
                tracing::info!("store flushed");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "final store flush failed");
                true
            }
        };
        // After this nothing more is flushed: later writes (an admin replay racing shutdown)
        // get an error instead of waiting forever. A failed final flush leaves the generation
        // where it was, so nobody waiting is told their write is durable.
        self.flushed.send_modify(|s| {
            if !failed {
                s.generation = target;
            }
            s.stopped = true;
            s.failed |= failed;
        });
    }

    async fn flush_blocking(self: &Arc<Self>) -> Result<(), StoreError> {
        let store = Arc::clone(self);
        tokio::task::spawn_blocking(move || store.sync_all())
            .await
            .map_err(|_| StoreError::Closed)?
    }
}
