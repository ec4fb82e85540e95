//! `cortexmap score`: a run's tables against the simulator's truth.
//!
//! In: a simulated experiment's `truth/` folder and a run folder. Out: per-session
//! figures, printed and written to `RUN/score/*.parquet`. This release scores
//! motion: the RMSE of estimated against true rigid shifts after removing one
//! constant offset per session (the reference image is arbitrary up to a
//! translation), and, when the simulation had a nonrigid warp, the RMSE of the
//! estimated per-pixel displacement field against the true one (rigid + warp),
//! again after removing one constant offset per session, sampled every 4 px.

pub mod analysis;
pub mod cells;
pub mod noise_floor;
pub mod track;

use crate::error::{Error, Result};
use crate::io::table::{read_table, write_table, Column, Table};
use crate::motion::nonrigid::field_from_centres;
use crate::simulate::motion::dense_warp;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Motion accuracy of one session.
#[derive(Debug, Clone, PartialEq)]
pub struct MotionScore {
    pub session: String,
    pub frames: usize,
    /// √(mean(ex² + ey²)) after offset removal, px.
    pub rmse: f64,
    pub rmse_x: f64,
    pub rmse_y: f64,
    /// The constant offset removed (estimated − true), px.
    pub offset_x: f64,
    pub offset_y: f64,
    /// Largest per-frame error after offset removal, px.
    pub max_error: f64,
    /// Per-pixel field RMSE (px) when the truth has a warp.
    pub field_rmse: Option<f64>,
    /// The same after removing each sampled pixel's mean error over the session:
    /// the reference's own static distortion, which no registration can see.
    pub field_rmse_static: Option<f64>,
}

/// Everything `score` measured.
#[derive(Debug, Clone, Default)]
pub struct Score {
    pub motion: Vec<MotionScore>,
    /// ROI and trace accuracy, when the run has rois.parquet.
    pub cells: Option<Vec<cells::CellScore>>,
    /// Tracking and tag accuracy, when the run has cells.parquet.
    pub tracking: Option<track::TrackScore>,
    /// Responsiveness and map accuracy, when the run has neurons.parquet.
    pub analysis: Option<analysis::AnalysisScore>,
}

/// The truth folder: `dir/truth` when it exists, else `dir` itself.
fn truth_folder(dir: &Path) -> PathBuf {
    let t = dir.join("truth");
    if t.is_dir() {
        t
    } else {
        dir.to_path_buf()
    }
}

fn strs(t: &Table, path: &Path, name: &str) -> Result<Vec<String>> {
    Ok(t.strs(path, name)?.to_vec())
}

/// Per session, (frame, shift_x, shift_y) rows sorted by frame.
type SessionShifts = BTreeMap<String, Vec<(u32, f64, f64)>>;

/// Per-session (frame → (x, y)) from a motion table.
fn shifts_by_session(path: &Path) -> Result<SessionShifts> {
    let t = read_table(path)?;
    let s = strs(&t, path, "session")?;
    let f = t.u32s(path, "frame")?;
    let x = t.f32s(path, "shift_x")?;
    let y = t.f32s(path, "shift_y")?;
    let mut out: BTreeMap<String, Vec<(u32, f64, f64)>> = BTreeMap::new();
    for i in 0..s.len() {
        out.entry(s[i].clone())
            .or_default()
            .push((f[i], x[i] as f64, y[i] as f64));
    }
    for v in out.values_mut() {
        v.sort_by_key(|r| r.0);
    }
    Ok(out)
}

fn rigid_score(
    session: &str,
    est: &[(u32, f64, f64)],
    truth: &[(u32, f64, f64)],
    path: &Path,
) -> Result<MotionScore> {
    if est.len() != truth.len() || est.iter().zip(truth).any(|(a, b)| a.0 != b.0) {
        return Err(Error::input(
            path,
            format!(
                "session '{session}': the run's frames ({}) do not match the truth's ({})",
                est.len(),
                truth.len()
            ),
        ));
    }
    let n = est.len().max(1) as f64;
    let ox = est.iter().zip(truth).map(|(a, b)| a.1 - b.1).sum::<f64>() / n;
    let oy = est.iter().zip(truth).map(|(a, b)| a.2 - b.2).sum::<f64>() / n;
    let errs: Vec<(f64, f64)> = est
        .iter()
        .zip(truth)
        .map(|(a, b)| (a.1 - b.1 - ox, a.2 - b.2 - oy))
        .collect();
    let mx = errs.iter().map(|e| e.0 * e.0).sum::<f64>() / n;
    let my = errs.iter().map(|e| e.1 * e.1).sum::<f64>() / n;
    Ok(MotionScore {
        session: session.to_string(),
        frames: est.len(),
        rmse: (mx + my).sqrt(),
        rmse_x: mx.sqrt(),
        rmse_y: my.sqrt(),
        offset_x: ox,
        offset_y: oy,
        max_error: errs
            .iter()
            .map(|e| (e.0 * e.0 + e.1 * e.1).sqrt())
            .fold(0.0, f64::max),
        field_rmse: None,
        field_rmse_static: None,
    })
}

