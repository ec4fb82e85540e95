//! Rigid registration of a frame to a reference by phase correlation.
//!
//! Method (Kuglin & Hines 1975, in the form Suite2p uses): both images are
//! mean-subtracted and multiplied by a cosine edge taper (the taper, fixed in the
//! frame, pulls estimates slightly towards zero: about 4% of the shift on a
//! 96×80 test image with a 10% taper, less on larger frames); the reference
//! spectrum is
//! whitened (divided by its magnitude) and low-passed by a Gaussian, so the
//! correlation peak is sharp but robust to shot noise; the frame's spectrum times
//! the conjugate reference spectrum, transformed back, is the correlation surface,
//! searched within ±`max_shift`. The sub-pixel position is the maximum of the
//! band-limited correlation surface itself, evaluated off the pixel grid from the
//! cross-power spectrum (a 1-D inverse DFT along each axis through the peak,
//! maximised by golden-section search along x, then along y). This matches the
//! upsampled-DFT refinement of Guizar-Sicairos et al. 2008 in spirit at a fraction
//! of its cost, and avoids the bias of fitting a parabola to a peak whose shape
//! depends on the image's spectrum.

use super::fft::{ColumnProduct, Fft2, Fft2Scratch};
use rustfft::num_complex::Complex32;

/// A shift estimate in the contract's convention (`corrected(x) = frame(x + s)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub x: f64,
    pub y: f64,
    /// Correlation peak height (relative units; higher is more reliable).
    pub peak: f64,
    /// Peak-to-sidelobe ratio of the correlation surface.
    pub snr: f64,
    /// The best shift lay on the search bound: the true one may be larger.
    pub clamped: bool,
}

impl Estimate {
    /// No shift and no evidence: a constant frame, or a block with nothing to go on.
    pub const NONE: Estimate = Estimate {
        x: 0.0,
        y: 0.0,
        peak: 0.0,
        snr: 0.0,
        clamped: false,
    };

    /// Whether this is [`Estimate::NONE`]'s "no evidence" (a constant frame).
    pub fn is_constant(&self) -> bool {
        self.peak == 0.0 && self.snr == 0.0
    }
}

/// A separable cosine taper that is 1 inside and falls to 0 over `edge` pixels.
pub fn edge_taper(w: usize, h: usize, edge: f64) -> Vec<f32> {
    let (tx, ty) = edge_taper_factors(w, h, edge);
    (0..w * h).map(|i| ty[i / w] * tx[i % w]).collect()
}

/// The factors of [`edge_taper`]: per column and per row (`taper[y·w + x] =
/// rows[y] · cols[x]`).
pub fn edge_taper_factors(w: usize, h: usize, edge: f64) -> (Vec<f32>, Vec<f32>) {
    let ramp = |i: usize, n: usize| -> f32 {
        let d = (i as f64).min((n - 1 - i) as f64);
        if d >= edge || edge <= 0.0 {
            1.0
        } else {
            (0.5 - 0.5 * (std::f64::consts::PI * (d + 0.5) / edge).cos()) as f32
        }
    };
    (
        (0..w).map(|x| ramp(x, w)).collect(),
        (0..h).map(|y| ramp(y, h)).collect(),
    )
}

