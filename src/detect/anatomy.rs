//! Anatomical cues: the cell diameter from the mean image, and cells found in the
//! enhanced mean image whether or not they fire.
//!
//! The diameter is the scale at which the scale-normalised difference-of-Gaussians
//! response of the mean image peaks (Lindeberg's blob scale selection: a disc of
//! radius r responds most at σ = r/√2). Anatomical candidates are the local maxima
//! of the same blob filter at the cell's scale, applied to the enhanced mean image
//! (Suite2p's "meanImgE"), which stand out from the map's robust spread.

use crate::imgproc::{disc_pixels, gaussian_blur, Rect};

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
    let z = robust_z(&blob, width, valid);
    let r_peak = (diameter / 2.0).max(1.0);
    let mut peaks: Vec<(usize, f32)> = Vec::new();
    for y in valid.y0..valid.y1 {
        for x in valid.x0..valid.x1 {
            let p = y * width + x;
            if z[p] > threshold as f32
                && !occupied[p]
                && is_local_max(&blob, width, height, x, y, r_peak)
            {
                peaks.push((p, z[p]));
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
            z: v,
        });
    }
    out
}

fn is_local_max(img: &[f32], width: usize, height: usize, x: usize, y: usize, r: f64) -> bool {
    let v = img[y * width + x];
    let centre = (x as isize, y as isize);
    disc_pixels(centre, r, Rect::frame(width, height)).all(|(nx, ny)| {
        let u = img[ny * width + nx];
        // Ties go to the earlier pixel, so a plateau has one maximum.
        let earlier = (ny, nx) < (y, x);
        (nx, ny) == (x, y) || !(u > v || (u == v && earlier))
    })
}

/// `dark_somata = "auto"` seeks dark somata when at least this share of the active
/// `is_cell` ROIs is darker at its centre than around it: 27 % in neurofinder's
/// GCaMP6 crop, 2–7 % in the simulator's sessions (bright somata).
pub const DARK_FIELD_FRACTION: f64 = 0.2;
/// ... judged on at least this many active cells.
pub const DARK_FIELD_MIN_CELLS: usize = 10;

/// Cell diameters, as fractions of the soma's, at which dark somata are sought: a
/// soma whose nucleus holds no indicator shows a dark core smaller than the cell, a
/// soma darker than the neuropil around it a core as large as the cell.
const DARK_SCALES: [f64; 5] = [0.5, 0.595, 0.707, 0.841, 1.0];

/// Dark somata: scale-space minima of the enhanced mean image, found as maxima of
/// the difference-of-Gaussians response of the negated image over the
/// [`DARK_SCALES`] (Lindeberg's scale-space blob detection, as for bright blobs,
/// each scale's map in robust s.d. above its median). A minimum must beat its
/// neighbours within 0.3 diameters at its own and the adjacent scales, exceed
/// `threshold`, and be round: the Hessian of the negated image smoothed at its
/// scale must have both curvatures negative (a minimum of the image) with a ratio of
/// at most `max_elongation` — a vessel or the gap along a dendrite curves along one
/// axis only. Candidates are
/// taken strongest first, at least 0.6 diameters apart and off `occupied`; each
/// footprint is the free part of the disc of the cell's diameter around the
/// minimum that is connected to it, with equal weights, since the cell's signal
/// comes from the cytoplasm around the dark core.
///
/// Neurofinder's labelled somata in GCaMP6 data (`../shared/data/real`) are mostly
/// such dark spots; see docs/detection.md for what this search finds there.
#[allow(clippy::too_many_arguments)]
pub fn find_dark_candidates(
    enhanced: &[f32],
    width: usize,
    height: usize,
    diameter: f64,
    threshold: f64,
    max_elongation: f64,
    valid: Rect,
    occupied: &[bool],
) -> Vec<Candidate> {
    let negated: Vec<f32> = enhanced.iter().map(|v| -v).collect();
    let sigmas: Vec<f64> = DARK_SCALES
        .iter()
        .map(|f| f * diameter / (2.0 * std::f64::consts::SQRT_2))
        .collect();
    let maps: Vec<Vec<f32>> = sigmas
        .iter()
        .map(|&s| robust_z(&blob_response(&negated, width, height, s), width, valid))
        .collect();
    let reach = (0.3 * diameter).max(1.0);
    let mut found: Vec<(f32, usize, usize)> = Vec::new();
    for (i, map) in maps.iter().enumerate() {
        let smoothed = gaussian_blur(&negated, width, height, sigmas[i]);
        for y in valid.y0..valid.y1 {
            for x in valid.x0..valid.x1 {
                let p = y * width + x;
                let z = map[p];
                if !(z > threshold as f32) || occupied[p] {
                    continue;
                }
                // At the ends of the scale range only one neighbour is compared, so
                // a spot a little smaller (larger) than the range ends up at 0.5 (1.0)
                // diameters.
                let beats_scales = || {
                    [i.wrapping_sub(1), i + 1]
                        .iter()
                        .filter_map(|&j| maps.get(j))
                        .all(|m| disc_max(m, width, height, x, y, reach) <= z)
                };
                if is_local_max(map, width, height, x, y, reach)
                    && beats_scales()
                    && is_round(&smoothed, width, height, x, y, max_elongation)
                {
                    found.push((z, i, p));
                }
            }
        }
    }
    found.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut taken = occupied.to_vec();
    let mut peaks: Vec<(usize, usize)> = Vec::new();
    let mut out = Vec::new();
    for (z, _, p) in found {
        let (x, y) = (p % width, p / width);
        let spaced = peaks
            .iter()
            .all(|&(u, v)| (u as f64 - x as f64).hypot(v as f64 - y as f64) >= 0.6 * diameter);
        if taken[p] || !spaced {
            continue;
        }
        let pixels = free_disc(width, (x, y), diameter / 2.0, valid, &taken);
        if pixels.is_empty() {
            continue;
        }
        for &q in &pixels {
            taken[q as usize] = true;
        }
        peaks.push((x, y));
        out.push(Candidate {
            weights: vec![1.0; pixels.len()],
            pixels,
            peak: (x, y),
            z,
        });
    }
    out
}

