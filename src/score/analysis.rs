//! Scoring of the `analyze` stage against the simulator's truth.
//!
//! - **Responsiveness:** every analysed cell-session whose ROI the ROI score
//!   matched to a true cell is compared with the truth's `responsive` flag for that
//!   cell and session (`truth/cells.parquet`): sensitivity, specificity and their
//!   mean, the balanced accuracy, per session and pooled.
//! - **Maps:** the run's baseline-normalised diagonal and off-diagonal per session
//!   beside the truth's (`truth/map_summary.parquet`).

use super::cells::Matches;
use crate::error::Result;
use crate::io::table::{read_table, Column, Table};
use std::collections::BTreeMap;
use std::path::Path;

/// Responsiveness against the truth for one session (or "all").
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsiveScore {
    pub session: String,
    pub tp: usize,
    pub fn_: usize,
    pub fp: usize,
    pub tn: usize,
    pub sensitivity: f64,
    pub specificity: f64,
    pub balanced_accuracy: f64,
}

/// One session's normalised map summary, run and truth.
#[derive(Debug, Clone, PartialEq)]
pub struct MapScore {
    pub session: String,
    pub diagonal_norm: f64,
    pub true_diagonal_norm: f64,
    pub off_diagonal_norm: f64,
    pub true_off_diagonal_norm: f64,
}

/// Everything the analysis score measured.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisScore {
    pub responsive: Vec<ResponsiveScore>,
    pub maps: Vec<MapScore>,
}

fn responsive_score(session: &str, c: [usize; 4]) -> ResponsiveScore {
    let [tp, fn_, fp, tn] = c;
    let ratio = |a: usize, b: usize| {
        if a + b > 0 {
            a as f64 / (a + b) as f64
        } else {
            f64::NAN
        }
    };
    let (sensitivity, specificity) = (ratio(tp, fn_), ratio(tn, fp));
    ResponsiveScore {
        session: session.to_string(),
        tp,
        fn_,
        fp,
        tn,
        sensitivity,
        specificity,
        balanced_accuracy: 0.5 * (sensitivity + specificity),
    }
}

/// Score neurons.parquet and map_summary.parquet; None when the run has no analysis.
pub fn score_analysis(
    truth: &Path,
    run: &Path,
    matches: &Matches,
) -> Result<Option<AnalysisScore>> {
    let np = run.join("neurons.parquet");
    if !np.exists() {
        return Ok(None);
    }
    let n = read_table(&np)?;
    let (sess, roi, resp) = (
        n.strs(&np, "session")?,
        n.u32s(&np, "roi")?,
        n.bools(&np, "responsive")?,
    );
    let tp_path = truth.join("cells.parquet");
    let t = read_table(&tp_path)?;
    let truth_resp: BTreeMap<(String, u32), bool> = t
        .strs(&tp_path, "session")?
        .iter()
        .zip(t.u32s(&tp_path, "cell")?)
        .zip(t.bools(&tp_path, "responsive")?)
        .map(|((s, &c), &r)| ((s.clone(), c), r))
        .collect();
    let mut counts: BTreeMap<String, [usize; 4]> = BTreeMap::new();
    for i in 0..sess.len() {
        let Some(&cell) = matches.get(&sess[i]).and_then(|m| m.get(&roi[i])) else {
            continue;
        };
        let Some(&truly) = truth_resp.get(&(sess[i].clone(), cell)) else {
            continue;
        };
        let k = match (truly, resp[i]) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false) => 3,
        };
        counts.entry(sess[i].clone()).or_default()[k] += 1;
    }
    let mut responsive: Vec<ResponsiveScore> = counts
        .iter()
        .map(|(s, c)| responsive_score(s, *c))
        .collect();
    let mut all = [0usize; 4];
    for c in counts.values() {
        for k in 0..4 {
            all[k] += c[k];
        }
    }
    responsive.push(responsive_score("all", all));
    Ok(Some(AnalysisScore {
        responsive,
        maps: map_scores(truth, run)?,
    }))
}

fn map_scores(truth: &Path, run: &Path) -> Result<Vec<MapScore>> {
    let (rp, tp) = (
        run.join("map_summary.parquet"),
        truth.join("map_summary.parquet"),
    );
    if !rp.exists() || !tp.exists() {
        return Ok(Vec::new());
    }
    let (r, t) = (read_table(&rp)?, read_table(&tp)?);
    let truth: BTreeMap<String, (f64, f64)> = t
        .strs(&tp, "session")?
        .iter()
        .zip(t.f64s(&tp, "diagonal_norm")?)
        .zip(t.f64s(&tp, "off_diagonal_norm")?)
        .map(|((s, &d), &o)| (s.clone(), (d, o)))
        .collect();
    let (s, d, o) = (
        r.strs(&rp, "session")?,
        r.f64s(&rp, "diagonal_norm")?,
        r.f64s(&rp, "off_diagonal_norm")?,
    );
    Ok((0..s.len())
        .map(|i| {
            let (td, to) = truth.get(&s[i]).copied().unwrap_or((f64::NAN, f64::NAN));
            MapScore {
                session: s[i].clone(),
                diagonal_norm: d[i],
                true_diagonal_norm: td,
                off_diagonal_norm: o[i],
                true_off_diagonal_norm: to,
            }
        })
        .collect())
}

/// score/responsive.parquet.
pub fn responsive_table(a: &AnalysisScore) -> Table {
    let r = &a.responsive;
    let u = |f: fn(&ResponsiveScore) -> usize| Column::U32(r.iter().map(|x| f(x) as u32).collect());
    let f = |f: fn(&ResponsiveScore) -> f64| Column::F64(r.iter().map(f).collect());
    Table::new()
        .with(
            "session",
            Column::Str(r.iter().map(|x| x.session.clone()).collect()),
        )
        .with("true_positive", u(|x| x.tp))
        .with("false_negative", u(|x| x.fn_))
        .with("false_positive", u(|x| x.fp))
        .with("true_negative", u(|x| x.tn))
        .with("sensitivity", f(|x| x.sensitivity))
        .with("specificity", f(|x| x.specificity))
        .with("balanced_accuracy", f(|x| x.balanced_accuracy))
}

/// score/maps.parquet.
pub fn maps_table(a: &AnalysisScore) -> Table {
    let m = &a.maps;
    let f = |f: fn(&MapScore) -> f64| Column::F64(m.iter().map(f).collect());
    Table::new()
        .with(
            "session",
            Column::Str(m.iter().map(|x| x.session.clone()).collect()),
        )
        .with("diagonal_norm", f(|x| x.diagonal_norm))
        .with("true_diagonal_norm", f(|x| x.true_diagonal_norm))
        .with("off_diagonal_norm", f(|x| x.off_diagonal_norm))
        .with("true_off_diagonal_norm", f(|x| x.true_off_diagonal_norm))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_accuracy_is_the_mean_of_the_two_rates() {
        let s = responsive_score("d1", [8, 2, 1, 9]);
        assert!((s.sensitivity - 0.8).abs() < 1e-12);
        assert!((s.specificity - 0.9).abs() < 1e-12);
        assert!((s.balanced_accuracy - 0.85).abs() < 1e-12);
        assert!(responsive_score("d1", [0, 0, 0, 0])
            .balanced_accuracy
            .is_nan());
    }
}
