//! An in-memory FUSE filesystem that keeps, across a simulated power cut, only what was made
//! durable: file data by `fsync`/`fdatasync` (per dirty 4 KiB block, and the length), names by
//! the metadata model. A module shared by test targets, not a test target itself.
//!
//! Models: [`Metadata::Ext4Like`] makes the whole current namespace durable at any fsync (as
//! ext4's journal commit does); [`Metadata::Strict`] makes a directory's entries durable only on
//! an fsync of that directory (what POSIX promises). A power cut makes every later operation
//! fail with EIO and returns the durable image; torn, each dirty block not yet synced ends as
//! its new content, its old content or zeros (seeded, the seed is printed); a block that held
//! fsynced bytes ends as a mix of old and new 512-byte sectors (a drive's atomic sector writes),
//! never zeros, unless `POWER_TEAR_NONATOMIC=1`.
//! Writes reach the filesystem synchronously: no writeback cache, attribute and entry TTL 0.

#![allow(dead_code, reason = "each test target uses a different part")]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// True when `POWER_TEAR_NONATOMIC=1`: a torn block that held fsynced bytes may end as zeros.
fn nonatomic_sectors() -> bool {
    std::env::var("POWER_TEAR_NONATOMIC").is_ok_and(|v| v == "1")
}

/// The unit of a torn write: a page, as a drive or the page cache tears them.
pub const BLOCK: usize = 4096;
/// The unit a drive writes atomically: a torn block that held fsynced bytes mixes old and new
/// sectors of this size.
const SECTOR: usize = 512;
/// Zero: the kernel asks again every time, so it never answers from a stale cache.
const TTL: Duration = Duration::ZERO;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metadata {
    Ext4Like,
    Strict,
}

#[derive(Debug, Clone)]
struct File {
    current: Vec<u8>,
    durable: Vec<u8>,
    /// Blocks written (or cut by a truncate) since the last fsync.
    dirty: BTreeSet<usize>,
}

#[derive(Debug, Clone)]
enum Node {
    File(File),
    Dir {
        current: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
}

/// What survives a power cut: every inode with its durable content; reachable from the root
/// through durable entries.
#[derive(Debug, Clone)]
pub struct Image {
    nodes: HashMap<u64, Node>,
}

impl Image {
    pub fn empty() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            1,
            Node::Dir {
                current: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
        );
        Self { nodes }
    }
}

struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    model: Metadata,
    cut: bool,
    /// Writes into a fsynced region more than [`REUSE_DISTANCE`] below a file's end: a log
    /// reusing space (sled recycling a segment) rather than appending.
    reuse_writes: u64,
}

/// Farther below a file's end than one sled segment (8 MiB): not the tail being appended.
pub const REUSE_DISTANCE: usize = 8 << 20;

/// The filesystem handle shared between the FUSE session and the test.
#[derive(Clone)]
pub struct PowerFs {
    state: Arc<Mutex<State>>,
}

