//! The analyze stage's response turnover and tuning drift (SCIENCE.md §3.7, §3.8).
//!
//! In: per session and spared cell, responsiveness, the tuning curve and the
//! split-half reliability ([`crate::analysis::neurons`]). Out:
//! `stability.parquet`, one row per pair of consecutive sessions with stimuli
//! (the fraction of responsive cells that stay responsive), `drift.parquet`, one
//! row per session (the correlation of single-cell tuning with the groups'
//! reference session), and each cell's correlation with its reference tuning for
//! `neurons.parquet`.
//!
//! Normalisation of the drift: SCIENCE.md's [D] divides each cell's correlation
//! by its split-half reliability on the reference day. With 4–5 repetitions
//! split-half correlations near zero are common and make single ratios explode,
//! so the mean correlation is divided by the same cells' mean split-half
//! reliability instead (a ratio of means), stepped up by Spearman–Brown to the
//! reliability of a whole session's curve, which is what the correlation compares.

use super::SessionSummary;
use crate::analysis::correlations::pearson_complete;
use crate::analysis::neurons::{CellSession, TrialDesign};
use crate::io::table::{Column, Table};

/// Per session and cell: the Pearson correlation of the cell's tuning curve with
/// its tuning curve in the reference session (NaN where either is missing).
pub fn tuning_corr_ref(
    results: &[Vec<Option<CellSession>>],
    reference: Option<usize>,
) -> Vec<Vec<f64>> {
    results
        .iter()
        .map(|res| {
            res.iter()
                .enumerate()
                .map(|(c, x)| {
                    let r = reference.and_then(|r| results[r][c].as_ref());
                    match (x, r) {
                        (Some(x), Some(r)) => pearson_complete(&x.tuning, &r.tuning),
                        _ => f64::NAN,
                    }
                })
                .collect()
        })
        .collect()
}

/// `stability.parquet`: for each pair of consecutive sessions with stimuli, over
/// the spared cells, |R_a ∩ R_b| / |R_a| and |R_a ∩ R_b| / |R_a ∪ R_b|.
pub fn stability_table(
    sessions: &[SessionSummary],
    designs: &[Option<TrialDesign>],
    results: &[Vec<Option<CellSession>>],
    spared: &[bool],
) -> Table {
    let with: Vec<usize> = (0..sessions.len())
        .filter(|&s| designs[s].is_some())
        .collect();
    let mut t = StabilityColumns::default();
    for pair in with.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let both_present: Vec<(bool, bool)> = (0..spared.len())
            .filter(|&c| spared[c])
            .filter_map(|c| Some((results[a][c].as_ref()?, results[b][c].as_ref()?)))
            .map(|(x, y)| (x.responsive, y.responsive))
            .collect();
        let count = |f: fn(&(bool, bool)) -> bool| both_present.iter().filter(|p| f(p)).count();
        let (n_a, n_b) = (count(|p| p.0), count(|p| p.1));
        let (n_both, n_either) = (count(|p| p.0 && p.1), count(|p| p.0 || p.1));
        let frac = |k: usize, n: usize| {
            if n > 0 {
                k as f64 / n as f64
            } else {
                f64::NAN
            }
        };
        t.session_a.push(sessions[a].id.clone());
        t.session_b.push(sessions[b].id.clone());
        t.day_a.push(sessions[a].day);
        t.day_b.push(sessions[b].day);
        t.n_cells.push(both_present.len() as u32);
        t.n_a.push(n_a as u32);
        t.n_b.push(n_b as u32);
        t.n_both.push(n_both as u32);
        t.stability.push(frac(n_both, n_a));
        t.union.push(frac(n_both, n_either));
    }
    Table::new()
        .with("session_a", Column::Str(t.session_a))
        .with("session_b", Column::Str(t.session_b))
        .with("day_a", Column::I32(t.day_a))
        .with("day_b", Column::I32(t.day_b))
        .with("n_cells", Column::U32(t.n_cells))
        .with("n_responsive_a", Column::U32(t.n_a))
        .with("n_responsive_b", Column::U32(t.n_b))
        .with("n_both", Column::U32(t.n_both))
        .with("stability", Column::F64(t.stability))
        .with("stability_union", Column::F64(t.union))
}

#[derive(Default)]
struct StabilityColumns {
    session_a: Vec<String>,
    session_b: Vec<String>,
    day_a: Vec<i32>,
    day_b: Vec<i32>,
    n_cells: Vec<u32>,
    n_a: Vec<u32>,
    n_b: Vec<u32>,
    n_both: Vec<u32>,
    stability: Vec<f64>,
    union: Vec<f64>,
}

