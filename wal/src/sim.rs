//! A seeded simulated device and a minimal single-threaded executor, for tests.
//!
//! [`SimDevice`] holds writes in flight until the test completes them, in an order the seed
//! picks; [`SimDevice::crash`] then decides, for each write still in flight, whether none,
//! all or a random subset of its 512-byte sectors reached the media, and hands back a device
//! holding only what survived. A countdown makes a chosen write fail. One `u64` seed picks
//! everything, so a failing case replays exactly.
//!
//! It only injects the faults the design claims to survive: writes in flight lost or torn
//! at sector granularity, completion in any order, and failed writes (see `DESIGN.md`,
//! "Assumptions about the media").

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use crate::device::{not_found, read_from, write_into};
use crate::{BlockDevice, FileId};

/// The unit a crash may tear a write at.
pub const SECTOR_BYTES: usize = 512;

/// A small, fast, seeded generator (splitmix64), so the crate needs no `rand`.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

#[derive(Debug)]
struct InFlightWrite {
    token: u64,
    file: FileId,
    offset: u64,
    data: Vec<u8>,
}

#[derive(Debug)]
struct SimState {
    rng: SimRng,
    files: BTreeMap<FileId, Vec<u8>>,
    in_flight: Vec<InFlightWrite>,
    finished: BTreeMap<u64, io::Result<()>>,
    wakers: BTreeMap<u64, Waker>,
    next_token: u64,
    /// Writes left before the next one fails.
    fail_countdown: Option<u64>,
    crashed: bool,
    writes_started: u64,
}

/// The seeded simulated device (see the module doc). Clones share state.
#[derive(Clone, Debug)]
pub struct SimDevice {
    state: Rc<RefCell<SimState>>,
}

impl SimDevice {
    /// An empty device whose faults `seed` picks.
    pub fn new(seed: u64) -> SimDevice {
        SimDevice::with_files(seed, BTreeMap::new())
    }

    fn with_files(seed: u64, files: BTreeMap<FileId, Vec<u8>>) -> SimDevice {
        SimDevice {
            state: Rc::new(RefCell::new(SimState {
                rng: SimRng::new(seed),
                files,
                in_flight: Vec::new(),
                finished: BTreeMap::new(),
                wakers: BTreeMap::new(),
                next_token: 0,
                fail_countdown: None,
                crashed: false,
                writes_started: 0,
            })),
        }
    }

    /// Makes the write after `writes` more succeed fail (and leave a random subset of its
    /// sectors written).
    pub fn fail_after(&self, writes: u64) {
        self.state.borrow_mut().fail_countdown = Some(writes);
    }

    /// Writes in flight now.
    pub fn in_flight(&self) -> usize {
        self.state.borrow().in_flight.len()
    }

    /// Writes started since the device was made.
    pub fn writes_started(&self) -> u64 {
        self.state.borrow().writes_started
    }

    /// Completes one write in flight, chosen by the seed, making it durable. False if none.
    pub fn complete_one(&self) -> bool {
        let mut s = self.state.borrow_mut();
        if s.in_flight.is_empty() {
            return false;
        }
        let n = s.in_flight.len() as u64;
        let pick = s.rng.below(n) as usize;
        let w = s.in_flight.swap_remove(pick);
        let result = write_into(&mut s.files, w.file, w.offset, &w.data);
        s.finished.insert(w.token, result);
        if let Some(waker) = s.wakers.remove(&w.token) {
            waker.wake();
        }
        true
    }

    /// The machine loses power: each write in flight reaches the media not at all, fully, or
    /// sector by sector at random. Returns a fresh device over what survived; this one fails
    /// every later operation.
    pub fn crash(&self) -> SimDevice {
        let mut s = self.state.borrow_mut();
        let pending = std::mem::take(&mut s.in_flight);
        for w in pending {
            tear_into(&mut s, &w);
        }
        s.crashed = true;
        for (_, waker) in std::mem::take(&mut s.wakers) {
            waker.wake();
        }
        let seed = s.rng.next_u64();
        SimDevice::with_files(seed, s.files.clone())
    }

    /// A copy of every file as it is on the media now.
    pub fn files(&self) -> BTreeMap<FileId, Vec<u8>> {
        self.state.borrow().files.clone()
    }

    /// Replaces every file (for tests that damage the media).
    pub fn set_files(&self, files: BTreeMap<FileId, Vec<u8>>) {
        self.state.borrow_mut().files = files;
    }

    fn check_alive(&self) -> io::Result<()> {
        if self.state.borrow().crashed {
            Err(io::Error::other("sim: crashed"))
        } else {
            Ok(())
        }
    }
}

