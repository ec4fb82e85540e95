//! Sub-pixel resampling with Catmull–Rom (Keys, a = −½) cubic interpolation.
//!
//! `corrected(x, y) = frame(x + dx, y + dy)`: the contract's convention, so a
//! frame whose content moved by +d is brought back by sampling it at x + d.
//! Samples outside the frame take the nearest edge value.

/// Catmull–Rom weights of the four neighbours at offsets −1, 0, 1, 2 for a
/// fractional position `t ∈ [0, 1)`.
#[inline]
pub fn catmull_rom(t: f64) -> [f64; 4] {
    let t2 = t * t;
    let t3 = t2 * t;
    [
        0.5 * (-t3 + 2.0 * t2 - t),
        0.5 * (3.0 * t3 - 5.0 * t2 + 2.0),
        0.5 * (-3.0 * t3 + 4.0 * t2 + t),
        0.5 * (t3 - t2),
    ]
}

/// Taps (clamped indices) and weights for sampling position `i + d` along an axis
/// of length `n`.
#[inline]
fn taps(pos: f64, n: usize) -> ([usize; 4], [f32; 4]) {
    let base = pos.floor();
    let w = catmull_rom(pos - base);
    let b = base as isize;
    let last = n as isize - 1;
    let idx = [
        (b - 1).clamp(0, last) as usize,
        b.clamp(0, last) as usize,
        (b + 1).clamp(0, last) as usize,
        (b + 2).clamp(0, last) as usize,
    ];
    (idx, [w[0] as f32, w[1] as f32, w[2] as f32, w[3] as f32])
}

/// Rigid sub-pixel shift: `out(x, y) = src(x + dx, y + dy)`, separable cubic.
/// `tmp` must hold at least min(4, h) rows.
///
/// Rows are interpolated along x on demand into a ring of four rows in `tmp`,
/// and each output row combines four of them, so every source row is resampled
/// once and the working set stays in cache.
pub fn shift_image(
    src: &[f32],
    w: usize,
    h: usize,
    dx: f64,
    dy: f64,
    tmp: &mut [f32],
    out: &mut [f32],
) {
    crate::simd::wide(|| {
        let rows = RowShifter::new(w, dx);
        let ring = &mut tmp[..h.min(4) * w];
        let mut held = [usize::MAX; 4];
        for y in 0..h {
            let (idx, wt) = taps(y as f64 + dy, h);
            // The four taps are consecutive rows (repeated at the clamped edges), so
            // row r can live in slot r mod 4.
            for &r in &idx {
                let slot = r % 4;
                if held[slot] != r {
                    rows.shift(
                        &src[r * w..(r + 1) * w],
                        &mut ring[slot * w..(slot + 1) * w],
                    );
                    held[slot] = r;
                }
            }
            let row = |j: usize| &ring[(idx[j] % 4) * w..(idx[j] % 4 + 1) * w];
            let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
            let dst = &mut out[y * w..(y + 1) * w];
            for ((((d, a), b), c), e) in dst.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
                *d = wt[0] * a + wt[1] * b + wt[2] * c + wt[3] * e;
            }
        }
    })
}

/// Resamples rows at `x + dx`: every pixel shares the fractional weights; only
/// the pixels whose taps leave the row need clamped indices.
struct RowShifter {
    edge_taps: Vec<(usize, [usize; 4], [f32; 4])>,
    weights: [f32; 4],
    /// Interior output range [lo, hi) and the source index of its first tap.
    lo: usize,
    hi: usize,
    first_tap: usize,
}

impl RowShifter {
    fn new(w: usize, dx: f64) -> Self {
        let (_, weights) = taps(dx, w.max(4));
        let shift = dx.floor() as isize;
        // Interior pixels, whose four taps are all inside the row: x − 1 + shift ≥ 0
        // and x + 2 + shift ≤ w − 1.
        let lo = (1 - shift).clamp(0, w as isize) as usize;
        let hi = (w as isize - 2 - shift).clamp(lo as isize, w as isize) as usize;
        let edge_taps = (0..lo)
            .chain(hi..w)
            .map(|x| {
                let (idx, wt) = taps(x as f64 + dx, w);
                (x, idx, wt)
            })
            .collect();
        let first_tap = (lo as isize + shift - 1).max(0) as usize;
        RowShifter {
            edge_taps,
            weights,
            lo,
            hi,
            first_tap,
        }
    }