/// One pass over an image for [`Correlator`]: writes `(v − c)·taper` into
/// `dst`, with `c` the image's first value and the taper given by its factors,
/// and returns the mean of `v − c` and the variance of `v`.
///
/// The mean is not subtracted before the taper (it is not known until the pass
/// ends): the correlator removes `mean · FFT(taper)` from the spectrum instead,
/// which is the same by linearity. Subtracting `c` keeps the values, and with
/// them the transform's rounding, near the scale of the image's spread rather
/// than its brightness, and gives a constant image exactly zero variance. The
/// sums run in eight f32 lanes per row (so they vectorise; a plain f64 fold
/// cannot be reordered), rows added in f64, in a fixed order, so results are the
/// same on every thread count.
pub fn prepare_shifted(
    src: &[f32],
    taper_cols: &[f32],
    taper_rows: &[f32],
    dst: &mut [f32],
) -> (f64, f64) {
    crate::simd::wide(|| {
        let Some(&c) = src.first() else {
            return (0.0, 0.0);
        };
        let w = taper_cols.len();
        const LANES: usize = 8;
        let (mut total, mut total_sq) = (0.0f64, 0.0f64);
        for ((row, out), &ty) in src.chunks(w).zip(dst.chunks_mut(w)).zip(taper_rows) {
            let (mut acc, mut acc_sq) = ([0.0f32; LANES], [0.0f32; LANES]);
            let mut lanes = row.chunks_exact(LANES);
            let mut outs = out.chunks_exact_mut(LANES);
            let mut tapers = taper_cols.chunks_exact(LANES);
            for ((p, o), t) in (&mut lanes).zip(&mut outs).zip(&mut tapers) {
                for k in 0..LANES {
                    let d = p[k] - c;
                    acc[k] += d;
                    acc_sq[k] += d * d;
                    o[k] = d * (ty * t[k]);
                }
            }
            let tail = lanes.remainder().iter().zip(outs.into_remainder());
            for ((&x, o), &t) in tail.zip(tapers.remainder()) {
                let d = x - c;
                acc[0] += d;
                acc_sq[0] += d * d;
                *o = d * (ty * t);
            }
            total += acc.iter().map(|&a| a as f64).sum::<f64>();
            total_sq += acc_sq.iter().map(|&a| a as f64).sum::<f64>();
        }
        let n = src.len() as f64;
        let mean_shifted = total / n;
        (mean_shifted, total_sq / n - mean_shifted * mean_shifted)
    })
}

/// A reference spectrum ready for correlation, for one image size.
pub struct Correlator {
    pub fft: Fft2,
    /// The taper's factors, per column and per row.
    taper_cols: Vec<f32>,
    taper_rows: Vec<f32>,
    /// The taper's spectrum (see [`prepare_shifted`]).
    pedestal: Vec<Complex32>,
    /// Whitened, low-passed conjugate reference spectrum.
    reference: Vec<Complex32>,
    /// Where `reference` is not zero.
    band: Band,
    pub max_shift: usize,
}

/// The part of a half spectrum the Gaussian low-pass keeps: radial frequencies
/// up to where the Gaussian has fallen to 1 % (0.42 cycles/px at σ = 1.15 px, half
/// the spectrum's terms). The rest is set to zero in the reference spectrum, so
/// correlating can skip it exactly instead of summing terms weighted below 1 %.
#[derive(Debug, Clone)]
struct Band {
    /// Columns `kx < cols` hold kept terms.
    cols: usize,
    /// Per column, the largest |signed ky| kept.
    rows: Vec<usize>,
    height: usize,
}

impl Band {
    fn new(w: usize, h: usize, smooth_sigma: f64) -> Self {
        let fc2 =
            (100f64).ln() / (2.0 * std::f64::consts::PI.powi(2) * smooth_sigma * smooth_sigma);
        let hw = w / 2 + 1;
        let rows: Vec<usize> = (0..hw)
            .map_while(|kx| {
                let left = fc2 - (kx as f64 / w as f64).powi(2);
                (left >= 0.0).then(|| ((left.sqrt() * h as f64).floor() as usize).min(h / 2))
            })
            .collect();
        Band {
            cols: rows.len(),
            rows,
            height: h,
        }
    }

    fn keeps(&self, kx: usize, fy: f32) -> bool {
        kx < self.cols && (fy.abs() as usize) <= self.rows[kx]
    }

    /// The kept rows of column `kx`: `0..a` and `b..height` (empty ranges when
    /// none).
    fn runs(&self, kx: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let h = self.height;
        let k = self.rows[kx];
        let a = k + 1;
        // Negative frequencies −k..−1 sit at rows h − k..h; at the Nyquist row
        // (k = h/2, even h) the positive run already holds it.
        let b = (h - k).max(a);
        (0..a.min(h), b..h)
    }
}

/// Per-thread buffers for a [`Correlator`].
pub struct Workspace {
    pub fft: Fft2Scratch,
    /// The cross-power spectrum of the last frame (kept for sub-pixel refinement);
    /// zero outside the correlator's band, which is never written.
    spec: Vec<Complex32>,
    pub prepared: Vec<f32>,
    /// The correlation surface of the last frame at offsets within ±(bound + 1)
    /// px, zero shift at the centre: see [`Correlator::window_half`].
    pub window: Vec<f32>,
    /// The sub-pixel search's buffers, kept so it allocates nothing per frame.
    refine: RefineScratch,
}