fn tear_into(s: &mut SimState, w: &InFlightWrite) {
    match s.rng.below(3) {
        0 => {}
        1 => {
            let _ = write_into(&mut s.files, w.file, w.offset, &w.data);
        }
        _ => {
            for (i, sector) in w.data.chunks(SECTOR_BYTES).enumerate() {
                if s.rng.below(2) == 0 {
                    let at = w.offset + (i * SECTOR_BYTES) as u64;
                    let _ = write_into(&mut s.files, w.file, at, sector);
                }
            }
        }
    }
}

struct SimWrite {
    state: Rc<RefCell<SimState>>,
    token: u64,
}

impl Future for SimWrite {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut s = self.state.borrow_mut();
        if let Some(result) = s.finished.remove(&self.token) {
            return Poll::Ready(result);
        }
        if s.crashed {
            return Poll::Ready(Err(io::Error::other("sim: crashed")));
        }
        s.wakers.insert(self.token, cx.waker().clone());
        Poll::Pending
    }
}

impl BlockDevice for SimDevice {
    async fn list(&self) -> io::Result<Vec<(FileId, u64)>> {
        self.check_alive()?;
        Ok(self
            .state
            .borrow()
            .files
            .iter()
            .map(|(id, f)| (*id, f.len() as u64))
            .collect())
    }

    async fn allocate(&self, file: FileId, bytes: u64) -> io::Result<()> {
        self.check_alive()?;
        self.state
            .borrow_mut()
            .files
            .insert(file, vec![0; bytes as usize]);
        Ok(())
    }

    async fn write_at(&self, file: FileId, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check_alive()?;
        let token = {
            let mut s = self.state.borrow_mut();
            if !s.files.contains_key(&file) {
                return Err(not_found(file));
            }
            s.writes_started += 1;
            let token = s.next_token;
            s.next_token += 1;
            let write = InFlightWrite {
                token,
                file,
                offset,
                data: data.to_vec(),
            };
            match s.fail_countdown {
                Some(0) => {
                    s.fail_countdown = None;
                    tear_into(&mut s, &write);
                    return Err(io::Error::other("sim: injected write failure"));
                }
                Some(n) => s.fail_countdown = Some(n - 1),
                None => {}
            }
            s.in_flight.push(write);
            token
        };
        SimWrite {
            state: self.state.clone(),
            token,
        }
        .await
    }

    async fn read_at(&self, file: FileId, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.check_alive()?;
        read_from(&self.state.borrow().files, file, offset, len)
    }

    async fn remove(&self, file: FileId) -> io::Result<()> {
        self.check_alive()?;
        self.state.borrow_mut().files.remove(&file);
        Ok(())
    }
}

type Task = Pin<Box<dyn Future<Output = ()>>>;

struct TaskWaker {
    id: usize,
    ready: Arc<Mutex<VecDeque<usize>>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.lock().expect("not poisoned").push_back(self.id);
    }
}

/// A single-threaded executor that polls a task only when its waker was called, so that a
/// lost wake-up shows as a task that never finishes (as it would on glommio).
#[derive(Default)]
pub struct LocalExecutor {
    tasks: RefCell<Vec<Option<Task>>>,
    incoming: RefCell<Vec<Task>>,
    ready: Arc<Mutex<VecDeque<usize>>>,
}

impl LocalExecutor {
    /// An executor with no tasks.
    pub fn new() -> LocalExecutor {
        LocalExecutor::default()
    }

    /// Adds a task; it first runs at the next [`LocalExecutor::run_until_stalled`].
    pub fn spawn(&self, task: impl Future<Output = ()> + 'static) {
        self.incoming.borrow_mut().push(Box::pin(task));
    }

    /// Runs tasks, first in first out, until none is ready. Returns the tasks left.
    pub fn run_until_stalled(&self) -> usize {
        loop {
            for task in self.incoming.borrow_mut().drain(..) {
                let mut tasks = self.tasks.borrow_mut();
                tasks.push(Some(task));
                self.ready
                    .lock()
                    .expect("not poisoned")
                    .push_back(tasks.len() - 1);
            }
            let next = self.ready.lock().expect("not poisoned").pop_front();
            let Some(id) = next else {
                if self.incoming.borrow().is_empty() {
                    break;
                }
                continue;
            };
            let Some(mut task) = self.tasks.borrow_mut()[id].take() else {
                continue; // finished, or a duplicate wake
            };
            let waker = Waker::from(Arc::new(TaskWaker {
                id,
                ready: self.ready.clone(),
            }));
            if task
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
            {
                self.tasks.borrow_mut()[id] = Some(task);
            }
        }
        self.tasks.borrow().iter().filter(|t| t.is_some()).count()
    }

    /// Drops every task (as a crash does).
    pub fn clear(&self) {
        self.tasks.borrow_mut().clear();
        self.incoming.borrow_mut().clear();
        self.ready.lock().expect("not poisoned").clear();
    }
}

