//! Running baselines (F0) and ΔF/F for fluorescence traces.
//!
//! Inputs are single-ROI fluorescence traces `f` (one sample per frame, `f32`).
//! Outputs are traces of the same length:
//!
//! * [`maximin`] — the "maximin" baseline of Suite2p (Pachitariu et al. 2017,
//!   "Suite2p: beyond 10,000 neurons with standard two-photon microscopy",
//!   bioRxiv 061507): Gaussian smoothing, then a running minimum, then a
//!   running maximum over the same centred window. The min/max pair is a
//!   morphological opening, so the result never exceeds the smoothed trace and
//!   removes transients shorter than the window while following slow drift.
//! * [`running_percentile`] — a running low percentile, the other common
//!   choice of F0.
//! * [`dff`] — ΔF/F = (F − F0)/F0 with a guard that keeps the division finite.
//!
//! Window convention: a window of `W` frames centred on frame `t` covers
//! `t − (W−1)/2 ..= t + W/2` (integer division), clipped to the trace. `W = 0`
//! is treated as `W = 1` (the frame itself).
//!
//! Missing data: NaN and ±∞ samples are treated as missing. They are skipped
//! by every window statistic; a frame whose whole window is missing yields NaN.
//! No function here panics, whatever the input.

use std::collections::VecDeque;

/// Suite2p-style "maximin" baseline.
///
/// Gaussian-smooth with standard deviation `sigma_frames` (0, negative or
/// non-finite = no smoothing), then take a running minimum over a centred
/// window of `window_frames`, then a running maximum over the same window.
/// Windows are clipped at the trace ends. Runs in O(T·σ + T).
pub fn maximin(f: &[f32], sigma_frames: f32, window_frames: usize) -> Vec<f32> {
    let smoothed = gaussian_smooth(f, sigma_frames);
    let lower = running_extreme(&smoothed, window_frames, Extreme::Min);
    running_extreme(&lower, window_frames, Extreme::Max)
}

/// Running `percentile` (0–100, linear interpolation between order statistics)
/// over a centred window of `window_frames` frames, clipped at the edges.
///
/// The window is kept sorted; each frame inserts one sample and removes one by
/// binary search, so the cost is O(T·W) element moves in the worst case (a
/// `memmove`, fast in practice) rather than O(T·W·log W) for re-sorting.
/// A NaN `percentile` is treated as 50 (the median); others are clamped to
/// [0, 100].
pub fn running_percentile(f: &[f32], window_frames: usize, percentile: f32) -> Vec<f32> {
    let n = f.len();
    let q = sanitize_percentile(percentile);
    let (before, after) = window_halves(window_frames);
    let mut window: Vec<f32> = Vec::with_capacity(window_frames.clamp(1, n.max(1)) + 1);
    let mut out = Vec::with_capacity(n);
    let mut next_in = 0;
    let mut next_out = 0;
    for t in 0..n {
        let right = t.saturating_add(after).min(n - 1);
        while next_in <= right {
            insert_sorted(&mut window, f[next_in]);
            next_in += 1;
        }
        let left = t.saturating_sub(before);
        while next_out < left {
            remove_sorted(&mut window, f[next_out]);
            next_out += 1;
        }
        out.push(percentile_of_sorted(&window, q));
    }
    out
}

/// ΔF/F = (F − F0′)/F0′ where F0′ = max(F0, floor) is the guarded baseline.
///
/// Rule: `floor = max(floor_fraction × m, f32::EPSILON × max(m, 1))`, where
/// `m` is the median of |F0| over the finite F0 samples (0 if none). The first
/// term keeps ΔF/F bounded where F0 dips towards zero relative to the trace's
/// typical level; the second guarantees a strictly positive floor even when
/// `floor_fraction` is 0 or the whole F0 is zero or negative. The guarded F0′
/// replaces F0 in both numerator and denominator, so a frame with F = F0 ≤ floor
/// gives (F − floor)/floor rather than 0.
///
/// A negative or non-finite `floor_fraction` is treated as 0. The output has
/// `min(f.len(), f0.len())` frames. A frame where F or F0 is non-finite gives
/// NaN; otherwise the result is always finite (clamped to ±`f32::MAX`).
pub fn dff(f: &[f32], f0: &[f32], floor_fraction: f32) -> Vec<f32> {
    let floor = baseline_floor(f0, floor_fraction);
    f.iter()
        .zip(f0)
        .map(|(&fi, &f0i)| guarded_dff(fi, f0i, floor))
        .collect()
}

