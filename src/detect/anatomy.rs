//! Anatomical cues: the cell diameter from the mean image, and cells found in the
//! enhanced mean image whether or not they fire.
//!
//! The diameter is the scale at which the scale-normalised difference-of-Gaussians
//! response of the mean image peaks (Lindeberg's blob scale selection: a disc of
//! radius r responds most at σ = r/√2). Anatomical candidates are the local maxima
//! of the same blob filter at the cell's scale, applied to the enhanced mean image
//! (Suite2p's "meanImgE"), which stand out from the map's robust spread.

use crate::imgproc::{gaussian_blur, Rect};

/// Difference of Gaussians at scale σ (ratio 1.25 either side): ≈ −σ²∇²G, positive
/// on bright blobs of radius ≈ σ√2.
fn blob_response(img: &[f32], width: usize, height: usize, sigma: f64) -> Vec<f32> {
    let k = 1.25;
    let fine = gaussian_blur(img, width, height, sigma / k);
    let coarse = gaussian_blur(img, width, height, sigma * k);
    fine.iter().zip(&coarse).map(|(a, b)| a - b).collect()
}

fn valid_values(img: &[f32], width: usize, valid: Rect, margin: usize) -> Vec<f32> {
    let (x0, x1) = (valid.x0 + margin, valid.x1.saturating_sub(margin));
    let (y0, y1) = (valid.y0 + margin, valid.y1.saturating_sub(margin));
    if x1 <= x0 || y1 <= y0 {
        return Vec::new();
    }
    (y0..y1)
        .flat_map(|y| (x0..x1).map(move |x| img[y * width + x]))
        .collect()
}

fn quantile(mut v: Vec<f32>, q: f64) -> f32 {
    if v.is_empty() {
        return f32::NAN;
    }
    let k = ((v.len() - 1) as f64 * q).round() as usize;
    *v.select_nth_unstable_by(k, |a, b| a.total_cmp(b)).1
}

/// The soma diameter (px) best matching the blobs of the mean image, searched over
/// 4–40 px (or up to a quarter of the smaller frame side).
///
/// The image is first blurred with σ₀ = 1.5 px and every scale accounts for it
/// (σ² = σ_target² − σ₀²): a cell's bright cytoplasmic ring around a dim nucleus
/// otherwise answers most strongly at the ring's thickness, not the cell's size.
pub fn estimate_diameter(mean: &[f32], width: usize, height: usize, valid: Rect) -> f64 {
    const SIGMA0: f64 = 1.5;
    let pre = gaussian_blur(mean, width, height, SIGMA0);
    let max_d = 40f64.min(width.min(height) as f64 / 4.0).max(4.5);
    let mut best = (f32::NEG_INFINITY, 12f64.min(max_d));
    let mut d = 4.5f64;
    while d <= max_d + 1e-9 {
        let target = d / (2.0 * std::f64::consts::SQRT_2);
        let sigma = (target * target - SIGMA0 * SIGMA0).max(0.25).sqrt();
        let r = blob_response(&pre, width, height, sigma);
        let margin = (3.0 * target).ceil() as usize;
        let score = quantile(valid_values(&r, width, valid, margin), 0.99);
        if score > best.0 {
            best = (score, d);
        }
        d *= 1.1;
    }
    best.1
}

/// An anatomical candidate: pixels and weights (maximum 1).
pub struct Candidate {
    pub pixels: Vec<u32>,
    pub weights: Vec<f32>,
    pub peak: (usize, usize),
    /// The blob response at the peak in robust s.d. above the map's median.
    pub z: f32,
}

/// Local maxima of the enhanced mean's blob map that exceed the threshold and are
/// not on `occupied` pixels (already part of an ROI), with a disc-limited footprint
/// of the pixels where the blob map exceeds a third of its peak, connected to it.
/// The blob map, not the image, shapes the footprint: a cell's dim nucleus would
/// otherwise cut a hole in it, or start the growth from a dark pixel.
pub fn find_candidates(
    enhanced: &[f32],
    width: usize,
    height: usize,
    diameter: f64,
    threshold: f64,
    valid: Rect,
    occupied: &[bool],
) -> Vec<Candidate> {
    let sigma = diameter / (2.0 * std::f64::consts::SQRT_2);
    let blob = blob_response(enhanced, width, height, sigma);
    let vals = valid_values(&blob, width, valid, 0);
    let median = quantile(vals.clone(), 0.5);
    let mad = quantile(vals.iter().map(|v| (v - median).abs()).collect(), 0.5);
    let sd = (1.4826 * mad).max(1e-6);
    let level = median + threshold as f32 * sd;
    let r_peak = (diameter / 2.0).max(1.0);
    let mut peaks: Vec<(usize, f32)> = Vec::new();
    for y in valid.y0..valid.y1 {
        for x in valid.x0..valid.x1 {
            let p = y * width + x;
            if blob[p] > level && !occupied[p] && is_local_max(&blob, width, height, x, y, r_peak) {
                peaks.push((p, blob[p]));
            }
        }
    }
    peaks.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut taken = occupied.to_vec();
    let mut out = Vec::new();
    for (p, v) in peaks {
        if taken[p] {
            continue;
        }
        let (x, y) = (p % width, p / width);
        let (pixels, weights) = grow_bright(&blob, width, (x, y), 0.6 * diameter, valid, &taken);
        if pixels.is_empty() {
            continue;
        }
        for &q in &pixels {
            taken[q as usize] = true;
        }
        out.push(Candidate {
            pixels,
            weights,
            peak: (x, y),
            z: (v - median) / sd,
        });
    }
    out
}

