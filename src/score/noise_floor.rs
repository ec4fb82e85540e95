//! The map score's noise floor: how far from the truth a run's normalised map
//! diagonal and off-diagonal would land if measured ΔF/F noise were its only error.
//!
//! The truth's maps are built from noise-free trial responses; a run's from
//! responses of measured ΔF/F, whose shot noise lowers every single-trial
//! correlation (by a factor that depends on each session's signal strength, so
//! normalising by the baseline sessions does not cancel it) and scatters them. To
//! see how much of a run's map error that alone explains, the truth's own responses
//! are given the run's noise and their maps scored like the run's:
//!
//! - each spared true cell's ΔF/F noise σ in a session is the run's: the robust
//!   s.d. of the first differences of the matched ROI's `dff` (1.4826 × median
//!   |Δ| / √2; white noise passes it unchanged, calcium transients barely move the
//!   median), or of the transferred trace of the tracked cell standing for it, or
//!   else the median σ of the session's cells (of its ROIs, of all ROIs, when it
//!   has none);
//! - the run's trial response is the response window's mean minus the baseline
//!   window's, so its noise has variance σ²·(1/n_b + 1/n_r); the window lengths
//!   are the truth's (`simulation.toml`), which equal the run's defaults on the
//!   `standard` and `demo` presets (not on `sample`: 2 frames against 3);
//! - every draw adds independent Gaussian noise of that variance to every true
//!   response, rebuilds the single-trial maps ([`crate::analysis::maps`]) and
//!   normalises them by the pre-ablation sessions, as the truth does; its error is
//!   the largest absolute difference from the truth's normalised values.
//!
//! The draws are seeded, each with its own stream, so the figures are the same on
//! every run and any number of threads. This is Spearman's attenuation by
//! measurement error (1904) made concrete by simulation.

use super::cells::{Matches, RoiNoise};
use crate::analysis::{maps, stats};
use crate::error::{Error, Result};
use crate::io::table::read_table;
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Noise draws per score.
pub const DRAWS: usize = 100;
const SEED: u64 = 0x6e6f_6973_6566_6c72;

/// The spread of the largest normalised map error over the noise draws.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseFloor {
    pub draws: usize,
    /// Largest error of each draw, ascending.
    pub max_errors: Vec<f64>,
    /// Per session, in the truth's order: the median over draws of the larger of
    /// its two errors.
    pub session_errors: Vec<(String, f64)>,
    /// Per session, in the truth's order: the median ΔF/F noise s.d. of the run's
    /// cells standing for spared true cells.
    pub session_sigma: Vec<(String, f64)>,
}

impl NoiseFloor {
    /// The `q`-quantile (0–1) of the draws' largest errors (nearest rank; the
    /// median, `q` = 0.5, as the middle pair's mean).
    pub fn quantile(&self, q: f64) -> f64 {
        let n = self.max_errors.len();
        if n == 0 {
            return f64::NAN;
        }
        if q == 0.5 {
            return stats::median(self.max_errors.clone());
        }
        let k = ((q * (n - 1) as f64).round() as usize).min(n - 1);
        self.max_errors[k]
    }
}

/// Robust s.d. of a trace's white noise: 1.4826 × median |first difference| / √2.
pub fn noise_sd(trace: &[f32]) -> f64 {
    let mut d: Vec<f64> = trace
        .windows(2)
        .map(|p| (p[1] as f64 - p[0] as f64).abs())
        .filter(|v| v.is_finite())
        .collect();
    if d.is_empty() {
        return f64::NAN;
    }
    let mid = d.len() / 2;
    let (_, m, _) = d.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    1.4826 * *m / std::f64::consts::SQRT_2
}

/// The truth's trial design and spared cells, and its noise-free responses.
struct TruthMaps {
    /// Sessions in the truth's order, with whether each is before the ablation.
    sessions: Vec<(String, bool)>,
    /// Per session, per stimulus: `repetitions × spared cells` responses.
    responses: Vec<Vec<Array2<f64>>>,
    /// Per session, the spared true cells (the columns of `responses`).
    cells: Vec<Vec<u32>>,
    /// Truth's normalised (diagonal, off-diagonal) per session.
    normalised: Vec<(f64, f64)>,
    /// Window lengths, frames: baseline, response.
    windows: (usize, usize),
}

#[derive(serde::Deserialize)]
struct TrialWindows {
    fs: f64,
    baseline_window_s: f64,
    response_window_s: f64,
}

