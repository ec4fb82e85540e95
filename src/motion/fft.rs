//! 2-D FFT of real images: real-to-complex along rows (realfft), complex along
//! columns (rustfft), planned once and reused with per-thread scratch buffers.
//!
//! The spectrum is stored column-major, `spec[kx * height + ky]` for
//! `kx < width/2 + 1`, so the column transforms run over contiguous memory.
//! The inverse is normalised (forward then inverse returns the input).

use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};
use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};
use std::sync::Arc;

/// Rows transformed together before a blocked transpose.
const ROWS: usize = 16;

/// `d` modulo `n`, in `0..n`.
#[inline]
fn wrap(d: isize, n: usize) -> usize {
    d.rem_euclid(n as isize) as usize
}

/// Plans for one image size.
pub struct Fft2 {
    pub width: usize,
    pub height: usize,
    r2c: Arc<dyn RealToComplex<f32>>,
    c2r: Arc<dyn ComplexToReal<f32>>,
    col_fwd: Arc<dyn Fft<f32>>,
    col_inv: Arc<dyn Fft<f32>>,
}

/// The per-column product of [`Fft2::correlate_window`]:
/// `(FFT(image) − offset·pedestal) · filter`.
///
/// The pedestal lets a caller transform an image before removing a constant
/// from it: `FFT((v − a)·t) = FFT(v·t) − a·FFT(t)` for a fixed taper `t`, so the
/// frame's mean need not be known before its one pass over the pixels.
#[derive(Clone, Copy)]
pub struct ColumnProduct<'a> {
    pub filter: &'a [Complex32],
    pub pedestal: &'a [Complex32],
    pub offset: f32,
}

