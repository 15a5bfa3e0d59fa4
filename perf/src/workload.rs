//! YCSB's core workloads A–F: which operations a run issues, in which proportions, and how
//! it chooses their records.

use crate::keys::Distribution;

/// One kind of request a workload issues. Every kind has its own histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Get one record.
    Read,
    /// Overwrite an existing record.
    Update,
    /// Write a new record.
    Insert,
    /// A short scan: a query over one partition key from the chosen record on.
    Scan,
    /// Read a record, then write it back (the pair is one operation, timed as one).
    ReadModifyWrite,
}

/// How many kinds of operation there are.
pub const OP_KINDS: usize = 5;

impl OpKind {
    /// Every kind, in report order.
    pub const ALL: [OpKind; OP_KINDS] = [
        OpKind::Read,
        OpKind::Update,
        OpKind::Insert,
        OpKind::Scan,
        OpKind::ReadModifyWrite,
    ];

    /// The position of this kind in [`OpKind::ALL`] (and in per-kind arrays).
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name used in reports, tags of the interval log and JSON.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Insert => "insert",
            OpKind::Scan => "scan",
            OpKind::ReadModifyWrite => "rmw",
        }
    }
}

/// One of YCSB's core workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    /// Update heavy: 50 % reads, 50 % updates.
    A,
    /// Read mostly: 95 % reads, 5 % updates.
    B,
    /// Read only.
    C,
    /// Read latest: 95 % reads, 5 % inserts, reads skewed to the newest records.
    D,
    /// Short ranges: 95 % scans, 5 % inserts.
    E,
    /// Read-modify-write: 50 % reads, 50 % read-modify-writes.
    F,
}

impl Workload {
    /// Every workload.
    pub const ALL: [Workload; 6] = [
        Workload::A,
        Workload::B,
        Workload::C,
        Workload::D,
        Workload::E,
        Workload::F,
    ];

    /// The operation mix, as YCSB's `workloads/workload[a-f]` files set it.
    pub fn mix(self) -> OpMix {
        let weights: &[(OpKind, u32)] = match self {
            Workload::A => &[(OpKind::Read, 50), (OpKind::Update, 50)],
            Workload::B => &[(OpKind::Read, 95), (OpKind::Update, 5)],
            Workload::C => &[(OpKind::Read, 100)],
            Workload::D => &[(OpKind::Read, 95), (OpKind::Insert, 5)],
            Workload::E => &[(OpKind::Scan, 95), (OpKind::Insert, 5)],
            Workload::F => &[(OpKind::Read, 50), (OpKind::ReadModifyWrite, 50)],
        };
        OpMix::new(weights).expect("the built-in mixes have positive weights")
    }

    /// YCSB's request distribution for this workload: latest for D, zipfian for the others.
    pub fn default_distribution(self) -> Distribution {
        match self {
            Workload::D => Distribution::Latest,
            _ => Distribution::Zipfian,
        }
    }

    /// The `case` name of BENCHMARKS.md: `ycsb_a` … `ycsb_f`.
    pub fn case_name(self) -> &'static str {
        match self {
            Workload::A => "ycsb_a",
            Workload::B => "ycsb_b",
            Workload::C => "ycsb_c",
            Workload::D => "ycsb_d",
            Workload::E => "ycsb_e",
            Workload::F => "ycsb_f",
        }
    }

    /// The letter, lower case, as given on the command line.
    pub fn letter(self) -> char {
        (b'a' + self as u8) as char
    }
}

/// An operation mix was not usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MixError {
    /// Every weight was zero, or there were none.
    Empty,
    /// The weights add up beyond what the chooser can represent.
    TooLarge,
}

impl std::fmt::Display for MixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MixError::Empty => write!(f, "an operation mix needs at least one positive weight"),
            MixError::TooLarge => write!(f, "an operation mix's weights add up beyond 2^32"),
        }
    }
}

impl std::error::Error for MixError {}

/// Proportions of operation kinds, chosen by one random draw per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpMix {
    /// For each kind, the upper end (exclusive) of its share of the 64-bit draw space;
    /// kinds with no share have the same bound as the kind before them.
    bounds: [u64; OP_KINDS],
    weights: [u32; OP_KINDS],
}