/// Rows of a table grouped by (session, frame), keeping row indices.
fn rows_by_frame(t: &Table, path: &Path) -> Result<BTreeMap<(String, u32), Vec<usize>>> {
    let s = t.strs(path, "session")?;
    let f = t.u32s(path, "frame")?;
    let mut out: BTreeMap<(String, u32), Vec<usize>> = BTreeMap::new();
    for i in 0..s.len() {
        out.entry((s[i].clone(), f[i])).or_default().push(i);
    }
    Ok(out)
}

/// Per-pixel field RMSE for every session with a true warp.
fn field_scores(
    truth: &Path,
    run: &Path,
    w: usize,
    h: usize,
    scores: &mut [MotionScore],
) -> Result<()> {
    let warp_path = truth.join("warp.parquet");
    if !warp_path.exists() {
        return Ok(());
    }
    let warp = read_table(&warp_path)?;
    let wdx = warp.f32s(&warp_path, "dx")?;
    let wdy = warp.f32s(&warp_path, "dy")?;
    let warp_rows = rows_by_frame(&warp, &warp_path)?;
    let true_shifts = shifts_by_session(&truth.join("motion.parquet"))?;
    let est_shifts = shifts_by_session(&run.join("motion.parquet"))?;
    let blocks_path = run.join("motion_blocks.parquet");
    let blocks = blocks_path
        .exists()
        .then(|| read_table(&blocks_path))
        .transpose()?;
    let block_rows = blocks
        .as_ref()
        .map(|b| rows_by_frame(b, &blocks_path))
        .transpose()?;
    // Sample points every 4 px.
    let pts: Vec<usize> = (0..h)
        .step_by(4)
        .flat_map(|y| (0..w).step_by(4).map(move |x| y * w + x))
        .collect();
    for score in scores.iter_mut() {
        let (Some(ts), Some(es)) = (
            true_shifts.get(&score.session),
            est_shifts.get(&score.session),
        ) else {
            continue;
        };
        let mut diffs: Vec<(f64, f64)> = Vec::new();
        let mut frames_seen = 0usize;
        for (&(frame, tx, ty), &(_, ex, ey)) in ts.iter().zip(es) {
            let Some(rows) = warp_rows.get(&(score.session.clone(), frame)) else {
                continue;
            };
            let nodes_x: Vec<f32> = rows.iter().map(|&i| wdx[i]).collect();
            let nodes_y: Vec<f32> = rows.iter().map(|&i| wdy[i]).collect();
            let true_x = dense_warp(&nodes_x, w, h);
            let true_y = dense_warp(&nodes_y, w, h);
            let est = match (&blocks, &block_rows) {
                (Some(b), Some(br)) => {
                    let r = br.get(&(score.session.clone(), frame)).ok_or_else(|| {
                        Error::input(
                            &blocks_path,
                            format!("no blocks for session '{}' frame {frame}", score.session),
                        )
                    })?;
                    let bx = b.f32s(&blocks_path, "block_x")?;
                    let by = b.f32s(&blocks_path, "block_y")?;
                    let sx = b.f32s(&blocks_path, "shift_x")?;
                    let sy = b.f32s(&blocks_path, "shift_y")?;
                    let mut cx: Vec<f64> = r.iter().map(|&i| bx[i] as f64).collect();
                    let mut cy: Vec<f64> = r.iter().map(|&i| by[i] as f64).collect();
                    cx.sort_by(|a, b| a.total_cmp(b));
                    cx.dedup();
                    cy.sort_by(|a, b| a.total_cmp(b));
                    cy.dedup();
                    let vx: Vec<f32> = r.iter().map(|&i| sx[i]).collect();
                    let vy: Vec<f32> = r.iter().map(|&i| sy[i]).collect();
                    Some((
                        field_from_centres(&cx, &cy, &vx, w, h),
                        field_from_centres(&cx, &cy, &vy, w, h),
                    ))
                }
                _ => None,
            };
            frames_seen += 1;
            for &p in &pts {
                let (ex_p, ey_p) = match &est {
                    Some((fx, fy)) => (fx[p] as f64, fy[p] as f64),
                    None => (ex, ey),
                };
                diffs.push((
                    ex_p - (tx + true_x[p] as f64),
                    ey_p - (ty + true_y[p] as f64),
                ));
            }
        }
        if diffs.is_empty() {
            continue;
        }
        let n = diffs.len() as f64;
        let ox = diffs.iter().map(|d| d.0).sum::<f64>() / n;
        let oy = diffs.iter().map(|d| d.1).sum::<f64>() / n;
        let mse = diffs
            .iter()
            .map(|d| (d.0 - ox).powi(2) + (d.1 - oy).powi(2))
            .sum::<f64>()
            / n;
        score.field_rmse = Some(mse.sqrt());
        score.field_rmse_static = Some(static_removed_rmse(&diffs, pts.len(), frames_seen));
    }
    Ok(())
}