/// Small deterministic RNG (xorshift64*): torn images are reproducible from the printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed: neighbouring seeds (seed, seed + 1) start far apart.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl PowerFs {
    /// A filesystem whose current and durable state are both `image`.
    pub fn from_image(image: Image, model: Metadata) -> Self {
        let mut nodes = HashMap::new();
        // Keep only what is reachable through durable entries, as current state.
        let mut stack = vec![1u64];
        while let Some(ino) = stack.pop() {
            let Some(node) = image.nodes.get(&ino) else {
                continue;
            };
            let fresh = match node {
                Node::File(f) => Node::File(File {
                    current: f.durable.clone(),
                    durable: f.durable.clone(),
                    dirty: BTreeSet::new(),
                }),
                Node::Dir { durable, .. } => {
                    stack.extend(durable.values().copied());
                    Node::Dir {
                        current: durable.clone(),
                        durable: durable.clone(),
                    }
                }
            };
            nodes.insert(ino, fresh);
        }
        let next_ino = nodes.keys().max().copied().unwrap_or(1) + 1;
        Self {
            state: Arc::new(Mutex::new(State {
                nodes,
                next_ino,
                model,
                cut: false,
                reuse_writes: 0,
            })),
        }
    }

    /// Cuts the power: every later operation fails with EIO. Returns what survives; with
    /// `torn`, each unsynced dirty block ends as new, old or zeros, drawn from `seed`.
    pub fn cut_power(&self, torn: Option<u64>) -> Image {
        let mut state = self.state.lock().expect("lock");
        state.cut = true;
        let mut rng = torn.map(Rng::new);
        let mut nodes = HashMap::new();
        for (&ino, node) in &state.nodes {
            let node = match node {
                Node::File(f) => {
                    let mut durable = f.durable.clone();
                    if let Some(rng) = rng.as_mut() {
                        // A torn write may also have moved the length to the current one.
                        if rng.next() % 2 == 0 {
                            durable.resize(f.current.len(), 0);
                        }
                        for &block in &f.dirty {
                            let start = block * BLOCK;
                            if start >= durable.len() {
                                continue;
                            }
                            let end = (start + BLOCK).min(durable.len());
                            // A block that already held fsynced bytes tears as a drive with
                            // atomic sector writes tears it: each 512-byte sector old or new,
                            // never zeros. `POWER_TEAR_NONATOMIC=1` drops that assumption (sled
                            // then loses the tail of its log now and then: RELIABILITY.md).
                            let held_durable = start < f.durable.len();
                            if held_durable && !nonatomic_sectors() {
                                for sector in (start..end).step_by(SECTOR) {
                                    if rng.next() % 2 == 0 {
                                        let stop = (sector + SECTOR).min(end);
                                        for (i, byte) in
                                            durable[sector..stop].iter_mut().enumerate()
                                        {
                                            *byte = f.current.get(sector + i).copied().unwrap_or(0);
                                        }
                                    }
                                }
                                continue;
                            }
                            match rng.next() % 3 {
                                0 => {
                                    for (i, byte) in durable[start..end].iter_mut().enumerate() {
                                        *byte = f.current.get(start + i).copied().unwrap_or(0);
                                    }
                                }
                                1 => {}
                                _ => durable[start..end].fill(0),
                            }
                        }
                    }
                    Node::File(File {
                        current: durable.clone(),
                        durable,
                        dirty: BTreeSet::new(),
                    })
                }
                Node::Dir { durable, .. } => Node::Dir {
                    current: durable.clone(),
                    durable: durable.clone(),
                },
            };
            nodes.insert(ino, node);
        }
        Image { nodes }
    }

    /// How many writes landed in fsynced space far below a file's end (see [`REUSE_DISTANCE`]).
    pub fn reuse_writes(&self) -> u64 {
        self.state.lock().expect("lock").reuse_writes
    }

    /// Mounts at `mountpoint` on a background thread; the guard unmounts when dropped.
    pub fn mount(&self, mountpoint: &Path) -> std::io::Result<Mounted> {
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("powerfs".to_owned()),
            // fusermount3 unmounts if the test process dies without cleaning up.
            fuser::MountOption::AutoUnmount,
        ];
        // AutoUnmount needs allow_root or allow_other; the relay runs as the same user anyway.
        config.acl = fuser::SessionACL::RootAndOwner;
        let session = fuser::spawn_mount(self.clone(), mountpoint, &config)?;
        Ok(Mounted {
            session: Some(session),
            path: mountpoint.to_owned(),
        })
    }
}

// Also `support::skip` in targets with both modules; store_model.rs has only this one.
#[allow(
    clippy::duplicate_mod,
    reason = "one rule for skips, in targets with and without `support`"
)]
#[path = "../support/skip.rs"]
mod skip;

/// Skips (loudly) when this machine has no FUSE device; with `GATE_RELAY_REQUIRE_FAULT_TESTS=1`
/// panics instead.
pub fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    skip::skip("/dev/fuse is absent; the power-loss tests need FUSE");
    false
}

/// A relay's store on a fresh powerfs: mounted at `dir/mnt`, the store's parent `relay/`
/// created and made durable there as an operator's directory would be, the store itself
/// (`relay/data`) left to the relay.
pub struct StoreMount {
    pub fs: PowerFs,
    pub mounted: Mounted,
    pub mountpoint: PathBuf,
    pub store: PathBuf,
}

