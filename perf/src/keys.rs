//! Which record a request names: YCSB's key choosers (uniform, scrambled zipfian, latest),
//! the record numbers a core inserts, and the bytes of a record's key.
//!
//! Records are numbered. The `load` command writes records `0..record_count`; during a run,
//! the core with index `c` of `n` inserts records `record_count + c + n * j` for
//! `j = 0, 1, 2, ...`, so that cores never insert the same record and need not talk to each
//! other. A core reads only records it knows to exist: the loaded ones and its own inserts
//! once they, and every insert of this core before them, have been acknowledged (YCSB's
//! acknowledged counter), so that a read never races its record's insert.
//!
//! The zipfian generator is YCSB's (Gray et al.'s "Quickly generating billion-record
//! synthetic databases" approximation, constant 0.99), with its incremental zeta for a
//! growing record count; the scrambled variant draws from a zipfian over ten billion items
//! and hashes the draw with FNV-1a into the record range, as YCSB's ScrambledZipfianGenerator
//! does, so that the popular records are spread over the key space instead of being the
//! first ones.

use crate::limits::{IN_FLIGHT_PER_CORE_MAX, KEY_BYTES, SORT_KEY_BYTES, ZIPFIAN_REDRAWS_MAX};
use crate::rng::Rng;

/// YCSB's zipfian constant (theta).
pub const ZIPFIAN_CONSTANT: f64 = 0.99;

/// The item count YCSB's ScrambledZipfianGenerator draws from before hashing.
pub const SCRAMBLED_ITEM_COUNT: u64 = 10_000_000_000;

/// zeta(SCRAMBLED_ITEM_COUNT, 0.99), precomputed by YCSB (summing ten billion terms at start
/// would take a minute).
pub const SCRAMBLED_ZETAN: f64 = 26.469_028_201_783_02;

/// The partition-key prefix of every record, as in YCSB.
pub const KEY_PREFIX: &[u8; 4] = b"user";

/// `sum_{i=from}^{to-1} 1 / (i + 1)^theta`, added to `initial`: zeta(to) from zeta(from).
pub fn zeta(from: u64, to: u64, theta: f64, initial: f64) -> f64 {
    let mut sum = initial;
    for i in from..to {
        sum += 1.0 / ((i + 1) as f64).powf(theta);
    }
    sum
}

/// YCSB's FNV-1a hash of a 64-bit number, byte by byte, low byte first; the absolute value of
/// the signed result, as YCSB's `Utils.fnvhash64` returns.
pub fn fnv_hash64(mut value: u64) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 1_099_511_628_211;
    let mut hash = OFFSET_BASIS;
    for _ in 0..8 {
        hash ^= value & 0xff;
        hash = hash.wrapping_mul(PRIME);
        value >>= 8;
    }
    (hash as i64).unsigned_abs()
}

/// A zipfian distribution over ranks `0..items`: rank 0 is the most popular. The item count
/// may grow between draws (`next_of`); zeta is then extended, not recomputed.
#[derive(Clone, Debug)]
pub struct Zipfian {
    theta: f64,
    alpha: f64,
    zeta2theta: f64,
    /// zeta(count_for_zeta, theta).
    zetan: f64,
    count_for_zeta: u64,
    eta: f64,
}

impl Zipfian {
    /// A zipfian over `items` ranks with exponent `theta` (0 < theta < 1). Computing zeta costs
    /// one `powf` per item: about 20 ms for a million items.
    pub fn new(items: u64, theta: f64) -> Zipfian {
        Zipfian::with_zetan(items, theta, zeta(0, items, theta, 0.0))
    }

    /// A zipfian whose zeta(items) is already known (YCSB's precomputed constant).
    pub fn with_zetan(items: u64, theta: f64, zetan: f64) -> Zipfian {
        debug_assert!(theta > 0.0 && theta < 1.0, "theta {theta} out of (0, 1)");
        let zeta2theta = zeta(0, 2, theta, 0.0);
        let mut zipfian = Zipfian {
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta2theta,
            zetan,
            count_for_zeta: items,
            eta: 0.0,
        };
        zipfian.eta = zipfian.eta_for(items);
        zipfian
    }

