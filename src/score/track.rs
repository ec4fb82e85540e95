//! Scoring of the `track` stage against the simulator's truth.
//!
//! - **Links:** for every pair of sessions, a link is two ROIs in one tracked cell.
//!   Only ROIs matched to a true cell by the ROI score count (false detections are
//!   the detector's errors, not the tracker's). A predicted link is correct when
//!   both ROIs match the same true cell; a true link (one cell matched in both
//!   sessions) is found when its two ROIs share a track. Precision and recall
//!   follow, per session pair and pooled.
//! - **Alignment:** the RMS distance, over the true cells imaged in a session,
//!   between the run's map of the cell's session position and its reference
//!   position (both moved into the run's frames by the motion offsets).
//! - **Tags:** a tracked cell stands for the true cell most of its ROIs before the
//!   ablation match. Precision of `ablated` over the cells tagged; recall over
//!   every true ablated cell (whether detected or not), with the count of those
//!   detected before the ablation; the same for the `filled` outcome.

use super::cells::{prf, Matches};
use crate::error::Result;
use crate::io::table::{read_table, Column, Table};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Link accuracy of one pair of sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkScore {
    pub session_a: String,
    pub session_b: String,
    pub n_true: usize,
    pub n_pred: usize,
    pub n_correct: usize,
    pub n_found: usize,
    pub precision: f64,
    pub recall: f64,
}

/// Accuracy of one tag.
#[derive(Debug, Clone, PartialEq)]
pub struct TagScore {
    pub tag: String,
    pub n_true: usize,
    /// True cells of the tag detected (and matched) before the ablation.
    pub n_true_detected: usize,
    pub n_pred: usize,
    pub n_correct: usize,
    pub precision: f64,
    pub recall: f64,
}

/// Everything the track score measured.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackScore {
    pub links: Vec<LinkScore>,
    pub pooled: LinkScore,
    /// Per session: RMS alignment error, px.
    pub alignment: Vec<(String, f64)>,
    pub tags: Vec<TagScore>,
}

/// The run's tracked cells: per cell, per session id, the ROI.
struct RunCells {
    rois: BTreeMap<u32, BTreeMap<String, u32>>,
    /// Mean reference position (run coordinates).
    position: BTreeMap<u32, (f64, f64)>,
    ablated: BTreeMap<u32, bool>,
    outcome: BTreeMap<u32, String>,
}

fn read_run_cells(path: &Path) -> Result<RunCells> {
    let t = read_table(path)?;
    let (cell, sess, roi) = (
        t.u32s(path, "cell")?,
        t.strs(path, "session")?,
        t.opt_u32s(path, "roi")?,
    );
    let (abl, out) = (t.bools(path, "ablated")?, t.strs(path, "ablation_outcome")?);
    let (xr, yr) = (t.f32s(path, "x_ref")?, t.f32s(path, "y_ref")?);
    let mut rc = RunCells {
        rois: BTreeMap::new(),
        position: BTreeMap::new(),
        ablated: BTreeMap::new(),
        outcome: BTreeMap::new(),
    };
    for i in 0..cell.len() {
        let entry = rc.rois.entry(cell[i]).or_default();
        if let Some(r) = roi[i] {
            entry.insert(sess[i].clone(), r);
        }
        rc.ablated.insert(cell[i], abl[i]);
        rc.position.insert(cell[i], (xr[i] as f64, yr[i] as f64));
        rc.outcome.insert(cell[i], out[i].clone());
    }
    Ok(rc)
}

/// Score `run/cells.parquet`; None when the run has no tracking.
pub fn score_tracking(
    truth: &Path,
    run: &Path,
    matches: &Matches,
    offsets: &BTreeMap<String, (f64, f64)>,
) -> Result<Option<TrackScore>> {
    let cells_path = run.join("cells.parquet");
    if !cells_path.exists() {
        return Ok(None);
    }
    let rc = read_run_cells(&cells_path)?;
    let truth_cells = truth.join("cells.parquet");
    let tt = read_table(&truth_cells)?;
    let sessions_path = truth.join("sessions.parquet");
    let st = read_table(&sessions_path)?;
    let ids: Vec<String> = st.strs(&sessions_path, "session")?.to_vec();
    let post: Vec<bool> = st.bools(&sessions_path, "post_ablation")?.to_vec();

    // Per session: ROI → its track.
    let mut track_of: BTreeMap<String, BTreeMap<u32, u32>> = BTreeMap::new();
    for (&c, per) in &rc.rois {
        for (s, &r) in per {
            track_of.entry(s.clone()).or_default().insert(r, c);
        }
    }
    let links = link_scores(&ids, matches, &track_of);
    let pooled = pool(&links);
    let (alignment, ref_offset) = alignment_errors(&tt, &truth_cells, run, &ids, offsets)?;
    let tags = tag_scores(&tt, &truth_cells, &rc, matches, &ids, &post, ref_offset)?;
    Ok(Some(TrackScore {
        links,
        pooled,
        alignment,
        tags,
    }))
}

