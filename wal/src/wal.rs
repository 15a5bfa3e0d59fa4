//! The async log: drives the [`Batcher`] through a [`BlockDevice`].

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::batcher::{Action, AppendRefused, Batcher, BatcherStats, IoId};
use crate::cache::TailCache;
use crate::limits::BLOCK_BYTES;
use crate::recovery::{scan_batches, Recovery};
use crate::{BlockDevice, Config, FileId, Lsn, WalError};

/// One record read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its position in the log.
    pub lsn: Lsn,
    /// Its stream.
    pub stream: u64,
    /// Its index within the stream.
    pub index: u64,
    /// The host's tag.
    pub kind: u8,
    /// The payload.
    pub payload: Rc<[u8]>,
}

/// What one stream holds after recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamReport {
    /// The lowest index recovered.
    pub first_index: u64,
    /// The index of the stream's last record (a rewrite of an index drops those above it).
    pub last_index: u64,
    /// The LSN of that last record.
    pub last_lsn: Lsn,
}

/// What [`Wal::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Per stream, what it holds.
    pub streams: BTreeMap<u64, StreamReport>,
    /// Records recovered.
    pub records: u64,
    /// The LSN the next append gets.
    pub next_lsn: Lsn,
    /// Where recovery cut the log, if the chain of segments was broken by a crash.
    pub cut_at: Option<(u64, u64)>,
    /// Files whose headers were zeroed because they lay beyond the cut.
    pub leftovers_retired: usize,
}

struct Inner {
    batcher: Batcher,
    cache: TailCache,
    /// Appends waiting for their LSN to become durable, by LSN.
    durable_waiters: BTreeMap<Lsn, Vec<Waker>>,
    /// Appends waiting for a batch slot.
    room_waiters: Vec<Waker>,
    flusher: Option<Waker>,
    closing: bool,
}

impl Inner {
    fn wake_flusher(&mut self) {
        if let Some(w) = self.flusher.take() {
            w.wake();
        }
    }

    fn wake_durable(&mut self) {
        let durable = self.batcher.durable_lsn();
        let failed = self.batcher.failed().is_some();
        while let Some(entry) = self.durable_waiters.first_entry() {
            if *entry.key() >= durable && !failed {
                break;
            }
            entry.remove().into_iter().for_each(Waker::wake);
        }
        if failed {
            self.room_waiters.drain(..).for_each(Waker::wake);
        }
    }
}

/// The per-core write-ahead log.
///
/// ```no_run
/// # async fn demo(device: wal::MemDevice) -> Result<(), wal::WalError> {
/// use std::rc::Rc;
/// let (log, _report) = wal::Wal::open(device, wal::Config::default()).await?;
/// let log = Rc::new(log);
/// // The host spawns the flusher next to its other tasks on the same core:
/// let flusher = { let log = log.clone(); async move { log.run().await } };
/// # drop(flusher);
/// let lsn = log.append(7, 1, 0, b"entry").await?; // durable when this returns
/// log.release(7, 2); // stream 7's tree has checkpointed everything below index 2
/// # let _ = lsn; Ok(()) }
/// ```
///
/// All methods take `&self`: one `Rc<Wal>` is shared by every task on the core. Nothing is
/// written unless [`Wal::run`] is being polled.
pub struct Wal<D: BlockDevice> {
    device: D,
    config: Config,
    inner: RefCell<Inner>,
}

impl<D: BlockDevice> Wal<D> {
    /// Recovers the log on `device` (creating it when the device is empty), retires what a
    /// crash left beyond the cut, and allocates spare segments. One segment is in memory at
    /// a time.
    pub async fn open(device: D, config: Config) -> Result<(Wal<D>, RecoveryReport), WalError> {
        use std::hash::BuildHasher;
        // Fresh randomness for the segment salts, without a `rand` dependency: std seeds
        // every `RandomState` from the OS.
        let seed =
            std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
        Wal::open_seeded(device, config, seed).await
    }

