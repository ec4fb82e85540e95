//! FOV alignment of one session to the reference session.
//!
//! Two steps, in the spirit of CellReg (Sheintuch et al. 2017, which aligns
//! sessions by translations and rotations of their footprint images) and of the
//! phase-correlation registration already used within a session:
//!
//! 1. **Image:** the session's alignment image (the enhanced mean, or the sum of
//!    its footprints) is rotated over a grid of angles and phase-correlated with
//!    the reference's at each; the angle with the highest correlation peak is
//!    refined by golden-section search. This gives a rigid map that is robust to
//!    shifts of tens of pixels and rotations of several degrees.
//! 2. **Points:** the ROI centroids are paired with the reference's by mutual
//!    nearest neighbours under the current map, within a gate that shrinks over
//!    the iterations, and an affine map (rotation, scale, shear, translation) is
//!    fitted to the pairs by least squares, dropping outlying pairs (iterative
//!    closest points). With hundreds of cells this is accurate to a fraction of
//!    a pixel.
//!
//! Alignment fails, with the session named, when too few centroids pair up or
//! their residual is as large as chance pairs would give: the sessions do not
//! image the same tissue.

use super::field::DisplacementField;
use super::transform::Affine;
use crate::error::{Error, Result};
use crate::motion::rigid::{golden_max, Correlator};

/// Fewest centroid pairs for an affine fit; fewer get rotation + translation.
pub const MIN_AFFINE_PAIRS: usize = 60;

/// An image to align: row-major, `width × height`.
#[derive(Debug, Clone)]
pub struct AlignImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

/// Settings of the alignment (from `[track]`).
#[derive(Debug, Clone, Copy)]
pub struct AlignSettings {
    pub max_rotation_deg: f64,
    pub max_shift_px: f64,
    /// Fit a full affine map (else rotation + translation only).
    pub affine: bool,
    /// Largest centroid distance of a point pair, px (the first ICP gate).
    pub gate_px: f64,
    /// Add a smooth nonrigid field after the affine map ([`super::field`]).
    pub nonrigid: bool,
    /// Kernel width of that field, px; 0 = a sixth of the reference's larger side.
    pub nonrigid_sigma_px: f64,
}

/// The alignment of one session and how good it is.
#[derive(Debug, Clone)]
pub struct Alignment {
    /// Session corrected coordinates → reference coordinates.
    pub transform: Affine,
    /// Peak of the phase correlation at the best angle (relative units).
    pub image_peak: f64,
    /// Pearson correlation of the two alignment images after the map, over their
    /// overlap.
    pub image_corr: f64,
    /// Centroid pairs used in the final fit.
    pub n_pairs: usize,
    /// Fraction of the smaller ROI set that paired.
    pub paired_fraction: f64,
    /// RMS residual of the pairs after the fit, px.
    pub residual_px: f64,
    /// The point fit was used (else only the image map).
    pub point_fit: bool,
    /// The nonrigid field after the affine map, when asked for and when it
    /// predicts held-out cells better than the affine map alone.
    pub field: Option<DisplacementField>,
    /// Leave-one-out RMS residual of the pairs with the field, px (NaN without).
    pub nonrigid_residual_px: f64,
}

impl Alignment {
    /// The alignment of the reference session with itself.
    pub fn identity(n_rois: usize) -> Self {
        Alignment {
            transform: Affine::identity(),
            image_peak: f64::NAN,
            image_corr: 1.0,
            n_pairs: n_rois,
            paired_fraction: 1.0,
            residual_px: 0.0,
            point_fit: false,
            field: None,
            nonrigid_residual_px: f64::NAN,
        }
    }

    /// The field's displacement at reference position `q` (zero without a field).
    pub fn field_at(&self, q: (f64, f64)) -> (f64, f64) {
        self.field.as_ref().map_or((0.0, 0.0), |f| f.at(q))
    }

    /// Map a session point to reference coordinates (affine, then the field).
    pub fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let q = self.transform.apply(x, y);
        let d = self.field_at(q);
        (q.0 + d.0, q.1 + d.1)
    }
}

/// Resample `img` onto a `w × h` canvas through `inv` (canvas → image coordinates),
/// bilinear, filling outside with `fill`.
pub fn warp_into(img: &AlignImage, inv: &Affine, w: usize, h: usize, fill: f32) -> Vec<f32> {
    let mut out = vec![fill; w * h];
    for y in 0..h {
        for x in 0..w {
            let (u, v) = inv.apply(x as f64, y as f64);
            if let Some(val) = bilinear(img, u, v) {
                out[y * w + x] = val;
            }
        }
    }
    out
}