impl OpMix {
    /// A mix with the given relative weights (a kind listed twice gets both weights).
    pub fn new(weights: &[(OpKind, u32)]) -> Result<OpMix, MixError> {
        let mut per_kind = [0u32; OP_KINDS];
        for &(kind, weight) in weights {
            per_kind[kind.index()] = per_kind[kind.index()]
                .checked_add(weight)
                .ok_or(MixError::TooLarge)?;
        }
        let total: u64 = per_kind.iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return Err(MixError::Empty);
        }
        if total > u64::from(u32::MAX) {
            return Err(MixError::TooLarge);
        }
        let mut bounds = [0u64; OP_KINDS];
        let mut cumulative = 0u64;
        for (kind, bound) in bounds.iter_mut().enumerate() {
            cumulative += u64::from(per_kind[kind]);
            // cumulative / total of the draw space, computed without overflow; the last kind
            // with a share ends at the top.
            *bound = if cumulative == total {
                u64::MAX
            } else {
                ((u128::from(cumulative) << 64) / u128::from(total)) as u64
            };
        }
        Ok(OpMix {
            bounds,
            weights: per_kind,
        })
    }

    /// The kind for one uniformly random 64-bit draw.
    #[inline]
    pub fn choose(&self, draw: u64) -> OpKind {
        for (kind, &bound) in self.bounds.iter().enumerate() {
            if draw < bound && self.weights[kind] > 0 {
                return OpKind::ALL[kind];
            }
        }
        // draw == u64::MAX: the last kind with a share.
        let last = self.weights.iter().rposition(|&w| w > 0).unwrap_or(0);
        OpKind::ALL[last]
    }

    /// The share of `kind`, between 0 and 1.
    pub fn proportion(&self, kind: OpKind) -> f64 {
        let total: u64 = self.weights.iter().map(|&w| u64::from(w)).sum();
        f64::from(self.weights[kind.index()]) / total as f64
    }

    /// Whether the mix ever issues `kind`.
    pub fn includes(&self, kind: OpKind) -> bool {
        self.weights[kind.index()] > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn ycsb_mixes_have_their_proportions() {
        let draws = 200_000;
        for workload in Workload::ALL {
            let mix = workload.mix();
            let mut rng = Rng::new(workload as u64);
            let mut counts = [0u64; OP_KINDS];
            for _ in 0..draws {
                counts[mix.choose(rng.next_u64()).index()] += 1;
            }
            for kind in OpKind::ALL {
                let seen = counts[kind.index()] as f64 / draws as f64;
                let expected = mix.proportion(kind);
                assert!(
                    (seen - expected).abs() < 0.005,
                    "{workload:?} {kind:?}: {seen} vs {expected}"
                );
                if expected == 0.0 {
                    assert_eq!(counts[kind.index()], 0, "{workload:?} issued {kind:?}");
                }
            }
        }
        let check = |workload: Workload, kind: OpKind, share: f64| {
            assert_eq!(
                workload.mix().proportion(kind),
                share,
                "{workload:?} {kind:?}"
            )
        };
        check(Workload::A, OpKind::Update, 0.5);
        check(Workload::B, OpKind::Read, 0.95);
        check(Workload::C, OpKind::Read, 1.0);
        check(Workload::D, OpKind::Insert, 0.05);
        check(Workload::E, OpKind::Scan, 0.95);
        check(Workload::F, OpKind::ReadModifyWrite, 0.5);
    }

    #[test]
    fn extreme_draws_land_on_kinds_in_the_mix() {
        for workload in Workload::ALL {
            let mix = workload.mix();
            for draw in [0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
                assert!(mix.includes(mix.choose(draw)), "{workload:?} {draw}");
            }
        }
    }

    #[test]
    fn bad_mixes_are_refused() {
        assert_eq!(OpMix::new(&[]), Err(MixError::Empty));
        assert_eq!(OpMix::new(&[(OpKind::Read, 0)]), Err(MixError::Empty));
        assert_eq!(
            OpMix::new(&[(OpKind::Read, u32::MAX), (OpKind::Update, 1)]),
            Err(MixError::TooLarge)
        );
    }

    #[test]
    fn names() {
        assert_eq!(Workload::A.case_name(), "ycsb_a");
        assert_eq!(Workload::F.letter(), 'f');
        assert_eq!(Workload::D.default_distribution(), Distribution::Latest);
        assert_eq!(OpKind::ReadModifyWrite.name(), "rmw");
    }
}