/// The map in robust s.d. above its median over the valid box.
fn robust_z(map: &[f32], width: usize, valid: Rect) -> Vec<f32> {
    let vals = valid_values(map, width, valid, 0);
    let median = quantile(vals.clone(), 0.5);
    let mad = quantile(vals.iter().map(|v| (v - median).abs()).collect(), 0.5);
    let sd = (1.4826 * mad).max(1e-6);
    map.iter().map(|v| (v - median) / sd).collect()
}

/// Largest value within radius `r` of (x, y).
fn disc_max(img: &[f32], width: usize, height: usize, x: usize, y: usize, r: f64) -> f32 {
    disc_pixels((x as isize, y as isize), r, Rect::frame(width, height))
        .map(|(nx, ny)| img[ny * width + nx])
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Whether `img` has a round maximum at (x, y): both eigenvalues of its Hessian
/// (central differences) negative, the larger in magnitude at most `max_ratio`
/// times the smaller. False on the frame's outermost pixels, where the Hessian has
/// no neighbours on one side.
fn is_round(img: &[f32], width: usize, height: usize, x: usize, y: usize, max_ratio: f64) -> bool {
    if x == 0 || y == 0 || x + 1 >= width || y + 1 >= height {
        return false;
    }
    let at = |dx: isize, dy: isize| {
        img[(y as isize + dy) as usize * width + (x as isize + dx) as usize] as f64
    };
    let hxx = at(1, 0) - 2.0 * at(0, 0) + at(-1, 0);
    let hyy = at(0, 1) - 2.0 * at(0, 0) + at(0, -1);
    let hxy = (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)) / 4.0;
    let half_trace = (hxx + hyy) / 2.0;
    let spread = (((hxx - hyy) / 2.0).powi(2) + hxy * hxy).sqrt();
    let (flat, steep) = (half_trace + spread, half_trace - spread);
    flat < 0.0 && steep / flat <= max_ratio
}

/// Pixels of the valid box within `radius` of the centre, not taken and connected
/// to the centre through such pixels (4-neighbours), ascending; empty when the centre
/// is taken.
fn free_disc(
    width: usize,
    (cx, cy): (usize, usize),
    radius: f64,
    valid: Rect,
    taken: &[bool],
) -> Vec<u32> {
    let (cx, cy) = (cx as isize, cy as isize);
    connected_from((cx as usize, cy as usize), width, valid, |x, y| {
        let (dx, dy) = (x as isize - cx, y as isize - cy);
        (dx * dx + dy * dy) as f64 <= radius * radius && !taken[y * width + x]
    })
    .into_iter()
    .map(|q| q as u32)
    .collect()
}