/// Buffers of [`refine_peak`]: interleaved twiddles and collapsed spectra.
#[derive(Default)]
struct RefineScratch {
    c2: Vec<f32>,
    s2: Vec<f32>,
    u: Vec<f32>,
    v: Vec<f32>,
    /// A spectrum collapsed onto one axis, as (re, im).
    line: Vec<(f64, f64)>,
}

impl Correlator {
    /// Prepare `reference` (`w × h`); `smooth_sigma` (px) low-passes the
    /// correlation, `taper_px` is the edge taper width.
    pub fn new(
        reference: &[f32],
        w: usize,
        h: usize,
        max_shift: usize,
        smooth_sigma: f64,
        taper_px: f64,
    ) -> Self {
        let fft = Fft2::new(w, h);
        let (taper_cols, taper_rows) = edge_taper_factors(w, h, taper_px);
        let mut ws = Workspace::for_fft(&fft, max_shift + 1);
        let mut pedestal = vec![Complex32::new(0.0, 0.0); fft.spectrum_len()];
        fft.forward(&edge_taper(w, h, taper_px), &mut pedestal, &mut ws.fft);
        // The reference is prepared as frames are: its mean leaves in the spectrum.
        let (mean, _) = prepare_shifted(reference, &taper_cols, &taper_rows, &mut ws.prepared);
        let mut spec = vec![Complex32::new(0.0, 0.0); fft.spectrum_len()];
        fft.forward(&ws.prepared, &mut spec, &mut ws.fft);
        for (s, p) in spec.iter_mut().zip(&pedestal) {
            *s -= p * mean as f32;
        }
        let two_pi2_s2 = 2.0 * std::f64::consts::PI.powi(2) * smooth_sigma * smooth_sigma;
        let hw = fft.half_width();
        let band = Band::new(w, h, smooth_sigma);
        for kx in 0..hw {
            for ky in 0..h {
                let (fx, fy) = fft.frequencies(kx, ky);
                let r2 = (fx as f64 / w as f64).powi(2) + (fy as f64 / h as f64).powi(2);
                let gauss = (-two_pi2_s2 * r2).exp() as f32;
                let v = spec[kx * h + ky];
                let mag = v.norm() + 1e-6;
                spec[kx * h + ky] = if band.keeps(kx, fy) {
                    v.conj() * (gauss / mag)
                } else {
                    Complex32::new(0.0, 0.0)
                };
            }
        }
        Correlator {
            fft,
            taper_cols,
            taper_rows,
            pedestal,
            reference: spec,
            band,
            max_shift,
        }
    }

    /// Fresh per-thread buffers.
    pub fn workspace(&self) -> Workspace {
        Workspace::for_fft(&self.fft, self.window_half())
    }

    /// Half side of the correlation window: the shift bound plus one ring, so
    /// that a peak on the bound still has neighbours for its sub-pixel fit.
    pub fn window_half(&self) -> usize {
        self.max_shift + 1
    }

    /// The correlation surface of `frame` against the reference near zero shift,
    /// in `ws.window` (side 2·[`window_half`](Self::window_half) + 1, zero shift
    /// at the centre); the cross-power spectrum stays in `ws.spec`. Returns the
    /// frame's variance.
    pub fn surface(&self, frame: &[f32], ws: &mut Workspace) -> f64 {
        let (mean, var) =
            prepare_shifted(frame, &self.taper_cols, &self.taper_rows, &mut ws.prepared);
        let product = ColumnProduct {
            filter: &self.reference,
            pedestal: &self.pedestal,
            offset: mean as f32,
        };
        // Outside the band the reference is zero: those columns of `ws.spec` are
        // neither transformed nor multiplied, and stay zero from `for_fft`.
        self.fft.correlate_window(
            &mut ws.prepared,
            &mut ws.spec,
            &product,
            self.band.cols,
            self.window_half(),
            &mut ws.window,
            &mut ws.fft,
        );
        var
    }

