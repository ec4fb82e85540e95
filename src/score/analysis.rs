//! Scoring of the `analyze` stage against the simulator's truth.
//!
//! - **Responsiveness:** every analysed cell-session whose ROI the ROI score
//!   matched to a true cell is compared with the truth's `responsive` flag for that
//!   cell and session (`truth/cells.parquet`): sensitivity, specificity and their
//!   mean, the balanced accuracy, per session and pooled.
//! - **Maps:** the run's baseline-normalised diagonal and off-diagonal per session
//!   beside the truth's (`truth/map_summary.parquet`), and the Pearson correlation
//!   of the run's map similarities between sessions with the truth's
//!   (`map_similarity.parquet`, every unordered pair of different sessions), and
//!   the error that the run's ΔF/F noise alone would cause ([`super::noise_floor`]).
//! - **Cell tags:** `initially_silent` (cells.parquet) and recruitment (group `B`,
//!   neurons.parquet) against the truth's flags. A tracked cell stands for the true
//!   cell its ROIs were matched to most often (ties: the earliest session).

use super::cells::{Matches, RoiNoise};
use super::noise_floor::{map_noise_floor, NoiseFloor};
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

/// A per-cell tag against the truth, over tracked cells that stand for a true cell.
#[derive(Debug, Clone, PartialEq)]
pub struct CellTagScore {
    /// `initially_silent` or `recruited` (group B).
    pub tag: String,
    pub n_true: usize,
    pub n_found: usize,
    pub n_correct: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Everything the analysis score measured.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisScore {
    pub responsive: Vec<ResponsiveScore>,
    pub maps: Vec<MapScore>,
    /// Pearson correlation of the run's session-pair map similarities with the
    /// truth's; NaN with fewer than 3 pairs.
    pub map_similarity_r: f64,
    pub cell_tags: Vec<CellTagScore>,
    /// How far measured ΔF/F noise alone would move the normalised maps; None
    /// when the truth or the run lacks what it needs.
    pub map_noise_floor: Option<NoiseFloor>,
}

impl MapScore {
    /// The larger of the two absolute errors against the truth.
    pub fn max_error(&self) -> f64 {
        (self.diagonal_norm - self.true_diagonal_norm)
            .abs()
            .max((self.off_diagonal_norm - self.true_off_diagonal_norm).abs())
    }
}

fn tag_score(tag: &str, pairs: impl Iterator<Item = (bool, bool)>) -> CellTagScore {
    let (mut n_true, mut n_found, mut n_correct) = (0, 0, 0);
    for (truly, found) in pairs {
        n_true += truly as usize;
        n_found += found as usize;
        n_correct += (truly && found) as usize;
    }
    let ratio = |a: usize, b: usize| if b > 0 { a as f64 / b as f64 } else { f64::NAN };
    let (precision, recall) = (ratio(n_correct, n_found), ratio(n_correct, n_true));
    CellTagScore {
        tag: tag.to_string(),
        n_true,
        n_found,
        n_correct,
        precision,
        recall,
        f1: 2.0 * precision * recall / (precision + recall),
    }
}

/// neurons.parquet's `roi`: nullable since footprint transfer; runs made before
/// it wrote a plain uint32 (u32::MAX for none).
fn neuron_rois(n: &Table, np: &Path) -> Result<Vec<Option<u32>>> {
    match n.opt_u32s(np, "roi") {
        Ok(r) => Ok(r.to_vec()),
        Err(_) => Ok(n
            .u32s(np, "roi")?
            .iter()
            .map(|&r| (r != u32::MAX).then_some(r))
            .collect()),
    }
}

/// For each tracked cell of neurons.parquet, the true cell its ROIs matched most
/// often (ties: the earliest session in the table's order).
fn true_cell_of(
    sess: &[String],
    cell: &[u32],
    roi: &[Option<u32>],
    matches: &Matches,
) -> BTreeMap<u32, u32> {
    let mut votes: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for i in 0..sess.len() {
        let Some(r) = roi[i] else {
            continue;
        };
        if let Some(&t) = matches.get(&sess[i]).and_then(|m| m.get(&r)) {
            votes.entry(cell[i]).or_default().push(t);
        }
    }
    votes
        .into_iter()
        .filter_map(|(c, v)| {
            let mut best: Option<(usize, u32)> = None;
            for &t in &v {
                let n = v.iter().filter(|&&x| x == t).count();
                if best.is_none_or(|(bn, _)| n > bn) {
                    best = Some((n, t));
                }
            }
            best.map(|(_, t)| (c, t))
        })
        .collect()
}

/// `initially_silent` and recruited (group B) against the truth.
fn cell_tag_scores(
    truth: &Path,
    run: &Path,
    n: &Table,
    np: &Path,
    matches: &Matches,
) -> Result<Vec<CellTagScore>> {
    let (sess, cell, roi, group) = (
        n.strs(np, "session")?,
        n.u32s(np, "cell")?,
        &neuron_rois(n, np)?,
        n.strs(np, "group")?,
    );
    let stands_for = true_cell_of(sess, cell, roi, matches);
    let tp = truth.join("cells.parquet");
    let t = read_table(&tp)?;
    let mut true_silent: BTreeMap<u32, bool> = BTreeMap::new();
    let mut true_group: BTreeMap<u32, String> = BTreeMap::new();
    for ((&c, &s), g) in t
        .u32s(&tp, "cell")?
        .iter()
        .zip(t.bools(&tp, "initially_silent")?)
        .zip(t.strs(&tp, "group")?)
    {
        true_silent.insert(c, s);
        true_group.insert(c, g.clone());
    }
    let mut run_group: BTreeMap<u32, &str> = BTreeMap::new();
    for (&c, g) in cell.iter().zip(group) {
        if !g.is_empty() {
            run_group.insert(c, g);
        }
    }
    let recruited = run_group.iter().filter_map(|(c, g)| {
        let t = stands_for.get(c)?;
        Some((true_group.get(t)? == "B", *g == "B"))
    });
    let mut scores = vec![tag_score("recruited", recruited)];
    let cp = run.join("cells.parquet");
    if cp.exists() {
        let c = read_table(&cp)?;
        let mut silent: BTreeMap<u32, bool> = BTreeMap::new();
        for (&id, s) in c
            .u32s(&cp, "cell")?
            .iter()
            .zip(c.opt_bools(&cp, "initially_silent")?)
        {
            if let Some(s) = s {
                silent.insert(id, *s);
            }
        }
        let pairs = silent.iter().filter_map(|(c, &s)| {
            let t = stands_for.get(c)?;
            Some((*true_silent.get(t)?, s))
        });
        scores.insert(0, tag_score("initially_silent", pairs));
    }
    Ok(scores)
}

/// Pearson correlation of the run's and the truth's map similarity over the
/// unordered pairs of different sessions that both have.
fn map_similarity_r(truth: &Path, run: &Path) -> Result<f64> {
    let (rp, tp) = (
        run.join("map_similarity.parquet"),
        truth.join("map_similarity.parquet"),
    );
    if !rp.exists() || !tp.exists() {
        return Ok(f64::NAN);
    }
    let read = |p: &Path| -> Result<BTreeMap<(String, String), f64>> {
        let t = read_table(p)?;
        let (a, b, v) = (
            t.strs(p, "session_a")?,
            t.strs(p, "session_b")?,
            t.f64s(p, "similarity")?,
        );
        Ok((0..a.len())
            .filter(|&i| a[i] < b[i] && v[i].is_finite())
            .map(|i| ((a[i].clone(), b[i].clone()), v[i]))
            .collect())
    };
    let (r, t) = (read(&rp)?, read(&tp)?);
    let (x, y): (Vec<f64>, Vec<f64>) = r
        .iter()
        .filter_map(|(k, &v)| t.get(k).map(|&w| (v, w)))
        .unzip();
    Ok(if x.len() >= 3 {
        crate::analysis::maps::pearson(&x, &y).unwrap_or(f64::NAN)
    } else {
        f64::NAN
    })
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
    noise: &RoiNoise,
) -> Result<Option<AnalysisScore>> {
    let np = run.join("neurons.parquet");
    if !np.exists() {
        return Ok(None);
    }
    let n = read_table(&np)?;
    let (sess, cells, roi, resp) = (
        n.strs(&np, "session")?,
        n.u32s(&np, "cell")?,
        neuron_rois(&n, &np)?,
        n.bools(&np, "responsive")?,
    );
    // A session without a ROI of the cell (a transferred footprint) stands for
    // the true cell its other sessions' ROIs matched.
    let stands_for = true_cell_of(sess, cells, &roi, matches);
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
        let matched = match roi[i] {
            Some(r) => matches.get(&sess[i]).and_then(|m| m.get(&r)),
            None => stands_for.get(&cells[i]),
        };
        let Some(&cell) = matched else {
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
        map_similarity_r: map_similarity_r(truth, run)?,
        cell_tags: cell_tag_scores(truth, run, &n, &np, matches)?,
        map_noise_floor: map_noise_floor(truth, run, matches, noise, &stands_for)?,
    }))
}