/// The guard value described in [`dff`].
fn baseline_floor(f0: &[f32], floor_fraction: f32) -> f64 {
    let mut magnitudes: Vec<f32> = f0
        .iter()
        .filter(|v| v.is_finite())
        .map(|v| v.abs())
        .collect();
    magnitudes.sort_unstable_by(f32::total_cmp);
    let m = f64::from(percentile_of_sorted(&magnitudes, 50.0));
    let m = if m.is_finite() { m } else { 0.0 };
    let fraction = if floor_fraction.is_finite() && floor_fraction > 0.0 {
        f64::from(floor_fraction)
    } else {
        0.0
    };
    (fraction * m).max(f64::from(f32::EPSILON) * m.max(1.0))
}

/// One frame of ΔF/F; computed in f64 so that the clamp, not an overflow,
/// decides the result for extreme inputs.
fn guarded_dff(f: f32, f0: f32, floor: f64) -> f32 {
    if !f.is_finite() || !f0.is_finite() {
        return f32::NAN;
    }
    let f0_guarded = f64::from(f0).max(floor);
    let ratio = (f64::from(f) - f0_guarded) / f0_guarded;
    ratio.clamp(-f64::from(f32::MAX), f64::from(f32::MAX)) as f32
}

/// Frames before and after the centre covered by a window of `window_frames`.
fn window_halves(window_frames: usize) -> (usize, usize) {
    let w = window_frames.max(1);
    ((w - 1) / 2, w / 2)
}

/// Normalised Gaussian smoothing that skips missing samples.
///
/// Weights are renormalised over the finite samples actually inside the
/// (edge-clipped) kernel, so edges and gaps are not pulled towards zero.
/// The kernel is truncated at 4σ, where its weight is below 0.04 %.
fn gaussian_smooth(f: &[f32], sigma: f32) -> Vec<f32> {
    if !sigma.is_finite() || sigma <= 0.0 || f.is_empty() {
        return f.to_vec();
    }
    let n = f.len();
    let sigma = f64::from(sigma);
    // Saturating float→int cast; capping at n keeps huge σ finite in cost.
    let radius = ((4.0 * sigma).ceil() as usize).min(n);
    let weights: Vec<f64> = (0..=radius)
        // Written as (k/σ)² so a subnormal σ cannot produce 0/0 at k = 0.
        .map(|k| (-0.5 * (k as f64 / sigma).powi(2)).exp())
        .collect();
    (0..n)
        .map(|t| {
            let lo = t.saturating_sub(radius);
            let hi = t.saturating_add(radius).min(n - 1);
            let (mut acc, mut norm) = (0.0f64, 0.0f64);
            for (u, &v) in f.iter().enumerate().take(hi + 1).skip(lo) {
                if v.is_finite() {
                    let w = weights[t.abs_diff(u)];
                    acc += w * f64::from(v);
                    norm += w;
                }
            }
            if norm > 0.0 {
                (acc / norm) as f32
            } else {
                f32::NAN
            }
        })
        .collect()
}

/// Which running extreme to compute.
#[derive(Clone, Copy)]
enum Extreme {
    Min,
    Max,
}

impl Extreme {
    /// True when `candidate`, arriving later, makes `incumbent` irrelevant to
    /// every future window (it is at least as extreme and leaves later).
    fn supersedes(self, candidate: f32, incumbent: f32) -> bool {
        match self {
            Extreme::Min => candidate <= incumbent,
            Extreme::Max => candidate >= incumbent,
        }
    }
}

/// Running min or max over a centred, edge-clipped window in O(T) using a
/// monotone deque of indices: each index is pushed and popped at most once.
/// Missing samples are never pushed; an all-missing window yields NaN.
fn running_extreme(x: &[f32], window_frames: usize, which: Extreme) -> Vec<f32> {
    let n = x.len();
    let (before, after) = window_halves(window_frames);
    let mut deque: VecDeque<usize> = VecDeque::new();
    let mut out = Vec::with_capacity(n);
    let mut next_in = 0;
    for t in 0..n {
        let right = t.saturating_add(after).min(n - 1);
        while next_in <= right {
            let v = x[next_in];
            if v.is_finite() {
                while deque.back().is_some_and(|&b| which.supersedes(v, x[b])) {
                    deque.pop_back();
                }
                deque.push_back(next_in);
            }
            next_in += 1;
        }
        let left = t.saturating_sub(before);
        while deque.front().is_some_and(|&i| i < left) {
            deque.pop_front();
        }
        out.push(deque.front().map_or(f32::NAN, |&i| x[i]));
    }
    out
}

/// NaN → median; everything else clamped into [0, 100].
fn sanitize_percentile(p: f32) -> f64 {
    if p.is_nan() {
        50.0
    } else {
        f64::from(p).clamp(0.0, 100.0)
    }
}