fn load_truth(truth: &Path) -> Result<Option<TruthMaps>> {
    let (cp, trp, sp, mp, tomlp) = (
        truth.join("cells.parquet"),
        truth.join("trials.parquet"),
        truth.join("sessions.parquet"),
        truth.join("map_summary.parquet"),
        truth.join("simulation.toml"),
    );
    if ![&cp, &trp, &sp, &mp, &tomlp].iter().all(|p| p.exists()) {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&tomlp).map_err(|e| Error::input(&tomlp, e.to_string()))?;
    let w: TrialWindows =
        toml::from_str(&text).map_err(|e| Error::input(&tomlp, format!("not readable: {e}")))?;
    let frames = |s: f64| ((s * w.fs).round() as usize).max(1);
    let windows = (frames(w.baseline_window_s), frames(w.response_window_s));

    let s = read_table(&sp)?;
    let sessions: Vec<(String, bool)> = s
        .strs(&sp, "session")?
        .iter()
        .zip(s.bools(&sp, "post_ablation")?)
        .map(|(n, &post)| (n.clone(), !post))
        .collect();
    let summary = super::analysis::normalised_maps(&mp)?;
    let c = read_table(&cp)?;
    let spared: BTreeSet<u32> = c
        .u32s(&cp, "cell")?
        .iter()
        .zip(c.bools(&cp, "spared")?)
        .filter(|(_, &sp)| sp)
        .map(|(&k, _)| k)
        .collect();
    let t = read_table(&trp)?;
    let (ts, tc, tstim, trep, tresp) = (
        t.strs(&trp, "session")?,
        t.u32s(&trp, "cell")?,
        t.strs(&trp, "stimulus")?,
        t.u32s(&trp, "repetition")?,
        t.f32s(&trp, "response")?,
    );
    let stimuli: Vec<&String> = tstim.iter().collect::<BTreeSet<_>>().into_iter().collect();
    let stim_index: BTreeMap<&String, usize> =
        stimuli.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    let cells: Vec<u32> = spared.iter().copied().collect();
    let cell_index: BTreeMap<u32, usize> = cells.iter().enumerate().map(|(i, &c)| (c, i)).collect();
    let session_index: BTreeMap<&String, usize> = sessions
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n, i))
        .collect();
    let reps = trep.iter().map(|&r| r as usize + 1).max().unwrap_or(0);
    let mut responses: Vec<Vec<Array2<f64>>> =
        vec![vec![Array2::from_elem((reps, cells.len()), f64::NAN); stimuli.len()]; sessions.len()];
    for i in 0..ts.len() {
        let (Some(&k), Some(&c)) = (session_index.get(&ts[i]), cell_index.get(&tc[i])) else {
            continue;
        };
        responses[k][stim_index[&tstim[i]]][(trep[i] as usize, c)] = tresp[i] as f64;
    }
    // Repetitions a session did not play (shorter sessions) are dropped.
    for per_stim in responses.iter_mut() {
        for r in per_stim.iter_mut() {
            let kept: Vec<usize> = (0..r.nrows())
                .filter(|&k| r.row(k).iter().all(|v| v.is_finite()))
                .collect();
            *r = r.select(ndarray::Axis(0), &kept);
        }
    }
    let normalised = sessions
        .iter()
        .map(|(n, _)| summary.get(n).copied().unwrap_or((f64::NAN, f64::NAN)))
        .collect();
    Ok(Some(TruthMaps {
        cells: vec![cells; sessions.len()],
        sessions,
        responses,
        normalised,
        windows,
    }))
}

/// The median of the first group that has a finite value; NaN when none has.
fn first_finite_median<const N: usize>(groups: [Vec<f64>; N]) -> f64 {
    groups
        .into_iter()
        .map(stats::median)
        .find(|m| m.is_finite())
        .unwrap_or(f64::NAN)
}

/// The ΔF/F noise s.d. of each transferred trace, per (session, tracked cell).
fn transferred_sigmas(run: &Path) -> Result<RoiNoise> {
    let (p, id) = (run.join("transferred_traces.parquet"), "cell");
    if !p.exists() {
        return Ok(BTreeMap::new());
    }
    let t = read_table(&p)?;
    let series = super::cells::traces_by_id(&t, &p, id, "dff")?;
    Ok(series
        .into_par_iter()
        .map(|(k, v)| (k, noise_sd(&v)))
        .collect())
}