fn link_scores(
    ids: &[String],
    matches: &Matches,
    track_of: &BTreeMap<String, BTreeMap<u32, u32>>,
) -> Vec<LinkScore> {
    let empty = BTreeMap::new();
    let mut out = Vec::new();
    for (i, a) in ids.iter().enumerate() {
        for b in &ids[i + 1..] {
            let (ma, mb) = (
                matches.get(a).unwrap_or(&empty),
                matches.get(b).unwrap_or(&empty),
            );
            let (ta, tb) = (
                track_of.get(a).unwrap_or(&empty),
                track_of.get(b).unwrap_or(&empty),
            );
            // Matched ROIs of each session by track, and by true cell.
            let by_track = |m: &BTreeMap<u32, u32>, t: &BTreeMap<u32, u32>| {
                m.iter()
                    .filter_map(|(roi, cell)| t.get(roi).map(|tr| (*tr, *cell)))
                    .collect::<BTreeMap<u32, u32>>()
            };
            let (cells_a, cells_b) = (by_track(ma, ta), by_track(mb, tb));
            let mut n_pred = 0;
            let mut n_correct = 0;
            for (track, cell) in &cells_a {
                if let Some(other) = cells_b.get(track) {
                    n_pred += 1;
                    n_correct += usize::from(other == cell);
                }
            }
            let truth_a: BTreeMap<u32, u32> = ma.iter().map(|(r, c)| (*c, *r)).collect();
            let truth_b: BTreeMap<u32, u32> = mb.iter().map(|(r, c)| (*c, *r)).collect();
            let mut n_true = 0;
            let mut n_found = 0;
            for (cell, ra) in &truth_a {
                if let Some(rb) = truth_b.get(cell) {
                    n_true += 1;
                    let same = matches!((ta.get(ra), tb.get(rb)), (Some(x), Some(y)) if x == y);
                    n_found += usize::from(same);
                }
            }
            out.push(link(a, b, n_true, n_pred, n_correct, n_found));
        }
    }
    out
}

fn link(
    a: &str,
    b: &str,
    n_true: usize,
    n_pred: usize,
    n_correct: usize,
    n_found: usize,
) -> LinkScore {
    let ratio = |x: usize, y: usize| if y > 0 { x as f64 / y as f64 } else { f64::NAN };
    LinkScore {
        session_a: a.to_string(),
        session_b: b.to_string(),
        n_true,
        n_pred,
        n_correct,
        n_found,
        precision: ratio(n_correct, n_pred),
        recall: ratio(n_found, n_true),
    }
}

fn pool(links: &[LinkScore]) -> LinkScore {
    let sum = |f: fn(&LinkScore) -> usize| links.iter().map(f).sum::<usize>();
    link(
        "all",
        "all",
        sum(|l| l.n_true),
        sum(|l| l.n_pred),
        sum(|l| l.n_correct),
        sum(|l| l.n_found),
    )
}

/// The run's affine maps from alignment.parquet, by session, and the reference
/// session.
fn run_maps(run: &Path) -> Result<(Maps, Option<String>)> {
    let p = run.join("alignment.parquet");
    let t = read_table(&p)?;
    let ids = t.strs(&p, "session")?;
    let reference = ids
        .iter()
        .zip(t.bools(&p, "reference")?)
        .find(|(_, &r)| r)
        .map(|(s, _)| s.clone());
    let col = |n: &str| t.f64s(&p, n);
    let (a11, a12, a21, a22, dx, dy) = (
        col("a11")?,
        col("a12")?,
        col("a21")?,
        col("a22")?,
        col("dx")?,
        col("dy")?,
    );
    let maps = ids
        .iter()
        .enumerate()
        .map(|(i, s)| {
            (
                s.clone(),
                crate::track::transform::Affine {
                    m: [[a11[i], a12[i], dx[i]], [a21[i], a22[i], dy[i]]],
                },
            )
        })
        .collect();
    Ok((maps, reference))
}

/// Affine maps by session id.
type Maps = BTreeMap<String, crate::track::transform::Affine>;

