//! Scales, axis ticks and paths for the timeline's SVG.

use super::markup::px;

/// A linear map from a data domain to a pixel range (which may run backwards, as y does).
#[derive(Clone, Copy, Debug)]
pub struct Linear {
    /// Domain start and end.
    pub domain: (f64, f64),
    /// Pixel range start and end.
    pub range: (f64, f64),
}

impl Linear {
    /// Where `v` lands (clamped to the range).
    pub fn map(&self, v: f64) -> f64 {
        let (d0, d1) = self.domain;
        let (r0, r1) = self.range;
        let f = if d1 > d0 { (v - d0) / (d1 - d0) } else { 0.0 };
        r0 + f.clamp(0.0, 1.0) * (r1 - r0)
    }
}

/// A base-10 logarithmic map, for latencies that span from microseconds to a hang of seconds.
#[derive(Clone, Copy, Debug)]
pub struct Log {
    /// Domain start and end, both > 0 (powers of 10 from [`Log::covering`]).
    pub domain: (f64, f64),
    /// Pixel range start and end.
    pub range: (f64, f64),
}

impl Log {
    /// A scale over whole decades covering `values` (at least `min_decades` of them), or none
    /// when no value is positive.
    pub fn covering(
        values: impl IntoIterator<Item = f64>,
        min_decades: i32,
        range: (f64, f64),
    ) -> Option<Log> {
        let (lo, hi) = values
            .into_iter()
            .filter(|v| v.is_finite() && *v > 0.0)
            .fold(None, |acc: Option<(f64, f64)>, v| match acc {
                None => Some((v, v)),
                Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
            })?;
        let top = hi.log10().ceil() as i32;
        let bottom = (lo.log10().floor() as i32).min(top - min_decades);
        Some(Log {
            domain: (10f64.powi(bottom), 10f64.powi(top)),
            range,
        })
    }

    /// Where `v` lands (values at or below the domain's start land on it).
    pub fn map(&self, v: f64) -> f64 {
        let (l0, l1) = (self.domain.0.log10(), self.domain.1.log10());
        let lv = if v > 0.0 { v.log10() } else { l0 };
        let f = ((lv - l0) / (l1 - l0)).clamp(0.0, 1.0);
        self.range.0 + f * (self.range.1 - self.range.0)
    }

    /// One tick per decade.
    pub fn ticks(&self) -> Vec<f64> {
        let (b, t) = (
            self.domain.0.log10().round() as i32,
            self.domain.1.log10().round() as i32,
        );
        (b..=t).map(|e| 10f64.powi(e)).collect()
    }
}

/// A round step (1, 2 or 5 times a power of 10) that cuts `0..max` into at most `n` parts.
pub fn nice_step(max: f64, n: usize) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

/// Ticks `0, step, 2 step, ...` up to the first one at or above `max` (so the last tick is the
/// axis' top), at most `n` steps.
pub fn linear_ticks(max: f64, n: usize) -> Vec<f64> {
    let step = nice_step(max, n);
    let mut ticks = vec![0.0];
    while *ticks.last().unwrap_or(&0.0) < max {
        let next = ticks.len() as f64 * step;
        ticks.push(next);
    }
    ticks
}

/// Ticks on the time axis, ms: a round number of seconds apart, at most about `n` of them.
pub fn time_ticks(end_ms: u64, n: u64) -> Vec<u64> {
    const STEPS_S: [u64; 12] = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600];
    let step_s = STEPS_S
        .into_iter()
        .find(|s| end_ms / (s * 1000) <= n)
        .unwrap_or(7200);
    (0..=end_ms / (step_s * 1000))
        .map(|i| i * step_s * 1000)
        .collect()
}

/// A path through `points`, broken where a point is `None` (a second without data).
pub fn line_path(points: impl IntoIterator<Item = Option<(f64, f64)>>) -> String {
    let mut d = String::new();
    let mut pen_down = false;
    for p in points {
        match p {
            Some((x, y)) => {
                d.push_str(if pen_down { " L" } else { " M" });
                d.push_str(&format!("{},{}", px(x), px(y)));
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    d.trim_start().to_owned()
}

/// A closed step area under per-interval values: each `(x0, x1, y)` is one flat step, and the
/// area closes down to `base` between gaps.
pub fn step_area(steps: impl IntoIterator<Item = (f64, f64, f64)>, base: f64) -> String {
    let mut d = String::new();
    let mut last_x: Option<f64> = None;
    for (x0, x1, y) in steps {
        match last_x {
            Some(lx) if (lx - x0).abs() < 0.01 => {}
            Some(lx) => d.push_str(&format!(
                " L{},{} M{},{}",
                px(lx),
                px(base),
                px(x0),
                px(base)
            )),
            None => d.push_str(&format!(" M{},{}", px(x0), px(base))),
        }
        d.push_str(&format!(" L{},{} L{},{}", px(x0), px(y), px(x1), px(y)));
        last_x = Some(x1);
    }
    if let Some(lx) = last_x {
        d.push_str(&format!(" L{},{} Z", px(lx), px(base)));
    }
    d.trim_start().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_and_log_scales_map_their_ends() {
        let y = Linear {
            domain: (0.0, 100.0),
            range: (200.0, 100.0),
        };
        assert_eq!((y.map(0.0), y.map(50.0), y.map(1e9)), (200.0, 150.0, 100.0));
        let l = Log::covering([0.4, 12.0, 8500.0], 2, (100.0, 0.0)).unwrap();
        assert_eq!(l.domain, (0.1, 10_000.0));
        assert_eq!(l.ticks(), vec![0.1, 1.0, 10.0, 100.0, 1000.0, 10_000.0]);
        assert_eq!(l.map(0.1), 100.0);
        assert_eq!(l.map(0.0), 100.0);
        assert_eq!(l.map(10_000.0), 0.0);
        let narrow = Log::covering([5.0, 6.0], 2, (1.0, 0.0)).unwrap();
        assert_eq!(narrow.domain, (0.1, 10.0));
        assert!(Log::covering([0.0, f64::NAN], 2, (1.0, 0.0)).is_none());
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(linear_ticks(47.0, 4), vec![0.0, 20.0, 40.0, 60.0]);
        assert_eq!(nice_step(210.0, 4), 100.0);
        assert_eq!(
            time_ticks(62_400, 12),
            (0..=12).map(|i| i * 5000).collect::<Vec<_>>()
        );
        assert_eq!(time_ticks(3000, 12), vec![0, 1000, 2000, 3000]);
    }

    #[test]
    fn paths_break_at_gaps() {
        let d = line_path([Some((0.0, 1.0)), Some((2.0, 3.0)), None, Some((4.0, 5.0))]);
        assert_eq!(d, "M0,1 L2,3 M4,5");
        let a = step_area([(0.0, 1.0, 5.0), (1.0, 2.0, 6.0), (3.0, 4.0, 7.0)], 10.0);
        assert_eq!(a, "M0,10 L0,5 L1,5 L1,6 L2,6 L2,10 M3,10 L3,7 L4,7 L4,10 Z");
    }
}
