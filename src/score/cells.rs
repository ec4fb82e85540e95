//! Scoring of the `detect` and `extract` stages.
//!
//! ROI matching: one-to-one optimal assignment (Hungarian, `pathfinding`'s
//! Kuhn–Munkres) between estimated ROIs and true cells, allowing a pair when the
//! centroids are within 4 px and the footprints' intersection over union is at
//! least 0.2, preferring more matches first and shorter distances second. Run
//! coordinates are moved into the truth's by the constant motion offset the motion
//! score measured (the run's reference image is the truth's frame up to that
//! translation). Precision, recall and F1 follow.
//!
//! Traces: Pearson correlation of each matched ROI's ΔF/F with its cell's true
//! ΔF/F, and of its deconvolved activity with the true spike counts (both smoothed
//! by a Gaussian of one frame, so a spike placed one frame off still counts).
//!
//! Real data: [`score_regions`] scores against neurofinder-format labels with
//! neurofinder's rule (centroids within 5 px, one-to-one).

use super::noise_floor::noise_sd;
use crate::analysis::stats::median;
use crate::error::{Error, Result};
use crate::io::table::{read_table, Table};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Detection and trace accuracy of one session.
#[derive(Debug, Clone, PartialEq)]
pub struct CellScore {
    pub session: String,
    pub n_true: usize,
    /// ROIs scored (`is_cell` ones).
    pub n_est: usize,
    pub n_matched: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// The same over every ROI, `is_cell` or not.
    pub f1_all: f64,
    /// Median Pearson r of matched ΔF/F with the true ΔF/F (NaN without traces).
    pub trace_corr_median: f64,
    pub trace_corr_mean: f64,
    /// Median over matched ROIs of the noise ceiling of that r: an estimate of
    /// the largest correlation a noise-free signal can have with the ROI's ΔF/F,
    /// √(1 − σ²/var), with σ its white-noise s.d. ([`noise_sd`]).
    pub trace_corr_ceiling_median: f64,
    /// Median Pearson r of the denoised ΔF/F (OASIS calcium) with the true ΔF/F.
    pub denoised_corr_median: f64,
    /// Median Pearson r of deconvolved activity with the true spikes.
    pub spike_corr_median: f64,
}

/// One footprint: centroid and binarised pixels.
#[derive(Debug, Clone)]
pub struct Shape {
    pub x: f64,
    pub y: f64,
    pub pixels: Vec<u32>,
}

/// Precision, recall and F1 of `matched` pairs among `n_est` estimates and `n_true`.
pub fn prf(n_matched: usize, n_est: usize, n_true: usize) -> (f64, f64, f64) {
    let p = if n_est > 0 {
        n_matched as f64 / n_est as f64
    } else {
        0.0
    };
    let r = if n_true > 0 {
        n_matched as f64 / n_true as f64
    } else {
        0.0
    };
    let f = if p + r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    };
    (p, r, f)
}

/// Optimal one-to-one matching: pairs (est, truth) allowed by `allowed`, the most
/// pairs first, then the smallest total centroid distance.
pub fn match_pairs(
    est: &[Shape],
    truth: &[Shape],
    allowed: impl Fn(&Shape, &Shape) -> bool,
) -> Vec<(usize, usize)> {
    if est.is_empty() || truth.is_empty() {
        return Vec::new();
    }
    let mut w = vec![0i64; est.len() * truth.len()];
    for (i, e) in est.iter().enumerate() {
        for (j, t) in truth.iter().enumerate() {
            if allowed(e, t) {
                let d = (e.x - t.x).hypot(e.y - t.y);
                w[i * truth.len() + j] = 1_000_000 - (d * 1000.0).round().min(999_999.0) as i64;
            }
        }
    }
    crate::assign::max_weight_pairs(est.len(), truth.len(), &w)
}

/// |A ∩ B| / |A ∪ B| of two sorted pixel lists.
pub fn iou(a: &[u32], b: &[u32]) -> f64 {
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - inter;
    if union > 0 {
        inter as f64 / union as f64
    } else {
        0.0
    }
}

/// Pearson correlation; NaN when either side has no variance.
pub fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len());
    if n < 2 {
        return f64::NAN;
    }
    let ma = a[..n].iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let mb = b[..n].iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a[..n].iter().zip(&b[..n]) {
        let (u, v) = (x as f64 - ma, y as f64 - mb);
        sab += u * v;
        saa += u * u;
        sbb += v * v;
    }
    if saa > 0.0 && sbb > 0.0 {
        sab / (saa * sbb).sqrt()
    } else {
        f64::NAN
    }
}

