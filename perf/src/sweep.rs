//! The search for the highest throughput whose p99 stays under the SLO: raise the rate by a
//! factor while steps pass, then bisect between the best pass and the lowest failure. A
//! sans-I/O state machine: the caller runs each step and feeds its figures back.

use crate::limits::{SWEEP_ACHIEVED_FRACTION_MIN, SWEEP_RESOLUTION_FRACTION, SWEEP_STEPS_MAX};

/// How a sweep searches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SweepConfig {
    /// The first step's rate, requests per second.
    pub start_rate_per_s: f64,
    /// Each raising step multiplies the rate by this (> 1).
    pub step_factor: f64,
    /// Bisection steps after the first failure, at most.
    pub refine_steps: u32,
    /// Steps in all, at most (≤ [`SWEEP_STEPS_MAX`]).
    pub max_steps: u32,
    /// The SLO: a step passes only if its p99 is at most this.
    pub slo_p99_us: u64,
}

/// The figures of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepResult {
    /// The rate asked for.
    pub target_rate_per_s: f64,
    /// The rate delivered (completions over the measured time).
    pub achieved_ops_per_s: f64,
    /// The step's p99 latency, from intended starts.
    pub p99_us: u64,
    /// Failed requests.
    pub errors: u64,
}

impl StepResult {
    /// Whether the step kept the SLO: p99 within it, no errors, and the rate delivered.
    pub fn passes(&self, slo_p99_us: u64) -> bool {
        self.p99_us <= slo_p99_us
            && self.errors == 0
            && self.achieved_ops_per_s >= SWEEP_ACHIEVED_FRACTION_MIN * self.target_rate_per_s
    }
}

/// The rate search. Call [`SweepSearch::next_rate`], run a step at that rate, hand its
/// figures to [`SweepSearch::record`], until `next_rate` says `None`.
#[derive(Clone, Debug)]
pub struct SweepSearch {
    config: SweepConfig,
    steps: Vec<(StepResult, bool)>,
    best_pass_rate: Option<f64>,
    lowest_fail_rate: Option<f64>,
    refined: u32,
}

/// The lowest rate a sweep tries when even its first step fails.
const SWEEP_RATE_PER_S_MIN: f64 = 1.0;

impl SweepSearch {
    /// A search with `config`.
    pub fn new(config: SweepConfig) -> SweepSearch {
        debug_assert!(config.step_factor > 1.0 && config.start_rate_per_s > 0.0);
        SweepSearch {
            config,
            steps: Vec::new(),
            best_pass_rate: None,
            lowest_fail_rate: None,
            refined: 0,
        }
    }