    fn eta_for(&self, items: u64) -> f64 {
        (1.0 - (2.0 / items as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta2theta / self.zetan)
    }

    /// The item count this generator draws from now.
    pub fn items(&self) -> u64 {
        self.count_for_zeta
    }

    /// Draws a rank in `0..items()`.
    #[inline]
    pub fn next(&mut self, rng: &mut Rng) -> u64 {
        self.next_of(self.count_for_zeta, rng)
    }

    /// Draws a rank in `0..items`, first growing (or, rarely, recomputing) zeta if `items`
    /// changed since the last draw. Returns 0 when `items` is 0 or 1.
    pub fn next_of(&mut self, items: u64, rng: &mut Rng) -> u64 {
        if items <= 1 {
            return 0;
        }
        if items != self.count_for_zeta {
            self.zetan = if items > self.count_for_zeta {
                zeta(self.count_for_zeta, items, self.theta, self.zetan)
            } else {
                zeta(0, items, self.theta, 0.0)
            };
            self.count_for_zeta = items;
            self.eta = self.eta_for(items);
        }
        let u = rng.next_f64();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let rank = (items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(items - 1)
    }
}

/// YCSB's ScrambledZipfianGenerator: zipfian popularity, popular records scattered over
/// `0..items` by FNV-1a.
#[derive(Clone, Debug)]
pub struct ScrambledZipfian {
    zipfian: Zipfian,
    items: u64,
}

impl ScrambledZipfian {
    /// Draws record numbers in `0..items` (`items` ≥ 1).
    pub fn new(items: u64) -> ScrambledZipfian {
        ScrambledZipfian {
            zipfian: Zipfian::with_zetan(SCRAMBLED_ITEM_COUNT, ZIPFIAN_CONSTANT, SCRAMBLED_ZETAN),
            items: items.max(1),
        }
    }

    /// The next record number.
    #[inline]
    pub fn next(&mut self, rng: &mut Rng) -> u64 {
        fnv_hash64(self.zipfian.next(rng)) % self.items
    }
}

/// Bits of the insert window: one per insert that may be in flight.
const INSERT_WINDOW: u64 = IN_FLIGHT_PER_CORE_MAX as u64;

/// The inserts of one core: which insert comes next, and how many form an acknowledged prefix
/// (YCSB's AcknowledgedCounterGenerator), so that readers only name records that exist.
#[derive(Clone, Debug)]
pub struct InsertTracker {
    /// Inserts handed out: the next insert gets this index.
    issued: u64,
    /// Every insert below this index has completed.
    acknowledged: u64,
    /// Completed inserts at or above `acknowledged`, bit `index % INSERT_WINDOW`.
    done: Box<[u64]>,
}

impl Default for InsertTracker {
    fn default() -> InsertTracker {
        InsertTracker {
            issued: 0,
            acknowledged: 0,
            done: vec![0u64; (INSERT_WINDOW / 64) as usize].into_boxed_slice(),
        }
    }
}

impl InsertTracker {
    /// Hands out the next insert index. At most `IN_FLIGHT_PER_CORE_MAX` inserts are ever
    /// outstanding (each takes a slot), which the window relies on.
    pub fn issue(&mut self) -> u64 {
        debug_assert!(
            self.issued - self.acknowledged < INSERT_WINDOW,
            "insert window overrun"
        );
        self.issued += 1;
        self.issued - 1
    }

    /// Marks insert `index` complete (acknowledged or failed: either way it is no longer in
    /// flight) and advances the acknowledged prefix.
    pub fn complete(&mut self, index: u64) {
        debug_assert!(
            index >= self.acknowledged && index < self.issued,
            "insert {index}"
        );
        let bit = index % INSERT_WINDOW;
        self.done[(bit / 64) as usize] |= 1 << (bit % 64);
        loop {
            let bit = self.acknowledged % INSERT_WINDOW;
            let word = &mut self.done[(bit / 64) as usize];
            if *word & (1 << (bit % 64)) == 0 {
                break;
            }
            *word &= !(1 << (bit % 64));
            self.acknowledged += 1;
        }
    }

    /// The number of inserts that, with all before them, have completed.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged
    }

    /// Inserts handed out so far.
    pub fn issued(&self) -> u64 {
        self.issued
    }
}

/// The records one core may name: the loaded ones and its own acknowledged inserts.
#[derive(Clone, Debug)]
pub struct Keyspace {
    loaded: u64,
    core_index: u64,
    core_count: u64,
    inserts: InsertTracker,
}

impl Keyspace {
    /// The key space of core `core_index` of `core_count` over `loaded` preloaded records.
    pub fn new(loaded: u64, core_index: usize, core_count: usize) -> Keyspace {
        debug_assert!(core_index < core_count.max(1));
        Keyspace {
            loaded,
            core_index: core_index as u64,
            core_count: core_count.max(1) as u64,
            inserts: InsertTracker::default(),
        }
    }

    /// Records this core may read now.
    pub fn existing(&self) -> u64 {
        self.loaded + self.inserts.acknowledged()
    }