    /// [`Wal::open`] with the seed of the segment salts given, so that a simulation replays
    /// exactly. Never reuse a seed on one device outside tests.
    pub async fn open_seeded(
        device: D,
        config: Config,
        salt_seed: u64,
    ) -> Result<(Wal<D>, RecoveryReport), WalError> {
        config.validate()?;
        let io = |op: &'static str| {
            move |e: std::io::Error| WalError::Io {
                op,
                reason: e.to_string(),
            }
        };
        let listed = device.list().await.map_err(io("list"))?;
        let mut heads = Vec::new();
        for &(file, len) in &listed {
            let block = if len >= BLOCK_BYTES as u64 {
                device
                    .read_at(file, 0, BLOCK_BYTES)
                    .await
                    .map_err(io("read header"))?
            } else {
                Vec::new()
            };
            heads.push((file, len, block));
        }
        let views: Vec<(FileId, u64, &[u8])> = heads
            .iter()
            .map(|(f, l, b)| (*f, *l, b.as_slice()))
            .collect();
        let mut recovery = Recovery::new(&views)?;
        let mut cache = TailCache::new(config.tail_cache_bytes);
        let mut report = RecoveryReport::default();
        while let Some(file) = recovery.next_file() {
            let len = listed
                .iter()
                .find(|(f, _)| *f == file)
                .map_or(0, |(_, l)| *l);
            let bytes = device
                .read_at(file, 0, len as usize)
                .await
                .map_err(io("read segment"))?;
            recovery.feed(&bytes, &mut |rec| {
                cache.insert(rec.lsn, rec.stream, rec.index, rec.kind, rec.payload);
                report.records += 1;
                let s = report.streams.entry(rec.stream).or_insert(StreamReport {
                    first_index: rec.index,
                    last_index: rec.index,
                    last_lsn: rec.lsn,
                });
                s.first_index = s.first_index.min(rec.index);
                s.last_index = rec.index;
                s.last_lsn = rec.lsn;
            })?;
        }
        let mut recovered = recovery.finish();
        // Spares of another size (the config changed) cannot become segments of this one.
        let size_of = |file: FileId| listed.iter().find(|(f, _)| *f == file).map(|(_, l)| *l);
        let (fit, other): (Vec<FileId>, Vec<FileId>) = recovered
            .spares
            .iter()
            .partition(|&&f| size_of(f) == Some(config.segment_bytes));
        recovered.spares = fit;
        recovered.misfits.extend(other);
        for &file in &recovered.misfits {
            device.remove(file).await.map_err(io("remove misfit"))?;
        }
        for &file in &recovered.leftovers {
            // Zero the header durably before anything new is written, so that no later
            // recovery can mistake this file for part of the log.
            device
                .write_at(file, 0, &[0; BLOCK_BYTES])
                .await
                .map_err(io("retire leftover"))?;
        }
        report.leftovers_retired = recovered.leftovers.len();
        for file in std::mem::take(&mut recovered.leftovers) {
            if size_of(file) == Some(config.segment_bytes) {
                recovered.spares.push(file);
            } else {
                device.remove(file).await.map_err(io("remove leftover"))?;
            }
        }
        recovered.misfits.clear();
        report.next_lsn = recovered.next_lsn;
        report.cut_at = recovered.cut_at;
        let next_file = listed.iter().map(|(f, _)| f + 1).max().unwrap_or(1);
        let mut batcher = Batcher::new(config.clone(), &recovered, next_file, salt_seed);
        // Allocate the spares now, so that the first appends never wait for a 64 MiB write
        // (and retire a head segment that holds no records, if recovery left one).
        while let Some(action) = batcher.preallocate() {
            let (id, result) = perform(&device, action).await;
            batcher.complete(id, result);
            if let Some(e) = batcher.failed() {
                return Err(e.clone());
            }
        }
        let wal = Wal {
            device,
            config,
            inner: RefCell::new(Inner {
                batcher,
                cache,
                durable_waiters: BTreeMap::new(),
                room_waiters: Vec::new(),
                flusher: None,
                closing: false,
            }),
        };
        wal.check_invariants();
        Ok((wal, report))
    }

    /// Appends a record and returns its LSN once it is durable (and every record before it).
    ///
    /// Fails with [`WalError::RecordTooLarge`] for a payload over the configured maximum,
    /// and with [`WalError::Failed`] once any write has failed. Appending index `i` to a
    /// stream that already holds `i` or more replaces them (a raft log conflict): reads and
    /// recovery drop every index from `i` up that came before it.
    pub async fn append(
        &self,
        stream: u64,
        index: u64,
        kind: u8,
        payload: &[u8],
    ) -> Result<Lsn, WalError> {
        let lsn = self.enqueue(stream, index, kind, payload).await?;
        self.wait_durable(lsn).await?;
        Ok(lsn)
    }

    /// Appends a record without waiting for it to be durable: returns its LSN as soon as the
    /// record has joined a batch (waiting only when every batch slot is taken). Pair with
    /// [`Wal::wait_durable`] to persist many records and wait once.
    pub async fn enqueue(
        &self,
        stream: u64,
        index: u64,
        kind: u8,
        payload: &[u8],
    ) -> Result<Lsn, WalError> {
        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if inner.closing {
                return Poll::Ready(Err(WalError::Closed));
            }
            match inner.batcher.append(stream, index, kind, payload) {
                Ok(lsn) => {
                    inner.cache.insert(lsn, stream, index, kind, payload);
                    inner.wake_flusher();
                    Poll::Ready(Ok(lsn))
                }
                Err(AppendRefused::Full) => {
                    inner.room_waiters.push(cx.waker().clone());
                    inner.wake_flusher();
                    Poll::Pending
                }
                Err(AppendRefused::Error(e)) => Poll::Ready(Err(e)),
            }
        })
        .await
    }

    /// Waits until `lsn` and every record before it are durable.
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<(), WalError> {
        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if let Some(e) = inner.batcher.failed() {
                return Poll::Ready(Err(e.clone()));
            }
            if inner.batcher.durable_lsn() > lsn {
                return Poll::Ready(Ok(()));
            }
            inner
                .durable_waiters
                .entry(lsn)
                .or_default()
                .push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Every LSN below this is durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.inner.borrow().batcher.durable_lsn()
    }

    /// Says that `stream` no longer needs its records below `below_index`; segments that no
    /// stream needs are recycled by [`Wal::run`]. Releases are not persisted: after a restart
    /// the host releases again from its checkpoints.
    pub fn release(&self, stream: u64, below_index: u64) {
        let mut inner = self.inner.borrow_mut();
        inner.batcher.release(stream, below_index);
        inner.wake_flusher();
    }

    /// Whether `stream` has unreleased records in a segment older than the newest (see
    /// [`Batcher::holds_back`]).
    pub fn holds_back(&self, stream: u64) -> bool {
        self.inner.borrow().batcher.holds_back(stream)
    }

    /// Counters and gauges (records, batches, bytes written, segments, which stream holds
    /// the log back).
    pub fn stats(&self) -> BatcherStats {
        self.inner.borrow().batcher.stats()
    }

    /// Reads `stream`'s records with indexes in `from..to`, in index order: recent ones from
    /// the tail cache, older ones from the segments on disk. Records appended but not yet
    /// durable are included. Fails with [`WalError::Missing`] if an index in the range is
    /// not in the log (released and recycled, or never appended).
    pub async fn read(&self, stream: u64, from: u64, to: u64) -> Result<Vec<Record>, WalError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let (cached_from, segments) = {
            let inner = self.inner.borrow();
            let cached_from = inner.cache.first_index(stream).unwrap_or(u64::MAX);
            let segments = if cached_from > from {
                inner.batcher.segments_for(stream, from)
            } else {
                Vec::new()
            };
            (cached_from, segments)
        };
        let mut out: BTreeMap<u64, Record> = BTreeMap::new();
        let disk_to = to.min(cached_from);
        for (file, salt, first_lsn, written) in segments {
            let bytes = self
                .device
                .read_at(file, 0, written as usize)
                .await
                .map_err(|e| WalError::Io {
                    op: "read",
                    reason: e.to_string(),
                })?;
            scan_batches(&bytes, salt, BLOCK_BYTES, first_lsn, &mut |rec| {
                if rec.stream != stream {
                    return;
                }
                // A record at index i replaces every earlier record at i or above.
                out.split_off(&rec.index);
                if (from..disk_to).contains(&rec.index) {
                    out.insert(
                        rec.index,
                        Record {
                            lsn: rec.lsn,
                            stream,
                            index: rec.index,
                            kind: rec.kind,
                            payload: rec.payload.into(),
                        },
                    );
                }
            });
        }
        {
            let inner = self.inner.borrow();
            for (index, c) in inner
                .cache
                .range(stream, from.max(disk_to.min(cached_from)), to)
            {
                out.split_off(&index);
                out.insert(
                    index,
                    Record {
                        lsn: c.lsn,
                        stream,
                        index,
                        kind: c.kind,
                        payload: c.payload,
                    },
                );
            }
        }
        let records: Vec<Record> = out.into_values().collect();
        let mut expect = from;
        for r in &records {
            if r.index != expect {
                return Err(WalError::Missing {
                    stream,
                    index: expect,
                });
            }
            expect += 1;
        }
        if expect < to {
            return Err(WalError::Missing {
                stream,
                index: expect,
            });
        }
        Ok(records)
    }

    /// Stops accepting appends; [`Wal::run`] returns once everything appended is durable.
    pub fn close(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.closing = true;
        inner.wake_flusher();
        inner.room_waiters.drain(..).for_each(Waker::wake);
    }

    /// Asserts the batcher's and the cache's invariants.
    pub fn check_invariants(&self) {
        let inner = self.inner.borrow();
        inner.batcher.check_invariants();
        inner.cache.check_invariants();
        if let Some((&lsn, _)) = inner.durable_waiters.iter().next() {
            assert!(lsn >= inner.batcher.durable_lsn() || inner.batcher.failed().is_some());
        }
    }

    /// The flusher: submits batches, allocates, retires and removes segment files, and
    /// resolves appends as their writes complete. The host spawns it once, on the same core,
    /// and keeps it running; it returns after [`Wal::close`] once everything is durable, or
    /// with the error that failed the log. Dropping it before then fails the log: waiting
    /// appenders get [`WalError::Failed`] instead of waiting for ever.
    pub async fn run(&self) -> Result<(), WalError> {
        type Io<'a> = Pin<Box<dyn Future<Output = (IoId, Result<(), String>)> + 'a>>;
        let mut ios: Vec<Io<'_>> = Vec::new();
        let device = &self.device;
        let mut gone = FlusherGone {
            wal: self,
            armed: true,
        };
        let result = poll_fn(|cx| loop {
            let mut progressed = false;
            let mut i = 0;
            while i < ios.len() {
                if let Poll::Ready((id, result)) = ios[i].as_mut().poll(cx) {
                    drop(ios.swap_remove(i));
                    let mut inner = self.inner.borrow_mut();
                    inner.batcher.complete(id, result);
                    inner.wake_durable();
                    progressed = true;
                } else {
                    i += 1;
                }
            }
            let mut inner = self.inner.borrow_mut();
            let mut submitted = false;
            while let Some(action) = inner.batcher.poll_action() {
                submitted |= matches!(action, Action::Write { .. });
                ios.push(Box::pin(perform(device, action)));
                progressed = true;
            }
            if submitted {
                inner.room_waiters.drain(..).for_each(Waker::wake);
            }
            if ios.is_empty() {
                if let Some(e) = inner.batcher.failed() {
                    return Poll::Ready(Err(e.clone()));
                }
                if inner.closing && !inner.batcher.has_unsubmitted() {
                    return Poll::Ready(Ok(()));
                }
            }
            if !progressed {
                inner.flusher = Some(cx.waker().clone());
                return Poll::Pending;
            }
        })
        .await;
        gone.armed = false;
        result
    }

    /// The configuration the log was opened with.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// Fails the log when [`Wal::run`] is dropped before it finished: without a flusher no