    /// Estimate the shift of `frame` relative to the reference.
    pub fn estimate(&self, frame: &[f32], ws: &mut Workspace) -> Estimate {
        let var = self.surface(frame, ws);
        if var.is_nan() || var <= 0.0 {
            return Estimate::NONE;
        }
        // Shifts beyond half the frame alias: search at most w/2 − 1 and h/2 − 1.
        let (w, h) = (self.fft.width, self.fft.height);
        let mx = self.max_shift.min((w / 2).saturating_sub(1));
        let my = self.max_shift.min((h / 2).saturating_sub(1));
        let mut e = peak_of_window(&ws.window, self.window_half(), mx, my);
        let limit = self.max_shift as f64 + 0.5;
        (e.x, e.y) = self.refine_peak(ws, e.x, e.y, limit);
        e
    }

    /// Sub-pixel maximum, within ±`limit`, of the band-limited surface whose
    /// (half) spectrum is the last cross-power spectrum in `ws.spec` (from
    /// [`surface`](Self::surface)), near the first estimate (x0, y0): searched
    /// within a pixel of its nearest whole pixel, along x on row `y0` first.
    pub fn refine_peak(&self, ws: &mut Workspace, x0: f64, y0: f64, limit: f64) -> (f64, f64) {
        refine_peak(
            &self.fft,
            &self.band,
            &ws.spec,
            &mut ws.refine,
            x0,
            y0,
            limit,
        )
    }
}

/// Weight of half-spectrum column `kx` in a real inverse transform.
#[inline]
fn column_weight(kx: usize, w: usize) -> f64 {
    if kx == 0 || (w.is_multiple_of(2) && kx == w / 2) {
        1.0
    } else {
        2.0
    }
}

/// Maximise `f` on [lo, hi] by golden-section search (to 10⁻³).
pub fn golden_max(lo: f64, hi: f64, f: impl Fn(f64) -> f64) -> f64 {
    let g = 0.5 * (5f64.sqrt() - 1.0);
    let (mut lo, mut hi) = (lo, hi);
    let (mut c, mut d) = (hi - g * (hi - lo), lo + g * (hi - lo));
    let (mut fc, mut fd) = (f(c), f(d));
    while hi - lo > 1e-3 {
        if fc > fd {
            hi = d;
            d = c;
            fd = fc;
            c = hi - g * (hi - lo);
            fc = f(c);
        } else {
            lo = c;
            c = d;
            fc = fd;
            d = lo + g * (hi - lo);
            fd = f(d);
        }
    }
    0.5 * (lo + hi)
}

/// Σ_k p_k·(cos_k + i·sin_k), with `p` as interleaved (re, im) pairs and the
/// twiddles interleaved to match (`c2 = [cos_0, cos_0, cos_1, cos_1, …]`, `s2`
/// likewise). Plain products of contiguous arrays in sixteen f32 lanes, so they
/// vectorise; even lanes then hold re·cos and re·sin, odd lanes im·cos and im·sin.
#[inline(always)]
fn dot_twiddled(p: &[f32], c2: &[f32], s2: &[f32]) -> (f64, f64) {
    const LANES: usize = 16;
    let (mut a, mut b) = ([0.0f32; LANES], [0.0f32; LANES]);
    let chunks = p
        .chunks_exact(LANES)
        .zip(c2.chunks_exact(LANES))
        .zip(s2.chunks_exact(LANES));
    for ((pc, cc), sc) in chunks {
        for k in 0..LANES {
            a[k] += pc[k] * cc[k];
            b[k] += pc[k] * sc[k];
        }
    }
    // The tail starts at an even index, so its parity matches the lanes'.
    for j in p.len() / LANES * LANES..p.len() {
        a[j % 2] += p[j] * c2[j];
        b[j % 2] += p[j] * s2[j];
    }
    let (mut re, mut im) = (0.0f64, 0.0f64);
    for k in (0..LANES).step_by(2) {
        re += a[k] as f64 - b[k + 1] as f64;
        im += b[k] as f64 + a[k + 1] as f64;
    }
    (re, im)
}

