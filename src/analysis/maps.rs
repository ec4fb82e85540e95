//! Representational maps (SCIENCE.md §4.1).
//!
//! In: for every stimulus a `repetitions × cells` matrix of single-trial responses
//! (the population vectors). Out: the stimulus × stimulus similarity matrix of
//! mean Pearson correlations between single-trial population vectors (diagonal:
//! pairs of different trials of the same stimulus, i.e. reliability), the
//! trial-averaged variant, their diagonal and off-diagonal means, and the
//! similarity of two maps. Follows Noda et al. 2025 as SCIENCE.md reads it.

use crate::io::table::{Column, Table};
use ndarray::{Array2, ArrayView1};

/// Centre and scale a vector to unit norm; None when it has no variance.
fn standardise(v: ArrayView1<f64>) -> Option<Vec<f64>> {
    let n = v.len();
    if n < 2 {
        return None;
    }
    let mean = v.sum() / n as f64;
    let centred: Vec<f64> = v.iter().map(|x| x - mean).collect();
    let norm = centred.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm.is_nan() || norm <= 1e-12 || !norm.is_finite() {
        return None;
    }
    Some(centred.into_iter().map(|x| x / norm).collect())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Pearson correlation; None when either vector has no variance.
pub fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let a = standardise(ArrayView1::from(a))?;
    let b = standardise(ArrayView1::from(b))?;
    Some(dot(&a, &b))
}

/// Single-trial map: `M(s,t)` = mean over trial pairs of the Pearson correlation
/// of population vectors (all pairs for s ≠ t, pairs k ≠ l for s = t). Trial
/// vectors without variance are skipped; entries without any pair are NaN.
pub fn single_trial_map(responses: &[Array2<f64>]) -> Array2<f64> {
    let std: Vec<Vec<Vec<f64>>> = responses
        .iter()
        .map(|r| r.rows().into_iter().filter_map(standardise).collect())
        .collect();
    let n = responses.len();
    let mut m = Array2::from_elem((n, n), f64::NAN);
    for s in 0..n {
        for t in s..n {
            let (mut sum, mut count) = (0.0, 0usize);
            for (k, a) in std[s].iter().enumerate() {
                for (l, b) in std[t].iter().enumerate() {
                    if s == t && k == l {
                        continue;
                    }
                    sum += dot(a, b);
                    count += 1;
                }
            }
            if count > 0 {
                m[[s, t]] = sum / count as f64;
                m[[t, s]] = m[[s, t]];
            }
        }
    }
    m
}

/// Trial-averaged map: Pearson correlation of mean population vectors.
pub fn trial_averaged_map(responses: &[Array2<f64>]) -> Array2<f64> {
    let means: Vec<Option<Vec<f64>>> = responses
        .iter()
        .map(|r| {
            r.mean_axis(ndarray::Axis(0))
                .and_then(|m| standardise(m.view()))
        })
        .collect();
    let n = responses.len();
    let mut m = Array2::from_elem((n, n), f64::NAN);
    for s in 0..n {
        for t in 0..n {
            if let (Some(a), Some(b)) = (&means[s], &means[t]) {
                m[[s, t]] = dot(a, b);
            }
        }
    }
    m
}

fn finite_mean(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values.filter(|v| v.is_finite()) {
        sum += v;
        n += 1;
    }
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// Mean of the diagonal (NaN entries ignored).
pub fn diagonal_mean(m: &Array2<f64>) -> f64 {
    finite_mean(m.diag().iter().copied())
}

/// Mean of the off-diagonal entries (NaN entries ignored).
pub fn off_diagonal_mean(m: &Array2<f64>) -> f64 {
    finite_mean(
        m.indexed_iter()
            .filter(|((i, j), _)| i != j)
            .map(|(_, v)| *v),
    )
}

/// Similarity of two maps: Pearson correlation over their upper off-diagonal
/// entries (pairs where either is NaN are dropped); NaN when undefined.
pub fn map_similarity(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let n = a.nrows().min(b.nrows());
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for s in 0..n {
        for t in s + 1..n {
            if a[[s, t]].is_finite() && b[[s, t]].is_finite() {
                x.push(a[[s, t]]);
                y.push(b[[s, t]]);
            }
        }
    }
    pearson(&x, &y).unwrap_or(f64::NAN)
}

/// One session's maps, as the map tables (`rsm`, `map_summary`,
/// `map_similarity`) take them; the run and the simulator's truth share the tables.
pub struct SessionMapRow<'a> {
    pub session: &'a str,
    pub day: i32,
    pub single: &'a Array2<f64>,
    pub averaged: &'a Array2<f64>,
    /// The session is before the ablation (the normalisation's baseline).
    pub baseline: bool,
}