    /// The record number of this core's insert `index`.
    pub fn insert_record(&self, index: u64) -> u64 {
        self.loaded + self.core_index + self.core_count * index
    }

    /// The record at position `position` of `0..existing()`, loaded records first.
    pub fn record_at(&self, position: u64) -> u64 {
        if position < self.loaded {
            position
        } else {
            self.insert_record(position - self.loaded)
        }
    }

    /// The `rank`-th newest record (rank 0: the newest acknowledged insert, or the last loaded
    /// record if there is none).
    pub fn record_by_recency(&self, rank: u64) -> u64 {
        let own = self.inserts.acknowledged();
        if rank < own {
            self.insert_record(own - 1 - rank)
        } else {
            self.loaded.saturating_sub(1 + (rank - own))
        }
    }

    /// Whether this core may read `record`: a loaded record, or one of its own acknowledged
    /// inserts.
    pub fn exists(&self, record: u64) -> bool {
        if record < self.loaded {
            return true;
        }
        let offset = record - self.loaded;
        offset % self.core_count == self.core_index
            && offset / self.core_count < self.inserts.acknowledged()
    }

    /// Hands out this core's next insert: its index (to pass to `complete_insert`) and record.
    pub fn issue_insert(&mut self) -> (u64, u64) {
        let index = self.inserts.issue();
        (index, self.insert_record(index))
    }

    /// Marks this core's insert `index` as no longer in flight.
    pub fn complete_insert(&mut self, index: u64) {
        self.inserts.complete(index);
    }
}

/// How a request's record is chosen (YCSB's `requestdistribution`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Distribution {
    /// Every existing record equally likely.
    Uniform,
    /// Scrambled zipfian (constant 0.99): a few records are hot, spread over the key space.
    Zipfian,
    /// Zipfian over recency: the newest records are the hottest (YCSB's SkewedLatest).
    Latest,
}

impl Distribution {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Zipfian => "zipfian",
            Distribution::Latest => "latest",
        }
    }
}

/// Chooses the record of each read, update, scan or read-modify-write.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    /// See [`Distribution::Uniform`].
    Uniform,
    /// See [`Distribution::Zipfian`]; draws over a fixed range that includes the inserts a
    /// run is expected to make, and draws again when it names one not yet made.
    Zipfian(ScrambledZipfian),
    /// See [`Distribution::Latest`].
    Latest(Zipfian),
}

impl KeyChooser {
    /// A chooser for `distribution` over `loaded` records, of which a run is expected to
    /// insert about `expected_inserts` more (YCSB sizes its scrambled zipfian the same way).
    pub fn new(distribution: Distribution, loaded: u64, expected_inserts: u64) -> KeyChooser {
        match distribution {
            Distribution::Uniform => KeyChooser::Uniform,
            Distribution::Zipfian => {
                KeyChooser::Zipfian(ScrambledZipfian::new(loaded + expected_inserts))
            }
            Distribution::Latest => {
                KeyChooser::Latest(Zipfian::new(loaded.max(2), ZIPFIAN_CONSTANT))
            }
        }
    }

    /// The record of the next request; `None` only when no record exists at all.
    pub fn choose(&mut self, keyspace: &Keyspace, rng: &mut Rng) -> Option<u64> {
        let existing = keyspace.existing();
        if existing == 0 {
            return None;
        }
        Some(match self {
            KeyChooser::Uniform => keyspace.record_at(rng.below(existing)),
            KeyChooser::Zipfian(scrambled) => {
                let mut redraws = 0;
                loop {
                    let record = scrambled.next(rng);
                    if keyspace.exists(record) {
                        break record;
                    }
                    redraws += 1;
                    if redraws >= ZIPFIAN_REDRAWS_MAX {
                        break keyspace.record_at(rng.below(existing));
                    }
                }
            }
            KeyChooser::Latest(zipfian) => {
                keyspace.record_by_recency(zipfian.next_of(existing, rng))
            }
        })
    }
}

/// How record numbers become keys. With `records_per_partition_key` = 1 a record's key is
/// the partition key `user` + 20 digits of its number; with g > 1, g consecutive records
/// share the partition key of `number / g` and are told apart by an 8-byte big-endian sort
/// key (their number), so that a query over one partition key reads consecutive records:
/// YCSB's short scans (workload E).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyLayout {
    /// Records sharing one partition key (≥ 1).
    pub records_per_partition_key: u64,
}

impl KeyLayout {
    /// Whether keys carry a sort key.
    pub fn has_sort_key(&self) -> bool {
        self.records_per_partition_key > 1
    }

