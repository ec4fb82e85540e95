//! Motion estimation (first slice: rigid phase correlation of two images).
//!
//! In: a reference image and a frame (row-major f32). Out: the rigid shift of the
//! frame's content relative to the reference in the contract's convention,
//! `corrected(x, y) = frame(x + shift_x, y + shift_y)`, with sub-pixel precision.
//! Method: phase correlation (Kuglin & Hines 1975) with an edge taper and a
//! spectrally whitened cross-power spectrum, sub-pixel peak by a parabola through
//! the peak and its neighbours on each axis, as Suite2p's rigid step does in spirit.
//! The full registration stage (reference building, batches, piecewise-rigid)
//! builds on this.

use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

/// A rigid shift estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shift {
    pub x: f64,
    pub y: f64,
    /// Height of the normalised correlation peak (0..1); low means unreliable.
    pub peak: f64,
}

fn fft2(data: &mut [Complex<f64>], w: usize, h: usize, inverse: bool) {
    let mut planner = FftPlanner::new();
    let row = if inverse {
        planner.plan_fft_inverse(w)
    } else {
        planner.plan_fft_forward(w)
    };
    for r in data.chunks_mut(w) {
        row.process(r);
    }
    let col = if inverse {
        planner.plan_fft_inverse(h)
    } else {
        planner.plan_fft_forward(h)
    };
    let mut buf = vec![Complex::new(0.0, 0.0); h];
    for x in 0..w {
        for y in 0..h {
            buf[y] = data[y * w + x];
        }
        col.process(&mut buf);
        for y in 0..h {
            data[y * w + x] = buf[y];
        }
    }
}

/// Mean-subtracted image multiplied by a separable cosine edge taper.
fn tapered(img: &[f32], w: usize, h: usize) -> Vec<Complex<f64>> {
    let mean = img.iter().map(|&v| v as f64).sum::<f64>() / img.len() as f64;
    let taper = |i: usize, n: usize| {
        let edge = (n as f64 * 0.1).max(1.0);
        let d = (i as f64).min((n - 1 - i) as f64);
        if d >= edge {
            1.0
        } else {
            0.5 - 0.5 * (std::f64::consts::PI * d / edge).cos()
        }
    };
    let ty: Vec<f64> = (0..h).map(|y| taper(y, h)).collect();
    let tx: Vec<f64> = (0..w).map(|x| taper(x, w)).collect();
    img.iter()
        .enumerate()
        .map(|(i, &v)| Complex::new((v as f64 - mean) * ty[i / w] * tx[i % w], 0.0))
        .collect()
}

/// Offset of the parabola's vertex through (-1, a), (0, b), (1, c).
fn parabola_vertex(a: f64, b: f64, c: f64) -> f64 {
    let denom = a - 2.0 * b + c;
    if denom.abs() < 1e-12 {
        0.0
    } else {
        (0.5 * (a - c) / denom).clamp(-0.5, 0.5)
    }
}

/// Estimate the shift of `frame` relative to `reference` (both `w × h`), searching
/// shifts up to `max_shift` pixels per axis.
pub fn phase_correlate(
    reference: &[f32],
    frame: &[f32],
    w: usize,
    h: usize,
    max_shift: usize,
) -> Shift {
    let mut r = tapered(reference, w, h);
    let mut f = tapered(frame, w, h);
    fft2(&mut r, w, h, false);
    fft2(&mut f, w, h, false);
    let mut cross: Vec<Complex<f64>> = f
        .iter()
        .zip(&r)
        .map(|(a, b)| {
            let c = a * b.conj();
            c / (c.norm() + 1e-9)
        })
        .collect();
    fft2(&mut cross, w, h, true);
    let n = (w * h) as f64;
    let at = |dx: isize, dy: isize| -> f64 {
        let x = dx.rem_euclid(w as isize) as usize;
        let y = dy.rem_euclid(h as isize) as usize;
        cross[y * w + x].re / n
    };
    let m = max_shift as isize;
    let (mut best, mut bx, mut by) = (f64::NEG_INFINITY, 0isize, 0isize);
    for dy in -m.min(h as isize / 2 - 1)..=m.min(h as isize / 2 - 1) {
        for dx in -m.min(w as isize / 2 - 1)..=m.min(w as isize / 2 - 1) {
            let v = at(dx, dy);
            if v > best {
                (best, bx, by) = (v, dx, dy);
            }
        }
    }
    let sx = parabola_vertex(at(bx - 1, by), best, at(bx + 1, by));
    let sy = parabola_vertex(at(bx, by - 1), best, at(bx, by + 1));
    Shift {
        x: bx as f64 + sx,
        y: by as f64 + sy,
        peak: best,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob_image(w: usize, h: usize, cx: f64, cy: f64) -> Vec<f32> {
        (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f64, (i / w) as f64);
                let mut v = 0.0;
                for (bx, by, s) in [(0.0, 0.0, 3.0), (10.0, -6.0, 2.0), (-8.0, 9.0, 4.0)] {
                    v += (-((x - cx - bx).powi(2) + (y - cy - by).powi(2)) / (2.0 * s * s)).exp();
                }
                v as f32
            })
            .collect()
    }

    #[test]
    fn recovers_integer_and_subpixel_shifts_with_contract_sign() {
        let (w, h) = (64, 64);
        let reference = blob_image(w, h, 32.0, 32.0);
        // Content moved by (+3.4, -2.25): frame(x) = reference(x - s).
        let frame = blob_image(w, h, 35.4, 29.75);
        let s = phase_correlate(&reference, &frame, w, h, 10);
        assert!((s.x - 3.4).abs() < 0.15, "x {}", s.x);
        assert!((s.y + 2.25).abs() < 0.15, "y {}", s.y);
    }
}