/// write completes, so every waiting appender would otherwise hang for ever. (Found in
/// review: a host that drops the flusher's task on shutdown left appenders pending.)
struct FlusherGone<'a, D: BlockDevice> {
    wal: &'a Wal<D>,
    armed: bool,
}

impl<D: BlockDevice> Drop for FlusherGone<'_, D> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // A drop while the flusher itself holds the borrow cannot happen (it holds it only
        // inside a poll); try_borrow_mut keeps a drop during a panic from panicking again.
        if let Ok(mut inner) = self.wal.inner.try_borrow_mut() {
            inner
                .batcher
                .fail("the flusher (Wal::run) was dropped before it finished".into());
            inner.wake_durable();
        }
    }
}

/// Does one I/O the batcher asked for and returns its outcome, for [`Batcher::complete`].
async fn perform<D: BlockDevice>(device: &D, action: Action) -> (IoId, Result<(), String>) {
    let (id, result) = match action {
        Action::Write {
            id,
            file,
            offset,
            bytes,
        } => (id, device.write_at(file, offset, &bytes).await),
        Action::Allocate { id, file, bytes } => (id, device.allocate(file, bytes).await),
        Action::Retire { id, file } => (id, device.write_at(file, 0, &[0; BLOCK_BYTES]).await),
        Action::Remove { id, file } => (id, device.remove(file).await),
    };
    (id, result.map_err(|e| e.to_string()))
}
