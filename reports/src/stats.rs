//! How sure a change between two runs is: the ratio of two medians with a bootstrap confidence interval.
//!
//! A run's latency is judged on its windows (a p95 per few seconds of the steady state), not on one p95: the
//! spread of the windows says how much of a difference is noise. Resampling each run's windows with
//! replacement many times gives the distribution of the ratio of their medians; a regression counts only when
//! even the low end of that distribution is beyond the tolerance. The resampling draws from a fixed seed, so
//! the same two runs always give the same verdict.

/// The confidence a one-sided bound holds with.
pub const CONFIDENCE: f64 = 0.95;

/// Resamples drawn; the bounds move by well under a percent between seeds at this count.
const RESAMPLES: usize = 2000;

/// The fewest windows a run needs for its bounds to mean something.
pub const MIN_WINDOWS: usize = 8;

/// `current`'s median over `baseline`'s, with one-sided bounds at [`CONFIDENCE`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatioEstimate {
    pub baseline_median: f64,
    pub current_median: f64,
    /// `current_median / baseline_median`.
    pub ratio: f64,
    /// The ratio is above this with [`CONFIDENCE`].
    pub low: f64,
    /// The ratio is below this with [`CONFIDENCE`].
    pub high: f64,
}

/// `None` when either side has fewer than [`MIN_WINDOWS`] values or a median of zero.
pub fn median_ratio(baseline: &[f64], current: &[f64]) -> Option<RatioEstimate> {
    if baseline.len() < MIN_WINDOWS || current.len() < MIN_WINDOWS {
        return None;
    }
    let base_median = median(baseline.to_vec());
    if base_median <= 0.0 || !base_median.is_finite() {
        return None;
    }
    let current_median = median(current.to_vec());
    let ratio = current_median / base_median;
    let mut rng = SplitMix64(0x9e37_79b9_7f4a_7c15);
    let mut draws: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            let b = median(resample(baseline, &mut rng));
            let c = median(resample(current, &mut rng));
            if b > 0.0 { c / b } else { f64::INFINITY }
        })
        .collect();
    draws.sort_by(f64::total_cmp);
    let at = |q: f64| draws[((q * (RESAMPLES - 1) as f64).round() as usize).min(RESAMPLES - 1)];
    Some(RatioEstimate {
        baseline_median: base_median,
        current_median,
        ratio,
        low: at(1.0 - CONFIDENCE),
        high: at(CONFIDENCE),
    })
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn resample(values: &[f64], rng: &mut SplitMix64) -> Vec<f64> {
    (0..values.len()).map(|_| values[(rng.next() % values.len() as u64) as usize]).collect()
}

/// A small, well-known generator (Steele, Lea and Flood's SplitMix64): enough for resampling, and fixed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Windows around `center` with a spread like this machine's: ±20 % and an occasional stall.
    fn windows(center: f64, seed: u64, n: usize) -> Vec<f64> {
        let mut rng = SplitMix64(seed);
        (0..n)
            .map(|i| {
                let u = (rng.next() % 10_000) as f64 / 10_000.0;
                let stall = if i % 17 == 5 { 3.0 } else { 1.0 };
                center * (0.8 + 0.4 * u) * stall
            })
            .collect()
    }

    #[test]
    fn the_median_of_even_and_odd_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn a_doubled_p95_is_beyond_a_15_percent_tolerance_with_confidence() {
        let base = windows(5.0, 1, 30);
        let doubled: Vec<f64> = windows(5.0, 2, 30).iter().map(|v| v * 2.0).collect();
        let e = median_ratio(&base, &doubled).unwrap();
        assert!(e.low > 1.15, "{e:?}");
        assert!((1.6..2.5).contains(&e.ratio), "{e:?}");
    }

    #[test]
    fn the_same_distribution_stays_within_the_tolerance() {
        for seed in 0..20 {
            let e = median_ratio(&windows(5.0, seed, 30), &windows(5.0, seed + 100, 30)).unwrap();
            assert!(e.low <= 1.15 && e.high >= 0.85, "seed {seed}: {e:?}");
            assert!(e.low <= 1.0 && 1.0 <= e.high || (e.ratio - 1.0).abs() < 0.1, "seed {seed}: {e:?}");
        }
    }

    #[test]
    fn too_few_windows_say_nothing() {
        assert_eq!(median_ratio(&windows(5.0, 1, MIN_WINDOWS - 1), &windows(5.0, 2, 30)), None);
        assert!(median_ratio(&windows(5.0, 1, MIN_WINDOWS), &windows(5.0, 2, MIN_WINDOWS)).is_some());
        assert_eq!(median_ratio(&[0.0; 10], &windows(5.0, 2, 10)), None);
    }

    #[test]
    fn the_estimate_is_the_same_every_time() {
        let (a, b) = (windows(5.0, 3, 25), windows(6.0, 4, 25));
        assert_eq!(median_ratio(&a, &b), median_ratio(&a, &b));
    }
}
