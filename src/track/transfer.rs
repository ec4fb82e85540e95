//! Footprint transfer: a tracked cell's footprint moved into the sessions where no
//! ROI of it was found, so that its trace can be extracted there too.
//!
//! In: the sessions' ROIs, the tracking (alignments and cells) and the ablation
//! day. Out: one [`Transfer`] per (cell, session) to fill — a footprint in that
//! session's corrected coordinates, taken from the cell's ROI in the nearest
//! session (by day) where it was found and carried through both sessions'
//! alignments (session → reference → session), spread bilinearly.
//!
//! Why: a silent cell is found only where its anatomy shows, an active one may
//! be missed on a quiet day, so few cells are found in every session, and the
//! analyses that need a cell on every day (the maps, SCIENCE.md §4) would see a
//! fraction of the network. Extracting a known footprint wherever the cell is
//! missing is what longitudinal pipelines do with masks registered across days
//! (e.g. the fixed-mask approach of Sheintuch et al. 2017's CellReg users, and
//! Suite2p's ROI transfer between planes and days).
//!
//! Not transferred: ablated cells after the ablation (there is no cell to
//! measure), cells found in fewer than `min_sessions` sessions (a cell seen once
//! is as likely a false detection), and footprints that would leave most of their
//! weight outside the target session's frame.

use super::align::Alignment;
use super::footprint::{RefFootprint, TrackRoi};
use super::{TrackSession, Tracking};
use rayon::prelude::*;

/// One footprint to extract: cell `cell` in session `session`, from its ROI in
/// session `source`.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    pub cell: usize,
    pub session: usize,
    pub source: usize,
    pub source_roi: u32,
    /// Pixels (linear index in the target session's frame) and weights (unit norm).
    pub pixels: Vec<u32>,
    pub weights: Vec<f32>,
    /// Weighted centroid in the target session's corrected coordinates.
    pub centroid: (f64, f64),
}

/// Smallest fraction of a footprint's weight that must land inside the target
/// frame for the transfer to be kept.
const MIN_INSIDE: f64 = 0.5;

/// Map a reference point back into a session: invert the field by fixed-point
/// iteration (it is smooth and small next to the identity), then the affine map.
pub fn to_session(a: &Alignment, q: (f64, f64)) -> Option<(f64, f64)> {
    let mut p = q;
    for _ in 0..8 {
        let d = a.field_at(p);
        p = (q.0 - d.0, q.1 - d.1);
    }
    let inv = a.transform.inverse()?;
    let out = inv.apply(p.0, p.1);
    (out.0.is_finite() && out.1.is_finite()).then_some(out)
}

/// Every (cell, session) to fill, in cell then session order.
pub fn plan_transfers(
    sessions: &[TrackSession],
    tracking: &Tracking,
    ablation_after_day: Option<i32>,
    min_sessions: usize,
) -> Vec<Transfer> {
    let wanted: Vec<(usize, usize)> = tracking
        .cells
        .iter()
        .enumerate()
        .filter(|(_, c)| c.rois.iter().flatten().count() >= min_sessions.max(1))
        .flat_map(|(i, c)| {
            let ablated = c.tags.ablated();
            (0..sessions.len())
                .filter(move |&s| c.rois[s].is_none())
                .filter(move |&s| {
                    !(ablated && ablation_after_day.is_some_and(|d| sessions[s].day > d))
                })
                .map(move |s| (i, s))
        })
        .collect();
    wanted
        .into_par_iter()
        .filter_map(|(cell, s)| transfer_one(sessions, tracking, cell, s))
        .collect()
}

/// The session nearest in days to `target` where the cell has a ROI (the earlier
/// one on a tie), with that ROI.
fn nearest_source(
    sessions: &[TrackSession],
    rois: &[Option<u32>],
    target: usize,
) -> Option<(usize, u32)> {
    (0..sessions.len())
        .filter_map(|s| rois[s].map(|r| (s, r)))
        .min_by_key(|&(s, _)| ((sessions[s].day - sessions[target].day).abs(), s))
}