/// An estimate of the largest Pearson r that a noise-free signal can reach with
/// `trace` whose white-noise s.d. is `sd` ([`noise_sd`]): √(1 − σ²/var)
/// (Spearman's attenuation bound; with σ estimated, a single r may exceed it);
/// NaN without variance.
pub fn noise_ceiling(trace: &[f32], sd: f64) -> f64 {
    let n = trace.len();
    if n < 2 {
        return f64::NAN;
    }
    let m = trace.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let var = trace.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n as f64;
    if var > 0.0 && sd.is_finite() {
        (1.0 - sd * sd / var).max(0.0).sqrt()
    } else {
        f64::NAN
    }
}

fn smooth1(v: &[f32]) -> Vec<f32> {
    let k = crate::imgproc::gaussian_kernel(1.0);
    let r = (k.len() / 2) as isize;
    (0..v.len() as isize)
        .map(|i| {
            k.iter()
                .enumerate()
                .map(|(j, &w)| w * v[(i + j as isize - r).clamp(0, v.len() as isize - 1) as usize])
                .sum()
        })
        .collect()
}

fn shape(
    pixels: &[u32],
    weights: &[f32],
    width: usize,
    min_weight: f32,
    (dx, dy): (f64, f64),
) -> Shape {
    let (mut sx, mut sy, mut sw) = (0f64, 0f64, 0f64);
    for (&p, &w) in pixels.iter().zip(weights) {
        let w = w.max(0.0) as f64;
        sx += w * (p as usize % width) as f64;
        sy += w * (p as usize / width) as f64;
        sw += w;
    }
    let peak = weights.iter().copied().fold(0f32, f32::max);
    let (ix, iy) = (dx.round() as i64, dy.round() as i64);
    let mut moved: Vec<u32> = pixels
        .iter()
        .zip(weights)
        .filter(|(_, &w)| w >= min_weight * peak)
        .filter_map(|(&p, _)| {
            let (x, y) = (
                (p as usize % width) as i64 + ix,
                (p as usize / width) as i64 + iy,
            );
            (x >= 0 && y >= 0 && (x as usize) < width)
                .then_some((y as usize * width + x as usize) as u32)
        })
        .collect();
    moved.sort_unstable();
    Shape {
        x: if sw > 0.0 { sx / sw + dx } else { f64::NAN },
        y: if sw > 0.0 { sy / sw + dy } else { f64::NAN },
        pixels: moved,
    }
}

/// Rows of `table` grouped by session, in row order.
fn rows_by_session(t: &Table, path: &Path) -> Result<BTreeMap<String, Vec<usize>>> {
    let mut m: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, s) in t.strs(path, "session")?.iter().enumerate() {
        m.entry(s.clone()).or_default().push(i);
    }
    Ok(m)
}

/// Per (session, id): the frame-ordered values of `column` in a traces table.
pub(super) fn traces_by_id(
    t: &Table,
    path: &Path,
    id: &str,
    column: &str,
) -> Result<BTreeMap<(String, u32), Vec<f32>>> {
    group_series(t, path, id, t.f32s(path, column)?)
}

/// Spike counts of the truth table as f32 (stored as u16).
fn true_spikes(t: &Table, path: &Path) -> Result<BTreeMap<(String, u32), Vec<f32>>> {
    let v: Vec<f32> = match t.column("spikes") {
        Some(crate::io::table::Column::U16(v)) => v.iter().map(|&x| x as f32).collect(),
        _ => {
            return Err(Error::input(
                path,
                "column 'spikes' is missing or not uint16",
            ))
        }
    };
    group_series(t, path, "cell", &v)
}

/// `values` grouped by (session, `id`) and ordered by frame.
fn group_series(
    t: &Table,
    path: &Path,
    id: &str,
    values: &[f32],
) -> Result<BTreeMap<(String, u32), Vec<f32>>> {
    let (s, k, f) = (
        t.strs(path, "session")?,
        t.u32s(path, id)?,
        t.u32s(path, "frame")?,
    );
    let mut m: BTreeMap<(String, u32), Vec<(u32, f32)>> = BTreeMap::new();
    for i in 0..s.len().min(values.len()) {
        m.entry((s[i].clone(), k[i]))
            .or_default()
            .push((f[i], values[i]));
    }
    Ok(m.into_iter()
        .map(|(key, mut rows)| {
            rows.sort_by_key(|r| r.0);
            (key, rows.into_iter().map(|r| r.1).collect())
        })
        .collect())
}