/// Runs `future` to completion on a fresh executor, driving `device`'s writes to completion
/// whenever the executor stalls. Panics if it can never finish.
pub fn block_on<T: 'static>(
    device: Option<&SimDevice>,
    future: impl Future<Output = T> + 'static,
) -> T {
    let exec = LocalExecutor::new();
    let out = Rc::new(RefCell::new(None));
    let slot = out.clone();
    exec.spawn(async move {
        *slot.borrow_mut() = Some(future.await);
    });
    loop {
        exec.run_until_stalled();
        if let Some(v) = out.borrow_mut().take() {
            return v;
        }
        if !device.is_some_and(|d| d.complete_one()) {
            panic!("block_on: the future stalled with no I/O in flight (a lost wake-up?)");
        }
    }
}

/// Builds segment files from arbitrary bytes, for the fuzz target and its stable proptest
/// twin: some files are raw bytes, most carry a valid segment header followed by a mix of
/// well-formed batches (with fields taken from the input), raw bytes and gaps, so that the
/// fuzzer reaches the batch and record decoders and the corruption checks, not only the
/// header check.
pub fn files_from_fuzz_input(data: &[u8]) -> Vec<(FileId, Vec<u8>)> {
    use crate::format::{
        batch_bytes, encode_batch_header, encode_record, encode_segment_header, records_crc,
        BatchHeader, RecordView, SegmentHeader,
    };
    use crate::limits::{BATCH_HEADER_BYTES, BLOCK_BYTES, SEGMENT_BYTES_MIN};

    const SALT: u64 = 0x5a17_5a17;
    let mut input = data.iter().copied();
    let mut next = move || input.next();
    let mut files = Vec::new();
    let mut lsn = 1u64;
    while let Some(control) = next() {
        let id = files.len() as FileId;
        if files.len() >= 6 {
            break;
        }
        if control % 4 == 0 {
            let len = u16::from_le_bytes([next().unwrap_or(0), next().unwrap_or(0)]) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| next().unwrap_or(0)).collect();
            files.push((id, bytes));
            continue;
        }
        let size = SEGMENT_BYTES_MIN as usize;
        let mut seg = vec![0u8; size];
        lsn = lsn.saturating_add(next().unwrap_or(0) as u64 % 3); // sometimes a gap
        encode_segment_header(
            &mut seg,
            &SegmentHeader {
                number: control as u64 / 4 + 1,
                first_lsn: lsn.max(1),
                segment_bytes: size as u64,
                salt: SALT,
            },
        );
        let mut offset = BLOCK_BYTES;
        while offset < size {
            let Some(op) = next() else { break };
            match op % 4 {
                0 | 1 => {
                    let count = 1 + op as u64 / 4 % 4;
                    let mut buf = vec![0u8; BATCH_HEADER_BYTES];
                    let first = lsn;
                    for k in 0..count {
                        let len = next().unwrap_or(0) as usize * (1 + op as usize % 7);
                        let payload: Vec<u8> = (0..len).map(|i| (i as u8) ^ op).collect();
                        encode_record(
                            &mut buf,
                            &RecordView {
                                lsn: first + k,
                                stream: next().unwrap_or(0) as u64 % 4,
                                index: k + next().unwrap_or(0) as u64,
                                kind: 0,
                                payload: &payload,
                            },
                        );
                    }
                    let records_bytes = buf.len() - BATCH_HEADER_BYTES;
                    let on_disk = batch_bytes(records_bytes);
                    if offset + on_disk > size {
                        break;
                    }
                    buf.resize(on_disk, 0);
                    let durable_back = next().unwrap_or(0) as u64 % 8;
                    let crc =
                        records_crc(&buf[BATCH_HEADER_BYTES..BATCH_HEADER_BYTES + records_bytes]);
                    encode_batch_header(
                        &mut buf,
                        &BatchHeader {
                            salt: SALT,
                            first_lsn: first,
                            durable_lsn: if op % 4 == 1 {
                                first // claims everything before it was durable
                            } else {
                                first.saturating_sub(durable_back).max(1)
                            },
                            batch_bytes: on_disk as u32,
                            record_count: count as u32,
                            records_bytes: records_bytes as u32,
                            records_crc: crc,
                        },
                    );
                    seg[offset..offset + on_disk].copy_from_slice(&buf);
                    offset += on_disk;
                    lsn = first + count;
                }
                2 => {
                    let len = (next().unwrap_or(0) as usize * 16).min(size - offset);
                    for b in &mut seg[offset..offset + len] {
                        *b = next().unwrap_or(0);
                    }
                    offset = (offset + len).next_multiple_of(BLOCK_BYTES);
                }
                _ => offset += BLOCK_BYTES,
            }
        }
        files.push((id, seg));
    }
    files
}