/// Insert a finite sample keeping `window` sorted (missing samples ignored).
fn insert_sorted(window: &mut Vec<f32>, v: f32) {
    if v.is_finite() {
        let pos = window.partition_point(|w| w.total_cmp(&v).is_lt());
        window.insert(pos, v);
    }
}

/// Remove one copy of a finite sample previously inserted.
fn remove_sorted(window: &mut Vec<f32>, v: f32) {
    if v.is_finite() {
        let pos = window.partition_point(|w| w.total_cmp(&v).is_lt());
        if window.get(pos).is_some_and(|w| w.total_cmp(&v).is_eq()) {
            window.remove(pos);
        }
    }
}

/// Percentile `q` ∈ [0, 100] of sorted finite values, interpolating linearly
/// between the order statistics at ranks ⌊r⌋ and ⌈r⌉, r = q/100·(n−1).
/// NaN for an empty slice.
fn percentile_of_sorted(sorted: &[f32], q: f64) -> f32 {
    let n = sorted.len();
    if n == 0 {
        return f32::NAN;
    }
    let rank = q / 100.0 * (n - 1) as f64;
    let lo = (rank.floor() as usize).min(n - 1);
    let hi = (rank.ceil() as usize).min(n - 1);
    let frac = rank - lo as f64;
    let a = f64::from(sorted[lo]);
    let b = f64::from(sorted[hi]);
    (a + frac * (b - a)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::extract::test_rng::Rng;

    /// Reference percentile: copy the window, sort it, interpolate.
    fn naive_running_percentile(f: &[f32], w: usize, p: f32) -> Vec<f32> {
        let n = f.len();
        let w = w.max(1);
        let (before, after) = ((w - 1) / 2, w / 2);
        (0..n)
            .map(|t| {
                let lo = t.saturating_sub(before);
                let hi = (t + after).min(n - 1);
                let mut v: Vec<f32> = f[lo..=hi]
                    .iter()
                    .copied()
                    .filter(|x| x.is_finite())
                    .collect();
                v.sort_by(f32::total_cmp);
                if v.is_empty() {
                    return f32::NAN;
                }
                let r = f64::from(p) / 100.0 * (v.len() - 1) as f64;
                let (i, j) = (r.floor() as usize, r.ceil() as usize);
                let frac = r - r.floor();
                (f64::from(v[i]) * (1.0 - frac) + f64::from(v[j]) * frac) as f32
            })
            .collect()
    }

    fn assert_close_or_both_nan(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (t, (x, y)) in a.iter().zip(b).enumerate() {
            if x.is_nan() || y.is_nan() {
                assert!(x.is_nan() && y.is_nan(), "frame {t}: {x} vs {y}");
            } else {
                assert!(
                    (x - y).abs() <= tol * (1.0 + y.abs()),
                    "frame {t}: {x} vs {y}"
                );
            }
        }
    }

    #[test]
    fn empty_inputs_give_empty_outputs() {
        assert!(maximin(&[], 2.0, 10).is_empty());
        assert!(running_percentile(&[], 10, 8.0).is_empty());
        assert!(dff(&[], &[], 0.1).is_empty());
        assert!(dff(&[1.0], &[], 0.1).is_empty());
    }

    #[test]
    fn maximin_tracks_slow_ramp_under_transients() {
        let n = 3000;
        let window = 301;
        let ramp: Vec<f32> = (0..n).map(|t| 100.0 + 0.01 * t as f32).collect();
        let mut rng = Rng(7);
        let f: Vec<f32> = (0..n)
            .map(|t| {
                // A transient every 200 frames, decaying with τ = 10 frames.
                let since = (t % 200) as f32;
                let transient = if t >= 50 {
                    40.0 * (-since / 10.0).exp()
                } else {
                    0.0
                };
                ramp[t] + transient + 0.5 * rng.gaussian() as f32
            })
            .collect();
        let base = maximin(&f, 3.0, window);
        assert_eq!(base.len(), n);
        // Interior: within the noise floor of the ramp despite 40-unit transients.
        for t in window..n - window {
            assert!(
                (base[t] - ramp[t]).abs() < 1.0,
                "frame {t}: baseline {} vs ramp {}",
                base[t],
                ramp[t]
            );
        }
        // Opening never exceeds the smoothed signal.
        let smooth = gaussian_smooth(&f, 3.0);
        assert!(base.iter().zip(&smooth).all(|(b, s)| b <= s));
    }

    #[test]
    fn maximin_without_smoothing_is_an_opening() {
        let f = [5.0, 1.0, 4.0, 4.0, 0.0, 3.0, 9.0, 2.0];
        let base = maximin(&f, 0.0, 3);
        // min over 3 = [1,1,1,0,0,0,2,2]; max over 3 = [1,1,1,1,0,2,2,2]
        assert_eq!(base, vec![1.0, 1.0, 1.0, 1.0, 0.0, 2.0, 2.0, 2.0]);
        assert!(base.iter().zip(&f).all(|(b, x)| b <= x));
        // Window 0 or 1 is the identity.
        assert_eq!(maximin(&f, 0.0, 0), f.to_vec());
        assert_eq!(maximin(&f, 0.0, 1), f.to_vec());
    }

    #[test]
    fn maximin_skips_missing_samples() {
        let f = [3.0, f32::NAN, 1.0, f32::INFINITY, 2.0];
        let base = maximin(&f, 0.0, 3);
        assert!(base.iter().all(|v| v.is_finite()));
        let all_missing = maximin(&[f32::NAN; 4], 1.0, 3);
        assert!(all_missing.iter().all(|v| v.is_nan()));
        // Non-finite sigma means no smoothing rather than a panic; a subnormal
        // sigma is a delta kernel.
        assert_eq!(maximin(&[1.0, 2.0], f32::NAN, 1), vec![1.0, 2.0]);
        assert_eq!(maximin(&[1.0, 2.0], 1e-44, 1), vec![1.0, 2.0]);
    }

    #[test]
    fn running_percentile_matches_naive_resort() {
        let mut rng = Rng(99);
        let f: Vec<f32> = (0..400).map(|_| (rng.gaussian() * 3.0) as f32).collect();
        for &w in &[1usize, 2, 7, 50, 51, 399, 1000] {
            for &p in &[0.0f32, 8.0, 50.0, 99.5, 100.0] {
                let fast = running_percentile(&f, w, p);
                let slow = naive_running_percentile(&f, w, p);
                assert_close_or_both_nan(&fast, &slow, 1e-6);
            }
        }
    }

    #[test]
    fn running_percentile_handles_ties_and_missing() {
        let mut rng = Rng(3);
        let f: Vec<f32> = (0..300)
            .map(|i| {
                if i % 17 == 0 {
                    f32::NAN
                } else {
                    (rng.uniform() * 4.0).floor() as f32
                }
            })
            .collect();
        let fast = running_percentile(&f, 20, 30.0);
        let slow = naive_running_percentile(&f, 20, 30.0);
        assert_close_or_both_nan(&fast, &slow, 1e-6);
        // NaN percentile means median; out-of-range values clamp.
        assert_eq!(
            running_percentile(&f, 20, f32::NAN),
            running_percentile(&f, 20, 50.0)
        );
        assert_eq!(
            running_percentile(&f, 20, 250.0),
            running_percentile(&f, 20, 100.0)
        );
    }

    #[test]
    fn dff_is_exact_for_positive_baseline() {
        let f0 = [10.0, 20.0, 40.0];
        let f = [15.0, 20.0, 20.0];
        assert_eq!(dff(&f, &f0, 0.1), vec![0.5, 0.0, -0.5]);
    }

    #[test]
    fn dff_guard_keeps_output_finite_for_nonpositive_baseline() {
        let f0 = [0.0, -5.0, 1e-30, -0.0, 100.0, 100.0];
        let f = [1.0, 2.0, 3.0, f32::MAX, -f32::MAX, 100.0];
        let out = dff(&f, &f0, 0.05);
        assert!(out.iter().all(|v| v.is_finite()), "{out:?}");
        // median |F0| = 2.5 → floor = max(0.05·2.5, ε·2.5) = 0.125.
        assert!((out[0] - (1.0 - 0.125) / 0.125).abs() < 1e-4);
        assert!((out[5]).abs() < 1e-6);
        // Zero fraction still divides by a strictly positive floor.
        let zeros = dff(&[1.0, 0.0], &[0.0, 0.0], 0.0);
        assert!(zeros.iter().all(|v| v.is_finite()));
        assert!(zeros[0] > 0.0);
        // Non-finite inputs propagate as NaN instead of panicking.
        let bad = dff(&[f32::NAN, 1.0], &[1.0, f32::INFINITY], f32::NAN);
        assert!(bad.iter().all(|v| v.is_nan()));
    }

    #[test]
    #[ignore = "timing report, run with --ignored --nocapture"]
    fn speed_report() {
        let mut rng = Rng(5);
        let f: Vec<f32> = (0..20_000).map(|_| rng.gaussian() as f32).collect();
        let t0 = std::time::Instant::now();
        let p = running_percentile(&f, 1_000, 8.0);
        let t_pct = t0.elapsed();
        let t0 = std::time::Instant::now();
        let m = maximin(&f, 10.0, 1_000);
        let t_mm = t0.elapsed();
        assert_eq!((p.len(), m.len()), (20_000, 20_000));
        println!("running_percentile T=20000 W=1000: {t_pct:?}; maximin σ=10 W=1000: {t_mm:?}");
    }
}