/// One draw: every session's larger normalised-map error after Gaussian noise of
/// s.d. `response_sd[session][cell]` is added to the true responses.
fn draw_errors(tm: &TruthMaps, response_sd: &[Vec<f64>], draw: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ draw.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let (mut diag, mut off) = (Vec::new(), Vec::new());
    for (k, per_stim) in tm.responses.iter().enumerate() {
        let noisy: Vec<Array2<f64>> = per_stim
            .iter()
            .map(|r| {
                let mut r = r.clone();
                for mut row in r.rows_mut() {
                    for (v, sd) in row.iter_mut().zip(&response_sd[k]) {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        *v += sd * z;
                    }
                }
                r
            })
            .collect();
        let m = maps::single_trial_map(&noisy);
        diag.push(maps::diagonal_mean(&m));
        off.push(maps::off_diagonal_mean(&m));
    }
    let baseline: Vec<bool> = tm.sessions.iter().map(|s| s.1).collect();
    let (dn, on) = (
        maps::normalise_to_baseline(&diag, &baseline),
        maps::normalise_to_baseline(&off, &baseline),
    );
    (0..tm.sessions.len())
        .map(|k| {
            let (td, to) = tm.normalised[k];
            (dn[k] - td).abs().max((on[k] - to).abs())
        })
        .collect()
}

