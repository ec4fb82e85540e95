//! The temporally binned movie that detection works on, and the summary images.
//!
//! One streaming pass over the corrected frame store averages consecutive frames
//! into bins (bin width from the indicator's decay time and the frame rate, widened
//! so no more than `max_binned_frames` bins exist: memory is bounded by that cap,
//! not by the movie's length) and accumulates the mean image. The bins are stored
//! pixel-major, one contiguous series per pixel, because detection works on whole
//! pixel time series.

use crate::error::{Error, Result};
use crate::movie::store::FrameStore;
use crate::progress::Progress;

/// A binned movie, pixel-major: `data[p * n_bins + b]`.
pub struct Binned {
    pub width: usize,
    pub height: usize,
    pub n_bins: usize,
    /// Frames averaged into one bin.
    pub bin_frames: usize,
    pub data: Vec<f32>,
    /// Each pixel's noise s.d. in one bin, from frame-to-frame differences of the
    /// unbinned movie (shot and detector noise; slow signal barely changes from
    /// one frame to the next, so cells that fire all the time keep a true floor).
    pub noise: Vec<f32>,
}

impl Binned {
    /// Pixel p's binned series.
    pub fn series(&self, p: usize) -> &[f32] {
        &self.data[p * self.n_bins..(p + 1) * self.n_bins]
    }
}

/// Frames per bin: about one decay time, wide enough to respect the cap.
pub fn bin_width(n_frames: usize, fs: f64, tau_s: f64, max_bins: usize) -> usize {
    let by_tau = (tau_s * fs).round().max(1.0) as usize;
    let by_cap = n_frames.div_ceil(max_bins.max(1));
    by_tau.max(by_cap).max(1)
}

/// Read the store once: the binned movie (full bins only; a short tail is dropped
/// unless it is the only bin) and the mean image of all frames.
pub fn read_binned(
    store: &FrameStore,
    bin_frames: usize,
    progress: &dyn Progress,
) -> Result<(Binned, Vec<f32>)> {
    let (w, h, n) = (store.width(), store.height(), store.n_frames());
    if n == 0 {
        return Err(Error::input(store.path(), "the session has no frames"));
    }
    let n_bins = (n / bin_frames).max(1);
    let frames_used = (n_bins * bin_frames).min(n);
    let npix = w * h;
    let mut data = vec![0f32; npix * n_bins];
    let mut mean = vec![0f64; npix];
    // Frames are read a batch at a time: per-frame reads would map and release the
    // store one frame at a time, and the release of such small ranges did not keep
    // the resident set flat.
    const BATCH: usize = 64;
    let mut buf = vec![0f32; BATCH * npix];
    let mut prev: Option<Vec<f32>> = None;
    // One bin is summed frame-major, then scattered once: far fewer strided writes.
    let mut acc = vec![0f32; npix];
    let mut diff2 = vec![0f64; npix];
    let per_bin = frames_used as f32 / n_bins as f32;
    let mut start = 0;
    while start < n {
        let got = store.read_frames_into(start, &mut buf)?;
        for (k, frame) in buf[..got * npix].chunks_exact(npix).enumerate() {
            let t = start + k;
            for (m, &v) in mean.iter_mut().zip(frame) {
                *m += v as f64;
            }
            let before = if k > 0 {
                Some(&buf[(k - 1) * npix..k * npix])
            } else {
                prev.as_deref()
            };
            if let Some(p) = before {
                for ((d, &v), &u) in diff2.iter_mut().zip(frame).zip(p) {
                    *d += ((v - u) as f64).powi(2);
                }
            }
            if t < frames_used {
                for (a, &v) in acc.iter_mut().zip(frame) {
                    *a += v;
                }
                if (t + 1) % bin_frames == 0 || t + 1 == frames_used {
                    let b = (t / bin_frames).min(n_bins - 1);
                    for (p, a) in acc.iter_mut().enumerate() {
                        data[p * n_bins + b] += *a / per_bin;
                        *a = 0.0;
                    }
                }
            }
        }
        if got > 0 {
            prev = Some(buf[(got - 1) * npix..got * npix].to_vec());
        }
        progress.advance(got as u64);
        start += got.max(1);
    }
    let mean = mean.iter().map(|&m| (m / n as f64) as f32).collect();
    let pairs = (n.max(2) - 1) as f64;
    let noise = diff2
        .iter()
        .map(|&d| ((d / (2.0 * pairs)).sqrt() / (per_bin as f64).sqrt()) as f32)
        .collect();
    Ok((
        Binned {
            width: w,
            height: h,
            n_bins,
            bin_frames,
            data,
            noise,
        },
        mean,
    ))
}

/// Subtract each pixel's centred running mean over `window` bins (a temporal
/// high-pass that removes slow drift, bleaching and slow neuropil changes).
pub fn highpass_time(b: &mut Binned, window: usize) {
    let n = b.n_bins;
    let half = window / 2;
    use rayon::prelude::*;
    b.data.par_chunks_mut(n).for_each(|s| {
        let mut cum = vec![0f64; n + 1];
        for (i, &v) in s.iter().enumerate() {
            cum[i + 1] = cum[i] + v as f64;
        }
        for (i, v) in s.iter_mut().enumerate() {
            let lo = i.saturating_sub(half);
            let hi = (i + half + 1).min(n);
            *v -= ((cum[hi] - cum[lo]) / (hi - lo) as f64) as f32;
        }
    });
}