/// Where the forward transform takes its rows from.
enum Rows<'a> {
    Shared(&'a [f32]),
    /// Transformed in place (realfft uses its input as scratch).
    Consumed(&'a mut [f32]),
}

/// Working memory for one thread.
pub struct Fft2Scratch {
    row_real: Vec<f32>,
    /// `ROWS` rows of half-spectrum, for blocked transposes.
    block: Vec<Complex32>,
    real_scratch: Vec<Complex32>,
    col_scratch: Vec<Complex32>,
    /// One column, for the windowed inverse.
    column: Vec<Complex32>,
    /// The window's rows of half-spectrum, for the windowed inverse.
    window_rows: Vec<Complex32>,
}

impl Fft2 {
    /// Plan transforms for `width × height` images.
    pub fn new(width: usize, height: usize) -> Self {
        let mut real = RealFftPlanner::<f32>::new();
        let mut cplx = FftPlanner::<f32>::new();
        Fft2 {
            width,
            height,
            r2c: real.plan_fft_forward(width),
            c2r: real.plan_fft_inverse(width),
            col_fwd: cplx.plan_fft_forward(height),
            col_inv: cplx.plan_fft_inverse(height),
        }
    }

    /// Number of complex coefficients per row.
    pub fn half_width(&self) -> usize {
        self.width / 2 + 1
    }

    /// Length of a spectrum.
    pub fn spectrum_len(&self) -> usize {
        self.half_width() * self.height
    }

    /// Scratch buffers sized for these plans.
    pub fn scratch(&self) -> Fft2Scratch {
        let real_len = self.r2c.get_scratch_len().max(self.c2r.get_scratch_len());
        let col_len = self
            .col_fwd
            .get_inplace_scratch_len()
            .max(self.col_inv.get_inplace_scratch_len());
        Fft2Scratch {
            row_real: vec![0.0; self.width],
            block: vec![Complex32::new(0.0, 0.0); ROWS * self.half_width()],
            real_scratch: vec![Complex32::new(0.0, 0.0); real_len],
            col_scratch: vec![Complex32::new(0.0, 0.0); col_len],
            column: vec![Complex32::new(0.0, 0.0); self.height],
            window_rows: Vec::new(),
        }
    }

    /// Forward transform of a row-major image into `spec` (column-major).
    pub fn forward(&self, image: &[f32], spec: &mut [Complex32], s: &mut Fft2Scratch) {
        self.forward_rows(Rows::Shared(image), spec, self.half_width(), s);
        self.col_fwd.process_with_scratch(spec, &mut s.col_scratch);
    }

    /// The circular cross-correlation surface of `image` with a filter near zero
    /// shift: the inverse transform of `(FFT(image) − offset·pedestal) · filter`
    /// (see [`ColumnProduct`]) at the offsets |dx| ≤ `m`, |dy| ≤ `m` only
    /// (wrapping), into `window[(dy + m)·(2m + 1) + dx + m]`. `image` is consumed
    /// as scratch (realfft uses its rows as scratch, which saves copying them);
    /// `spec` is left holding the product in its columns `kx < cols`. The filter
    /// must be zero from column `cols` on (a low-passed spectrum): those columns
    /// are skipped, and `spec`'s are left as they were.
    ///
    /// It is the forward transform, the product and the inverse, but each column
    /// goes through its forward transform, the product and its inverse transform
    /// while it is in cache, and only the window's 2m + 1 rows are transformed back
    /// along x (a fifth of them at 512² with the default shift bound): a
    /// phase-correlation peak is searched near zero shift, so the rest of the
    /// inverse is never looked at.
    #[allow(clippy::too_many_arguments)]
    pub fn correlate_window(
        &self,
        image: &mut [f32],
        spec: &mut [Complex32],
        product: &ColumnProduct,
        cols: usize,
        m: usize,
        window: &mut [f32],
        s: &mut Fft2Scratch,
    ) {
        let (h, hw) = (self.height, self.half_width());
        let cols = cols.min(hw);
        let ColumnProduct {
            filter,
            pedestal,
            offset,
        } = *product;
        debug_assert_eq!(filter.len(), hw * h);
        debug_assert_eq!(pedestal.len(), hw * h);
        self.forward_rows(Rows::Consumed(image), spec, cols, s);
        self.start_window_rows(cols, m, window, s);
        for kx in 0..cols {
            let col = &mut spec[kx * h..(kx + 1) * h];
            self.col_fwd.process_with_scratch(col, &mut s.col_scratch);
            let at = kx * h..(kx + 1) * h;
            for ((c, f), p) in col.iter_mut().zip(&filter[at.clone()]).zip(&pedestal[at]) {
                *c = (*c - p * offset) * f;
            }
            self.window_column(kx, col, m, s);
        }
        self.finish_window(m, window, s);
    }
    fn forward_rows(
        &self,
        mut image: Rows,
        spec: &mut [Complex32],
        cols: usize,
        s: &mut Fft2Scratch,
    ) {
        let (w, h, hw) = (self.width, self.height, self.half_width());
        debug_assert_eq!(spec.len(), hw * h);
        // Rows in blocks of ROWS, so the transposed writes are short contiguous runs.
        for y0 in (0..h).step_by(ROWS) {
            let rows = ROWS.min(h - y0);
            for r in 0..rows {
                let y = y0 + r;
                let out = &mut s.block[r * hw..(r + 1) * hw];
                let row: &mut [f32] = match &mut image {
                    Rows::Shared(img) => {
                        s.row_real.copy_from_slice(&img[y * w..(y + 1) * w]);
                        &mut s.row_real
                    }
                    Rows::Consumed(img) => &mut img[y * w..(y + 1) * w],
                };
                self.r2c
                    .process_with_scratch(row, out, &mut s.real_scratch)
                    .expect("buffer sizes match the plan");
            }
            for kx in 0..cols {
                let dst = &mut spec[kx * h + y0..kx * h + y0 + rows];
                for (r, d) in dst.iter_mut().enumerate() {
                    *d = s.block[r * hw + kx];
                }
            }
        }
    }

    /// Inverse transform of `spec` (consumed as scratch) into a row-major image.
    pub fn inverse(&self, spec: &mut [Complex32], image: &mut [f32], s: &mut Fft2Scratch) {
        let (w, h, hw) = (self.width, self.height, self.half_width());
        self.col_inv.process_with_scratch(spec, &mut s.col_scratch);
        let norm = 1.0 / (w * h) as f32;
        for y0 in (0..h).step_by(ROWS) {
            let rows = ROWS.min(h - y0);
            for kx in 0..hw {
                let src = &spec[kx * h + y0..kx * h + y0 + rows];
                for (r, v) in src.iter().enumerate() {
                    s.block[r * hw + kx] = *v;
                }
            }
            for r in 0..rows {
                let y = y0 + r;
                self.row_to_real(
                    &mut s.block[r * hw..(r + 1) * hw],
                    &mut s.row_real,
                    &mut s.real_scratch,
                );
                for (o, v) in image[y * w..(y + 1) * w].iter_mut().zip(&s.row_real) {
                    *o = v * norm;
                }
            }
        }
    }

    /// Inverse-transform spectrum column `kx` and keep its rows within ±`m` of
    /// zero in the window's rows.
    fn window_column(&self, kx: usize, column: &[Complex32], m: usize, s: &mut Fft2Scratch) {
        let (h, hw) = (self.height, self.half_width());
        s.column.copy_from_slice(column);
        self.col_inv
            .process_with_scratch(&mut s.column, &mut s.col_scratch);
        for r in 0..2 * m + 1 {
            s.window_rows[r * hw + kx] = s.column[wrap(r as isize - m as isize, h)];
        }
    }

    /// Size the window's half-spectrum rows for offsets within ±`m` and zero
    /// their columns from `cols` on.
    fn start_window_rows(&self, cols: usize, m: usize, window: &[f32], s: &mut Fft2Scratch) {
        let hw = self.half_width();
        let side = 2 * m + 1;
        debug_assert_eq!(window.len(), side * side);
        s.window_rows.resize(side * hw, Complex32::new(0.0, 0.0));
        for kx in cols.min(hw)..hw {
            for r in 0..side {
                s.window_rows[r * hw + kx] = Complex32::new(0.0, 0.0);
            }
        }
    }

    /// Transform the window's rows along x and keep the offsets within ±`m`.
    fn finish_window(&self, m: usize, window: &mut [f32], s: &mut Fft2Scratch) {
        let (w, h, hw) = (self.width, self.height, self.half_width());
        let side = 2 * m + 1;
        let norm = 1.0 / (w * h) as f32;
        for r in 0..side {
            self.row_to_real(
                &mut s.window_rows[r * hw..(r + 1) * hw],
                &mut s.row_real,
                &mut s.real_scratch,
            );
            for (c, o) in window[r * side..(r + 1) * side].iter_mut().enumerate() {
                *o = s.row_real[wrap(c as isize - m as isize, w)] * norm;
            }
        }
    }

    /// Inverse real transform of one half-spectrum row (unnormalised).
    fn row_to_real(&self, row: &mut [Complex32], out: &mut [f32], scratch: &mut [Complex32]) {
        // A real signal's DC (and, for even widths, Nyquist) terms are real.
        row[0].im = 0.0;
        if self.width.is_multiple_of(2) {
            row[row.len() - 1].im = 0.0;
        }
        self.c2r
            .process_with_scratch(row, out, scratch)
            .expect("buffer sizes match the plan");
    }

    /// Signed frequency index of column `kx` (always ≥ 0 for the half spectrum)
    /// and of row `ky`, in cycles per image.
    pub fn frequencies(&self, kx: usize, ky: usize) -> (f32, f32) {
        let fy = if ky <= self.height / 2 {
            ky as f32
        } else {
            ky as f32 - self.height as f32
        };
        (kx as f32, fy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_then_inverse_is_identity_for_odd_and_even_sizes() {
        for (w, h) in [(16, 8), (15, 9), (64, 64)] {
            let fft = Fft2::new(w, h);
            let mut s = fft.scratch();
            let img: Vec<f32> = (0..w * h).map(|i| ((i * 37) % 11) as f32 - 3.0).collect();
            let mut spec = vec![Complex32::new(0.0, 0.0); fft.spectrum_len()];
            fft.forward(&img, &mut spec, &mut s);
            // DC term is the sum.
            let sum: f32 = img.iter().sum();
            assert!((spec[0].re - sum).abs() < 1e-2);
            let mut back = vec![0.0; w * h];
            fft.inverse(&mut spec, &mut back, &mut s);
            for (a, b) in img.iter().zip(&back) {
                assert!((a - b).abs() < 1e-3, "{w}x{h}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn correlate_window_equals_forward_product_and_inverse_near_zero_shift() {
        for (w, h, m, cols) in [(18, 14, 4, 7), (15, 9, 4, 8), (8, 8, 5, 5), (16, 12, 3, 2)] {
            let fft = Fft2::new(w, h);
            let mut s = fft.scratch();
            let hw = fft.half_width();
            let img: Vec<f32> = (0..w * h).map(|i| ((i * 29) % 13) as f32 - 5.0).collect();
            let mut filter: Vec<Complex32> = (0..hw * h)
                .map(|i| Complex32::new(((i * 7) % 5) as f32 - 2.0, ((i * 3) % 4) as f32))
                .collect();
            filter[cols.min(hw) * h..].fill(Complex32::new(0.0, 0.0));
            // The plain way: whole forward transform, product, whole inverse.
            let mut spec = vec![Complex32::new(0.0, 0.0); fft.spectrum_len()];
            fft.forward(&img, &mut spec, &mut s);
            spec.iter_mut().zip(&filter).for_each(|(a, b)| *a *= b);
            let mut full = vec![0.0; w * h];
            fft.inverse(&mut spec.clone(), &mut full, &mut s);
            // The image raised by 3, that offset's pedestal removed again.
            let mut pedestal = vec![Complex32::new(0.0, 0.0); fft.spectrum_len()];
            fft.forward(&vec![1.0f32; w * h], &mut pedestal, &mut s);
            let mut raised: Vec<f32> = img.iter().map(|v| v + 3.0).collect();
            let product = ColumnProduct {
                filter: &filter,
                pedestal: &pedestal,
                offset: 3.0,
            };
            let side = 2 * m + 1;
            // Stale values where the skipped columns go must not survive.
            s.window_rows = vec![Complex32::new(9.0, 9.0); side * hw];
            let mut got_spec = vec![Complex32::new(0.0, 0.0); fft.spectrum_len()];
            let mut got = vec![0.0; side * side];
            fft.correlate_window(
                &mut raised,
                &mut got_spec,
                &product,
                cols,
                m,
                &mut got,
                &mut s,
            );
            for r in 0..side {
                for c in 0..side {
                    let (y, x) = (
                        wrap(r as isize - m as isize, h),
                        wrap(c as isize - m as isize, w),
                    );
                    let (v, want) = (got[r * side + c], full[y * w + x]);
                    assert!(
                        (v - want).abs() < 1e-3,
                        "{w}x{h} m={m}: ({c},{r}) {v} vs {want}"
                    );
                }
            }
            let kept = cols.min(hw) * h;
            for (a, b) in got_spec[..kept].iter().zip(&spec) {
                assert!((a - b).norm() < 1e-2, "{a} vs {b}");
            }
            assert!(got_spec[kept..].iter().all(|v| v.norm() == 0.0));
        }
    }
}