/// The noise floor of the run's map score; None when the truth or the run lacks
/// the tables it needs. `roi_sigma` is every ROI's ΔF/F noise, as the ROI score
/// measured it ([`super::cells::score_cells`]), so traces.parquet is read once;
/// `stands_for` maps a tracked cell to the true cell it stands for (the analysis
/// score's vote).
pub fn map_noise_floor(
    truth: &Path,
    run: &Path,
    matches: &Matches,
    roi_sigma: &RoiNoise,
    stands_for: &BTreeMap<u32, u32>,
) -> Result<Option<NoiseFloor>> {
    if roi_sigma.is_empty() {
        return Ok(None);
    }
    let Some(tm) = load_truth(truth)? else {
        return Ok(None);
    };
    let cell_sigma = transferred_sigmas(run)?;
    let (nb, nr) = tm.windows;
    let var_factor = 1.0 / nb as f64 + 1.0 / nr as f64;
    // Per session, per spared true cell: the response noise s.d.
    let mut session_sigma = Vec::new();
    let response_sd: Vec<Vec<f64>> = tm
        .sessions
        .iter()
        .enumerate()
        .map(|(k, (name, _))| {
            let mut of_true: BTreeMap<u32, f64> = BTreeMap::new();
            for (&cell, &t) in stands_for {
                if let Some(&s) = cell_sigma
                    .get(&(name.clone(), cell))
                    .filter(|s| s.is_finite())
                {
                    of_true.insert(t, s);
                }
            }
            if let Some(m) = matches.get(name) {
                for (&roi, &t) in m {
                    if let Some(&s) = roi_sigma
                        .get(&(name.clone(), roi))
                        .filter(|s| s.is_finite())
                    {
                        of_true.insert(t, s);
                    }
                }
            }
            let known: Vec<f64> = tm.cells[k]
                .iter()
                .filter_map(|c| of_true.get(c).copied())
                .collect();
            // Without a matched cell, the session's ROIs stand in, then every ROI.
            let session_rois = || {
                roi_sigma
                    .iter()
                    .filter(|((s, _), _)| s == name)
                    .map(|(_, &v)| v)
                    .collect::<Vec<f64>>()
            };
            let median =
                first_finite_median([known, session_rois(), roi_sigma.values().copied().collect()]);
            session_sigma.push((name.clone(), median));
            tm.cells[k]
                .iter()
                .map(|c| {
                    let s = of_true.get(c).copied().filter(|s| s.is_finite());
                    s.unwrap_or(median) * var_factor.sqrt()
                })
                .collect()
        })
        .collect();
    if session_sigma.iter().any(|s| !s.1.is_finite()) {
        return Ok(None);
    }
    let draws: Vec<Vec<f64>> = (0..DRAWS)
        .into_par_iter()
        .map(|d| draw_errors(&tm, &response_sd, d as u64))
        .collect();
    let mut max_errors: Vec<f64> = draws
        .iter()
        .map(|e| e.iter().copied().fold(f64::NAN, f64::max))
        .collect();
    max_errors.sort_by(|a, b| a.total_cmp(b));
    let session_errors = tm
        .sessions
        .iter()
        .enumerate()
        .map(|(k, (name, _))| {
            (
                name.clone(),
                stats::median(draws.iter().map(|d| d[k]).collect()),
            )
        })
        .collect();
    Ok(Some(NoiseFloor {
        draws: DRAWS,
        max_errors,
        session_errors,
        session_sigma,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn noise_sd_recovers_white_noise_under_slow_transients() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let trace: Vec<f32> = (0..20_000)
            .map(|i| {
                let z: f64 = StandardNormal.sample(&mut rng);
                // A slow calcium-like wave under the noise, s.d. 0.05.
                let slow = 0.5 * (1.0 + (i as f64 / 300.0).sin());
                (slow + 0.05 * z) as f32
            })
            .collect();
        let s = noise_sd(&trace);
        assert!((s - 0.05).abs() < 0.002, "{s}");
        assert!(noise_sd(&[1.0]).is_nan());
    }

    /// Three sessions (two baseline), 4 stimuli × 5 repetitions × 60 cells of
    /// tuned responses with trial-to-trial variability, and the truth's normalised
    /// values computed from them without noise.
    fn small_truth() -> TruthMaps {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (n_stim, reps, cells) = (4, 5, 60);
        let tuning: Vec<Vec<f64>> = (0..n_stim)
            .map(|_| (0..cells).map(|_| rng.random::<f64>()).collect())
            .collect();
        let responses: Vec<Vec<Array2<f64>>> = (0..3)
            .map(|k| {
                let gain = [1.0, 1.1, 0.5][k];
                (0..n_stim)
                    .map(|s| {
                        Array2::from_shape_fn((reps, cells), |(_, c)| {
                            let z: f64 = StandardNormal.sample(&mut rng);
                            gain * tuning[s][c] + 0.3 * z
                        })
                    })
                    .collect()
            })
            .collect();
        let mut tm = TruthMaps {
            sessions: vec![("a".into(), true), ("b".into(), true), ("c".into(), false)],
            responses,
            cells: vec![(0..cells as u32).collect(); 3],
            normalised: Vec::new(),
            windows: (8, 8),
        };
        let zero = vec![vec![0.0; cells]; 3];
        // With zero noise a draw's maps are the truth's: take them as its values.
        let (mut d, mut o) = (Vec::new(), Vec::new());
        for per_stim in &tm.responses {
            let m = maps::single_trial_map(per_stim);
            d.push(maps::diagonal_mean(&m));
            o.push(maps::off_diagonal_mean(&m));
        }
        let base = [true, true, false];
        let (dn, on) = (
            maps::normalise_to_baseline(&d, &base),
            maps::normalise_to_baseline(&o, &base),
        );
        tm.normalised = dn.into_iter().zip(on).collect();
        assert!(draw_errors(&tm, &zero, 0).iter().all(|e| *e < 1e-12));
        tm
    }

    #[test]
    fn errors_vanish_without_noise_and_grow_with_it() {
        let tm = small_truth();
        let median_error = |sd: f64| {
            let per = vec![vec![sd; 60]; 3];
            let mut e: Vec<f64> = (0..9)
                .map(|d| {
                    draw_errors(&tm, &per, d)
                        .into_iter()
                        .fold(f64::NAN, f64::max)
                })
                .collect();
            e.sort_by(|a, b| a.total_cmp(b));
            e[4]
        };
        let (small, large) = (median_error(0.05), median_error(0.6));
        assert!(small > 0.0 && small < 0.1, "{small}");
        assert!(large > 2.0 * small, "{small} {large}");
        // Seeded: the same draw gives the same errors.
        let per = vec![vec![0.2; 60]; 3];
        assert_eq!(draw_errors(&tm, &per, 3), draw_errors(&tm, &per, 3));
    }

    #[test]
    fn a_session_without_matched_cells_borrows_its_rois_noise() {
        let m = first_finite_median([vec![], vec![f64::NAN, 0.2, 0.4], vec![9.0]]);
        assert!((m - 0.3).abs() < 1e-12);
        assert_eq!(
            first_finite_median([vec![f64::NAN], vec![], vec![0.5]]),
            0.5
        );
        assert!(first_finite_median([Vec::<f64>::new(), vec![]]).is_nan());
    }

    #[test]
    fn quantiles_are_nearest_ranks() {
        let f = NoiseFloor {
            draws: 5,
            max_errors: vec![0.1, 0.2, 0.3, 0.4, 0.5],
            session_errors: Vec::new(),
            session_sigma: Vec::new(),
        };
        assert_eq!(f.quantile(0.5), 0.3);
        assert_eq!(f.quantile(0.0), 0.1);
        assert_eq!(f.quantile(1.0), 0.5);
    }
}
