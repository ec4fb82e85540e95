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
/// `tmp` must hold `w × h` values.
pub fn shift_image(
    src: &[f32],
    w: usize,
    h: usize,
    dx: f64,
    dy: f64,
    tmp: &mut [f32],
    out: &mut [f32],
) {
    // Along rows: every pixel shares the fractional weights; only edges clamp.
    let row_taps: Vec<([usize; 4], [f32; 4])> = (0..w).map(|x| taps(x as f64 + dx, w)).collect();
    let (_, wt) = taps(dx, w.max(4));
    let shift = dx.floor() as isize;
    // Interior pixels, whose four taps are all inside the row: x − 1 + shift ≥ 0
    // and x + 2 + shift ≤ w − 1.
    let lo = (1 - shift).clamp(0, w as isize) as usize;
    let hi = (w as isize - 2 - shift).clamp(lo as isize, w as isize) as usize;
    for y in 0..h {
        let row = &src[y * w..(y + 1) * w];
        let dst = &mut tmp[y * w..(y + 1) * w];
        for x in (0..lo).chain(hi..w) {
            let (idx, wt) = &row_taps[x];
            dst[x] = wt[0] * row[idx[0]]
                + wt[1] * row[idx[1]]
                + wt[2] * row[idx[2]]
                + wt[3] * row[idx[3]];
        }
        if hi > lo {
            let base = (lo as isize + shift - 1) as usize;
            let win = &row[base..base + (hi - lo) + 3];
            for (d, q) in dst[lo..hi].iter_mut().zip(win.windows(4)) {
                *d = wt[0] * q[0] + wt[1] * q[1] + wt[2] * q[2] + wt[3] * q[3];
            }
        }
    }
    for y in 0..h {
        let (idx, wt) = taps(y as f64 + dy, h);
        let rows = [
            &tmp[idx[0] * w..idx[0] * w + w],
            &tmp[idx[1] * w..idx[1] * w + w],
            &tmp[idx[2] * w..idx[2] * w + w],
            &tmp[idx[3] * w..idx[3] * w + w],
        ];
        let dst = &mut out[y * w..(y + 1) * w];
        for x in 0..w {
            dst[x] =
                wt[0] * rows[0][x] + wt[1] * rows[1][x] + wt[2] * rows[2][x] + wt[3] * rows[3][x];
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
}