/// The inputs of the drift table.
pub struct DriftInput<'a> {
    pub sessions: &'a [SessionSummary],
    pub designs: &'a [Option<TrialDesign>],
    pub results: &'a [Vec<Option<CellSession>>],
    pub spared: &'a [bool],
    pub reference: Option<usize>,
    /// Sessions before the ablation.
    pub before: &'a [bool],
    /// [`tuning_corr_ref`].
    pub corr: &'a [Vec<f64>],
}

/// Spearman–Brown: the reliability of a whole-session tuning curve from the
/// correlation `r` of its two halves (SCIENCE.md §3.3).
fn spearman_brown(r: f64) -> f64 {
    2.0 * r / (1.0 + r)
}

/// Over `cells` with a finite correlation in session `s` and a finite split-half
/// in the reference session `r`: their number, their mean correlation, and that
/// divided by the whole-curve reliability of their mean split-half
/// (Spearman–Brown; NaN when it is not positive).
fn corr_over(input: &DriftInput, r: usize, s: usize, cells: &[usize]) -> (usize, f64, f64) {
    let (mut n, mut sum_c, mut sum_h) = (0usize, 0.0, 0.0);
    for &c in cells {
        let half = input.results[r][c]
            .as_ref()
            .map_or(f64::NAN, |x| x.split_half);
        let corr = input.corr[s][c];
        if corr.is_finite() && half.is_finite() {
            n += 1;
            sum_c += corr;
            sum_h += half;
        }
    }
    if n == 0 {
        return (0, f64::NAN, f64::NAN);
    }
    let (c, h) = (sum_c / n as f64, spearman_brown(sum_h / n as f64));
    (n, c, if h > 0.0 { c / h } else { f64::NAN })
}

/// `drift.parquet`: per session with stimuli, the spared cells' tuning
/// correlation with the reference session (SCIENCE.md §3.8, Fig. 1e: cells
/// responsive in the reference session; Fig. 1g: cells responsive in this
/// session, normalised to the mean over the other sessions before the
/// ablation). Empty without a reference session.
pub fn drift_table(input: &DriftInput) -> Table {
    let mut t = DriftColumns::default();
    if let Some(r) = input.reference {
        let responsive_in = |s: usize| -> Vec<usize> {
            (0..input.spared.len())
                .filter(|&c| input.spared[c])
                .filter(|&c| input.results[s][c].as_ref().is_some_and(|x| x.responsive))
                .collect()
        };
        let ref_set = responsive_in(r);
        let with: Vec<usize> = (0..input.sessions.len())
            .filter(|&s| input.designs[s].is_some())
            .collect();
        let day_sets: Vec<(usize, f64, f64)> = with
            .iter()
            .map(|&s| corr_over(input, r, s, &responsive_in(s)))
            .collect();
        let baseline: Vec<f64> = with
            .iter()
            .zip(&day_sets)
            // The reference session's correlation with itself is 1 by
            // construction: it is left out of the baseline.
            .filter(|(&s, x)| input.before[s] && s != r && x.2.is_finite())
            .map(|(_, x)| x.2)
            .collect();
        let base = if baseline.is_empty() {
            f64::NAN
        } else {
            baseline.iter().sum::<f64>() / baseline.len() as f64
        };
        for (&s, day) in with.iter().zip(&day_sets) {
            let (n, corr, norm) = corr_over(input, r, s, &ref_set);
            t.session.push(input.sessions[s].id.clone());
            t.day.push(input.sessions[s].day);
            t.reference.push(s == r);
            t.n_cells.push(n as u32);
            t.corr.push(corr);
            t.norm.push(norm);
            t.n_day.push(day.0 as u32);
            t.norm_day.push(day.2);
            // On the reference session itself the value is 1 / split-half by
            // construction, not a measurement of drift.
            t.norm_day_base.push(if base > 0.0 && s != r {
                day.2 / base
            } else {
                f64::NAN
            });
        }
    }
    Table::new()
        .with("session", Column::Str(t.session))
        .with("day", Column::I32(t.day))
        .with("reference", Column::Bool(t.reference))
        .with("n_cells", Column::U32(t.n_cells))
        .with("tuning_corr", Column::F64(t.corr))
        .with("tuning_corr_norm", Column::F64(t.norm))
        .with("n_cells_day", Column::U32(t.n_day))
        .with("tuning_corr_norm_day", Column::F64(t.norm_day))
        .with(
            "tuning_corr_norm_day_baseline",
            Column::F64(t.norm_day_base),
        )
}

#[derive(Default)]
struct DriftColumns {
    session: Vec<String>,
    day: Vec<i32>,
    reference: Vec<bool>,
    n_cells: Vec<u32>,
    corr: Vec<f64>,
    norm: Vec<f64>,
    n_day: Vec<u32>,
    norm_day: Vec<f64>,
    norm_day_base: Vec<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(responsive: bool, tuning: &[f64], split_half: f64) -> Option<CellSession> {
        Some(CellSession {
            responses: vec![],
            tuning: tuning.to_vec(),
            sem: vec![],
            p: vec![],
            q: vec![],
            responsive_to: vec![],
            responsive,
            best: f64::NAN,
            reliability: f64::NAN,
            width: f64::NAN,
            split_half,
        })
    }

