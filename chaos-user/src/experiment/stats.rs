//! Figures from the raw records of [`super::record`]: a window's throughput, error rate and
//! latency percentiles, and per-second series.
//!
//! Which operations a window counts:
//! - `ops`, `errors`, `error_rate` and `throughput` (successful operations per second): those that
//!   **finished** in the window;
//! - latencies (`p50`... `max`): every operation that was **running** during the window, finished
//!   or not: one stuck in a hung disk counts with the time it has waited so far, so a hang shows
//!   in the window it happens in, not only when it ends.

use serde::{Deserialize, Serialize};

use super::record::Op;

/// A time span, µs since `t = 0`, `start` included, `end` excluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// Start, µs.
    pub start_us: u64,
    /// End, µs.
    pub end_us: u64,
}

impl Span {
    /// The span from `start_ms` to `end_ms`.
    pub fn ms(start_ms: u64, end_ms: u64) -> Span {
        Span {
            start_us: start_ms * 1000,
            end_us: end_ms * 1000,
        }
    }

    /// Its length, seconds.
    pub fn secs(&self) -> f64 {
        self.end_us.saturating_sub(self.start_us) as f64 / 1e6
    }

    fn holds(&self, t_us: u64) -> bool {
        (self.start_us..self.end_us).contains(&t_us)
    }
}

/// Latency percentiles, ms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// The slowest.
    pub max: f64,
}

/// A traffic generator's figures over a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Operations that finished in the window.
    pub ops: u64,
    /// Those that failed.
    pub errors: u64,
    /// `errors` as a percentage of `ops` (null when none finished).
    pub error_rate: Option<f64>,
    /// Successful operations per second.
    pub throughput: f64,
    /// Latencies of the operations running in the window, ms (null when there were none).
    pub latency_ms: Option<Latency>,
}

/// The `q`-th quantile (0-1, nearest rank) of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Percentiles of `values`, ms (none when empty).
pub fn latency(mut values: Vec<f64>) -> Option<Latency> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(Latency {
        p50: quantile(&values, 0.50),
        p90: quantile(&values, 0.90),
        p99: quantile(&values, 0.99),
        max: quantile(&values, 1.0),
    })
}

/// The figures of `span` from the finished operations `ops` and the start times of those still
/// in flight at `now_us`.
pub fn summarize(ops: &[Op], in_flight: &[u64], span: Span, now_us: u64) -> Summary {
    let finished: Vec<&Op> = ops.iter().filter(|o| span.holds(o.end_us())).collect();
    let errors = finished.iter().filter(|o| !o.ok).count() as u64;
    let n = finished.len() as u64;
    let secs = span.secs();
    let latencies: Vec<f64> = ops
        .iter()
        .filter(|o| o.start_us < span.end_us && o.end_us() >= span.start_us)
        .map(|o| o.latency_us as f64 / 1000.0)
        .chain(
            in_flight
                .iter()
                .filter(|&&s| s < span.end_us)
                .map(|&s| now_us.saturating_sub(s) as f64 / 1000.0),
        )
        .collect();
    Summary {
        ops: n,
        errors,
        error_rate: (n > 0).then(|| errors as f64 * 100.0 / n as f64),
        throughput: if secs > 0.0 {
            (n - errors) as f64 / secs
        } else {
            0.0
        },
        latency_ms: latency(latencies),
    }
}

/// One second of a traffic generator's series (operations that finished in it).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// The second's start, ms.
    pub t_ms: u64,
    /// Operations that finished in it.
    pub ops: u64,
    /// Those that failed.
    pub errors: u64,
    /// Latency percentiles of those operations, ms (null without any).
    pub p50_ms: Option<f64>,
    /// 90th percentile, ms.
    pub p90_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// The slowest, ms.
    pub max_ms: Option<f64>,
}

/// Per-second figures from `from_ms` (rounded down to a second) to `to_ms` (excluded).
pub fn per_second(ops: &[Op], from_ms: u64, to_ms: u64) -> Vec<Second> {
    let first = from_ms / 1000;
    let last = to_ms.div_ceil(1000);
    let mut buckets: Vec<Vec<&Op>> = vec![Vec::new(); last.saturating_sub(first) as usize];
    for op in ops {
        let s = op.end_us() / 1_000_000;
        if s >= first && s < last && op.end_us() < to_ms * 1000 {
            buckets[(s - first) as usize].push(op);
        }
    }
    buckets
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            let l = latency(b.iter().map(|o| o.latency_us as f64 / 1000.0).collect());
            Second {
                t_ms: (first + i as u64) * 1000,
                ops: b.len() as u64,
                errors: b.iter().filter(|o| !o.ok).count() as u64,
                p50_ms: l.map(|l| l.p50),
                p90_ms: l.map(|l| l.p90),
                p99_ms: l.map(|l| l.p99),
                max_ms: l.map(|l| l.max),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(start_ms: u64, latency_ms: u64, ok: bool) -> Op {
        Op::ms(start_ms, latency_ms, ok)
    }

    #[test]
    fn a_window_counts_what_finished_in_it_and_the_latency_of_what_ran_in_it() {
        let ops = [
            op(0, 100, true),     // ends at 100 ms: before the window
            op(900, 200, true),   // runs into it, ends at 1.1 s: counted
            op(1500, 10, false),  // a failure inside
            op(1900, 3000, true), // ends after the window: only its latency counts
        ];
        let s = summarize(&ops, &[1_950_000], Span::ms(1000, 2000), 2_500_000);
        assert_eq!((s.ops, s.errors), (2, 1));
        assert_eq!(s.error_rate, Some(50.0));
        assert_eq!(s.throughput, 1.0);
        let l = s.latency_ms.unwrap();
        // 200, 10, 3000 and the one in flight for 550 ms.
        assert_eq!(l.max, 3000.0);
        assert_eq!(l.p50, 200.0);
    }

    #[test]
    fn an_empty_window_has_no_rate_nor_latency() {
        let s = summarize(&[], &[], Span::ms(0, 1000), 1000);
        assert_eq!(s.error_rate, None);
        assert_eq!(s.latency_ms, None);
        assert_eq!(s.throughput, 0.0);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let l = latency((1..=100).map(f64::from).collect()).unwrap();
        assert_eq!((l.p50, l.p90, l.p99, l.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(latency(vec![7.0]).unwrap().p99, 7.0);
    }

    #[test]
    fn seconds_hold_the_operations_that_ended_in_them() {
        let ops = [op(100, 50, true), op(900, 200, false), op(2100, 10, true)];
        let s = per_second(&ops, 0, 3000);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].ops, s[1].ops, s[1].errors, s[2].ops), (1, 1, 1, 1));
        assert_eq!(s[1].max_ms, Some(200.0));
        assert_eq!(s[0].t_ms, 0);
        assert_eq!(s[2].t_ms, 2000);
    }
}