fn bilinear(img: &AlignImage, u: f64, v: f64) -> Option<f32> {
    if !(u >= 0.0 && v >= 0.0) {
        return None;
    }
    let (x0, y0) = (u.floor() as usize, v.floor() as usize);
    if x0 + 1 >= img.width || y0 + 1 >= img.height {
        let inside = x0 < img.width && y0 < img.height && u <= (img.width - 1) as f64;
        return (inside && v <= (img.height - 1) as f64).then(|| img.data[y0 * img.width + x0]);
    }
    let (fx, fy) = ((u - x0 as f64) as f32, (v - y0 as f64) as f32);
    let at = |x: usize, y: usize| img.data[y * img.width + x];
    let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1, y0) * fx;
    let bottom = at(x0, y0 + 1) * (1.0 - fx) + at(x0 + 1, y0 + 1) * fx;
    Some(top * (1.0 - fy) + bottom * fy)
}

fn mean_of(v: &[f32]) -> f32 {
    (v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64) as f32
}

/// The rigid map from the image step: best angle by phase-correlation peak.
fn image_step(reference: &AlignImage, moving: &AlignImage, s: &AlignSettings) -> (Affine, f64) {
    let (w, h) = (reference.width, reference.height);
    let max_shift = s.max_shift_px.min((w.min(h) / 2) as f64 - 1.0).max(1.0) as usize;
    let corr = Correlator::new(
        &reference.data,
        w,
        h,
        max_shift,
        1.0,
        (w.min(h) / 16) as f64,
    );
    let centre = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let fill = mean_of(&moving.data);
    let at_angle = |deg: f64| {
        let rot = Affine::rotation_about(deg.to_radians(), centre, 0.0, 0.0);
        let inv = rot.inverse().expect("a rotation is invertible");
        let canvas = warp_into(moving, &inv, w, h, fill);
        let mut ws = corr.workspace();
        (rot, corr.estimate(&canvas, &mut ws))
    };
    let step = 0.5;
    let n = (s.max_rotation_deg / step).ceil() as i64;
    let mut best = (0.0, f64::NEG_INFINITY);
    for k in -n..=n {
        let deg = k as f64 * step;
        let peak = at_angle(deg).1.peak;
        if peak > best.1 {
            best = (deg, peak);
        }
    }
    let deg = if n > 0 {
        golden_max(best.0 - step, best.0 + step, |d| at_angle(d).1.peak)
    } else {
        0.0
    };
    let (rot, est) = at_angle(deg);
    // The rotated image matches the reference at x when shifted by the estimate:
    // ref(x) ≈ rotated(x + shift), so x = rot(p) − shift.
    let m = rot.m;
    let map = Affine {
        m: [
            [m[0][0], m[0][1], m[0][2] - est.x],
            [m[1][0], m[1][1], m[1][2] - est.y],
        ],
    };
    (map, est.peak)
}

/// A uniform grid over points, for neighbour queries within a radius.
pub struct PointGrid {
    cell: f64,
    map: std::collections::HashMap<(i64, i64), Vec<usize>>,
}

impl PointGrid {
    pub fn new(points: &[(f64, f64)], cell: f64) -> Self {
        let cell = cell.max(1e-6);
        let mut map: std::collections::HashMap<(i64, i64), Vec<usize>> = Default::default();
        for (i, p) in points.iter().enumerate() {
            if p.0.is_finite() && p.1.is_finite() {
                map.entry(Self::key(p, cell)).or_default().push(i);
            }
        }
        PointGrid { cell, map }
    }

    fn key(p: &(f64, f64), cell: f64) -> (i64, i64) {
        ((p.0 / cell).floor() as i64, (p.1 / cell).floor() as i64)
    }

    /// Indices of points within `radius` of `p` (radius ≤ the grid cell), sorted.
    pub fn near(&self, points: &[(f64, f64)], p: (f64, f64), radius: f64) -> Vec<usize> {
        let (kx, ky) = Self::key(&p, self.cell);
        let mut out = Vec::new();
        for dy in -1..=1 {
            for dx in -1..=1 {
                if let Some(v) = self.map.get(&(kx + dx, ky + dy)) {
                    out.extend(
                        v.iter()
                            .copied()
                            .filter(|&i| (points[i].0 - p.0).hypot(points[i].1 - p.1) <= radius),
                    );
                }
            }
        }
        out.sort_unstable();
        out
    }
}