    fn sessions(days: &[i32]) -> Vec<SessionSummary> {
        days.iter()
            .map(|&d| SessionSummary {
                id: format!("d{d}"),
                day: d,
                n_frames: 0,
                height: 0,
                width: 0,
                fs: 1.0,
                mean_intensity: 0.0,
            })
            .collect()
    }

    fn designs(n: usize) -> Vec<Option<TrialDesign>> {
        vec![Some(TrialDesign::new(vec![], vec![], 3)); n]
    }

    #[test]
    fn stability_counts_cells_responsive_on_both_days() {
        let s = sessions(&[1, 3]);
        let t = [0.0, 1.0, 2.0];
        // Cells: R on both, R then not, not then R, never; the last is not spared.
        let results = vec![
            vec![
                cell(true, &t, 1.0),
                cell(true, &t, 1.0),
                cell(false, &t, 1.0),
                cell(true, &t, 1.0),
            ],
            vec![
                cell(true, &t, 1.0),
                cell(false, &t, 1.0),
                cell(true, &t, 1.0),
                cell(true, &t, 1.0),
            ],
        ];
        let table = stability_table(&s, &designs(2), &results, &[true, true, true, false]);
        let p = std::path::Path::new("stability.parquet");
        assert_eq!(table.n_rows(), 1);
        assert_eq!(table.u32s(p, "n_responsive_a").unwrap(), &[2]);
        assert_eq!(table.u32s(p, "n_both").unwrap(), &[1]);
        assert_eq!(table.f64s(p, "stability").unwrap(), &[0.5]);
        assert!((table.f64s(p, "stability_union").unwrap()[0] - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn drift_divides_the_mean_correlation_by_the_mean_split_half() {
        let s = sessions(&[3, 5, 7]);
        let up = [0.0, 1.0, 2.0];
        let down = [2.0, 1.0, 0.0];
        // Reference session 1 (day 5). Cell 0 keeps its tuning, cell 1 reverses
        // it on day 7, cell 2 is responsive on days 3 and 7 only.
        let results = vec![
            vec![
                cell(false, &up, 0.3),
                cell(false, &up, 0.3),
                cell(true, &up, 0.3),
            ],
            vec![
                cell(true, &up, 0.5),
                cell(true, &up, 0.7),
                cell(false, &up, 0.9),
            ],
            vec![
                cell(true, &up, 0.4),
                cell(false, &down, 0.2),
                cell(true, &up, 0.1),
            ],
        ];
        let corr = tuning_corr_ref(&results, Some(1));
        assert!((corr[2][0] - 1.0).abs() < 1e-12 && (corr[2][1] + 1.0).abs() < 1e-12);
        let d = designs(3);
        let input = DriftInput {
            sessions: &s,
            designs: &d,
            results: &results,
            spared: &[true, true, true],
            reference: Some(1),
            before: &[true, true, false],
            corr: &corr,
        };
        let t = drift_table(&input);
        let p = std::path::Path::new("drift.parquet");
        // Day 7, reference-responsive cells 0 and 1: mean r 0, mean split-half
        // (day 5) 0.6.
        assert_eq!(t.u32s(p, "n_cells").unwrap(), &[2, 2, 2]);
        assert!(t.f64s(p, "tuning_corr").unwrap()[2].abs() < 1e-12);
        // Day 5 with itself: r = 1 for both, over Spearman–Brown's 2·0.6 / 1.6.
        let sb = |h: f64| 2.0 * h / (1.0 + h);
        assert!((t.f64s(p, "tuning_corr_norm").unwrap()[1] - 1.0 / sb(0.6)).abs() < 1e-12);
        assert_eq!(t.bools(p, "reference").unwrap(), &[false, true, false]);
        // Each day's own responsive set: day 3 cell 2 (r = 1, split-half 0.9);
        // day 7 cells 0 and 2 (r = 1, split-half 0.5 and 0.9: mean 0.7).
        let day = t.f64s(p, "tuning_corr_norm_day").unwrap();
        assert!((day[0] - 1.0 / sb(0.9)).abs() < 1e-12);
        assert!((day[2] - 1.0 / sb(0.7)).abs() < 1e-12);
        // The baseline is day 3 alone (day 5, the reference, is left out, and
        // has no normalised value).
        let base = t.f64s(p, "tuning_corr_norm_day_baseline").unwrap();
        assert!((base[0] - 1.0).abs() < 1e-12);
        assert!((base[2] - sb(0.9) / sb(0.7)).abs() < 1e-12);
        assert!(base[1].is_nan());
    }
}