/// `values` divided by their mean over the baseline rows with a finite value;
/// NaN throughout when there is none.
pub fn normalise_to_baseline(values: &[f64], baseline: &[bool]) -> Vec<f64> {
    let base: Vec<f64> = values
        .iter()
        .zip(baseline)
        .filter(|(x, &b)| b && x.is_finite())
        .map(|(x, _)| *x)
        .collect();
    if base.is_empty() {
        return vec![f64::NAN; values.len()];
    }
    let mean = base.iter().sum::<f64>() / base.len() as f64;
    values.iter().map(|x| x / mean).collect()
}

/// rsm.parquet: every ordered pair of stimuli per session.
pub fn rsm_table(rows: &[SessionMapRow], labels: &[String]) -> Table {
    let (mut session, mut a, mut b, mut sim, mut avg) = (vec![], vec![], vec![], vec![], vec![]);
    for r in rows {
        for (i, la) in labels.iter().enumerate() {
            for (j, lb) in labels.iter().enumerate() {
                session.push(r.session.to_string());
                a.push(la.clone());
                b.push(lb.clone());
                sim.push(r.single[(i, j)]);
                avg.push(r.averaged[(i, j)]);
            }
        }
    }
    Table::new()
        .with("session", Column::Str(session))
        .with("stimulus_a", Column::Str(a))
        .with("stimulus_b", Column::Str(b))
        .with("similarity", Column::F64(sim))
        .with("similarity_trial_avg", Column::F64(avg))
}

/// map_summary.parquet: diagonal and off-diagonal means per session, raw and
/// normalised to the baseline sessions.
pub fn map_summary_table(rows: &[SessionMapRow], n_spared: usize) -> Table {
    let baseline: Vec<bool> = rows.iter().map(|r| r.baseline).collect();
    let diag: Vec<f64> = rows.iter().map(|r| diagonal_mean(r.single)).collect();
    let off: Vec<f64> = rows.iter().map(|r| off_diagonal_mean(r.single)).collect();
    let avg_off: Vec<f64> = rows.iter().map(|r| off_diagonal_mean(r.averaged)).collect();
    let norm = |v: &[f64]| Column::F64(normalise_to_baseline(v, &baseline));
    Table::new()
        .with(
            "session",
            Column::Str(rows.iter().map(|r| r.session.to_string()).collect()),
        )
        .with("day", Column::I32(rows.iter().map(|r| r.day).collect()))
        .with("diagonal", Column::F64(diag.clone()))
        .with("off_diagonal", Column::F64(off.clone()))
        .with("trial_avg_off_diagonal", Column::F64(avg_off.clone()))
        .with("diagonal_norm", norm(&diag))
        .with("off_diagonal_norm", norm(&off))
        .with("trial_avg_off_diagonal_norm", norm(&avg_off))
        .with("n_spared", Column::U32(vec![n_spared as u32; rows.len()]))
}

/// map_similarity.parquet: every ordered pair of sessions.
pub fn map_similarity_table(rows: &[SessionMapRow]) -> Table {
    let (mut a, mut b, mut sim) = (vec![], vec![], vec![]);
    for x in rows {
        for y in rows {
            a.push(x.session.to_string());
            b.push(y.session.to_string());
            sim.push(map_similarity(x.averaged, y.averaged));
        }
    }
    Table::new()
        .with("session_a", Column::Str(a))
        .with("session_b", Column::Str(b))
        .with("similarity", Column::F64(sim))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn identical_trials_give_unit_diagonal() {
        let s0 = array![[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]];
        let s1 = array![[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]];
        let m = single_trial_map(&[s0.clone(), s1.clone()]);
        assert!((m[[0, 0]] - 1.0).abs() < 1e-12);
        assert!((m[[0, 1]] + 1.0).abs() < 1e-12);
        assert!((diagonal_mean(&m) - 1.0).abs() < 1e-12);
        assert!((off_diagonal_mean(&m) + 1.0).abs() < 1e-12);
        let avg = trial_averaged_map(&[s0, s1]);
        assert!((avg[[0, 1]] + 1.0).abs() < 1e-12);
    }

    #[test]
    fn constant_vectors_are_skipped() {
        let s0 = array![[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]];
        let m = single_trial_map(&[s0]);
        assert!(m[[0, 0]].is_nan(), "one usable trial gives no pair");
        assert_eq!(pearson(&[1.0, 1.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn map_similarity_of_a_map_with_itself_is_one() {
        let m = array![[1.0, 0.2, 0.5], [0.2, 1.0, -0.1], [0.5, -0.1, 1.0]];
        assert!((map_similarity(&m, &m) - 1.0).abs() < 1e-12);
    }
}