fn transfer_one(
    sessions: &[TrackSession],
    tracking: &Tracking,
    cell: usize,
    target: usize,
) -> Option<Transfer> {
    let (source, roi_id) = nearest_source(sessions, &tracking.cells[cell].rois, target)?;
    let roi: &TrackRoi = sessions[source].rois.iter().find(|r| r.roi == roi_id)?;
    let (from, to) = (&tracking.alignments[source], &tracking.alignments[target]);
    let (w, h) = (sessions[target].width, sessions[target].height);
    let map = |x: f64, y: f64| {
        let q = from.apply(x, y);
        to_session(to, q).unwrap_or((f64::NAN, f64::NAN))
    };
    let inside = inside_fraction(roi, sessions[source].width, &map, w, h);
    if inside < MIN_INSIDE {
        return None;
    }
    let fp = RefFootprint::mapped(roi, sessions[source].width, map, w, h);
    if fp.pixels.is_empty() {
        return None;
    }
    let total: f64 = fp.weights.iter().map(|&v| v as f64).sum();
    let centroid = fp
        .pixels
        .iter()
        .zip(&fp.weights)
        .fold((0.0, 0.0), |acc, (&p, &v)| {
            let (x, y) = ((p as usize % w) as f64, (p as usize / w) as f64);
            (acc.0 + x * v as f64 / total, acc.1 + y * v as f64 / total)
        });
    Some(Transfer {
        cell,
        session: target,
        source,
        source_roi: roi_id,
        pixels: fp.pixels,
        weights: fp.weights,
        centroid,
    })
}