/// Subtract a spatially blurred copy (s.d. `sigma` px) from every bin: removes
/// neuropil and background, which vary on scales much larger than a cell.
///
/// The blur is computed on a coarse grid: the movie is averaged over f×f blocks
/// (f ≈ σ/3, whose box adds a negligible f²/12 to σ²), blurred there with σ/f,
/// and read back by bilinear interpolation. That costs a few passes over the
/// movie instead of a kernel of ±3σ taps per pixel, and little memory.
pub fn highpass_space(b: &mut Binned, sigma: f64) {
    let (w, h, n) = (b.width, b.height, b.n_bins);
    let f = ((sigma / 3.0).floor() as usize).clamp(1, w.min(h));
    let (gw, gh) = (w.div_ceil(f), h.div_ceil(f));
    let mut grid = vec![0f32; gw * gh * n];
    let mut count = vec![0f32; gw * gh];
    for y in 0..h {
        for x in 0..w {
            let g = (y / f) * gw + x / f;
            count[g] += 1.0;
            crate::imgproc::axpy(&mut grid[g * n..(g + 1) * n], 1.0, b.series(y * w + x));
        }
    }
    for (g, c) in count.iter().enumerate() {
        grid[g * n..(g + 1) * n].iter_mut().for_each(|v| *v /= c);
    }
    let kernel = crate::imgproc::gaussian_kernel(sigma / f as f64);
    let all = crate::imgproc::Rect {
        x0: 0,
        x1: gw,
        y0: 0,
        y1: gh,
    };
    let low = crate::imgproc::blur_stack_rect(&grid, n, gw, gh, &kernel, all);
    drop(grid);
    // Block centres sit at (i + ½)·f − ½ in pixel coordinates.
    let coord = |p: usize, cells: usize| -> (usize, usize, f32) {
        let c = ((p as f64 + 0.5) / f as f64 - 0.5).clamp(0.0, (cells - 1) as f64);
        let i0 = c.floor() as usize;
        let i1 = (i0 + 1).min(cells - 1);
        (i0, i1, (c - i0 as f64) as f32)
    };
    use rayon::prelude::*;
    b.data
        .par_chunks_mut(w * n)
        .enumerate()
        .for_each(|(y, row)| {
            let (y0, y1, fy) = coord(y, gh);
            for x in 0..w {
                let (x0, x1, fx) = coord(x, gw);
                let s = &mut row[x * n..(x + 1) * n];
                for (g, wt) in [
                    (y0 * gw + x0, (1.0 - fx) * (1.0 - fy)),
                    (y0 * gw + x1, fx * (1.0 - fy)),
                    (y1 * gw + x0, (1.0 - fx) * fy),
                    (y1 * gw + x1, fx * fy),
                ] {
                    crate::imgproc::axpy(s, -wt, &low[g * n..(g + 1) * n]);
                }
            }
        });
}

/// Robust noise s.d. of a series: median absolute first difference / (0.6745·√2).
pub fn noise_sd(s: &[f32]) -> f32 {
    if s.len() < 3 {
        return 0.0;
    }
    let mut d: Vec<f32> = s.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    let mid = d.len() / 2;
    let (_, m, _) = d.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    *m / (0.6745 * std::f32::consts::SQRT_2)
}

/// The largest binned value of every pixel.
pub fn max_image(b: &Binned) -> Vec<f32> {
    (0..b.width * b.height)
        .map(|p| b.series(p).iter().copied().fold(f32::MIN, f32::max))
        .collect()
}

/// Local correlation image: each pixel's mean Pearson correlation with its eight
/// neighbours' series (CaImAn's "correlation image"), from the high-passed movie.
pub fn correlation_image(b: &Binned) -> Vec<f32> {
    use rayon::prelude::*;
    let (w, h, n) = (b.width, b.height, b.n_bins);
    let normed: Vec<f32> = b
        .data
        .par_chunks(n)
        .flat_map_iter(|s| {
            let mean = s.iter().sum::<f32>() / n as f32;
            let ss: f32 = s.iter().map(|v| (v - mean) * (v - mean)).sum();
            let scale = if ss > 0.0 { 1.0 / ss.sqrt() } else { 0.0 };
            s.iter().map(move |v| (v - mean) * scale)
        })
        .collect();
    (0..w * h)
        .into_par_iter()
        .map(|p| {
            let (x, y) = ((p % w) as isize, (p / w) as isize);
            let a = &normed[p * n..(p + 1) * n];
            let (mut sum, mut count) = (0f32, 0);
            for dy in -1..=1isize {
                for dx in -1..=1isize {
                    let (nx, ny) = (x + dx, y + dy);
                    if (dx, dy) == (0, 0)
                        || nx < 0
                        || ny < 0
                        || nx >= w as isize
                        || ny >= h as isize
                    {
                        continue;
                    }
                    let q = ny as usize * w + nx as usize;
                    let bq = &normed[q * n..(q + 1) * n];
                    sum += a.iter().zip(bq).map(|(u, v)| u * v).sum::<f32>();
                    count += 1;
                }
            }
            if count > 0 {
                sum / count as f32
            } else {
                0.0
            }
        })
        .collect()
}