/// Per session: matched `is_cell` ROI id → true cell id.
pub type Matches = BTreeMap<String, BTreeMap<u32, u32>>;

/// Per (session, ROI): the white-noise s.d. of the ROI's `dff` ([`noise_sd`]).
pub type RoiNoise = BTreeMap<(String, u32), f64>;

/// Score the run's rois.parquet (and traces.parquet when present) against the
/// truth's footprints and traces. `offsets` maps a session to the motion offset
/// (estimated − true shift, px). Returns None when the run has no rois.parquet;
/// fills `matches` with the one-to-one matches of `is_cell` ROIs and, when both
/// sides have traces, `noise` with every ROI's ΔF/F noise.
pub fn score_cells(
    truth: &Path,
    run: &Path,
    width: usize,
    offsets: &BTreeMap<String, (f64, f64)>,
    matches: &mut Matches,
    noise: &mut RoiNoise,
) -> Result<Option<Vec<CellScore>>> {
    let rois_path = run.join("rois.parquet");
    if !rois_path.exists() {
        return Ok(None);
    }
    let fp_path = truth.join("footprints.parquet");
    let rois = read_table(&rois_path)?;
    let fps = read_table(&fp_path)?;
    let est_rows = rows_by_session(&rois, &rois_path)?;
    let true_rows = rows_by_session(&fps, &fp_path)?;
    let (rp, rw, rc, rid) = (
        rois.lists_u32(&rois_path, "pixels")?,
        rois.lists_f32(&rois_path, "weights")?,
        rois.bools(&rois_path, "is_cell")?,
        rois.u32s(&rois_path, "roi")?,
    );
    let (tp, tw, tid) = (
        fps.lists_u32(&fp_path, "pixels")?,
        fps.lists_f32(&fp_path, "weights")?,
        fps.u32s(&fp_path, "cell")?,
    );
    let traces = load_traces(truth, run)?;
    if let Some(tr) = &traces {
        *noise = tr
            .est_dff
            .par_iter()
            .map(|(k, v)| (k.clone(), noise_sd(v)))
            .collect();
    }
    let mut out = Vec::new();
    for (session, trows) in &true_rows {
        let erows = est_rows.get(session).cloned().unwrap_or_default();
        let off = offsets.get(session).copied().unwrap_or((0.0, 0.0));
        let truth_shapes: Vec<Shape> = trows
            .iter()
            .map(|&i| shape(&tp[i], &tw[i], width, 0.1, (0.0, 0.0)))
            .collect();
        let est_all: Vec<Shape> = erows
            .iter()
            .map(|&i| shape(&rp[i], &rw[i], width, 0.1, off))
            .collect();
        let allowed = |e: &Shape, t: &Shape| {
            (e.x - t.x).hypot(e.y - t.y) <= 4.0 && iou(&e.pixels, &t.pixels) >= 0.2
        };
        let cell_idx: Vec<usize> = (0..erows.len()).filter(|&k| rc[erows[k]]).collect();
        let est_cells: Vec<Shape> = cell_idx.iter().map(|&k| est_all[k].clone()).collect();
        let pairs = match_pairs(&est_cells, &truth_shapes, allowed);
        matches.insert(
            session.clone(),
            pairs
                .iter()
                .map(|&(e, t)| (rid[erows[cell_idx[e]]], tid[trows[t]]))
                .collect(),
        );
        let (precision, recall, f1) = prf(pairs.len(), est_cells.len(), truth_shapes.len());
        let all_pairs = match_pairs(&est_all, &truth_shapes, allowed);
        let (_, _, f1_all) = prf(all_pairs.len(), est_all.len(), truth_shapes.len());
        let (mut tc, mut sc, mut dc, mut ceiling) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if let Some(tr) = &traces {
            for &(e, t) in &pairs {
                let roi = rid[erows[cell_idx[e]]];
                let cell = tid[trows[t]];
                let key_e = (session.clone(), roi);
                let key_t = (session.clone(), cell);
                if let (Some(a), Some(b)) = (tr.est_dff.get(&key_e), tr.true_dff.get(&key_t)) {
                    tc.push(pearson(a, b));
                    let sd = noise.get(&key_e).copied().unwrap_or(f64::NAN);
                    ceiling.push(noise_ceiling(a, sd));
                }
                if let (Some(a), Some(b)) = (tr.est_denoised.get(&key_e), tr.true_dff.get(&key_t)) {
                    dc.push(pearson(a, b));
                }
                if let (Some(a), Some(b)) = (tr.est_spikes.get(&key_e), tr.true_spikes.get(&key_t))
                {
                    sc.push(pearson(&smooth1(a), &smooth1(b)));
                }
            }
        }
        let mean = |v: &[f64]| {
            let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
            if f.is_empty() {
                f64::NAN
            } else {
                f.iter().sum::<f64>() / f.len() as f64
            }
        };
        out.push(CellScore {
            session: session.clone(),
            n_true: truth_shapes.len(),
            n_est: est_cells.len(),
            n_matched: pairs.len(),
            precision,
            recall,
            f1,
            f1_all,
            trace_corr_median: median(tc.clone()),
            trace_corr_mean: mean(&tc),
            trace_corr_ceiling_median: median(ceiling),
            spike_corr_median: median(sc),
            denoised_corr_median: median(dc),
        });
    }
    Ok(Some(out))
}