/// Sub-pixel maximum of the band-limited surface whose (half) spectrum is
/// `product`, zero outside `band`, near the first estimate (x0, y0).
fn refine_peak(
    fft: &Fft2,
    band: &Band,
    product: &[Complex32],
    scratch: &mut RefineScratch,
    x0: f64,
    y0: f64,
    limit: f64,
) -> (f64, f64) {
    crate::simd::wide(|| {
        // The intervals are centred on the estimate's nearest whole pixel; the
        // first line goes through the estimate's own row, not that pixel's, so a
        // peak elongated along a diagonal is met near its ridge.
        let range = |b: f64| ((b.round() - 1.0).max(-limit), (b.round() + 1.0).min(limit));
        let (rx, ry) = (range(x0), range(y0));
        use std::f64::consts::TAU;
        let (w, h) = (fft.width, fft.height);
        let signed_y = |ky: usize| {
            if ky <= h / 2 {
                ky as f64
            } else {
                ky as f64 - h as f64
            }
        };
        // Collapse the spectrum onto the x axis at row y: Q(kx) = Σ_ky P(kx,ky)·e^{2πi·fy·y/h}.
        // Both collapses run in f32 (in lanes, so they vectorise): each sums at most a
        // few hundred terms, far from f32's precision limit for a peak position.
        let flat: &[f32] = bytemuck::cast_slice(product);
        let along_x = |y: f64, sc: &mut RefineScratch| {
            let RefineScratch { c2, s2, line, .. } = sc;
            c2.clear();
            s2.clear();
            line.clear();
            for ky in 0..h {
                let (s, c) = (TAU * signed_y(ky) * y / h as f64).sin_cos();
                c2.extend([c as f32; 2]);
                s2.extend([s as f32; 2]);
            }
            line.extend((0..band.cols).map(|kx| {
                let col = &flat[2 * kx * h..2 * (kx + 1) * h];
                let (lo, hi) = band.runs(kx);
                let run = |r: std::ops::Range<usize>| {
                    let (a, b) = (2 * r.start, 2 * r.end);
                    dot_twiddled(&col[a..b], &c2[a..b], &s2[a..b])
                };
                let ((p, q), (u, v)) = (run(lo), run(hi));
                (p + u, q + v)
            }));
        };
        // Collapse onto the y axis at column x: R(ky) = Σ_kx α(kx)·P(kx,ky)·e^{2πi·kx·x/w}.
        // Σ P·cos and Σ P·sin are accumulated over interleaved (re, im) pairs and
        // combined at the end (R = Σ P_re·cos − P_im·sin + i·(P_re·sin + P_im·cos)).
        let along_y = |x: f64, sc: &mut RefineScratch| {
            let RefineScratch { u, v, line, .. } = sc;
            u.clear();
            v.clear();
            line.clear();
            u.resize(2 * h, 0.0);
            v.resize(2 * h, 0.0);
            for kx in 0..band.cols {
                let (s, c) = (TAU * kx as f64 * x / w as f64).sin_cos();
                let a = column_weight(kx, w);
                let (s, c) = ((a * s) as f32, (a * c) as f32);
                let col = &flat[2 * kx * h..2 * (kx + 1) * h];
                let (lo, hi) = band.runs(kx);
                for r in [lo, hi] {
                    let (a, b) = (2 * r.start, 2 * r.end);
                    for ((uo, vo), &p) in u[a..b].iter_mut().zip(v[a..b].iter_mut()).zip(&col[a..b])
                    {
                        *uo += p * c;
                        *vo += p * s;
                    }
                }
            }
            line.extend((0..h).map(|k| {
                let (uc, vc) = ((u[2 * k], u[2 * k + 1]), (v[2 * k], v[2 * k + 1]));
                ((uc.0 - vc.1) as f64, (vc.0 + uc.1) as f64)
            }));
        };
        // Σ_k a_k·Re(z_k·e^{2πi·k·t/n}) by a phasor recurrence (no sin/cos per term).
        let eval_x = |q: &[(f64, f64)], x: f64| -> f64 {
            let (s1, c1) = (TAU * x / w as f64).sin_cos();
            let (mut c, mut s) = (1.0f64, 0.0f64);
            let mut acc = 0.0;
            for (kx, &(re, im)) in q.iter().enumerate() {
                acc += column_weight(kx, w) * (re * c - im * s);
                (c, s) = (c * c1 - s * s1, s * c1 + c * s1);
            }
            acc
        };
        let eval_y = |r: &[(f64, f64)], y: f64| -> f64 {
            let (s1, c1) = (TAU * y / h as f64).sin_cos();
            // Non-negative frequencies 0..=h/2 step forwards, negative ones backwards.
            let (mut c, mut s) = (1.0f64, 0.0f64);
            let mut acc = 0.0;
            for &(re, im) in r.iter().take(h / 2 + 1) {
                acc += re * c - im * s;
                (c, s) = (c * c1 - s * s1, s * c1 + c * s1);
            }
            let (mut c, mut s) = (c1, -s1);
            for &(re, im) in r.iter().skip(h / 2 + 1).rev() {
                acc += re * c - im * s;
                (c, s) = (c * c1 + s * s1, s * c1 - c * s1);
            }
            acc
        };
        along_x(y0.clamp(ry.0, ry.1), scratch);
        let x = golden_max(rx.0, rx.1, |x| eval_x(&scratch.line, x));
        along_y(x, scratch);
        let y = golden_max(ry.0, ry.1, |y| eval_y(&scratch.line, y));
        (x, y)
    })
}

