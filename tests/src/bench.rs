//! What the benchmarks in `tests/benches/` share: their numeric flags and the summary of a
//! latency sample.

use std::time::Duration;

/// The values of the numeric flags `defaults` names (e.g. `("--iterations", 40)`), in the
/// same order, from the command line (`cargo bench` adds `--bench`, which is skipped).
///
/// # Panics
/// On an unknown flag or a flag without a number, saying which flags `bench` takes.
pub fn numeric_flags<const N: usize>(bench: &str, defaults: [(&str, u64); N]) -> [u64; N] {
    let mut values = defaults.map(|(_, value)| value);
    let usage = || {
        defaults
            .iter()
            .map(|(flag, default)| format!("{flag} N (default {default})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--bench" {
            continue;
        }
        let Some(index) = defaults.iter().position(|(flag, _)| *flag == arg) else {
            panic!(
                "bench {bench}: unknown argument {arg}; expected {}",
                usage()
            );
        };
        values[index] = args
            .next()
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("bench {bench}: {arg} wants a number; {}", usage()));
    }
    values
}

/// Median, 95th percentile and minimum of a latency sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The median (the lower one of an even sample).
    pub median: Duration,
    /// The 95th percentile (nearest rank).
    pub p95: Duration,
    /// The fastest.
    pub min: Duration,
}

impl Summary {
    /// The summary of `samples`.
    ///
    /// # Panics
    /// If `samples` is empty.
    pub fn of(samples: &[Duration]) -> Self {
        assert!(!samples.is_empty(), "summarizing no samples");
        let mut sorted = samples.to_vec();
        sorted.sort();
        let rank =
            |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        Self {
            median: rank(0.5),
            p95: rank(0.95),
            min: sorted[0],
        }
    }

    /// As JSON, in milliseconds to 0.01: `{"median_ms", "p95_ms", "min_ms"}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "median_ms": millis(self.median),
            "p95_ms": millis(self.p95),
            "min_ms": millis(self.min),
        })
    }
}

/// `duration` in milliseconds, rounded to 0.01.
pub fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e5).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_nearest_rank_and_the_median_of_an_even_sample_is_the_lower() {
        let samples: Vec<Duration> = [5, 1, 4, 2, 3, 6].map(Duration::from_millis).to_vec();
        let summary = Summary::of(&samples);
        assert_eq!(summary.median, Duration::from_millis(3));
        assert_eq!(summary.p95, Duration::from_millis(6));
        assert_eq!(summary.min, Duration::from_millis(1));
        assert_eq!(summary.to_json()["median_ms"], 3.0);
    }
}