/// Mutual nearest neighbours within `gate` between `moved` and `reference`.
fn mutual_pairs(moved: &[(f64, f64)], reference: &[(f64, f64)], gate: f64) -> Vec<(usize, usize)> {
    let nearest = |from: &[(f64, f64)], grid: &PointGrid, to: &[(f64, f64)], i: usize| {
        grid.near(to, from[i], gate).into_iter().min_by(|&a, &b| {
            let da = (to[a].0 - from[i].0).hypot(to[a].1 - from[i].1);
            let db = (to[b].0 - from[i].0).hypot(to[b].1 - from[i].1);
            da.total_cmp(&db).then(a.cmp(&b))
        })
    };
    let ref_grid = PointGrid::new(reference, gate);
    let mov_grid = PointGrid::new(moved, gate);
    (0..moved.len())
        .filter_map(|i| {
            let j = nearest(moved, &ref_grid, reference, i)?;
            (nearest(reference, &mov_grid, moved, j) == Some(i)).then_some((i, j))
        })
        .collect()
}

/// The result of the point step: the map, the pairs of its last fit
/// (session point, reference point) and their RMS residual.
struct PointFit {
    map: Affine,
    pairs: Vec<((f64, f64), (f64, f64))>,
    residual: f64,
}

/// Iterative closest points from `init`.
fn point_step(
    init: Affine,
    points: &[(f64, f64)],
    reference: &[(f64, f64)],
    s: &AlignSettings,
) -> Option<PointFit> {
    let mut map = init;
    let mut result = None;
    for gate in [1.0, 0.75, 0.5, 0.5, 0.5].map(|f| f * s.gate_px) {
        let moved: Vec<(f64, f64)> = points.iter().map(|p| map.apply(p.0, p.1)).collect();
        let pairs = mutual_pairs(&moved, reference, gate);
        if pairs.len() < 6 {
            return result;
        }
        let resid: Vec<f64> = pairs
            .iter()
            .map(|&(i, j)| (moved[i].0 - reference[j].0).hypot(moved[i].1 - reference[j].1))
            .collect();
        let mut sorted = resid.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let cut = (3.0 * 1.4826 * sorted[sorted.len() / 2]).max(1.0);
        let kept: Vec<(usize, usize)> = pairs
            .iter()
            .zip(&resid)
            .filter(|(_, &r)| r <= cut)
            .map(|(p, _)| *p)
            .collect();
        let from: Vec<(f64, f64)> = kept.iter().map(|&(i, _)| points[i]).collect();
        let to: Vec<(f64, f64)> = kept.iter().map(|&(_, j)| reference[j]).collect();
        // Six parameters need many pairs; with few, the rigid map is the better estimate.
        let fitted = if s.affine && kept.len() >= MIN_AFFINE_PAIRS {
            Affine::fit(&from, &to)
        } else {
            Affine::fit_rigid(&from, &to)
        };
        let Ok(fitted) = fitted else {
            return result;
        };
        if !(0.8..1.25).contains(&fitted.scale()) {
            return result;
        }
        map = fitted;
        let rms = (from
            .iter()
            .zip(&to)
            .map(|(p, q)| {
                let m = map.apply(p.0, p.1);
                (m.0 - q.0).powi(2) + (m.1 - q.1).powi(2)
            })
            .sum::<f64>()
            / from.len() as f64)
            .sqrt();
        result = Some(PointFit {
            map,
            pairs: from.into_iter().zip(to).collect(),
            residual: rms,
        });
    }
    result
}

/// The smooth field of what the affine map leaves of the pairs' displacements;
/// None with fewer than 20 pairs or when it does not predict held-out pairs
/// better than the affine map alone.
fn nonrigid_field(
    fit: &PointFit,
    reference: &AlignImage,
    s: &AlignSettings,
) -> Option<DisplacementField> {
    if fit.pairs.len() < 20 {
        return None;
    }
    let sigma = if s.nonrigid_sigma_px > 0.0 {
        s.nonrigid_sigma_px
    } else {
        reference.width.max(reference.height) as f64 / 6.0
    };
    let (points, vectors): (Vec<_>, Vec<_>) = fit
        .pairs
        .iter()
        .map(|(p, q)| {
            let m = fit.map.apply(p.0, p.1);
            (m, (q.0 - m.0, q.1 - m.1))
        })
        .unzip();
    let field = DisplacementField::fit(points, vectors, sigma, 1.0);
    (field.loo_residual() < fit.residual).then_some(field)
}

