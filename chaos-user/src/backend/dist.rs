//! Jitter distribution tables for the kernel (netem's idea: the program draws a uniform index and
//! reads a quantile, scaled by `DIST_SCALE`, so any shape costs one map lookup).

use chaos_common::net::{DIST_SCALE, DIST_TABLE_SIZE, dist};

/// Inverse of the standard normal CDF (Acklam's rational approximation, relative error below
/// 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Pareto (shape 3, the shape iproute2's table uses) quantile, centred and scaled to unit sigma.
pub fn pareto_quantile(p: f64) -> f64 {
    const SHAPE: f64 = 3.0;
    let mean = SHAPE / (SHAPE - 1.0);
    let sigma = (SHAPE / ((SHAPE - 1.0).powi(2) * (SHAPE - 2.0))).sqrt();
    ((1.0 - p).powf(-1.0 / SHAPE) - mean) / sigma
}

/// The table for `kind`: `DIST_TABLE_SIZE` quantiles at the bucket midpoints, in units of
/// `sigma / DIST_SCALE`, clipped to the i16 range (about +-4 sigma).
pub fn table(kind: u32) -> Vec<i16> {
    let mut x: Vec<f64> = (0..DIST_TABLE_SIZE)
        .map(|i| {
            let p = (f64::from(i) + 0.5) / f64::from(DIST_TABLE_SIZE);
            match kind {
                dist::NORMAL => normal_quantile(p),
                dist::PARETO => pareto_quantile(p),
                // A comonotone blend, a quarter normal and three quarters pareto.
                _ => 0.25 * normal_quantile(p) + 0.75 * pareto_quantile(p),
            }
        })
        .collect();
    // Centre and scale to unit sigma *as stored*: the i16 range clips the heavy tails at about
    // 4 sigma, which would shrink the spread, so rescale and clip until it settles.
    let limit = 32767.0 / DIST_SCALE as f64;
    for _ in 0..8 {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let sigma = (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        x.iter_mut()
            .for_each(|v| *v = ((*v - mean) / sigma).clamp(-limit, limit));
    }
    x.iter()
        .map(|v| (v * DIST_SCALE as f64).round().clamp(-32767.0, 32767.0) as i16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(t: &[i16]) -> (f64, f64) {
        let n = t.len() as f64;
        let mean = t.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = t
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean / DIST_SCALE as f64, var.sqrt() / DIST_SCALE as f64)
    }

    #[test]
    fn tables_are_centred_with_unit_sigma() {
        for kind in [dist::NORMAL, dist::PARETO, dist::PARETONORMAL] {
            let t = table(kind);
            assert_eq!(t.len(), DIST_TABLE_SIZE as usize);
            assert!(t.windows(2).all(|w| w[0] <= w[1]), "quantiles ascend");
            let (mean, sigma) = moments(&t);
            assert!(mean.abs() < 0.1, "kind {kind}: mean {mean}");
            assert!((sigma - 1.0).abs() < 0.02, "kind {kind}: sigma {sigma}");
        }
        assert!((normal_quantile(0.975) - 1.959_964).abs() < 1e-5);
    }
}