impl StoreMount {
    pub fn new(dir: &Path, model: Metadata) -> Self {
        let mountpoint = dir.join("mnt");
        std::fs::create_dir(&mountpoint).expect("mountpoint");
        let fs = PowerFs::from_image(Image::empty(), model);
        let mounted = fs.mount(&mountpoint).expect("mount powerfs");
        std::fs::create_dir(mountpoint.join("relay")).expect("store parent");
        std::fs::File::open(&mountpoint)
            .and_then(|root| root.sync_all())
            .expect("fsync the mount root");
        let store = mountpoint.join("relay").join("data");
        Self {
            fs,
            mounted,
            mountpoint,
            store,
        }
    }
}

/// A mounted PowerFs; unmounts (lazily, so a process still holding files cannot block it) when
/// dropped, also when a test panics.
pub struct Mounted {
    session: Option<fuser::BackgroundSession>,
    pub path: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
        if let Some(session) = self.session.take() {
            drop(session);
        }
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

impl State {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let node = self.nodes.get(&ino)?;
        let (kind, size, perm, nlink) = match node {
            Node::File(f) => (FileType::RegularFile, f.current.len() as u64, 0o644, 1),
            Node::Dir { .. } => (FileType::Directory, 0, 0o755, 2),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: now(),
            mtime: now(),
            ctime: now(),
            crtime: now(),
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            flags: 0,
            blksize: BLOCK as u32,
        })
    }

    fn entries(&mut self, ino: u64) -> Option<&mut BTreeMap<OsString, u64>> {
        match self.nodes.get_mut(&ino)? {
            Node::Dir { current, .. } => Some(current),
            Node::File(_) => None,
        }
    }

    fn lookup(&mut self, parent: u64, name: &OsStr) -> Option<u64> {
        self.entries(parent)?.get(name).copied()
    }

    /// Ext4-like: any fsync commits the whole namespace.
    fn commit_namespace(&mut self) {
        for node in self.nodes.values_mut() {
            if let Node::Dir { current, durable } = node {
                *durable = current.clone();
            }
        }
    }

    fn add(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<u64, Errno> {
        if self.lookup(parent, name).is_some() {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        self.entries(parent)
            .ok_or(Errno::ENOTDIR)?
            .insert(name.to_owned(), ino);
        Ok(ino)
    }
}

fn new_file() -> Node {
    Node::File(File {
        current: Vec::new(),
        durable: Vec::new(),
        dirty: BTreeSet::new(),
    })
}

/// Marks the blocks covering `[from, to)` dirty.
fn mark(f: &mut File, from: usize, to: usize) {
    if to <= from {
        f.dirty.insert(from / BLOCK);
        return;
    }
    for block in from / BLOCK..=(to - 1) / BLOCK {
        f.dirty.insert(block);
    }
}

impl PowerFs {
    /// Runs `op` on the state unless the power is cut.
    fn with<T>(&self, op: impl FnOnce(&mut State) -> Result<T, Errno>) -> Result<T, Errno> {
        let mut state = self.state.lock().expect("lock");
        if state.cut {
            return Err(Errno::EIO);
        }
        op(&mut state)
    }
}

fn entry(reply: ReplyEntry, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for PowerFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        entry(
            reply,
            self.with(|s| {
                let ino = s.lookup(parent.0, name).ok_or(Errno::ENOENT)?;
                s.attr(ino).ok_or(Errno::ENOENT)
            }),
        );
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.with(|s| s.attr(ino.0).ok_or(Errno::ENOENT)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = self.with(|s| {
            if let Some(size) = size {
                let Some(Node::File(f)) = s.nodes.get_mut(&ino.0) else {
                    return Err(Errno::EISDIR);
                };
                let size = usize::try_from(size).map_err(|_| Errno::EFBIG)?;
                let old = f.current.len();
                f.current.resize(size, 0);
                mark(f, old.min(size), old.max(size));
            }
            s.attr(ino.0).ok_or(Errno::ENOENT)
        });
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        entry(
            reply,
            self.with(|s| {
                let ino = s.add(parent.0, name, new_file())?;
                s.attr(ino).ok_or(Errno::EIO)
            }),
        );
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        entry(
            reply,
            self.with(|s| {
                let dir = Node::Dir {
                    current: BTreeMap::new(),
                    durable: BTreeMap::new(),
                };
                let ino = s.add(parent.0, name, dir)?;
                s.attr(ino).ok_or(Errno::EIO)
            }),
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            self.with(|s| {
                let entries = s.entries(parent.0).ok_or(Errno::ENOTDIR)?;
                entries.remove(name).map(|_| ()).ok_or(Errno::ENOENT)
            }),
        );
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(
            reply,
            self.with(|s| {
                let ino = s.lookup(parent.0, name).ok_or(Errno::ENOENT)?;
                if s.entries(ino).is_some_and(|e| !e.is_empty()) {
                    return Err(Errno::ENOTEMPTY);
                }
                s.entries(parent.0).ok_or(Errno::ENOTDIR)?.remove(name);
                Ok(())
            }),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            self.with(|s| {
                let ino = s
                    .entries(parent.0)
                    .ok_or(Errno::ENOTDIR)?
                    .remove(name)
                    .ok_or(Errno::ENOENT)?;
                s.entries(newparent.0)
                    .ok_or(Errno::ENOTDIR)?
                    .insert(newname.to_owned(), ino);
                Ok(())
            }),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|s| s.attr(ino.0).map(|_| ()).ok_or(Errno::ENOENT)) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let result = self.with(|s| {
            let ino = match s.lookup(parent.0, name) {
                Some(ino) => ino,
                None => s.add(parent.0, name, new_file())?,
            };
            s.attr(ino).ok_or(Errno::EIO)
        });
        match result {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let result = self.with(|s| {
            let Some(Node::File(f)) = s.nodes.get(&ino.0) else {
                return Err(Errno::EISDIR);
            };
            let start = usize::try_from(offset)
                .map_err(|_| Errno::EINVAL)?
                .min(f.current.len());
            let end = (start + size as usize).min(f.current.len());
            Ok(f.current[start..end].to_vec())
        });
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let result = self.with(|s| {
            let Some(Node::File(f)) = s.nodes.get_mut(&ino.0) else {
                return Err(Errno::EISDIR);
            };
            let start = usize::try_from(offset).map_err(|_| Errno::EFBIG)?;
            let end = start + data.len();
            let reused = start + REUSE_DISTANCE < f.durable.len();
            if f.current.len() < end {
                f.current.resize(end, 0);
            }
            f.current[start..end].copy_from_slice(data);
            mark(f, start, end);
            if reused {
                s.reuse_writes += 1;
            }
            Ok(data.len() as u32)
        });
        match result {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() makes nothing durable.
        empty(reply, self.with(|_| Ok(())));
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            self.with(|s| {
                if let Some(Node::File(f)) = s.nodes.get_mut(&ino.0) {
                    let len = f.current.len();
                    f.durable.resize(len, 0);
                    for block in std::mem::take(&mut f.dirty) {
                        let start = block * BLOCK;
                        if start < len {
                            let end = (start + BLOCK).min(len);
                            f.durable[start..end].copy_from_slice(&f.current[start..end]);
                        }
                    }
                }
                if s.model == Metadata::Ext4Like {
                    s.commit_namespace();
                }
                Ok(())
            }),
        );
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|s| s.entries(ino.0).map(|_| ()).ok_or(Errno::ENOTDIR)) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let result = self.with(|s| {
            let entries: Vec<(OsString, u64)> = s
                .entries(ino.0)
                .ok_or(Errno::ENOTDIR)?
                .iter()
                .map(|(n, i)| (n.clone(), *i))
                .collect();
            let mut listed = vec![
                (OsString::from("."), ino.0, FileType::Directory),
                (OsString::from(".."), 1, FileType::Directory),
            ];
            for (name, child) in entries {
                let kind = match s.nodes.get(&child) {
                    Some(Node::Dir { .. }) => FileType::Directory,
                    _ => FileType::RegularFile,
                };
                listed.push((name, child, kind));
            }
            Ok(listed)
        });
        match result {
            Ok(listed) => {
                for (i, (name, child, kind)) in listed.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            self.with(|s| {
                if s.model == Metadata::Ext4Like {
                    s.commit_namespace();
                } else if let Some(Node::Dir { current, durable }) = s.nodes.get_mut(&ino.0) {
                    *durable = current.clone();
                }
                Ok(())
            }),
        );
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.with(|_| Ok(())) {
            // Plenty of room: 1 GiB in 4 KiB blocks, all free.
            Ok(()) => reply.statfs(
                1 << 18,
                1 << 18,
                1 << 18,
                1 << 20,
                1 << 20,
                BLOCK as u32,
                255,
                BLOCK as u32,
            ),
            Err(e) => reply.error(e),
        }
    }
}