    #[inline(always)]
    fn shift(&self, row: &[f32], dst: &mut [f32]) {
        for &(x, idx, wt) in &self.edge_taps {
            dst[x] = wt[0] * row[idx[0]]
                + wt[1] * row[idx[1]]
                + wt[2] * row[idx[2]]
                + wt[3] * row[idx[3]];
        }
        let n = self.hi - self.lo;
        if n == 0 {
            return;
        }
        let b = self.first_tap;
        let wt = self.weights;
        let (t0, t1, t2, t3) = (
            &row[b..b + n],
            &row[b + 1..b + 1 + n],
            &row[b + 2..b + 2 + n],
            &row[b + 3..b + 3 + n],
        );
        for ((((d, a), p), c), e) in dst[self.lo..self.hi]
            .iter_mut()
            .zip(t0)
            .zip(t1)
            .zip(t2)
            .zip(t3)
        {
            *d = wt[0] * a + wt[1] * p + wt[2] * c + wt[3] * e;
        }
    }
}

/// Per-pixel warp: `out(x, y) = src(x + dx(x, y), y + dy(x, y))`, bicubic.
pub fn warp_image(src: &[f32], w: usize, h: usize, dx: &[f32], dy: &[f32], out: &mut [f32]) {
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let (ix, wx) = taps(x as f64 + dx[i] as f64, w);
            let (iy, wy) = taps(y as f64 + dy[i] as f64, h);
            let mut acc = 0.0f32;
            for j in 0..4 {
                let row = &src[iy[j] * w..iy[j] * w + w];
                acc += wy[j]
                    * (wx[0] * row[ix[0]]
                        + wx[1] * row[ix[1]]
                        + wx[2] * row[ix[2]]
                        + wx[3] * row[ix[3]]);
            }
            out[i] = acc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_shift_moves_content_and_weights_sum_to_one() {
        for t in [0.0, 0.25, 0.5, 0.9] {
            let s: f64 = catmull_rom(t).iter().sum();
            assert!((s - 1.0).abs() < 1e-12);
        }
        let (w, h) = (8, 6);
        let src: Vec<f32> = (0..w * h).map(|i| i as f32).collect();
        let mut tmp = vec![0.0; w * h];
        let mut out = vec![0.0; w * h];
        shift_image(&src, w, h, 2.0, 1.0, &mut tmp, &mut out);
        // out(x, y) = src(x + 2, y + 1) away from the clamped border.
        assert_eq!(out[0], src[w + 2]);
        assert_eq!(out[2 * w + 3], src[3 * w + 5]);
    }

    #[test]
    fn warp_with_constant_field_equals_shift() {
        let (w, h) = (12, 10);
        let src: Vec<f32> = (0..w * h).map(|i| ((i * 7) % 13) as f32).collect();
        let mut tmp = vec![0.0; w * h];
        let mut a = vec![0.0; w * h];
        let mut b = vec![0.0; w * h];
        shift_image(&src, w, h, 0.3, -0.7, &mut tmp, &mut a);
        warp_image(&src, w, h, &vec![0.3; w * h], &vec![-0.7; w * h], &mut b);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-4);
        }
    }

    #[test]
    fn shift_matches_the_per_pixel_warp_for_any_size_and_shift() {
        for (w, h) in [(12, 10), (9, 1), (7, 2), (5, 3), (16, 4)] {
            let src: Vec<f32> = (0..w * h).map(|i| ((i * 7) % 13) as f32).collect();
            for (dx, dy) in [
                (0.0, 0.0),
                (-5.2, 3.9),
                (13.0, -11.5),
                (1.5, 0.25),
                (-0.6, -2.0),
            ] {
                let mut tmp = vec![0.0; h.min(4) * w];
                let mut a = vec![0.0; w * h];
                let mut b = vec![0.0; w * h];
                shift_image(&src, w, h, dx, dy, &mut tmp, &mut a);
                warp_image(
                    &src,
                    w,
                    h,
                    &vec![dx as f32; w * h],
                    &vec![dy as f32; w * h],
                    &mut b,
                );
                for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                    assert!(
                        (x - y).abs() < 1e-3,
                        "{w}x{h} ({dx},{dy}) pixel {i}: {x} vs {y}"
                    );
                }
            }
        }
    }
}
