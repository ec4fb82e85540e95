//! The session's reference image, built iteratively (as Suite2p does).
//!
//! In: a sample of frames spread evenly over the session. Seed: the frame whose
//! best-matching frames correlate most with it (correlations computed on frames
//! binned to ≤ 128 px, z-scored), averaged with those matches. Then, for a few
//! iterations, every sampled frame is registered rigidly to the current reference
//! and the best-aligned fraction (growing each iteration) is averaged, shifted
//! back by its mean shift so the reference sits at the average brain position.

use super::interp::shift_image;
use super::rigid::Correlator;
use rayon::prelude::*;

/// Bin a frame by `b` in both axes.
fn bin(frame: &[f32], w: usize, h: usize, b: usize) -> Vec<f32> {
    let (bw, bh) = (w / b, h / b);
    let mut out = vec![0.0f32; bw * bh];
    for y in 0..bh * b {
        for x in 0..bw * b {
            out[(y / b) * bw + x / b] += frame[y * w + x];
        }
    }
    out
}

/// Z-score a vector (zero vector when constant).
fn zscore(v: &mut [f32]) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let sd = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    for x in v.iter_mut() {
        *x = if sd > 0.0 {
            ((*x as f64 - mean) / sd) as f32
        } else {
            0.0
        };
    }
}

/// Mean of the given frames.
fn mean_of(frames: &[&[f32]]) -> Vec<f32> {
    let n = frames.len().max(1) as f32;
    let mut acc = vec![0.0f32; frames.first().map_or(0, |f| f.len())];
    for f in frames {
        for (a, v) in acc.iter_mut().zip(f.iter()) {
            *a += v;
        }
    }
    acc.iter_mut().for_each(|a| *a /= n);
    acc
}

/// All pairwise dot products of the (binned, z-scored) frames, row-major n×n.
/// One matrix product in faer: the frames × frames loop it replaces was a third of a
/// short session's registration time. Sequential, so the sums do not depend on the
/// thread count; like rustfft's, faer's SIMD kernels are chosen for the CPU at run
/// time, so bits are reproducible on one machine, not across CPU generations.
fn gram_matrix(frames: &[Vec<f32>]) -> Vec<f64> {
    let n = frames.len();
    let p = frames.first().map_or(0, |f| f.len());
    let a = faer::Mat::<f64>::from_fn(n, p, |i, j| frames[i][j] as f64);
    let mut g = faer::Mat::<f64>::zeros(n, n);
    faer::linalg::matmul::matmul(
        g.as_mut(),
        faer::Accum::Replace,
        a.as_ref(),
        a.transpose(),
        1.0,
        faer::Par::Seq,
    );
    (0..n * n).map(|k| g[(k / n, k % n)]).collect()
}

/// The initial reference: the most mutually correlated frames, averaged.
pub fn seed_reference(frames: &[Vec<f32>], w: usize, h: usize) -> Vec<f32> {
    let b = w.max(h).div_ceil(128).max(1);
    let small: Vec<Vec<f32>> = frames
        .par_iter()
        .map(|f| {
            let mut s = bin(f, w, h, b);
            zscore(&mut s);
            s
        })
        .collect();
    let n = small.len();
    let k = 20.min(n.saturating_sub(1)).max(1);
    let gram = gram_matrix(&small);
    let scores: Vec<(f64, Vec<usize>)> = (0..n)
        .map(|i| {
            let mut c: Vec<(f64, usize)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| (gram[i * n + j], j))
                .collect();
            c.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            c.truncate(k);
            let mean = c.iter().map(|x| x.0).sum::<f64>() / c.len().max(1) as f64;
            (mean, c.into_iter().map(|x| x.1).collect())
        })
        .collect();
    let best = (0..n)
        .max_by(|&a, &b| scores[a].0.total_cmp(&scores[b].0).then(b.cmp(&a)))
        .unwrap_or(0);
    let mut members: Vec<&[f32]> = vec![&frames[best]];
    members.extend(
        scores
            .get(best)
            .map_or(&[][..], |s| &s.1[..])
            .iter()
            .map(|&j| frames[j].as_slice()),
    );
    mean_of(&members)
}

/// Refine a reference by `iterations` rounds of register-and-average.
#[allow(clippy::too_many_arguments)]
pub fn refine_reference(
    frames: &[Vec<f32>],
    w: usize,
    h: usize,
    mut reference: Vec<f32>,
    iterations: usize,
    max_shift: usize,
    smooth_sigma: f64,
    taper_px: f64,
) -> Vec<f32> {
    let n = frames.len();
    for it in 0..iterations {
        let corr = Correlator::new(&reference, w, h, max_shift, smooth_sigma, taper_px);
        let estimates: Vec<_> = frames
            .par_iter()
            .map_init(|| corr.workspace(), |ws, f| corr.estimate(f, ws))
            .collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            estimates[b]
                .peak
                .total_cmp(&estimates[a].peak)
                .then(a.cmp(&b))
        });
        let keep = (n * (1 + it) / (2 * iterations)).max(2).min(n);
        let chosen = &order[..keep];
        let shifted: Vec<Vec<f32>> = chosen
            .par_iter()
            .map(|&i| {
                let mut tmp = vec![0.0; w * h];
                let mut out = vec![0.0; w * h];
                shift_image(
                    &frames[i],
                    w,
                    h,
                    estimates[i].x,
                    estimates[i].y,
                    &mut tmp,
                    &mut out,
                );
                out
            })
            .collect();
        let refs: Vec<&[f32]> = shifted.iter().map(|v| v.as_slice()).collect();
        let avg = mean_of(&refs);
        // Re-centre on the chosen frames' mean position.
        let mx = chosen.iter().map(|&i| estimates[i].x).sum::<f64>() / keep as f64;
        let my = chosen.iter().map(|&i| estimates[i].y).sum::<f64>() / keep as f64;
        let mut tmp = vec![0.0; w * h];
        reference = vec![0.0; w * h];
        shift_image(&avg, w, h, -mx, -my, &mut tmp, &mut reference);
    }
    reference
}