/// Linear indices of the pixels of `valid` that `accept` takes and that connect to
/// `start` through such pixels (4-neighbours), ascending; empty when `start` is not
/// taken itself.
fn connected_from(
    start: (usize, usize),
    width: usize,
    valid: Rect,
    accept: impl Fn(usize, usize) -> bool,
) -> Vec<usize> {
    if !valid.contains(start.0 as isize, start.1 as isize) || !accept(start.0, start.1) {
        return Vec::new();
    }
    let mut seen = std::collections::HashSet::from([start]);
    let mut stack = vec![start];
    let mut pixels = Vec::new();
    while let Some((x, y)) = stack.pop() {
        pixels.push(y * width + x);
        for (dx, dy) in [(-1isize, 0isize), (1, 0), (0, -1), (0, 1)] {
            let (nx, ny) = (x as isize + dx, y as isize + dy);
            if !valid.contains(nx, ny) {
                continue;
            }
            let q = (nx as usize, ny as usize);
            if accept(q.0, q.1) && seen.insert(q) {
                stack.push(q);
            }
        }
    }
    pixels.sort_unstable();
    pixels
}

/// The fraction of `centroids` (active cells) whose centre, within a quarter
/// diameter, is darker in the enhanced mean than the ring between a half and one
/// diameter around it; `None` with fewer than `min_cells` centroids inside the
/// frame. A field where a good share of the firing cells look dark at their centre
/// is one whose silent cells will look dark too.
pub fn dark_centre_fraction(
    enhanced: &[f32],
    width: usize,
    height: usize,
    diameter: f64,
    centroids: &[(f64, f64)],
    min_cells: usize,
) -> Option<f64> {
    let dark: Vec<bool> = centroids
        .iter()
        .filter_map(|&c| centre_minus_ring(enhanced, width, height, diameter, c))
        .map(|contrast| contrast < 0.0)
        .collect();
    (dark.len() >= min_cells.max(1))
        .then(|| dark.iter().filter(|&&d| d).count() as f64 / dark.len() as f64)
}