/// RMSE of per-frame, per-point errors (`frames × points`, frame-major) after
/// removing every point's mean error over the frames.
///
/// A session's reference is the average of its frames, so it carries the
/// session's mean warp; every registration measures displacements from that
/// distorted image. Like the rigid score's constant offset, this static field is
/// a property of the chosen reference, not an error of the frame-to-frame
/// estimate, and is removed before scoring.
fn static_removed_rmse(diffs: &[(f64, f64)], points: usize, frames: usize) -> f64 {
    if points == 0 || frames == 0 {
        return f64::NAN;
    }
    let mut mean = vec![(0.0f64, 0.0f64); points];
    for row in diffs.chunks(points) {
        for (m, d) in mean.iter_mut().zip(row) {
            m.0 += d.0 / frames as f64;
            m.1 += d.1 / frames as f64;
        }
    }
    let mse = diffs
        .chunks(points)
        .flat_map(|row| row.iter().zip(&mean))
        .map(|(d, m)| (d.0 - m.0).powi(2) + (d.1 - m.1).powi(2))
        .sum::<f64>()
        / diffs.len() as f64;
    mse.sqrt()
}

/// Score `run` against `truth` (an experiment folder or its `truth/`).
pub fn score(truth: &Path, run: &Path) -> Result<Score> {
    let truth = truth_folder(truth);
    let run_motion = run.join("motion.parquet");
    if !run_motion.exists() {
        return Err(Error::input(
            run,
            "no motion.parquet: run the motion stage first",
        ));
    }
    let truth_motion = truth.join("motion.parquet");
    if !truth_motion.exists() {
        return Err(Error::input(
            &truth,
            "no motion.parquet: not a simulator truth folder",
        ));
    }
    let est = shifts_by_session(&run_motion)?;
    let tru = shifts_by_session(&truth_motion)?;
    let mut motion = Vec::new();
    for (session, t) in &tru {
        let e = est.get(session).ok_or_else(|| {
            Error::input(
                &run_motion,
                format!("session '{session}' of the truth is missing"),
            )
        })?;
        motion.push(rigid_score(session, e, t, &run_motion)?);
    }
    let sessions_path = truth.join("sessions.parquet");
    let sessions = read_table(&sessions_path)?;
    let w = sessions
        .u32s(&sessions_path, "width")?
        .first()
        .copied()
        .unwrap_or(0) as usize;
    let h = sessions
        .u32s(&sessions_path, "height")?
        .first()
        .copied()
        .unwrap_or(0) as usize;
    field_scores(&truth, run, w, h, &mut motion)?;
    let out = run.join("score");
    std::fs::create_dir_all(&out).map_err(|e| Error::output(&out, e))?;
    write_table(out.join("motion.parquet"), &motion_table(&motion))?;
    let offsets = motion
        .iter()
        .map(|m| (m.session.clone(), (m.offset_x, m.offset_y)))
        .collect();
    let (mut matches, mut noise) = (cells::Matches::new(), cells::RoiNoise::new());
    let cells = cells::score_cells(&truth, run, w, &offsets, &mut matches, &mut noise)?;
    if let Some(c) = &cells {
        write_table(out.join("cells.parquet"), &cells_table(c))?;
    }
    let tracking = if cells.is_some() {
        track::score_tracking(&truth, run, &matches, &offsets)?
    } else {
        None
    };
    if let Some(t) = &tracking {
        write_table(out.join("tracking.parquet"), &track::links_table(t))?;
        write_table(out.join("tags.parquet"), &track::tags_table(t))?;
        write_table(out.join("alignment.parquet"), &track::alignment_table(t))?;
    }
    let analysis = if cells.is_some() {
        analysis::score_analysis(&truth, run, &matches, &noise)?
    } else {
        None
    };
    if let Some(a) = &analysis {
        write_table(
            out.join("responsive.parquet"),
            &analysis::responsive_table(a),
        )?;
        write_table(out.join("maps.parquet"), &analysis::maps_table(a))?;
        write_table(out.join("cell_tags.parquet"), &analysis::cell_tags_table(a))?;
    }
    Ok(Score {
        motion,
        cells,
        tracking,
        analysis,
    })
}