impl Workspace {
    fn for_fft(fft: &Fft2, half: usize) -> Self {
        let side = 2 * half + 1;
        Workspace {
            fft: fft.scratch(),
            spec: vec![Complex32::new(0.0, 0.0); fft.spectrum_len()],
            prepared: vec![0.0; fft.width * fft.height],
            window: vec![0.0; side * side],
            refine: RefineScratch::default(),
        }
    }
}

/// Sub-pixel offset of a peak from three samples: a Gaussian fit when all are
/// positive, else a parabola; limited to ±½.
pub fn subpixel(a: f64, b: f64, c: f64) -> f64 {
    let off = if a > 0.0 && b > 0.0 && c > 0.0 {
        let (la, lb, lc) = (a.ln(), b.ln(), c.ln());
        let d = la - 2.0 * lb + lc;
        if d < 0.0 {
            0.5 * (la - lc) / d
        } else {
            0.0
        }
    } else {
        let d = a - 2.0 * b + c;
        if d < 0.0 {
            0.5 * (a - c) / d
        } else {
            0.0
        }
    };
    off.clamp(-0.5, 0.5)
}

/// Find the peak of a correlation window (side 2·`half` + 1, zero shift at the
/// centre) within |dx| ≤ `mx`, |dy| ≤ `my` (both < `half`, so the peak's
/// neighbours are inside the window).
pub fn peak_of_window(win: &[f32], half: usize, mx: usize, my: usize) -> Estimate {
    let side = 2 * half + 1;
    debug_assert_eq!(win.len(), side * side);
    debug_assert!(mx < half && my < half);
    let at = |dx: isize, dy: isize| -> f64 {
        win[(dy + half as isize) as usize * side + (dx + half as isize) as usize] as f64
    };
    let (mx, my) = (mx as isize, my as isize);
    let (mut best, mut bx, mut by) = (f64::NEG_INFINITY, 0isize, 0isize);
    for dy in -my..=my {
        for dx in -mx..=mx {
            let v = at(dx, dy);
            if v > best {
                (best, bx, by) = (v, dx, dy);
            }
        }
    }
    let sx = subpixel(at(bx - 1, by), best, at(bx + 1, by));
    let sy = subpixel(at(bx, by - 1), best, at(bx, by + 1));
    // Sidelobe: the largest value at least 3 px away from the peak, in the window.
    let mut side_lobe = f64::NEG_INFINITY;
    for dy in -my..=my {
        for dx in -mx..=mx {
            if (dx - bx).abs() > 2 || (dy - by).abs() > 2 {
                side_lobe = side_lobe.max(at(dx, dy));
            }
        }
    }
    let snr = if side_lobe > 0.0 {
        best / side_lobe
    } else {
        f64::INFINITY
    };
    Estimate {
        x: bx as f64 + sx,
        y: by as f64 + sy,
        peak: best,
        snr,
        clamped: bx.abs() == mx || by.abs() == my,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::motion::interp::shift_image;

    /// Many soma-sized blobs all over the field, like a two-photon mean image.
    pub(crate) fn texture(w: usize, h: usize) -> Vec<f32> {
        let blobs: Vec<(f64, f64, f64)> = (0..w * h / 60)
            .map(|k| {
                let a = (k as f64 * 12.9898).sin() * 43758.5453;
                let b = (k as f64 * 78.233).sin() * 12345.678;
                (
                    (a - a.floor()) * w as f64,
                    (b - b.floor()) * h as f64,
                    20.0 + 40.0 * ((a * 7.0) - (a * 7.0).floor()),
                )
            })
            .collect();
        (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f64, (i / w) as f64);
                let mut v = 100.0;
                for &(cx, cy, amp) in &blobs {
                    let d2 = (x - cx).powi(2) + (y - cy).powi(2);
                    if d2 < 100.0 {
                        v += amp * (-d2 / 8.0).exp();
                    }
                }
                v as f32
            })
            .collect()
    }

    #[test]
    fn recovers_subpixel_shifts_to_a_few_hundredths() {
        let (w, h) = (96, 80);
        let reference = texture(w, h);
        let c = Correlator::new(&reference, w, h, 10, 1.15, 8.0);
        let mut ws = c.workspace();
        let mut tmp = vec![0.0; w * h];
        let mut frame = vec![0.0; w * h];
        for (dx, dy) in [(0.0, 0.0), (2.3, -1.7), (-4.45, 3.1), (0.5, 0.5)] {
            // Content moved by +d: frame(x) = reference(x − d).
            shift_image(&reference, w, h, -dx, -dy, &mut tmp, &mut frame);
            let e = c.estimate(&frame, &mut ws);
            // The edge taper's pull towards zero is ≤ 6% of the shift here.
            let tol = 0.02 + 0.06 * f64::max(dx.abs(), dy.abs());
            assert!(
                (e.x - dx).abs() < tol && (e.y - dy).abs() < tol,
                "({dx},{dy}) → {e:?}"
            );
            assert!(!e.clamped);
        }
    }

    #[test]
    fn one_pass_preparation_gives_the_variance_and_with_the_pedestal_the_mean_subtraction() {
        let (w, h) = (40, 30);
        let img: Vec<f32> = (0..w * h)
            .map(|i| 3000.0 + ((i * 31) % 97) as f32 * 0.5)
            .collect();
        let taper = edge_taper(w, h, 6.0);
        let (tx, ty) = edge_taper_factors(w, h, 6.0);
        let mut out = vec![0.0; w * h];
        let (mean, var) = prepare_shifted(&img, &tx, &ty, &mut out);
        let m = img.iter().map(|&x| x as f64).sum::<f64>() / (w * h) as f64;
        let plain = img.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / (w * h) as f64;
        assert!((var - plain).abs() < 1e-4 * plain, "{var} vs {plain}");
        assert!((img[0] as f64 + mean - m).abs() < 1e-6 * m);
        // (v − c)·t − mean·t is (v − m)·t.
        for ((o, v), t) in out.iter().zip(&img).zip(&taper) {
            let want = (*v as f64 - m) * *t as f64;
            assert!(
                (*o as f64 - mean * *t as f64 - want).abs() < 1e-3,
                "{o} vs {want}"
            );
        }
        let (m, v) = prepare_shifted(&vec![7.5; w * h], &tx, &ty, &mut out);
        assert_eq!((m, v), (0.0, 0.0));
        assert!(
            prepare_shifted(&[1.0, f32::NAN], &[1.0; 2], &[1.0], &mut [0.0; 2])
                .1
                .is_nan()
        );
    }

    #[test]
    fn bound_is_respected_and_flagged() {
        let (w, h) = (64, 64);
        let reference = texture(w, h);
        let c = Correlator::new(&reference, w, h, 3, 1.15, 6.0);
        let mut ws = c.workspace();
        let mut tmp = vec![0.0; w * h];
        let mut frame = vec![0.0; w * h];
        shift_image(&reference, w, h, -7.0, 0.0, &mut tmp, &mut frame);
        let e = c.estimate(&frame, &mut ws);
        assert!(e.x.abs() <= 4.0 && e.clamped, "{e:?}");
        let flat = vec![5.0; w * h];
        let e = c.estimate(&flat, &mut ws);
        assert_eq!((e.x, e.y, e.peak), (0.0, 0.0, 0.0));
    }
}