/// Per session: RMS alignment error, px.
type SessionErrors = Vec<(String, f64)>;

fn alignment_errors(
    tt: &Table,
    path: &Path,
    run: &Path,
    ids: &[String],
    offsets: &BTreeMap<String, (f64, f64)>,
) -> Result<(SessionErrors, (f64, f64))> {
    let (maps, reference) = run_maps(run)?;
    let off = |s: &str| offsets.get(s).copied().unwrap_or((0.0, 0.0));
    let ref_off = reference.as_deref().map(off).unwrap_or((0.0, 0.0));
    let (sess, present) = (tt.strs(path, "session")?, tt.bools(path, "present")?);
    let (x, y, xr, yr) = (
        tt.f32s(path, "x")?,
        tt.f32s(path, "y")?,
        tt.f32s(path, "x_ref")?,
        tt.f32s(path, "y_ref")?,
    );
    let mut out = Vec::new();
    for id in ids {
        let Some(map) = maps.get(id) else {
            continue;
        };
        let o = off(id);
        let (mut sum, mut n) = (0.0, 0usize);
        for i in 0..sess.len() {
            if &sess[i] != id || !present[i] {
                continue;
            }
            let (u, v) = map.apply(x[i] as f64 - o.0, y[i] as f64 - o.1);
            let (tx, ty) = (xr[i] as f64 - ref_off.0, yr[i] as f64 - ref_off.1);
            sum += (u - tx).powi(2) + (v - ty).powi(2);
            n += 1;
        }
        out.push((id.clone(), (sum / n.max(1) as f64).sqrt()));
    }
    Ok((out, ref_off))
}

fn tag_scores(
    tt: &Table,
    path: &Path,
    rc: &RunCells,
    matches: &Matches,
    ids: &[String],
    post: &[bool],
    ref_offset: (f64, f64),
) -> Result<Vec<TagScore>> {
    let (cell, ablated, outcome) = (
        tt.u32s(path, "cell")?,
        tt.bools(path, "ablated")?,
        tt.strs(path, "ablation_outcome")?,
    );
    let mut true_ablated = BTreeSet::new();
    let mut true_filled = BTreeSet::new();
    for i in 0..cell.len() {
        if ablated[i] {
            true_ablated.insert(cell[i]);
            if outcome[i] == "filled" {
                true_filled.insert(cell[i]);
            }
        }
    }
    let pre: Vec<&String> = ids
        .iter()
        .zip(post)
        .filter(|(_, &p)| !p)
        .map(|(s, _)| s)
        .collect();
    let detected_pre: BTreeSet<u32> = pre
        .iter()
        .filter_map(|s| matches.get(*s))
        .flat_map(|m| m.values().copied())
        .collect();
    // True cells' reference positions, in the run's reference frame.
    let (txr, tyr) = (tt.f32s(path, "x_ref")?, tt.f32s(path, "y_ref")?);
    let true_pos: BTreeMap<u32, (f64, f64)> = (0..cell.len())
        .map(|i| {
            (
                cell[i],
                (txr[i] as f64 - ref_offset.0, tyr[i] as f64 - ref_offset.1),
            )
        })
        .collect();
    // A cell without ROIs before the ablation (a target never detected) stands for
    // the nearest true cell within 4 px of its position.
    let by_position = |c: u32| -> Option<u32> {
        let p = rc.position.get(&c)?;
        true_pos
            .iter()
            .map(|(&t, q)| (t, (p.0 - q.0).hypot(p.1 - q.1)))
            .filter(|(_, d)| *d <= 4.0)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(t, _)| t)
    };
    // Each tracked cell's true identity: the most frequent match before the ablation.
    let identity = |c: u32| -> Option<u32> {
        if !rc
            .rois
            .get(&c)
            .is_some_and(|r| r.keys().any(|s| pre.contains(&s)))
        {
            return by_position(c);
        }
        let mut votes: BTreeMap<u32, usize> = BTreeMap::new();
        for (s, r) in rc.rois.get(&c)? {
            if pre.contains(&s) {
                if let Some(t) = matches.get(s).and_then(|m| m.get(r)) {
                    *votes.entry(*t).or_default() += 1;
                }
            }
        }
        votes
            .into_iter()
            .max_by_key(|(t, n)| (*n, std::cmp::Reverse(*t)))
            .map(|(t, _)| t)
    };
    let score = |tag: &str, truth: &BTreeSet<u32>, predicted: Vec<u32>| {
        let ids: Vec<Option<u32>> = predicted.iter().map(|&c| identity(c)).collect();
        let n_correct = ids.iter().flatten().filter(|t| truth.contains(t)).count();
        let found: BTreeSet<u32> = ids
            .iter()
            .flatten()
            .copied()
            .filter(|t| truth.contains(t))
            .collect();
        let p = if predicted.is_empty() {
            f64::NAN
        } else {
            prf(n_correct, predicted.len(), truth.len()).0
        };
        TagScore {
            tag: tag.to_string(),
            n_true: truth.len(),
            n_true_detected: truth.intersection(&detected_pre).count(),
            n_pred: predicted.len(),
            n_correct,
            precision: p,
            recall: if truth.is_empty() {
                f64::NAN
            } else {
                found.len() as f64 / truth.len() as f64
            },
        }
    };
    let tagged: Vec<u32> = rc
        .ablated
        .iter()
        .filter(|(_, &a)| a)
        .map(|(&c, _)| c)
        .collect();
    let filled: Vec<u32> = rc
        .outcome
        .iter()
        .filter(|(_, o)| o.as_str() == "filled")
        .map(|(&c, _)| c)
        .collect();
    Ok(vec![
        score("ablated", &true_ablated, tagged),
        score("filled", &true_filled, filled),
    ])
}