/// Pearson correlation of the reference image with `moving` mapped by `map`,
/// over the pixels the moving image covers.
fn aligned_image_corr(reference: &AlignImage, moving: &AlignImage, map: &Affine) -> f64 {
    let Some(inv) = map.inverse() else {
        return f64::NAN;
    };
    let (w, h) = (reference.width, reference.height);
    let warped = warp_into(moving, &inv, w, h, f32::NAN);
    let pairs: Vec<(f64, f64)> = warped
        .iter()
        .zip(&reference.data)
        .filter(|(m, _)| m.is_finite())
        .map(|(&m, &r)| (m as f64, r as f64))
        .collect();
    let n = pairs.len() as f64;
    if n < 2.0 {
        return f64::NAN;
    }
    let (ma, mb) = pairs
        .iter()
        .fold((0.0, 0.0), |a, p| (a.0 + p.0 / n, a.1 + p.1 / n));
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for &(a, b) in &pairs {
        sab += (a - ma) * (b - mb);
        saa += (a - ma).powi(2);
        sbb += (b - mb).powi(2);
    }
    sab / (saa * sbb).sqrt().max(1e-300)
}

/// Align `session` (its image and ROI centroids) to the reference.
pub fn align_session(
    session: &str,
    reference: (&AlignImage, &[(f64, f64)]),
    moving: (&AlignImage, &[(f64, f64)]),
    s: &AlignSettings,
) -> Result<Alignment> {
    let (ref_img, ref_pts) = reference;
    let (mov_img, mov_pts) = moving;
    let (coarse, peak) = image_step(ref_img, mov_img, s);
    let smaller = ref_pts.len().min(mov_pts.len());
    let fitted = if smaller >= 6 {
        point_step(coarse, mov_pts, ref_pts, s)
    } else {
        None
    };
    let coarse_corr = aligned_image_corr(ref_img, mov_img, &coarse);
    // With few ROIs a bad pairing can beat the image map's fit; the aligned
    // images' correlation arbitrates (within a hair, the point fit wins: with many
    // cells it is the more precise).
    let fitted = fitted.map(|f| {
        let c = aligned_image_corr(ref_img, mov_img, &f.map);
        (f, c)
    });
    // The pairing figures describe the point fit, also when the image map won.
    let (n_pairs, residual) = fitted
        .as_ref()
        .map_or((0, f64::NAN), |(f, _)| (f.pairs.len(), f.residual));
    let fitted = fitted.filter(|(_, c)| !(*c < coarse_corr - 0.005));
    let field = match (&fitted, s.nonrigid) {
        (Some((f, _)), true) => nonrigid_field(f, ref_img, s),
        _ => None,
    };
    let (transform, point_fit, image_corr) = match fitted {
        Some((f, c)) => (f.map, true, c),
        None => (coarse, false, coarse_corr),
    };
    let paired_fraction = if smaller > 0 {
        n_pairs as f64 / smaller as f64
    } else {
        f64::NAN
    };
    let al = Alignment {
        transform,
        image_peak: peak,
        image_corr,
        n_pairs,
        paired_fraction,
        residual_px: residual,
        point_fit,
        nonrigid_residual_px: field.as_ref().map_or(f64::NAN, |f| f.loo_residual()),
        field,
    };
    check_overlap(session, &al, smaller, s.gate_px)?;
    Ok(al)
}

