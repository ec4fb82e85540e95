//! Activity-based ROI detection: greedy seeds on an activity map, footprints from
//! the seed's correlated pixels, a rank-1 decomposition per footprint, and
//! subtraction of each found cell before the next seed (so overlapping cells are
//! demixed: the second cell is found in what the first one leaves).
//!
//! The method follows Suite2p's sparse detection (Pachitariu et al. 2017: a
//! thresholded activity statistic of the spatially smoothed, noise-normalised
//! binned movie; seeds at its maximum; cells extended over correlated pixels and
//! removed from the movie before the next iteration) with CaImAn's greedy
//! initialisation idea of a rank-1 factorisation of each cell's pixels
//! (Pnevmatikakis et al. 2016). The rank-1 step uses faer's SVD, then
//! non-negative alternating refinements.

use super::binned::Binned;
use crate::imgproc::{blur_stack_rect, gaussian_kernel, Rect};
use rayon::prelude::*;

/// What the greedy search needs to know.
pub struct GreedyOptions {
    pub diameter: f64,
    pub event_threshold_sd: f64,
    pub seed_threshold: f64,
    pub footprint_corr: f64,
    pub max_rois: usize,
    /// An ROI's trace must peak this many noise s.d. above its median.
    pub min_event_sd: f64,
    /// Pixels a seed may sit on: the registration's valid box.
    pub valid: Rect,
}

/// One cell found by its activity.
pub struct ActiveRoi {
    pub pixels: Vec<u32>,
    pub weights: Vec<f32>,
    /// Its binned trace (high-passed, the footprint's scale).
    pub trace: Vec<f32>,
    /// The activity statistic at its seed.
    pub seed_stat: f32,
    /// Noise s.d. of `trace` expected from the pixels' noise.
    pub noise: f32,
}

/// The activity statistic and the state of the search.
struct Search<'a> {
    y: &'a mut Binned,
    kernel: Vec<f32>,
    /// Noise s.d. of every pixel's smoothed series (fixed at the start).
    noise: Vec<f32>,
    stat: Vec<f32>,
    theta: f32,
}

/// Mean squared excess of the noise-normalised, smoothed series over θ.
fn activity_stat(smoothed: &[f32], noise: f32, theta: f32) -> f32 {
    if !(noise > 0.0) {
        return 0.0;
    }
    let inv = 1.0 / noise;
    smoothed
        .iter()
        .map(|&v| (v * inv - theta).max(0.0).powi(2))
        .sum::<f32>()
        / smoothed.len().max(1) as f32
}

impl<'a> Search<'a> {
    fn new(y: &'a mut Binned, opts: &GreedyOptions) -> Self {
        let kernel = gaussian_kernel(opts.diameter / 4.0);
        let (w, h, n) = (y.width, y.height, y.n_bins);
        let mut noise = vec![0f32; w * h];
        let mut stat = vec![0f32; w * h];
        let theta = opts.event_threshold_sd as f32;
        // Independent pixel noise through the separable, edge-clamped kernel.
        let (gx, gy) = (clamped_gain(&kernel, w), clamped_gain(&kernel, h));
        // Row bands: the smoothed movie is never held whole.
        let bands: Vec<(usize, usize)> = (0..h)
            .step_by(16)
            .map(|y0| (y0, (y0 + 16).min(h)))
            .collect();
        let parts: Vec<(Vec<f32>, Vec<f32>)> = bands
            .par_iter()
            .map(|&(y0, y1)| {
                let rect = Rect {
                    x0: 0,
                    x1: w,
                    y0,
                    y1,
                };
                let s = blur_stack_rect(&y.data, n, w, h, &kernel, rect);
                let nz: Vec<f32> = (y0 * w..y1 * w)
                    .map(|p| y.noise[p] * (gx[p % w] * gy[p / w]).sqrt())
                    .collect();
                let st: Vec<f32> = s
                    .chunks(n)
                    .zip(&nz)
                    .map(|(c, &sd)| activity_stat(c, sd, theta))
                    .collect();
                (nz, st)
            })
            .collect();
        for ((y0, _), (nz, st)) in bands.iter().zip(parts) {
            noise[y0 * w..y0 * w + nz.len()].copy_from_slice(&nz);
            stat[y0 * w..y0 * w + st.len()].copy_from_slice(&st);
        }
        Search {
            y,
            kernel,
            noise,
            stat,
            theta,
        }
    }

