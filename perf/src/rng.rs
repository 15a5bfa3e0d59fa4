//! A small, fast, seedable pseudo-random generator (wyrand) for key and operation choice.
//!
//! The generator draws a few numbers per request; wyrand costs about a nanosecond per draw
//! and passes the usual statistical batteries, which is all a workload needs. It is not for
//! anything that must be unpredictable.

/// wyrand: one 64-bit word of state.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Rng {
        // Mix the seed once so that seeds 0, 1, 2 do not start on neighbouring states.
        let mut rng = Rng { state: seed };
        rng.state = rng.next_u64();
        rng
    }

    /// The next 64 uniformly distributed bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let product = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        ((product >> 64) as u64) ^ (product as u64)
    }

    /// A uniform float in [0, 1).
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in [0, bound); 0 when `bound` is 0. Lemire's multiply-shift, without
    /// the rejection step: the bias is below 2^-40 for the bounds a workload uses.
    #[inline]
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_bounds_and_covers_them() {
        let mut rng = Rng::new(7);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let value = rng.below(10);
            seen[value as usize] += 1;
        }
        for count in seen {
            assert!((800..1200).contains(&count), "{seen:?}");
        }
        assert_eq!(rng.below(0), 0);
    }

    #[test]
    fn floats_are_in_the_unit_interval() {
        let mut rng = Rng::new(1);
        let mut sum = 0.0;
        for _ in 0..10_000 {
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x));
            sum += x;
        }
        assert!((sum / 10_000.0 - 0.5).abs() < 0.02);
    }

    #[test]
    fn seeds_give_distinct_sequences() {
        assert_ne!(Rng::new(0).next_u64(), Rng::new(1).next_u64());
        assert_eq!(Rng::new(5).next_u64(), Rng::new(5).next_u64());
    }
}