/// Suite2p-style enhanced mean image: the mean image minus its local mean, divided
/// by its local s.d. (both Gaussian, s.d. `sigma` px), clipped to ±6. Cells stand out
/// as local contrast whatever the brightness around them.
pub fn enhanced_mean(mean: &[f32], width: usize, height: usize, sigma: f64) -> Vec<f32> {
    use crate::imgproc::gaussian_blur;
    let low = gaussian_blur(mean, width, height, sigma);
    let hp: Vec<f32> = mean.iter().zip(&low).map(|(m, l)| m - l).collect();
    let sq: Vec<f32> = hp.iter().map(|v| v * v).collect();
    let var = gaussian_blur(&sq, width, height, sigma);
    let global = (var.iter().map(|&v| v as f64).sum::<f64>() / var.len().max(1) as f64) as f32;
    hp.iter()
        .zip(&var)
        .map(|(v, s2)| {
            let sd = s2.max(1e-3 * global).max(f32::MIN_POSITIVE).sqrt();
            (v / sd).clamp(-6.0, 6.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_width_follows_tau_and_cap() {
        assert_eq!(bin_width(3000, 15.0, 1.0, 400), 15);
        assert_eq!(bin_width(30000, 15.0, 1.0, 400), 75);
        assert_eq!(bin_width(10, 5.0, 0.01, 400), 1);
    }

    #[test]
    fn noise_of_white_noise_is_close() {
        let mut x = 12345u64;
        let s: Vec<f32> = (0..20000)
            .map(|_| {
                // Sum of uniforms: near-Gaussian with s.d. 1.
                (0..12)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x >> 11) as f32 / (1u64 << 53) as f32
                    })
                    .sum::<f32>()
                    - 6.0
            })
            .collect();
        let sd = noise_sd(&s);
        assert!((sd - 1.0).abs() < 0.05, "{sd}");
    }

    #[test]
    fn correlated_neighbours_light_up_the_correlation_image() {
        let (w, h, n) = (8, 8, 50);
        let mut data = vec![0f32; w * h * n];
        let mut x = 7u32;
        for v in data.iter_mut() {
            x = x.wrapping_mul(1664525).wrapping_add(1013904223);
            *v = (x >> 8) as f32 / (1 << 24) as f32;
        }
        // A 3×3 patch sharing one strong signal.
        for (py, px) in [
            (3, 3),
            (3, 4),
            (3, 5),
            (4, 3),
            (4, 4),
            (4, 5),
            (5, 3),
            (5, 4),
            (5, 5),
        ] {
            let p = py * w + px;
            for t in 0..n {
                data[p * n + t] += if t % 7 == 0 { 5.0 } else { 0.0 };
            }
        }
        let b = Binned {
            width: w,
            height: h,
            n_bins: n,
            bin_frames: 1,
            data,
            noise: vec![1.0; w * h],
        };
        let c = correlation_image(&b);
        assert!(c[4 * w + 4] > 0.9);
        assert!(c[0].abs() < 0.4);
    }

    #[test]
    fn highpass_space_removes_smooth_background_and_keeps_a_small_spot() {
        let (w, h, n) = (96, 80, 2);
        let mut data = vec![0f32; w * h * n];
        for y in 0..h {
            for x in 0..w {
                let p = y * w + x;
                let bg = 10.0 + 0.05 * x as f32 + 0.03 * y as f32;
                let spot = if (x as f32 - 48.0).hypot(y as f32 - 40.0) < 3.0 {
                    5.0
                } else {
                    0.0
                };
                data[p * n] = bg + spot;
                data[p * n + 1] = bg;
            }
        }
        let mut b = Binned {
            width: w,
            height: h,
            n_bins: n,
            bin_frames: 1,
            data,
            noise: vec![1.0; w * h],
        };
        highpass_space(&mut b, 20.0);
        let at = |x: usize, y: usize, t: usize| b.data[(y * w + x) * n + t];
        // Away from the borders a linear background is removed almost entirely.
        assert!(at(20, 20, 1).abs() < 0.3, "{}", at(20, 20, 1));
        assert!(at(48, 40, 0) > 4.5, "{}", at(48, 40, 0));
    }

    #[test]
    fn highpass_time_removes_a_ramp() {
        let n = 40;
        let mut b = Binned {
            width: 1,
            height: 1,
            n_bins: n,
            bin_frames: 1,
            data: (0..n).map(|i| i as f32).collect(),
            noise: vec![1.0],
        };
        highpass_time(&mut b, 9);
        assert!(b.data[10..30].iter().all(|v| v.abs() < 1e-4));
    }
}