    /// Recompute the statistic inside `rect` after the movie changed there.
    fn refresh(&mut self, rect: Rect) {
        let (w, h, n) = (self.y.width, self.y.height, self.y.n_bins);
        let s = blur_stack_rect(&self.y.data, n, w, h, &self.kernel, rect);
        for (i, c) in s.chunks(n).enumerate() {
            let (x, yy) = (rect.x0 + i % rect.width(), rect.y0 + i / rect.width());
            let p = yy * w + x;
            if self.stat[p] > 0.0 {
                self.stat[p] = activity_stat(c, self.noise[p], self.theta);
            }
        }
    }
}

/// Σ w² of the effective 1-D weights at every position of a line of `n` pixels
/// when out-of-range taps are clamped to the edge (they pile onto the edge pixel,
/// so smoothed noise is larger there than in the middle).
fn clamped_gain(kernel: &[f32], n: usize) -> Vec<f32> {
    let r = (kernel.len() / 2) as isize;
    (0..n as isize)
        .map(|x| {
            let mut eff = std::collections::BTreeMap::new();
            for (j, &k) in kernel.iter().enumerate() {
                let q = (x + j as isize - r).clamp(0, n as isize - 1);
                *eff.entry(q).or_insert(0f32) += k;
            }
            eff.values().map(|v| v * v).sum()
        })
        .collect()
}

/// Median + k robust s.d. of the statistic over the valid box.
fn stat_threshold(stat: &[f32], width: usize, valid: Rect, k: f64) -> f32 {
    let mut v: Vec<f32> = (valid.y0..valid.y1)
        .flat_map(|y| (valid.x0..valid.x1).map(move |x| y * width + x))
        .map(|p| stat[p])
        .collect();
    if v.is_empty() {
        return f32::INFINITY;
    }
    let mid = v.len() / 2;
    let median = *v.select_nth_unstable_by(mid, |a, b| a.total_cmp(b)).1;
    let mut dev: Vec<f32> = v.iter().map(|x| (x - median).abs()).collect();
    let mad = *dev.select_nth_unstable_by(mid, |a, b| a.total_cmp(b)).1;
    // A floor keeps a flat statistic (no activity at all) from passing everything.
    let sd = (1.4826 * mad).max(1e-3 * median.abs()).max(1e-6);
    median + k as f32 * sd
}

/// The statistic's mean plus `k` s.d. for pure Gaussian noise over `n` bins:
/// moments of max(z − θ, 0)² for z ~ N(0, 1), integrated numerically. Seeds below
/// it cannot be told from noise, however quiet the rest of the image is.
fn noise_threshold(theta: f32, n: usize, k: f64) -> f32 {
    let theta = theta as f64;
    let (step, mut m2, mut m4) = (1e-3, 0.0f64, 0.0f64);
    let mut z = theta;
    while z < theta + 12.0 {
        let phi = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let e2 = (z - theta).powi(2);
        m2 += phi * e2 * step;
        m4 += phi * e2 * e2 * step;
        z += step;
    }
    let sd = ((m4 - m2 * m2).max(0.0) / n.max(1) as f64).sqrt();
    (m2 + k * sd) as f32
}

fn pearson(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    if n < 2 {
        return 0.0;
    }
    let (ma, mb) = (
        a.iter().sum::<f32>() / n as f32,
        b.iter().sum::<f32>() / n as f32,
    );
    let (mut sab, mut saa, mut sbb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        let (u, v) = (x - ma, y - mb);
        sab += u * v;
        saa += u * u;
        sbb += v * v;
    }
    if saa > 0.0 && sbb > 0.0 {
        sab / (saa * sbb).sqrt()
    } else {
        0.0
    }
}