    /// The rate of the next step, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        if self.steps.len() as u32 >= self.config.max_steps.min(SWEEP_STEPS_MAX) {
            return None;
        }
        match (self.best_pass_rate, self.lowest_fail_rate) {
            (None, None) => Some(self.config.start_rate_per_s),
            // Still passing: raise.
            (Some(pass), None) => Some(pass * self.config.step_factor),
            // Failed before any pass: lower until one passes.
            (None, Some(fail)) => {
                let lower = fail / self.config.step_factor;
                (lower >= SWEEP_RATE_PER_S_MIN).then_some(lower)
            }
            // Bracketed: bisect until fine enough (or the curve was not monotonic).
            (Some(pass), Some(fail)) => {
                let done = self.refined >= self.config.refine_steps
                    || pass >= fail
                    || (fail - pass) / pass < SWEEP_RESOLUTION_FRACTION;
                (!done).then_some((pass + fail) / 2.0)
            }
        }
    }

    /// Records a step's figures; returns whether it passed.
    pub fn record(&mut self, step: StepResult) -> bool {
        let bracketed = self.best_pass_rate.is_some() && self.lowest_fail_rate.is_some();
        let passed = step.passes(self.config.slo_p99_us);
        let rate = step.target_rate_per_s;
        if passed {
            self.best_pass_rate = Some(self.best_pass_rate.map_or(rate, |best| best.max(rate)));
        } else {
            self.lowest_fail_rate = Some(
                self.lowest_fail_rate
                    .map_or(rate, |lowest| lowest.min(rate)),
            );
        }
        if bracketed {
            self.refined += 1;
        }
        self.steps.push((step, passed));
        passed
    }

    /// The passing step with the highest delivered throughput.
    pub fn best(&self) -> Option<&StepResult> {
        self.steps
            .iter()
            .filter(|(_, passed)| *passed)
            .map(|(step, _)| step)
            .max_by(|a, b| a.achieved_ops_per_s.total_cmp(&b.achieved_ops_per_s))
    }

    /// Every step so far, with whether it passed.
    pub fn steps(&self) -> &[(StepResult, bool)] {
        &self.steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that saturates at `capacity`: p99 = base / (1 - load), and beyond capacity
    /// the rate is not delivered and the latency grows without bound.
    fn synthetic(rate: f64, capacity: f64, base_us: f64) -> StepResult {
        let load = rate / capacity;
        if load >= 1.0 {
            return StepResult {
                target_rate_per_s: rate,
                achieved_ops_per_s: capacity,
                p99_us: 60_000_000,
                errors: 0,
            };
        }
        StepResult {
            target_rate_per_s: rate,
            achieved_ops_per_s: rate * 0.999,
            p99_us: (base_us / (1.0 - load)) as u64,
            errors: 0,
        }
    }

    fn sweep(config: SweepConfig, curve: impl Fn(f64) -> StepResult) -> SweepSearch {
        let mut search = SweepSearch::new(config);
        while let Some(rate) = search.next_rate() {
            search.record(curve(rate));
        }
        search
    }

    fn config(start: f64) -> SweepConfig {
        SweepConfig {
            start_rate_per_s: start,
            step_factor: 1.25,
            refine_steps: 8,
            max_steps: 64,
            slo_p99_us: 10_000,
        }
    }

    #[test]
    fn finds_the_knee_of_a_saturating_server() {
        // p99 = 500 µs / (1 - r / 50,000) reaches 10 ms at r = 47,500.
        let search = sweep(config(1_000.0), |rate| synthetic(rate, 50_000.0, 500.0));
        let best = search.best().expect("low rates pass");
        assert!(best.p99_us <= 10_000);
        let knee = 47_500.0;
        assert!(
            best.target_rate_per_s <= knee && best.target_rate_per_s > knee * 0.97,
            "best {best:?} after {} steps",
            search.steps().len()
        );
        // Raising from 1,000 by 1.25 takes 18 steps to pass the knee; bisection a few more.
        assert!(
            search.steps().len() <= 18 + 8,
            "{} steps",
            search.steps().len()
        );
        // Every failing step is above every passing one on this monotonic curve.
        let lowest_fail = search
            .steps()
            .iter()
            .filter(|(_, passed)| !passed)
            .map(|(step, _)| step.target_rate_per_s)
            .fold(f64::MAX, f64::min);
        assert!(lowest_fail > best.target_rate_per_s);
    }

    #[test]
    fn a_failing_start_goes_down() {
        let search = sweep(config(200_000.0), |rate| synthetic(rate, 50_000.0, 500.0));
        let best = search.best().unwrap();
        assert!(best.target_rate_per_s > 47_500.0 * 0.97 && best.target_rate_per_s <= 47_500.0);
        assert!(!search.steps()[0].1);
    }

    #[test]
    fn errors_or_an_undelivered_rate_fail_a_step() {
        let slo = 10_000;
        let good = StepResult {
            target_rate_per_s: 1_000.0,
            achieved_ops_per_s: 1_000.0,
            p99_us: 900,
            errors: 0,
        };
        assert!(good.passes(slo));
        assert!(!StepResult { errors: 1, ..good }.passes(slo));
        assert!(!StepResult {
            achieved_ops_per_s: 800.0,
            ..good
        }
        .passes(slo));
        assert!(!StepResult {
            p99_us: 10_001,
            ..good
        }
        .passes(slo));
    }

    #[test]
    fn nothing_passes_and_the_search_ends() {
        let search = sweep(config(1_000.0), |rate| StepResult {
            target_rate_per_s: rate,
            achieved_ops_per_s: rate,
            p99_us: 50_000,
            errors: 0,
        });
        assert!(search.best().is_none());
        // 1,000 / 1.25^k falls under 1 /s after 31 steps.
        assert!(search.steps().len() <= 32);
    }

    #[test]
    fn the_step_budget_is_kept() {
        let search = sweep(
            SweepConfig {
                max_steps: 5,
                ..config(1.0)
            },
            |rate| synthetic(rate, 1e12, 100.0),
        );
        assert_eq!(search.steps().len(), 5);
        assert_eq!(search.best().unwrap().target_rate_per_s, 1.25f64.powi(4));
    }
}