fn is_local_max(img: &[f32], width: usize, height: usize, x: usize, y: usize, r: f64) -> bool {
    let v = img[y * width + x];
    let ri = r.ceil() as isize;
    for dy in -ri..=ri {
        for dx in -ri..=ri {
            let (nx, ny) = (x as isize + dx, y as isize + dy);
            if (dx, dy) == (0, 0)
                || nx < 0
                || ny < 0
                || nx >= width as isize
                || ny >= height as isize
                || ((dx * dx + dy * dy) as f64) > r * r
            {
                continue;
            }
            let u = img[ny as usize * width + nx as usize];
            // Ties go to the earlier pixel, so a plateau has one maximum.
            let earlier = (ny as usize, nx as usize) < (y, x);
            if u > v || (u == v && earlier) {
                return false;
            }
        }
    }
    true
}

/// Pixels within `radius` of the peak, connected to it, above a third of its value
/// and free; weights are values over the peak's.
fn grow_bright(
    img: &[f32],
    width: usize,
    (px, py): (usize, usize),
    radius: f64,
    valid: Rect,
    taken: &[bool],
) -> (Vec<u32>, Vec<f32>) {
    let peak = img[py * width + px];
    if !(peak > 0.0) {
        return (vec![], vec![]);
    }
    let floor = peak / 3.0;
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![(px, py)];
    seen.insert((px, py));
    let mut pixels = Vec::new();
    while let Some((x, y)) = stack.pop() {
        pixels.push(y * width + x);
        for (dx, dy) in [(-1isize, 0isize), (1, 0), (0, -1), (0, 1)] {
            let (nx, ny) = (x as isize + dx, y as isize + dy);
            if nx < valid.x0 as isize
                || ny < valid.y0 as isize
                || nx >= valid.x1 as isize
                || ny >= valid.y1 as isize
            {
                continue;
            }
            let (nx, ny) = (nx as usize, ny as usize);
            let q = ny * width + nx;
            let within = (nx as f64 - px as f64).hypot(ny as f64 - py as f64) <= radius;
            if within && !taken[q] && img[q] >= floor && seen.insert((nx, ny)) {
                stack.push((nx, ny));
            }
        }
    }
    pixels.sort_unstable();
    let weights = pixels
        .iter()
        .map(|&q| (img[q] / peak).clamp(0.0, 1.0))
        .collect();
    (pixels.into_iter().map(|q| q as u32).collect(), weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discs(width: usize, height: usize, centres: &[(f64, f64)], r: f64) -> Vec<f32> {
        let mut img = vec![0f32; width * height];
        for &(cx, cy) in centres {
            for y in 0..height {
                for x in 0..width {
                    if (x as f64 - cx).hypot(y as f64 - cy) <= r {
                        img[y * width + x] += 1.0;
                    }
                }
            }
        }
        img
    }

    fn full(w: usize, h: usize) -> Rect {
        Rect {
            x0: 0,
            x1: w,
            y0: 0,
            y1: h,
        }
    }

    #[test]
    fn diameter_of_discs_is_found() {
        let centres: Vec<(f64, f64)> = (0..5)
            .flat_map(|i| (0..5).map(move |j| (15.0 + 25.0 * i as f64, 15.0 + 25.0 * j as f64)))
            .collect();
        let img = discs(128, 128, &centres, 5.0);
        let d = estimate_diameter(&img, 128, 128, full(128, 128));
        assert!((d - 10.0).abs() <= 2.5, "estimated {d}");
    }

    #[test]
    fn candidates_land_on_discs_and_skip_occupied_ones() {
        let centres = [(20.0, 20.0), (60.0, 30.0), (40.0, 60.0)];
        let mut img = discs(80, 80, &centres, 5.0);
        let mut s = 3u32;
        for v in img.iter_mut() {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            *v += 0.05 * ((s >> 8) as f32 / (1 << 24) as f32 - 0.5);
        }
        let mut occupied = vec![false; 80 * 80];
        occupied[30 * 80 + 60] = true;
        let c = find_candidates(&img, 80, 80, 10.0, 6.0, full(80, 80), &occupied);
        assert_eq!(
            c.len(),
            2,
            "{:?}",
            c.iter().map(|c| c.peak).collect::<Vec<_>>()
        );
        for cand in &c {
            let near = [(20.0, 20.0), (40.0, 60.0)]
                .iter()
                .any(|&(x, y): &(f64, f64)| {
                    (cand.peak.0 as f64 - x).hypot(cand.peak.1 as f64 - y) < 2.0
                });
            assert!(near);
            assert!(cand.pixels.len() > 40);
        }
    }
}