/// Pixels of `rect` within `radius` of (cx, cy), with their correlation to `trace`,
/// kept when connected (8-neighbour) to the seed through pixels above `min_corr`.
fn correlated_support(
    y: &Binned,
    rect: Rect,
    (cx, cy): (usize, usize),
    radius: f64,
    trace: &[f32],
    min_corr: f32,
    valid: Rect,
) -> Vec<usize> {
    let (rw, rh) = (rect.width(), rect.height());
    let inside = |x: usize, yy: usize| {
        let (dx, dy) = (x as f64 - cx as f64, yy as f64 - cy as f64);
        dx * dx + dy * dy <= radius * radius
            && x >= valid.x0
            && x < valid.x1
            && yy >= valid.y0
            && yy < valid.y1
    };
    let corr: Vec<f32> = (0..rw * rh)
        .map(|i| {
            let (x, yy) = (rect.x0 + i % rw, rect.y0 + i / rw);
            if inside(x, yy) {
                pearson(y.series(yy * y.width + x), trace)
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    let start = (cy - rect.y0) * rw + (cx - rect.x0);
    if corr[start] < min_corr {
        return Vec::new();
    }
    flood_fill(rw, rh, start, |j| corr[j] >= min_corr)
        .into_iter()
        .map(|i| (rect.y0 + i / rw) * y.width + rect.x0 + i % rw)
        .collect()
}

/// Indices of the `rw × rh` grid 8-connected to `start` through cells where
/// `inside` holds (`start` itself always included), ascending.
fn flood_fill(rw: usize, rh: usize, start: usize, inside: impl Fn(usize) -> bool) -> Vec<usize> {
    let mut keep = vec![false; rw * rh];
    keep[start] = true;
    let mut stack = vec![start];
    let mut out = Vec::new();
    while let Some(i) = stack.pop() {
        out.push(i);
        let (ix, iy) = ((i % rw) as isize, (i / rw) as isize);
        for dy in -1..=1isize {
            for dx in -1..=1isize {
                let (nx, ny) = (ix + dx, iy + dy);
                if nx < 0 || ny < 0 || nx >= rw as isize || ny >= rh as isize {
                    continue;
                }
                let j = ny as usize * rw + nx as usize;
                if !keep[j] && inside(j) {
                    keep[j] = true;
                    stack.push(j);
                }
            }
        }
    }
    out.sort_unstable();
    out
}

/// Rank-1 non-negative factorisation of the support's series: faer's SVD gives the
/// start, two alternating non-negative least-squares rounds refine it. Returns
/// (weights with maximum 1, trace), or None when nothing positive remains.
fn rank_one(y: &Binned, support: &[usize]) -> Option<(Vec<f32>, Vec<f32>)> {
    let n = y.n_bins;
    let m = faer::Mat::<f32>::from_fn(support.len(), n, |i, t| y.series(support[i])[t]);
    let svd = m.thin_svd().ok()?;
    let (u, v) = (svd.U().col(0), svd.V().col(0));
    let sign = if (0..support.len()).map(|i| u[i]).sum::<f32>() >= 0.0 {
        1.0
    } else {
        -1.0
    };
    let mut a: Vec<f32> = (0..support.len()).map(|i| (sign * u[i]).max(0.0)).collect();
    let mut c: Vec<f32> = (0..n).map(|t| sign * v[t]).collect();
    for _ in 0..2 {
        let aa: f32 = a.iter().map(|x| x * x).sum();
        if !(aa > 0.0) {
            return None;
        }
        c = (0..n)
            .map(|t| {
                support
                    .iter()
                    .zip(&a)
                    .map(|(&p, &ap)| ap * y.series(p)[t])
                    .sum::<f32>()
                    / aa
            })
            .collect();
        let cc: f32 = c.iter().map(|x| x * x).sum();
        if !(cc > 0.0) {
            return None;
        }
        a = support
            .iter()
            .map(|&p| {
                (y.series(p)
                    .iter()
                    .zip(&c)
                    .map(|(s, ct)| s * ct)
                    .sum::<f32>()
                    / cc)
                    .max(0.0)
            })
            .collect();
    }
    let peak = a.iter().copied().fold(0.0f32, f32::max);
    if !(peak > 0.0) {
        return None;
    }
    a.iter_mut().for_each(|x| *x /= peak);
    c.iter_mut().for_each(|x| *x *= peak);
    Some((a, c))
}

/// The footprint by regression on the cell's trace: every valid pixel of `rect`
/// within `radius` of `centre` gets weight ⟨y_p, c⟩/⟨c, c⟩; pixels above a fifth of
/// the largest weight, connected to it, are kept, and the trace is refitted to
/// them. Regression weights are less noisy than correlations for dim pixels.
fn extend_footprint(
    y: &Binned,
    rect: Rect,
    (mx, my): (f64, f64),
    radius: f64,
    trace: &[f32],
    valid: Rect,
) -> Option<(Vec<usize>, Vec<f32>, Vec<f32>)> {
    let cc: f32 = trace.iter().map(|v| v * v).sum();
    if !(cc > 0.0) || !mx.is_finite() {
        return None;
    }
    let (rw, rh) = (rect.width(), rect.height());
    let coef: Vec<f32> = (0..rw * rh)
        .map(|i| {
            let (x, yy) = (rect.x0 + i % rw, rect.y0 + i / rw);
            let inside = (x as f64 - mx).hypot(yy as f64 - my) <= radius
                && x >= valid.x0
                && x < valid.x1
                && yy >= valid.y0
                && yy < valid.y1;
            if inside {
                y.series(yy * y.width + x)
                    .iter()
                    .zip(trace)
                    .map(|(a, b)| a * b)
                    .sum::<f32>()
                    / cc
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    let (start, peak) =
        coef.iter()
            .copied()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, v)| if v > b.1 { (i, v) } else { b },
            );
    if !(peak > 0.0) {
        return None;
    }
    let floor = 0.2 * peak;
    let pix = flood_fill(rw, rh, start, |j| coef[j] >= floor);
    let support: Vec<usize> = pix
        .iter()
        .map(|&i| (rect.y0 + i / rw) * y.width + rect.x0 + i % rw)
        .collect();
    let weights: Vec<f32> = pix.iter().map(|&i| coef[i] / peak).collect();
    let ww: f32 = weights.iter().map(|v| v * v).sum();
    let mut refit = vec![0f32; y.n_bins];
    for (&p, &a) in support.iter().zip(&weights) {
        crate::imgproc::axpy(&mut refit, a / ww, y.series(p));
    }
    Some((support, weights, refit))
}

/// What the cell leaves around its footprint: every valid pixel of `rect` within
/// `radius` of `centre` whose series still regresses positively on the trace,
/// with that coefficient. Removing it keeps the footprint's dim rim from seeding
/// false ROIs after the cell is subtracted.
fn halo(
    y: &Binned,
    rect: Rect,
    (mx, my): (f64, f64),
    radius: f64,
    trace: &[f32],
    valid: Rect,
) -> (Vec<usize>, Vec<f32>) {
    let cc: f32 = trace.iter().map(|v| v * v).sum();
    let (mut pixels, mut coefs) = (Vec::new(), Vec::new());
    if !(cc > 0.0) || !mx.is_finite() {
        return (pixels, coefs);
    }
    for yy in rect.y0.max(valid.y0)..rect.y1.min(valid.y1) {
        for x in rect.x0.max(valid.x0)..rect.x1.min(valid.x1) {
            if (x as f64 - mx).hypot(yy as f64 - my) > radius {
                continue;
            }
            let p = yy * y.width + x;
            let a = y
                .series(p)
                .iter()
                .zip(trace)
                .map(|(u, v)| u * v)
                .sum::<f32>()
                / cc;
            if a > 0.0 {
                pixels.push(p);
                coefs.push(a);
            }
        }
    }
    (pixels, coefs)
}

/// Zero the statistic within `radius` of (cx, cy), so the seed is not taken again.
fn suppress(stat: &mut [f32], width: usize, height: usize, (cx, cy): (f64, f64), radius: f64) {
    let r = radius.ceil() as isize;
    for dy in -r..=r {
        for dx in -r..=r {
            let (x, y) = (cx.round() as isize + dx, cy.round() as isize + dy);
            if x < 0 || y < 0 || x >= width as isize || y >= height as isize {
                continue;
            }
            if ((dx * dx + dy * dy) as f64) <= radius * radius {
                stat[y as usize * width + x as usize] = 0.0;
            }
        }
    }
}

fn argmax_in(stat: &[f32], width: usize, valid: Rect) -> Option<(usize, f32)> {
    let mut best: Option<(usize, f32)> = None;
    for y in valid.y0..valid.y1 {
        for x in valid.x0..valid.x1 {
            let p = y * width + x;
            let v = stat[p];
            if best.is_none_or(|(_, b)| v > b) {
                best = Some((p, v));
            }
        }
    }
    best
}

/// Find cells greedily in the high-passed binned movie `y` (which is consumed as the
/// residual). `progress` is told of every ROI found.
pub fn detect_active(
    y: &mut Binned,
    opts: &GreedyOptions,
    mut on_roi: impl FnMut(usize),
) -> Vec<ActiveRoi> {
    let (w, h) = (y.width, y.height);
    let d = opts.diameter;
    let mut search = Search::new(y, opts);
    let threshold = stat_threshold(&search.stat, w, opts.valid, opts.seed_threshold).max(
        noise_threshold(search.theta, search.y.n_bins, opts.seed_threshold),
    );
    let min_pixels = (0.1 * std::f64::consts::PI * d * d / 4.0).max(3.0) as usize;
    let half = (d.ceil() as usize) + 1;
    let seed_radius = (d / 4.0).max(1.0);
    // With few bins chance correlations are large (s.d. ≈ 1/√n): a pixel joins only
    // when its correlation is also 3 s.d. above chance.
    let min_corr = (opts.footprint_corr as f32).max(3.0 / (search.y.n_bins as f32).sqrt());
    let mut rois = Vec::new();
    let mut attempts = 0usize;
    while rois.len() < opts.max_rois && attempts < 4 * opts.max_rois + 100 {
        attempts += 1;
        let Some((p, best)) = argmax_in(&search.stat, w, opts.valid) else {
            break;
        };
        if !(best > threshold) {
            break;
        }
        let (cx, cy) = (p % w, p / w);
        let rect = Rect::around(cx, cy, half, w, h);
        let seed_trace = disc_mean(search.y, (cx, cy), seed_radius, opts.valid);
        let support = correlated_support(
            search.y,
            rect,
            (cx, cy),
            d,
            &seed_trace,
            min_corr,
            opts.valid,
        );
        let found = (support.len() >= min_pixels)
            .then(|| rank_one(search.y, &support))
            .flatten();
        let Some((weights, trace)) = found else {
            suppress(&mut search.stat, w, h, (cx as f64, cy as f64), seed_radius);
            continue;
        };
        let centre = centroid(&support, &weights, w);
        let (support, weights, trace) =
            extend_footprint(search.y, rect, centre, 0.7 * d, &trace, opts.valid)
                .unwrap_or((support, weights, trace));
        if support.len() < min_pixels {
            suppress(&mut search.stat, w, h, (cx as f64, cy as f64), seed_radius);
            continue;
        }
        let noise = trace_noise(search.y, &support, &weights);
        if !has_event(&trace, noise, opts.min_event_sd as f32) {
            suppress(&mut search.stat, w, h, (cx as f64, cy as f64), seed_radius);
            continue;
        }
        subtract(search.y, &support, &weights, &trace);
        let (halo, halo_w) = halo(search.y, rect, centre, 0.7 * d, &trace, opts.valid);
        subtract(search.y, &halo, &halo_w, &trace);
        search.refresh(rect.grow(search.kernel.len() / 2, w, h));
        let (mx, my) = centroid(&support, &weights, w);
        suppress(&mut search.stat, w, h, (mx, my), seed_radius);
        suppress(&mut search.stat, w, h, (cx as f64, cy as f64), seed_radius);
        rois.push(ActiveRoi {
            noise,
            pixels: support.iter().map(|&q| q as u32).collect(),
            weights,
            trace,
            seed_stat: best,
        });
        on_roi(rois.len());
    }
    rois
}

/// Whether the trace's largest value stands `k` noise s.d. above its median: a
/// cell fires at least once clearly, where a patch of noise that happened to
/// pass the seed threshold over few bins does not.
fn has_event(trace: &[f32], noise: f32, k: f32) -> bool {
    if trace.is_empty() || !(noise > 0.0) {
        return false;
    }
    let mut s = trace.to_vec();
    let mid = s.len() / 2;
    let median = *s.select_nth_unstable_by(mid, |a, b| a.total_cmp(b)).1;
    let peak = trace.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    peak - median >= k * noise
}

/// Noise s.d. of the least-squares trace of footprint `a`: √(Σ a²σ²) / Σ a².
fn trace_noise(y: &Binned, support: &[usize], a: &[f32]) -> f32 {
    let (num, den) = support
        .iter()
        .zip(a)
        .fold((0f64, 0f64), |(n, d), (&p, &w)| {
            let w = w as f64;
            (n + (w * y.noise[p] as f64).powi(2), d + w * w)
        });
    if den > 0.0 {
        (num.sqrt() / den) as f32
    } else {
        0.0
    }
}

/// Mean series of the valid pixels within `radius` of (cx, cy).
fn disc_mean(y: &Binned, (cx, cy): (usize, usize), radius: f64, valid: Rect) -> Vec<f32> {
    let mut acc = vec![0f32; y.n_bins];
    let mut count = 0;
    for (x, yy) in crate::imgproc::disc_pixels((cx as isize, cy as isize), radius, valid) {
        crate::imgproc::axpy(&mut acc, 1.0, y.series(yy * y.width + x));
        count += 1;
    }
    if count > 0 {
        acc.iter_mut().for_each(|v| *v /= count as f32);
    }
    acc
}

fn subtract(y: &mut Binned, support: &[usize], weights: &[f32], trace: &[f32]) {
    let n = y.n_bins;
    for (&p, &a) in support.iter().zip(weights) {
        crate::imgproc::axpy(&mut y.data[p * n..(p + 1) * n], -a, trace);
    }
}

/// Weighted centroid (x, y) of linear pixel indices.
pub fn centroid(pixels: &[usize], weights: &[f32], width: usize) -> (f64, f64) {
    let (mut sx, mut sy, mut sw) = (0f64, 0f64, 0f64);
    for (&p, &wt) in pixels.iter().zip(weights) {
        let wt = wt as f64;
        sx += wt * (p % width) as f64;
        sy += wt * (p / width) as f64;
        sw += wt;
    }
    if sw > 0.0 {
        (sx / sw, sy / sw)
    } else {
        (f64::NAN, f64::NAN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The options the tests search a 40×40 movie with.
    fn options() -> GreedyOptions {
        GreedyOptions {
            diameter: 8.0,
            event_threshold_sd: 2.0,
            seed_threshold: 8.0,
            footprint_corr: 0.25,
            max_rois: 50,
            min_event_sd: 5.0,
            valid: Rect {
                x0: 0,
                x1: 40,
                y0: 0,
                y1: 40,
            },
        }
    }

    /// Two overlapping Gaussian cells with independent sparse activity, plus noise.
    fn two_cells() -> (Binned, [(f64, f64); 2]) {
        let (w, h, n) = (40, 40, 200);
        let cells = [(15.0, 18.0), (22.0, 20.0)];
        let mut data = vec![0f32; w * h * n];
        let mut s = 99u64;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f32 / (1u64 << 53) as f32
        };
        for v in data.iter_mut() {
            *v = (0..4).map(|_| rnd()).sum::<f32>() - 2.0;
        }
        for (k, &(cx, cy)) in cells.iter().enumerate() {
            let events: Vec<f32> = (0..n)
                .map(|t| if (t * 7 + k * 13) % 23 == 0 { 6.0 } else { 0.0 })
                .collect();
            for y in 0..h {
                for x in 0..w {
                    let d2 = (x as f64 - cx).powi(2) + (y as f64 - cy).powi(2);
                    let a = (-d2 / (2.0 * 2.5 * 2.5)).exp() as f32;
                    if a < 0.05 {
                        continue;
                    }
                    let p = y * w + x;
                    for t in 0..n {
                        data[p * n + t] += a * events[t];
                    }
                }
            }
        }
        (
            Binned {
                width: w,
                height: h,
                n_bins: n,
                bin_frames: 1,
                noise: vec![0.58; w * h],
                data,
            },
            cells,
        )
    }

    #[test]
    fn finds_both_overlapping_cells_and_nothing_else() {
        let (mut y, cells) = two_cells();
        let opts = options();
        let rois = detect_active(&mut y, &opts, |_| {});
        assert_eq!(rois.len(), 2, "found {}", rois.len());
        for &(cx, cy) in &cells {
            let near = rois.iter().any(|r| {
                let px: Vec<usize> = r.pixels.iter().map(|&p| p as usize).collect();
                let (x, y) = centroid(&px, &r.weights, 40);
                (x - cx).hypot(y - cy) < 1.5
            });
            assert!(near, "no ROI near ({cx}, {cy})");
        }
    }

    #[test]
    fn pure_noise_gives_no_rois() {
        let (mut y, _) = two_cells();
        // Remove the cells: regenerate pure noise of the same shape.
        let mut s = 5u64;
        for v in y.data.iter_mut() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            *v = (s >> 11) as f32 / (1u64 << 53) as f32 - 0.5;
        }
        y.noise = vec![0.289; 40 * 40];
        let opts = options();
        assert!(detect_active(&mut y, &opts, |_| {}).is_empty());
    }

    #[test]
    fn noise_threshold_matches_the_gaussian_moments() {
        // E[max(z − 2, 0)²] = 5·(1 − Φ(2)) − 2·φ(2) ≈ 0.005782.
        let mean_only = noise_threshold(2.0, 100, 0.0);
        assert!((mean_only - 0.005782).abs() < 1e-4, "{mean_only}");
        assert!(noise_threshold(2.0, 100, 8.0) > noise_threshold(2.0, 10_000, 8.0));
    }

    #[test]
    fn stat_is_zero_without_excess() {
        assert_eq!(activity_stat(&[0.5, 1.0, -3.0], 1.0, 2.0), 0.0);
        assert!(activity_stat(&[4.0, 0.0], 1.0, 2.0) > 1.9);
        assert_eq!(activity_stat(&[4.0], 0.0, 2.0), 0.0);
    }
}
