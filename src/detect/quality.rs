//! Per-ROI quality measures and the `is_cell` decision.
//!
//! In: a footprint and its binned trace. Out: size, compactness, signal-to-noise
//! ratio and skewness. Compactness follows Suite2p's definition (mean distance of
//! the pixels from the centroid over that of a disc with as many pixels: 1 for a
//! disc, larger for elongated or ragged shapes).

use super::binned::noise_sd;

/// Quality of one ROI.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quality {
    pub npix: usize,
    pub compactness: f32,
    /// (99th percentile − median) of the binned trace over its noise s.d.; 0 for
    /// anatomical ROIs, which have no trace yet.
    pub snr: f32,
    pub skewness: f32,
}

/// Mean distance from the centroid over a disc's (2/3 of its radius).
pub fn compactness(pixels: &[u32], width: usize) -> f32 {
    let n = pixels.len();
    if n == 0 {
        return f32::NAN;
    }
    let (sx, sy) = pixels.iter().fold((0f64, 0f64), |(sx, sy), &p| {
        (
            sx + (p as usize % width) as f64,
            sy + (p as usize / width) as f64,
        )
    });
    let (cx, cy) = (sx / n as f64, sy / n as f64);
    let mean_dist = pixels
        .iter()
        .map(|&p| ((p as usize % width) as f64 - cx).hypot((p as usize / width) as f64 - cy))
        .sum::<f64>()
        / n as f64;
    let disc = 2.0 / 3.0 * (n as f64 / std::f64::consts::PI).sqrt();
    // A single pixel or a tiny disc: the discrete mean distance undershoots.
    (mean_dist / disc).max(1.0) as f32
}

fn percentile(sorted: &[f32], q: f64) -> f32 {
    if sorted.is_empty() {
        return f32::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let f = (pos - lo as f64) as f32;
    sorted[lo] * (1.0 - f) + sorted[hi] * f
}

/// (99th percentile − median) / `noise` (the trace's own noise estimate when
/// `noise` is not positive).
pub fn trace_snr(trace: &[f32], noise: f32) -> f32 {
    let noise = if noise > 0.0 { noise } else { noise_sd(trace) };
    if !(noise > 0.0) {
        return 0.0;
    }
    let mut s = trace.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    (percentile(&s, 0.99) - percentile(&s, 0.5)) / noise
}

/// Sample skewness (0 for fewer than 3 values or no variance).
pub fn skewness(trace: &[f32]) -> f32 {
    let n = trace.len() as f64;
    if n < 3.0 {
        return 0.0;
    }
    let mean = trace.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (m2, m3) = trace.iter().fold((0f64, 0f64), |(a, b), &v| {
        let d = v as f64 - mean;
        (a + d * d, b + d * d * d)
    });
    let (m2, m3) = (m2 / n, m3 / n);
    if m2 > 0.0 {
        (m3 / m2.powf(1.5)) as f32
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disc_is_compact_and_a_line_is_not() {
        let w = 50;
        let disc: Vec<u32> = (0..w * w)
            .filter(|p| ((p % w) as f64 - 25.0).hypot((p / w) as f64 - 25.0) <= 6.0)
            .map(|p| p as u32)
            .collect();
        let line: Vec<u32> = (0..40).map(|x| (25 * w + x) as u32).collect();
        assert!(compactness(&disc, w) < 1.05);
        assert!(compactness(&line, w) > 2.0);
    }

    #[test]
    fn snr_and_skew_separate_transients_from_noise() {
        let noise: Vec<f32> = (0..400)
            .map(|i| ((i * 37 % 101) as f32 / 101.0) - 0.5)
            .collect();
        let mut active = noise.clone();
        for t in (0..400).step_by(20) {
            active[t] += 8.0;
            active[t + 1] += 4.0;
        }
        assert!(trace_snr(&active, 0.0) > 3.0 * trace_snr(&noise, 0.0).max(0.1));
        assert!(skewness(&active) > 2.0);
        assert!(skewness(&noise).abs() < 0.5);
        assert_eq!(trace_snr(&[1.0; 10], 0.0), 0.0);
        assert!((trace_snr(&active, 1.0) - trace_snr(&active, 2.0) * 2.0).abs() < 1e-4);
    }
}