struct Traces {
    est_dff: BTreeMap<(String, u32), Vec<f32>>,
    est_spikes: BTreeMap<(String, u32), Vec<f32>>,
    est_denoised: BTreeMap<(String, u32), Vec<f32>>,
    true_dff: BTreeMap<(String, u32), Vec<f32>>,
    true_spikes: BTreeMap<(String, u32), Vec<f32>>,
}

fn load_traces(truth: &Path, run: &Path) -> Result<Option<Traces>> {
    let (ep, tp) = (run.join("traces.parquet"), truth.join("traces.parquet"));
    if !ep.exists() || !tp.exists() {
        return Ok(None);
    }
    let est = read_table(&ep)?;
    let est_dff = traces_by_id(&est, &ep, "roi", "dff")?;
    let est_spikes = traces_by_id(&est, &ep, "roi", "spikes")?;
    let est_denoised = if est.column("dff_denoised").is_some() {
        traces_by_id(&est, &ep, "roi", "dff_denoised")?
    } else {
        BTreeMap::new()
    };
    drop(est);
    let tru = read_table(&tp)?;
    Ok(Some(Traces {
        est_dff,
        est_spikes,
        est_denoised,
        true_dff: traces_by_id(&tru, &tp, "cell", "dff")?,
        true_spikes: true_spikes(&tru, &tp)?,
    }))
}

/// Neurofinder-style score of one session's `is_cell` ROIs against labelled
/// regions (JSON list of `{"coordinates": [[row, col], ...]}`): centroids within
/// `max_dist` px, matched one-to-one. Returns (n_true, n_est, matched, p, r, f1) for
/// `is_cell` ROIs and the F1 over all ROIs.
pub fn score_regions(
    regions: &Path,
    run: &Path,
    session: Option<&str>,
    max_dist: f64,
) -> Result<RegionScore> {
    let text =
        std::fs::read_to_string(regions).map_err(|e| Error::input(regions, e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::input(regions, format!("not JSON: {e}")))?;
    let list = json
        .as_array()
        .ok_or_else(|| Error::input(regions, "expected a JSON list of regions"))?;
    let mut truth = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let coords = r
            .get("coordinates")
            .and_then(|c| c.as_array())
            .ok_or_else(|| {
                Error::input(regions, format!("region {i} has no 'coordinates' list"))
            })?;
        let pts: Vec<(f64, f64)> = coords
            .iter()
            .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
            .collect();
        if pts.is_empty() {
            return Err(Error::input(
                regions,
                format!("region {i} has no [row, col] points"),
            ));
        }
        let n = pts.len() as f64;
        truth.push(Shape {
            x: pts.iter().map(|p| p.1).sum::<f64>() / n,
            y: pts.iter().map(|p| p.0).sum::<f64>() / n,
            pixels: vec![],
        });
    }
    let rois_path = run.join("rois.parquet");
    if !rois_path.exists() {
        return Err(Error::input(
            run,
            "no rois.parquet: run the detect stage first",
        ));
    }
    let rois = read_table(&rois_path)?;
    let rows = rows_by_session(&rois, &rois_path)?;
    let session = match session {
        Some(s) => s.to_string(),
        None => rows
            .keys()
            .next()
            .cloned()
            .ok_or_else(|| Error::input(&rois_path, "no ROIs in any session"))?,
    };
    let idx = rows.get(&session).cloned().unwrap_or_default();
    let (cx, cy, is_cell, source) = (
        rois.f32s(&rois_path, "centroid_x")?,
        rois.f32s(&rois_path, "centroid_y")?,
        rois.bools(&rois_path, "is_cell")?,
        rois.strs(&rois_path, "source")?,
    );
    let near = |e: &Shape, t: &Shape| (e.x - t.x).hypot(e.y - t.y) <= max_dist;
    let pick = |f: &dyn Fn(usize) -> bool| -> Vec<Shape> {
        idx.iter()
            .filter(|&&i| f(i))
            .map(|&i| Shape {
                x: cx[i] as f64,
                y: cy[i] as f64,
                pixels: vec![],
            })
            .collect()
    };
    let score = |est: Vec<Shape>| {
        let m = match_pairs(&est, &truth, near).len();
        let (p, r, f) = prf(m, est.len(), truth.len());
        (est.len(), m, p, r, f)
    };
    let cells = score(pick(&|i| is_cell[i]));
    let all = score(pick(&|_| true));
    let active = score(pick(&|i| is_cell[i] && source[i] == "activity"));
    Ok(RegionScore {
        session,
        n_true: truth.len(),
        cells,
        all,
        active_cells: active,
    })
}