/// Refuse an alignment that pairs no more cells than chance would (chance pairs
/// are few and their residual is a sizeable part of the gate) and whose aligned
/// images do not look alike either.
fn check_overlap(session: &str, al: &Alignment, smaller: usize, gate: f64) -> Result<()> {
    let chance_like =
        al.paired_fraction < 0.25 || (al.paired_fraction < 0.5 && !(al.residual_px <= 0.25 * gate));
    let unlike = !(al.image_corr >= 0.3);
    if unlike && (smaller < 20 || chance_like) {
        return Err(Error::usage(format!(
            "session '{session}' could not be aligned to the reference: {} of {smaller} ROIs \
             pair up (residual {:.2} px) and the aligned images correlate at {:.2}; do the two \
             sessions image the same field of view?",
            al.n_pairs, al.residual_px, al.image_corr
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A field of Gaussian blobs at `pts`.
    fn blobs(pts: &[(f64, f64)], w: usize, h: usize) -> AlignImage {
        let mut data = vec![0f32; w * h];
        for &(px, py) in pts {
            for y in 0..h {
                for x in 0..w {
                    let d2 = (x as f64 - px).powi(2) + (y as f64 - py).powi(2);
                    if d2 < 64.0 {
                        data[y * w + x] += (-d2 / 8.0).exp() as f32;
                    }
                }
            }
        }
        AlignImage {
            width: w,
            height: h,
            data,
        }
    }

    fn scatter(n: usize, w: f64, h: f64, seed: u64) -> Vec<(f64, f64)> {
        let mut s = seed;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut pts: Vec<(f64, f64)> = Vec::new();
        while pts.len() < n {
            let p = (8.0 + next() * (w - 16.0), 8.0 + next() * (h - 16.0));
            if pts.iter().all(|q| (q.0 - p.0).hypot(q.1 - p.1) > 9.0) {
                pts.push(p);
            }
        }
        pts
    }

    fn settings() -> AlignSettings {
        AlignSettings {
            max_rotation_deg: 4.0,
            max_shift_px: 30.0,
            affine: true,
            gate_px: 6.0,
            nonrigid: false,
            nonrigid_sigma_px: 0.0,
        }
    }

    #[test]
    fn recovers_a_shift_and_rotation() {
        let (w, h) = (160, 128);
        let ref_pts = scatter(90, w as f64, h as f64, 7);
        // The session sees the tissue rotated by 2.5° and shifted: its point p
        // maps to the reference by `truth`.
        let truth = Affine::rotation_about(2.5f64.to_radians(), (80.0, 64.0), 9.0, -6.0);
        let inv = truth.inverse().unwrap();
        let mov_pts: Vec<(f64, f64)> = ref_pts
            .iter()
            .map(|p| inv.apply(p.0, p.1))
            .filter(|p| p.0 > 2.0 && p.1 > 2.0 && p.0 < w as f64 - 3.0 && p.1 < h as f64 - 3.0)
            .collect();
        let a = align_session(
            "d2",
            (&blobs(&ref_pts, w, h), &ref_pts),
            (&blobs(&mov_pts, w, h), &mov_pts),
            &settings(),
        )
        .unwrap();
        assert!(a.point_fit);
        for p in &mov_pts {
            let (e, t) = (a.transform.apply(p.0, p.1), truth.apply(p.0, p.1));
            assert!((e.0 - t.0).hypot(e.1 - t.1) < 0.05, "{e:?} vs {t:?}");
        }
        assert!(a.image_corr > 0.9, "{}", a.image_corr);
        assert!((a.transform.rotation_deg() - 2.5).abs() < 0.01);
    }

    #[test]
    fn the_nonrigid_field_takes_up_a_smooth_warp() {
        let (w, h) = (240, 200);
        let ref_pts = scatter(220, w as f64, h as f64, 11);
        // The session sees the tissue shifted and smoothly warped (1.5 px).
        let warp = |p: (f64, f64)| {
            (
                p.0 + 4.0 + 1.5 * (p.1 / 40.0).sin(),
                p.1 - 3.0 + 1.5 * (p.0 / 50.0).cos(),
            )
        };
        let mov_pts: Vec<(f64, f64)> = ref_pts.iter().map(|&p| warp(p)).collect();
        let mut s = settings();
        s.nonrigid = true;
        s.nonrigid_sigma_px = 25.0;
        let a = align_session(
            "d2",
            (&blobs(&ref_pts, w, h), &ref_pts),
            (&blobs(&mov_pts, w, h), &mov_pts),
            &s,
        )
        .unwrap();
        assert!(a.field.is_some(), "{a:?}");
        let err = |f: &dyn Fn(f64, f64) -> (f64, f64)| {
            let ss: f64 = mov_pts
                .iter()
                .zip(&ref_pts)
                .map(|(m, r)| {
                    let e = f(m.0, m.1);
                    (e.0 - r.0).powi(2) + (e.1 - r.1).powi(2)
                })
                .sum();
            (ss / ref_pts.len() as f64).sqrt()
        };
        let with_field = err(&|x, y| a.apply(x, y));
        let affine_only = err(&|x, y| a.transform.apply(x, y));
        assert!(
            with_field < 0.5 * affine_only,
            "{with_field} vs {affine_only}"
        );
        assert!(a.nonrigid_residual_px < a.residual_px);
    }

    #[test]
    fn unrelated_sessions_fail_with_the_session_named() {
        let (w, h) = (160, 128);
        let a = scatter(90, w as f64, h as f64, 1);
        let b = scatter(90, w as f64, h as f64, 99);
        let err = align_session(
            "d9",
            (&blobs(&a, w, h), &a),
            (&blobs(&b, w, h), &b),
            &settings(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("'d9'") && err.contains("same field of view"),
            "{err}"
        );
    }

    #[test]
    fn grid_finds_neighbours_within_the_radius() {
        let pts = vec![(0.0, 0.0), (3.0, 4.0), (10.0, 0.0)];
        let g = PointGrid::new(&pts, 5.0);
        assert_eq!(g.near(&pts, (0.0, 0.0), 5.0), vec![0, 1]);
        assert_eq!(g.near(&pts, (9.0, 0.5), 2.0), vec![2]);
    }
}