/// score/tracking.parquet: one row per session pair, then the pooled row.
pub fn links_table(s: &TrackScore) -> Table {
    let rows: Vec<&LinkScore> = s.links.iter().chain(std::iter::once(&s.pooled)).collect();
    let u = |f: fn(&LinkScore) -> usize| Column::U32(rows.iter().map(|l| f(l) as u32).collect());
    Table::new()
        .with(
            "session_a",
            Column::Str(rows.iter().map(|l| l.session_a.clone()).collect()),
        )
        .with(
            "session_b",
            Column::Str(rows.iter().map(|l| l.session_b.clone()).collect()),
        )
        .with("n_true_links", u(|l| l.n_true))
        .with("n_pred_links", u(|l| l.n_pred))
        .with("n_correct", u(|l| l.n_correct))
        .with("n_found", u(|l| l.n_found))
        .with(
            "precision",
            Column::F64(rows.iter().map(|l| l.precision).collect()),
        )
        .with(
            "recall",
            Column::F64(rows.iter().map(|l| l.recall).collect()),
        )
}

/// score/tags.parquet: one row per tag.
pub fn tags_table(s: &TrackScore) -> Table {
    let t = &s.tags;
    let u = |f: fn(&TagScore) -> usize| Column::U32(t.iter().map(|x| f(x) as u32).collect());
    Table::new()
        .with(
            "tag",
            Column::Str(t.iter().map(|x| x.tag.clone()).collect()),
        )
        .with("n_true", u(|x| x.n_true))
        .with("n_true_detected", u(|x| x.n_true_detected))
        .with("n_pred", u(|x| x.n_pred))
        .with("n_correct", u(|x| x.n_correct))
        .with(
            "precision",
            Column::F64(t.iter().map(|x| x.precision).collect()),
        )
        .with("recall", Column::F64(t.iter().map(|x| x.recall).collect()))
}

/// score/alignment.parquet: one row per session.
pub fn alignment_table(s: &TrackScore) -> Table {
    Table::new()
        .with(
            "session",
            Column::Str(s.alignment.iter().map(|a| a.0.clone()).collect()),
        )
        .with(
            "rmse_px",
            Column::F64(s.alignment.iter().map(|a| a.1).collect()),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_count_only_matched_rois() {
        let ids = vec!["a".to_string(), "b".to_string()];
        // ROIs 0,1 in a match cells 10, 11; ROIs 5,6,7 in b match 10, 11, 12.
        let matches: Matches = [
            ("a".to_string(), [(0, 10), (1, 11)].into_iter().collect()),
            (
                "b".to_string(),
                [(5, 10), (6, 11), (7, 12)].into_iter().collect(),
            ),
        ]
        .into_iter()
        .collect();
        // Track 0 = a0+b5 (right), track 1 = a1+b7 (wrong), b6 alone.
        let track_of: BTreeMap<String, BTreeMap<u32, u32>> = [
            ("a".to_string(), [(0, 0), (1, 1)].into_iter().collect()),
            (
                "b".to_string(),
                [(5, 0), (7, 1), (6, 2)].into_iter().collect(),
            ),
        ]
        .into_iter()
        .collect();
        let l = &link_scores(&ids, &matches, &track_of)[0];
        assert_eq!((l.n_true, l.n_pred, l.n_correct, l.n_found), (2, 2, 1, 1));
        assert_eq!(l.precision, 0.5);
    }
}