/// The neurofinder-rule score: each tuple is (n_est, matched, precision, recall, F1).
#[derive(Debug, Clone)]
pub struct RegionScore {
    pub session: String,
    pub n_true: usize,
    pub cells: (usize, usize, f64, f64, f64),
    pub all: (usize, usize, f64, f64, f64),
    pub active_cells: (usize, usize, f64, f64, f64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_noisy_copy_of_a_signal_correlates_with_it_at_the_noise_ceiling() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, StandardNormal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let signal: Vec<f32> = (0..30_000)
            .map(|i| (i as f32 / 200.0).sin() * std::f32::consts::SQRT_2)
            .collect();
        let trace: Vec<f32> = signal
            .iter()
            .map(|&v| {
                let z: f32 = StandardNormal.sample(&mut rng);
                v + 0.5 * z
            })
            .collect();
        let ceiling = noise_ceiling(&trace, noise_sd(&trace));
        let r = pearson(&trace, &signal);
        // Unit-variance signal, noise s.d. 0.5: √(1 − 0.25/1.25) = 0.894.
        assert!((ceiling - 0.894).abs() < 0.01, "{ceiling}");
        assert!((r - ceiling).abs() < 0.01, "{r} {ceiling}");
        assert!(noise_ceiling(&[2.0; 10], 0.0).is_nan());
    }

    fn s(x: f64, y: f64) -> Shape {
        Shape {
            x,
            y,
            pixels: vec![],
        }
    }

    #[test]
    fn matching_prefers_more_pairs_then_shorter_distances() {
        let est = [s(0.0, 0.0), s(3.0, 0.0)];
        let truth = [s(1.0, 0.0), s(5.0, 0.0)];
        let near = |a: &Shape, b: &Shape| (a.x - b.x).hypot(a.y - b.y) <= 4.0;
        let mut m = match_pairs(&est, &truth, near);
        m.sort();
        // Greedy nearest would pair est 1 with truth 0 and leave est 0 alone.
        assert_eq!(m, vec![(0, 0), (1, 1)]);
        assert!(match_pairs(&est, &[], near).is_empty());
        let far = [s(100.0, 0.0)];
        assert!(match_pairs(&est, &far, near).is_empty());
    }

    #[test]
    fn more_estimates_than_truth_still_matches() {
        let est = [s(0.0, 0.0), s(10.0, 0.0), s(20.0, 0.0)];
        let truth = [s(10.5, 0.0)];
        let m = match_pairs(&est, &truth, |a, b| (a.x - b.x).abs() < 2.0);
        assert_eq!(m, vec![(1, 0)]);
        let (p, r, f) = prf(1, 3, 1);
        assert!((p - 1.0 / 3.0).abs() < 1e-12 && r == 1.0 && (f - 0.5).abs() < 1e-12);
    }

    #[test]
    fn iou_of_sorted_lists() {
        assert!((iou(&[1, 2, 3, 4], &[3, 4, 5, 6]) - 2.0 / 6.0).abs() < 1e-12);
        assert_eq!(iou(&[], &[]), 0.0);
    }
}