fn cells_table(c: &[cells::CellScore]) -> Table {
    let f = |g: &dyn Fn(&cells::CellScore) -> f64| Column::F64(c.iter().map(g).collect());
    let u = |g: &dyn Fn(&cells::CellScore) -> usize| {
        Column::U32(c.iter().map(|s| g(s) as u32).collect())
    };
    Table::new()
        .with(
            "session",
            Column::Str(c.iter().map(|s| s.session.clone()).collect()),
        )
        .with("n_true", u(&|s| s.n_true))
        .with("n_est", u(&|s| s.n_est))
        .with("n_matched", u(&|s| s.n_matched))
        .with("precision", f(&|s| s.precision))
        .with("recall", f(&|s| s.recall))
        .with("f1", f(&|s| s.f1))
        .with("f1_all_rois", f(&|s| s.f1_all))
        .with("dff_corr_median", f(&|s| s.trace_corr_median))
        .with("dff_corr_mean", f(&|s| s.trace_corr_mean))
        .with(
            "dff_corr_ceiling_median",
            f(&|s| s.trace_corr_ceiling_median),
        )
        .with("dff_denoised_corr_median", f(&|s| s.denoised_corr_median))
        .with("spike_corr_median", f(&|s| s.spike_corr_median))
}

fn motion_table(m: &[MotionScore]) -> Table {
    let f = |g: &dyn Fn(&MotionScore) -> f64| Column::F64(m.iter().map(g).collect());
    Table::new()
        .with(
            "session",
            Column::Str(m.iter().map(|s| s.session.clone()).collect()),
        )
        .with(
            "frames",
            Column::U32(m.iter().map(|s| s.frames as u32).collect()),
        )
        .with("rmse_px", f(&|s| s.rmse))
        .with("rmse_x_px", f(&|s| s.rmse_x))
        .with("rmse_y_px", f(&|s| s.rmse_y))
        .with("offset_x_px", f(&|s| s.offset_x))
        .with("offset_y_px", f(&|s| s.offset_y))
        .with("max_error_px", f(&|s| s.max_error))
        .with("field_rmse_px", f(&|s| s.field_rmse.unwrap_or(f64::NAN)))
        .with(
            "field_rmse_static_removed_px",
            f(&|s| s.field_rmse_static.unwrap_or(f64::NAN)),
        )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_static_field_error_is_removed_but_frame_noise_is_not() {
        // Two points, three frames: point 0 is off by a constant (0.5, 0),
        // point 1 by +0.2, −0.2 and 0 in y.
        let diffs = [
            (0.5, 0.0),
            (0.0, 0.2),
            (0.5, 0.0),
            (0.0, -0.2),
            (0.5, 0.0),
            (0.0, 0.0),
        ];
        let r = super::static_removed_rmse(&diffs, 2, 3);
        let want = ((0.04 + 0.04) / 6.0f64).sqrt();
        assert!((r - want).abs() < 1e-12, "{r} vs {want}");
        assert!(super::static_removed_rmse(&[], 0, 0).is_nan());
    }
}