/// The fraction of the ROI's weight whose pixels map inside a `w × h` frame.
fn inside_fraction(
    roi: &TrackRoi,
    width: usize,
    map: &impl Fn(f64, f64) -> (f64, f64),
    w: usize,
    h: usize,
) -> f64 {
    let (mut inside, mut total) = (0.0, 0.0);
    for (&p, &wt) in roi.pixels.iter().zip(&roi.weights) {
        let wt = wt.max(0.0) as f64;
        total += wt;
        let (u, v) = map((p as usize % width) as f64, (p as usize / width) as f64);
        if u >= 0.0 && v >= 0.0 && u <= (w - 1) as f64 && v <= (h - 1) as f64 {
            inside += wt;
        }
    }
    if total > 0.0 {
        inside / total
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::align::AlignImage;
    use crate::track::model::MatchModel;
    use crate::track::tags::{Outcome, Tags};
    use crate::track::transform::Affine;
    use crate::track::Cell;

    fn disc(cx: usize, cy: usize, r: usize, w: usize) -> (Vec<u32>, Vec<f32>) {
        let mut px = Vec::new();
        for y in cy - r..=cy + r {
            for x in cx - r..=cx + r {
                if (x as i64 - cx as i64).pow(2) + (y as i64 - cy as i64).pow(2) <= (r * r) as i64 {
                    px.push((y * w + x) as u32);
                }
            }
        }
        let n = px.len();
        (px, vec![1.0; n])
    }

    fn session(id: &str, day: i32, rois: Vec<TrackRoi>) -> TrackSession {
        TrackSession {
            id: id.into(),
            day,
            width: 64,
            height: 64,
            image: AlignImage {
                width: 64,
                height: 64,
                data: vec![0.0; 64 * 64],
            },
            rois,
        }
    }

    fn roi(id: u32, cx: usize, cy: usize) -> TrackRoi {
        let (pixels, weights) = disc(cx, cy, 3, 64);
        TrackRoi {
            roi: id,
            x: cx as f64,
            y: cy as f64,
            pixels,
            weights,
            anatomical: false,
            snr: 10.0,
        }
    }

    fn shifted(dx: f64, dy: f64) -> Alignment {
        let mut a = Alignment::identity(0);
        a.transform = Affine {
            m: [[1.0, 0.0, dx], [0.0, 1.0, dy]],
        };
        a
    }

    fn tracking(cells: Vec<Cell>, alignments: Vec<Alignment>) -> Tracking {
        Tracking {
            reference: 0,
            alignments,
            cells,
            model: MatchModel::fallback(),
            pairs: vec![],
            gate_px: 5.0,
            tolerance_px: 3.0,
            ref_footprints: vec![],
        }
    }

    fn cell(rois: Vec<Option<u32>>, tags: Tags) -> Cell {
        let n = rois.len();
        Cell {
            rois,
            confidence: vec![None; n],
            ref_xy: vec![None; n],
            x_ref: 0.0,
            y_ref: 0.0,
            tags,
        }
    }

    #[test]
    fn a_missing_session_gets_the_nearest_sessions_footprint_moved_by_both_alignments() {
        // Session b maps to the reference by x − 5, y + 2.
        let sessions = vec![
            session("a", 1, vec![roi(0, 20, 30)]),
            session("b", 3, vec![]),
            session("c", 9, vec![roi(0, 22, 30)]),
        ];
        let t = tracking(
            vec![cell(vec![Some(0), None, Some(0)], Tags::default())],
            vec![
                Alignment::identity(0),
                shifted(-5.0, 2.0),
                Alignment::identity(0),
            ],
        );
        let plan = plan_transfers(&sessions, &t, None, 2);
        assert_eq!(plan.len(), 1);
        let tr = &plan[0];
        assert_eq!(
            (tr.cell, tr.session, tr.source, tr.source_roi),
            (0, 1, 0, 0)
        );
        // Reference (20, 30) is session-1 (25, 28).
        assert!((tr.centroid.0 - 25.0).abs() < 1e-6, "{:?}", tr.centroid);
        assert!((tr.centroid.1 - 28.0).abs() < 1e-6, "{:?}", tr.centroid);
        let norm: f32 = tr.weights.iter().map(|w| w * w).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn ablated_cells_after_the_ablation_and_cells_seen_once_are_not_transferred() {
        let sessions = vec![
            session("a", 1, vec![roi(0, 20, 30), roi(1, 40, 40)]),
            session("b", 3, vec![roi(0, 20, 30)]),
            session("c", 7, vec![]),
        ];
        let ablated = Tags {
            target: Some(0),
            outcome: Some(Outcome::Lost),
            cell_type: None,
        };
        let t = tracking(
            vec![
                cell(vec![Some(0), Some(0), None], ablated),
                cell(vec![Some(1), None, None], Tags::default()),
            ],
            vec![Alignment::identity(0); 3],
        );
        assert!(plan_transfers(&sessions, &t, Some(5), 2).is_empty());
        // Without an ablation the first cell is filled on day 7; with
        // min_sessions = 1 the second one too.
        let plan = plan_transfers(&sessions, &t, None, 1);
        let got: Vec<(usize, usize)> = plan.iter().map(|t| (t.cell, t.session)).collect();
        assert_eq!(got, vec![(0, 2), (1, 1), (1, 2)]);
        // Day 7 is nearer day 3 than day 1.
        assert_eq!(plan[0].source, 1);
    }

    #[test]
    fn footprints_that_would_leave_the_frame_are_dropped() {
        let sessions = vec![
            session("a", 1, vec![roi(0, 4, 30)]),
            session("b", 3, vec![roi(0, 4, 30)]),
            session("c", 5, vec![]),
        ];
        let t = tracking(
            vec![cell(vec![Some(0), Some(0), None], Tags::default())],
            // Session c's content sits 10 px to the left: the cell is outside it.
            vec![
                Alignment::identity(0),
                Alignment::identity(0),
                shifted(10.0, 0.0),
            ],
        );
        assert!(plan_transfers(&sessions, &t, None, 2).is_empty());
    }

    #[test]
    fn the_field_is_inverted() {
        let mut a = shifted(3.0, -1.0);
        a.field = Some(crate::track::field::DisplacementField::fit(
            vec![(10.0, 10.0), (50.0, 50.0), (10.0, 50.0), (50.0, 10.0)],
            vec![(0.5, 0.2); 4],
            30.0,
            0.0,
        ));
        for &(x, y) in &[(12.0, 20.0), (40.0, 33.0)] {
            let q = a.apply(x, y);
            let back = to_session(&a, q).unwrap();
            assert!(
                (back.0 - x).abs() < 1e-6 && (back.1 - y).abs() < 1e-6,
                "{back:?}"
            );
        }
    }
}