    /// Writes record `record`'s partition key into `partition` and, when the layout has one,
    /// its sort key into `sort`.
    pub fn encode(
        &self,
        record: u64,
        partition: &mut [u8; KEY_BYTES],
        sort: &mut [u8; SORT_KEY_BYTES],
    ) {
        let mut number = record / self.records_per_partition_key.max(1);
        partition[..4].copy_from_slice(KEY_PREFIX);
        for digit in partition[4..].iter_mut().rev() {
            *digit = b'0' + (number % 10) as u8;
            number /= 10;
        }
        *sort = record.to_be_bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_ycsb() {
        // FNV-1a of eight zero bytes, then made non-negative: the value YCSB's fnvhash64(0)
        // returns (computed by hand from the algorithm's definition).
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for _ in 0..8 {
            hash = hash.wrapping_mul(1_099_511_628_211);
        }
        assert_eq!(fnv_hash64(0), (hash as i64).unsigned_abs());
        assert_ne!(fnv_hash64(1), fnv_hash64(2));
    }

    #[test]
    fn scrambled_zetan_is_what_ycsb_precomputed() {
        // Check the constant's first digits against a partial sum plus the integral tail,
        // rather than summing ten billion terms.
        let n = 1_000_000u64;
        let head = zeta(0, n, ZIPFIAN_CONSTANT, 0.0);
        let power = 1.0 - ZIPFIAN_CONSTANT;
        let tail = ((SCRAMBLED_ITEM_COUNT as f64 + 0.5).powf(power) - (n as f64 + 0.5).powf(power))
            / power;
        assert!(
            (head + tail - SCRAMBLED_ZETAN).abs() < 1e-3,
            "{}",
            head + tail
        );
    }

    #[test]
    fn zipfian_ranks_follow_the_power_law() {
        let items = 1_000u64;
        let mut zipfian = Zipfian::new(items, ZIPFIAN_CONSTANT);
        let mut rng = Rng::new(42);
        let draws = 400_000;
        let mut counts = vec![0u64; items as usize];
        for _ in 0..draws {
            let rank = zipfian.next(&mut rng);
            assert!(rank < items);
            counts[rank as usize] += 1;
        }
        let zetan = zeta(0, items, ZIPFIAN_CONSTANT, 0.0);
        // Ranks 0 and 1 are exact in Gray's method.
        for (rank, &count) in counts.iter().enumerate().take(2) {
            let expected = 1.0 / ((rank + 1) as f64).powf(ZIPFIAN_CONSTANT) / zetan;
            let seen = count as f64 / draws as f64;
            assert!(
                (seen - expected).abs() < 0.01,
                "rank {rank}: {seen} vs {expected}"
            );
        }
        // The rest is an approximation: check the mass of decades of ranks.
        for (low, high) in [(10usize, 100usize), (100, 1000)] {
            let expected: f64 = (low..high)
                .map(|rank| 1.0 / ((rank + 1) as f64).powf(ZIPFIAN_CONSTANT) / zetan)
                .sum();
            let seen = counts[low..high].iter().sum::<u64>() as f64 / draws as f64;
            assert!(
                (seen - expected).abs() < 0.05,
                "{low}..{high}: {seen} vs {expected}"
            );
        }
    }

    #[test]
    fn zipfian_grows_incrementally_like_a_fresh_one() {
        let mut grown = Zipfian::new(1_000, ZIPFIAN_CONSTANT);
        let mut rng = Rng::new(3);
        grown.next_of(5_000, &mut rng);
        let fresh = Zipfian::new(5_000, ZIPFIAN_CONSTANT);
        assert!((grown.zetan - fresh.zetan).abs() < 1e-9);
        assert!((grown.eta - fresh.eta).abs() < 1e-9);
        assert_eq!(grown.items(), 5_000);
        assert_eq!(grown.next_of(1, &mut rng), 0);
    }

    #[test]
    fn scrambled_zipfian_stays_in_bounds_and_has_ycsb_hot_spot() {
        let items = 100_000u64;
        let mut scrambled = ScrambledZipfian::new(items);
        let mut rng = Rng::new(9);
        let draws = 200_000;
        let mut counts = std::collections::HashMap::new();
        for _ in 0..draws {
            let record = scrambled.next(&mut rng);
            assert!(record < items);
            *counts.entry(record).or_insert(0u64) += 1;
        }
        let hottest = *counts.values().max().unwrap() as f64 / draws as f64;
        // Rank 0 of a zipfian over ten billion items: 1 / 26.47 = 3.8 %.
        assert!(
            (0.03..0.05).contains(&hottest),
            "hottest record takes {hottest}"
        );
        // The hot records are not the first ones: scrambling spreads them.
        let first_thousand: u64 = (0..1000).filter_map(|r| counts.get(&r)).sum();
        assert!((first_thousand as f64 / draws as f64) < 0.1);
        // Skewed, yet it reaches a large part of the key space.
        assert!(counts.len() > 20_000, "{} distinct records", counts.len());
    }

    #[test]
    fn latest_prefers_the_newest_records() {
        let mut keyspace = Keyspace::new(1_000, 0, 1);
        let mut chooser = KeyChooser::new(Distribution::Latest, 1_000, 0);
        let mut rng = Rng::new(5);
        let mut newest = 0;
        for _ in 0..10_000 {
            let record = chooser.choose(&keyspace, &mut rng).unwrap();
            assert!(record < 1_000);
            newest += u64::from(record == 999);
        }
        assert!(
            newest > 1_000,
            "the newest record was chosen {newest} times"
        );
        // After inserts are acknowledged, they become the newest.
        for _ in 0..10 {
            let (index, record) = keyspace.issue_insert();
            assert_eq!(record, 1_000 + index);
            keyspace.complete_insert(index);
        }
        let mut hits_on_inserts = 0;
        for _ in 0..10_000 {
            let record = chooser.choose(&keyspace, &mut rng).unwrap();
            assert!(record < 1_010);
            hits_on_inserts += u64::from(record >= 1_000);
        }
        assert!(hits_on_inserts > 3_000, "{hits_on_inserts}");
    }

    #[test]
    fn readers_never_name_an_unacknowledged_insert() {
        let mut keyspace = Keyspace::new(100, 1, 2);
        let (first, first_record) = keyspace.issue_insert();
        let (second, second_record) = keyspace.issue_insert();
        assert_eq!((first_record, second_record), (101, 103));
        // The second completes first: neither is readable until the first is.
        keyspace.complete_insert(second);
        assert_eq!(keyspace.existing(), 100);
        assert!(!keyspace.exists(103));
        keyspace.complete_insert(first);
        assert_eq!(keyspace.existing(), 102);
        assert!(keyspace.exists(101) && keyspace.exists(103));
        assert!(!keyspace.exists(102), "core 0's record");
        for distribution in [
            Distribution::Uniform,
            Distribution::Zipfian,
            Distribution::Latest,
        ] {
            let mut chooser = KeyChooser::new(distribution, 100, 50);
            let mut rng = Rng::new(11);
            for _ in 0..5_000 {
                let record = chooser.choose(&keyspace, &mut rng).unwrap();
                assert!(keyspace.exists(record), "{distribution:?} chose {record}");
            }
        }
    }

    #[test]
    fn insert_window_wraps() {
        let mut tracker = InsertTracker::default();
        for round in 0..3 * INSERT_WINDOW {
            let index = tracker.issue();
            assert_eq!(index, round);
            tracker.complete(index);
        }
        assert_eq!(tracker.acknowledged(), 3 * INSERT_WINDOW);
        assert_eq!(tracker.issued(), 3 * INSERT_WINDOW);
    }

    #[test]
    fn uniform_covers_the_range() {
        let keyspace = Keyspace::new(10, 0, 1);
        let mut chooser = KeyChooser::new(Distribution::Uniform, 10, 0);
        let mut rng = Rng::new(2);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[chooser.choose(&keyspace, &mut rng).unwrap() as usize] += 1;
        }
        assert!(
            seen.iter().all(|&count| (800..1200).contains(&count)),
            "{seen:?}"
        );
        assert_eq!(
            KeyChooser::Uniform.choose(&Keyspace::new(0, 0, 1), &mut rng),
            None
        );
    }

    #[test]
    fn keys_are_24_bytes_and_group_records() {
        let mut partition = [0u8; KEY_BYTES];
        let mut sort = [0u8; SORT_KEY_BYTES];
        KeyLayout {
            records_per_partition_key: 1,
        }
        .encode(42, &mut partition, &mut sort);
        assert_eq!(&partition, b"user00000000000000000042");
        let grouped = KeyLayout {
            records_per_partition_key: 10,
        };
        grouped.encode(42, &mut partition, &mut sort);
        assert_eq!(&partition, b"user00000000000000000004");
        assert_eq!(sort, 42u64.to_be_bytes());
        KeyLayout {
            records_per_partition_key: 1,
        }
        .encode(u64::MAX, &mut partition, &mut sort);
        assert_eq!(&partition, b"user18446744073709551615");
    }
}