/// A map_summary.parquet's normalised (diagonal, off-diagonal) per session.
pub(super) fn normalised_maps(path: &Path) -> Result<BTreeMap<String, (f64, f64)>> {
    let t = read_table(path)?;
    Ok(t.strs(path, "session")?
        .iter()
        .zip(t.f64s(path, "diagonal_norm")?)
        .zip(t.f64s(path, "off_diagonal_norm")?)
        .map(|((s, &d), &o)| (s.clone(), (d, o)))
        .collect())
}

fn map_scores(truth: &Path, run: &Path) -> Result<Vec<MapScore>> {
    let (rp, tp) = (
        run.join("map_summary.parquet"),
        truth.join("map_summary.parquet"),
    );
    if !rp.exists() || !tp.exists() {
        return Ok(Vec::new());
    }
    let (r, truth) = (read_table(&rp)?, normalised_maps(&tp)?);
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

/// score/cell_tags.parquet.
pub fn cell_tags_table(a: &AnalysisScore) -> Table {
    let r = &a.cell_tags;
    let u = |f: fn(&CellTagScore) -> usize| Column::U32(r.iter().map(|x| f(x) as u32).collect());
    let f = |f: fn(&CellTagScore) -> f64| Column::F64(r.iter().map(f).collect());
    Table::new()
        .with(
            "tag",
            Column::Str(r.iter().map(|x| x.tag.clone()).collect()),
        )
        .with("n_true", u(|x| x.n_true))
        .with("n_found", u(|x| x.n_found))
        .with("n_correct", u(|x| x.n_correct))
        .with("precision", f(|x| x.precision))
        .with("recall", f(|x| x.recall))
        .with("f1", f(|x| x.f1))
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
        .with(
            "noise_floor_error",
            Column::F64(
                m.iter()
                    .map(|x| {
                        a.map_noise_floor
                            .as_ref()
                            .and_then(|f| {
                                f.session_errors
                                    .iter()
                                    .find(|(s, _)| *s == x.session)
                                    .map(|e| e.1)
                            })
                            .unwrap_or(f64::NAN)
                    })
                    .collect(),
            ),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rois_of_runs_before_the_transfer_read_as_optional() {
        let p = Path::new("neurons.parquet");
        let old = Table::new().with("roi", Column::U32(vec![3, u32::MAX]));
        assert_eq!(neuron_rois(&old, p).unwrap(), vec![Some(3), None]);
        let new = Table::new().with("roi", Column::OptU32(vec![None, Some(4)]));
        assert_eq!(neuron_rois(&new, p).unwrap(), vec![None, Some(4)]);
    }

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
