//! The estimators, pure functions of what was stored and one new result, so that the
//! writer only reads and writes rows: the latency average (a Welford running mean, and an
//! EWMA as Kamailio's dispatcher keeps it) and anti-flap (a state that changes only after
//! enough results in a row).

/// Kamailio's dispatcher estimator: the EWMA takes a tenth of each new sample, and equals
/// the mean until there are this many samples.
const EWMA_ALPHA: f64 = 0.1;
const EWMA_WARMUP: i64 = 10;

/// A latency average: the long-run mean and the EWMA the ranking uses, over `samples`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Average {
    pub mean_ms: f64,
    pub ewma_ms: f64,
    pub samples: i64,
}

impl Average {
    /// The average of one sample.
    pub fn first(ms: f64) -> Self {
        Self {
            mean_ms: ms,
            ewma_ms: ms,
            samples: 1,
        }
    }

    /// The average with one more sample.
    pub fn with(self, ms: f64) -> Self {
        let samples = self.samples.max(0) + 1;
        let mean_ms = self.mean_ms + (ms - self.mean_ms) / samples as f64;
        let ewma_ms = match samples < EWMA_WARMUP {
            true => mean_ms,
            false => self.ewma_ms * (1.0 - EWMA_ALPHA) + ms * EWMA_ALPHA,
        };
        Self {
            mean_ms,
            ewma_ms,
            samples,
        }
    }
}

/// Thresholds for probe results: a target goes down after `down_after` consecutive
/// failures and comes back after `up_after` successes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AntiFlap {
    pub down_after: u32,
    pub up_after: u32,
}

/// A verdict and the streaks behind it: (up, successes in a row, failures in a row).
pub type Streaks = (bool, u32, u32);

impl AntiFlap {
    /// The anti-flap step: the streaks before (`None`: no verdict yet) and one raw result
    /// give them after. A first result decides at once.
    pub fn step(self, old: Option<Streaks>, ok: bool) -> Streaks {
        match (old, ok) {
            (None, _) => (ok, u32::from(ok), u32::from(!ok)),
            (Some((up, oks, _)), true) => {
                let oks = oks.saturating_add(1);
                (up || oks >= self.up_after, oks, 0)
            }
            (Some((up, _, fails)), false) => {
                let fails = fails.saturating_add(1);
                (up && fails < self.down_after, 0, fails)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ewma_is_the_mean_while_warming_up_then_a_tenth_per_sample() {
        let mut a = Average::first(10.0);
        for ms in [20.0, 30.0] {
            a = a.with(ms);
        }
        assert_eq!((a.mean_ms, a.ewma_ms, a.samples), (20.0, 20.0, 3));
        let mut a = Average::first(10.0);
        for _ in 1..9 {
            a = a.with(10.0);
        }
        assert_eq!((a.ewma_ms, a.samples), (10.0, 9));
        let a = a.with(110.0);
        assert_eq!(a.samples, 10);
        assert!((a.mean_ms - 20.0).abs() < 1e-9, "{a:?}");
        assert!(
            (a.ewma_ms - 20.0).abs() < 1e-9,
            "10 * 0.9 + 110 * 0.1: {a:?}"
        );
        // A count written wrong by hand restarts the count, never divides by zero.
        let broken = Average {
            samples: -5,
            ..Average::first(1.0)
        };
        assert_eq!(broken.with(3.0).samples, 1);
    }

    #[test]
    fn anti_flap_needs_results_in_a_row() {
        let t = AntiFlap {
            down_after: 3,
            up_after: 2,
        };
        let run = |start: Option<Streaks>, results: &[bool]| {
            let mut s = start;
            results
                .iter()
                .map(|&ok| {
                    let next = t.step(s, ok);
                    s = Some(next);
                    next.0
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(None, &[false]), [false], "the first result decides");
        assert_eq!(run(None, &[true]), [true]);
        let up = Some((true, 1, 0));
        assert_eq!(run(up, &[false, false, true, false, false]), [true; 5]);
        assert_eq!(run(up, &[false, false, false]), [true, true, false]);
        let down = Some((false, 0, 3));
        assert_eq!(
            run(down, &[true, false, true, true]),
            [false, false, false, true]
        );
        // Streaks never overflow, however long a target stays up.
        assert_eq!(t.step(Some((true, u32::MAX, 0)), true), (true, u32::MAX, 0));
    }
}