/// Mean of the disc of radius d/4 around `c` minus the mean of the ring
/// d/2 < r ≤ d; `None` when either holds no finite pixel of the frame.
fn centre_minus_ring(
    img: &[f32],
    width: usize,
    height: usize,
    diameter: f64,
    (cx, cy): (f64, f64),
) -> Option<f64> {
    let centre_px = (cx.round() as isize, cy.round() as isize);
    let (mut centre, mut nc, mut ring, mut nr) = (0f64, 0usize, 0f64, 0usize);
    // One pixel beyond the ring: distances are from the unrounded centre.
    for (x, y) in disc_pixels(centre_px, diameter + 1.0, Rect::frame(width, height)) {
        let v = img[y * width + x] as f64;
        if !v.is_finite() {
            continue;
        }
        let r = (x as f64 - cx).hypot(y as f64 - cy);
        if r <= diameter / 4.0 {
            centre += v;
            nc += 1;
        } else if r > diameter / 2.0 && r <= diameter {
            ring += v;
            nr += 1;
        }
    }
    (nc > 0 && nr > 0).then(|| centre / nc as f64 - ring / nr as f64)
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
    let pixels = connected_from((px, py), width, valid, |x, y| {
        let q = y * width + x;
        (x, y) == (px, py)
            || ((x as f64 - px as f64).hypot(y as f64 - py as f64) <= radius
                && !taken[q]
                && img[q] >= floor)
    });
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
        Rect::frame(w, h)
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

    fn noisy(mut img: Vec<f32>, amplitude: f32, seed: u32) -> Vec<f32> {
        let mut s = seed;
        for v in img.iter_mut() {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            *v += amplitude * ((s >> 8) as f32 / (1 << 24) as f32 - 0.5);
        }
        img
    }

    /// A bright field with dark discs of radius 4 at `centres` and a dark bar 5 px
    /// wide along y = 70 (a vessel).
    fn dark_field(centres: &[(f64, f64)]) -> Vec<f32> {
        let holes = discs(96, 96, centres, 4.0);
        let img: Vec<f32> = holes
            .iter()
            .enumerate()
            .map(|(p, &h)| {
                let y = p / 96;
                let bar = (68..=72).contains(&y) && (10..86).contains(&(p % 96));
                if bar {
                    0.0
                } else {
                    1.0 - h
                }
            })
            .collect();
        noisy(img, 0.05, 7)
    }

    #[test]
    fn dark_somata_are_found_and_a_vessel_is_not() {
        let centres = [(20.0, 20.0), (50.0, 24.0), (30.0, 48.0), (70.0, 40.0)];
        let img = dark_field(&centres);
        let free = vec![false; 96 * 96];
        let c = find_dark_candidates(&img, 96, 96, 11.0, 3.0, 2.0, full(96, 96), &free);
        let peaks: Vec<_> = c.iter().map(|c| c.peak).collect();
        assert_eq!(c.len(), centres.len(), "{peaks:?}");
        for &(x, y) in &centres {
            let hit = peaks
                .iter()
                .any(|&(u, v)| (u as f64 - x).hypot(v as f64 - y) <= 1.5);
            assert!(hit, "no candidate at ({x}, {y}): {peaks:?}");
        }
        for cand in &c {
            assert!(cand.pixels.len() >= 80, "{} px", cand.pixels.len());
            assert!(cand.weights.iter().all(|&w| w == 1.0));
            assert!(cand.z > 3.0);
        }
    }

    #[test]
    fn a_lax_elongation_bound_admits_the_vessel() {
        let img = dark_field(&[]);
        let free = vec![false; 96 * 96];
        let strict = find_dark_candidates(&img, 96, 96, 11.0, 3.0, 2.0, full(96, 96), &free);
        assert!(
            strict.is_empty(),
            "{:?}",
            strict.iter().map(|c| c.peak).collect::<Vec<_>>()
        );
        let lax = find_dark_candidates(&img, 96, 96, 11.0, 3.0, 1e6, full(96, 96), &free);
        assert!(lax.iter().any(|c| (68..=72).contains(&c.peak.1)));
    }

    #[test]
    fn dark_candidates_skip_occupied_pixels_and_keep_to_the_valid_box() {
        let centres = [(20.0, 20.0), (50.0, 24.0)];
        let img = dark_field(&centres);
        let mut occupied = vec![false; 96 * 96];
        occupied[20 * 96 + 20] = true;
        let valid = Rect {
            x0: 0,
            x1: 52,
            y0: 0,
            y1: 60,
        };
        let c = find_dark_candidates(&img, 96, 96, 11.0, 3.0, 2.0, valid, &occupied);
        assert_eq!(
            c.len(),
            1,
            "{:?}",
            c.iter().map(|c| c.peak).collect::<Vec<_>>()
        );
        assert!((c[0].peak.0 as f64 - 50.0).abs() <= 1.5);
        assert!(c[0].pixels.iter().all(|&p| (p as usize % 96) < 52));
        // The cell at (20, 20) is found once its centre is free.
        let free = vec![false; 96 * 96];
        let c = find_dark_candidates(&img, 96, 96, 11.0, 3.0, 2.0, valid, &free);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn dark_centre_fraction_tells_donuts_from_discs() {
        let centres: Vec<(f64, f64)> = (0..4)
            .flat_map(|i| (0..3).map(move |j| (14.0 + 22.0 * i as f64, 14.0 + 22.0 * j as f64)))
            .collect();
        let outer = discs(96, 72, &centres, 6.0);
        let inner = discs(96, 72, &centres, 3.0);
        // Neuropil at 0.5; a bright cytoplasm (1.0) around a nucleus without
        // indicator (0.0), or a soma bright throughout.
        let donuts: Vec<f32> = outer
            .iter()
            .zip(&inner)
            .map(|(o, i)| 0.5 + 0.5 * o - i)
            .collect();
        let f = dark_centre_fraction(&donuts, 96, 72, 12.0, &centres, 10);
        assert_eq!(f, Some(1.0));
        let filled: Vec<f32> = outer.iter().map(|o| 0.5 + 0.5 * o).collect();
        let f = dark_centre_fraction(&filled, 96, 72, 12.0, &centres, 10);
        assert_eq!(f, Some(0.0));
        assert_eq!(
            dark_centre_fraction(&filled, 96, 72, 12.0, &centres[..5], 10),
            None
        );
    }

    #[test]
    fn a_dark_footprint_keeps_only_the_part_connected_to_its_centre() {
        // A wall of taken pixels at x = 13 cuts the disc around (10, 10).
        let mut taken = vec![false; 32 * 32];
        for y in 0..32 {
            taken[y * 32 + 13] = true;
        }
        let px = free_disc(32, (10, 10), 5.0, full(32, 32), &taken);
        assert!(!px.is_empty());
        assert!(px.iter().all(|&p| (p % 32) < 13), "{px:?}");
        assert!(px.windows(2).all(|w| w[0] < w[1]));
        taken[10 * 32 + 10] = true;
        assert!(free_disc(32, (10, 10), 5.0, full(32, 32), &taken).is_empty());
    }
}
