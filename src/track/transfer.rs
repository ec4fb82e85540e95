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
//! is as likely a false detection), footprints that would leave most of their
//! weight outside the target session's valid box (outside it the corrected frames
//! hold clamped edge pixels), footprints that lie mostly on the target session's
//! own ROIs (a cell the tracker split in two: its trace there is the ROI's), and
//! of two transfers into one session that lie mostly on each other, the one of
//! the cell found in fewer sessions.

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
    /// Fraction of the footprint's weight on pixels of the target session's ROIs.
    pub overlap: f64,
}

/// What the planner needs to know of each target session besides its ROIs.
#[derive(Debug, Clone, Default)]
pub struct TargetSession {
    /// The registration's valid box `[x0, x1, y0, y1]` (corrected frames are
    /// clamped edge pixels outside it).
    pub valid: [usize; 4],
    /// Per pixel: covered by one of the session's ROIs (all of them, cells or
    /// not).
    pub occupied: Vec<bool>,
}

/// Smallest fraction of a footprint's weight that must land inside the target
/// session's valid box for the transfer to be kept.
const MIN_INSIDE: f64 = 0.5;

/// Largest fraction of a footprint's weight that may lie on the target session's
/// ROIs, or on another transfer into that session.
pub const MAX_OVERLAP: f64 = 0.5;

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

/// Every (cell, session) to fill, in cell then session order. `targets` holds one
/// entry per session.
pub fn plan_transfers(
    sessions: &[TrackSession],
    targets: &[TargetSession],
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
    let planned: Vec<Transfer> = wanted
        .into_par_iter()
        .filter_map(|(cell, s)| transfer_one(sessions, &targets[s], tracking, cell, s))
        .filter(|t| t.overlap <= MAX_OVERLAP)
        .collect();
    let found: Vec<usize> = tracking
        .cells
        .iter()
        .map(|c| c.rois.iter().flatten().count())
        .collect();
    drop_duplicates(planned, &found)
}

/// Of two transfers into one session that share most of their weight (both
/// tracks stand for one cell), keep the one whose cell was found in more
/// sessions (the lower cell number on a tie). Order is kept.
fn drop_duplicates(plan: Vec<Transfer>, found: &[usize]) -> Vec<Transfer> {
    let rank = |t: &Transfer| (std::cmp::Reverse(found[t.cell]), t.cell);
    let mut order: Vec<usize> = (0..plan.len()).collect();
    order.sort_by_key(|&i| (plan[i].session, rank(&plan[i])));
    let mut keep = vec![true; plan.len()];
    for (a, &i) in order.iter().enumerate() {
        if !keep[i] {
            continue;
        }
        for &j in &order[a + 1..] {
            if plan[j].session != plan[i].session {
                break;
            }
            if keep[j] && shared_weight(&plan[j], &plan[i]) > MAX_OVERLAP {
                keep[j] = false;
            }
        }
    }
    plan.into_iter()
        .zip(keep)
        .filter_map(|(t, k)| k.then_some(t))
        .collect()
}

/// The fraction of `a`'s weight on pixels of `b` (both sorted).
fn shared_weight(a: &Transfer, b: &Transfer) -> f64 {
    let (mut i, mut j, mut shared, mut total) = (0, 0, 0.0, 0.0);
    while i < a.pixels.len() {
        let w = a.weights[i].max(0.0) as f64;
        total += w;
        while j < b.pixels.len() && b.pixels[j] < a.pixels[i] {
            j += 1;
        }
        if j < b.pixels.len() && b.pixels[j] == a.pixels[i] {
            shared += w;
        }
        i += 1;
    }
    if total > 0.0 {
        shared / total
    } else {
        0.0
    }
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
    info: &TargetSession,
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
    let [x0, x1, y0, y1] = info.valid;
    let (x1, y1) = (x1.min(w), y1.min(h));
    let in_box = |x: f64, y: f64| {
        x >= x0 as f64 && y >= y0 as f64 && x <= (x1 as f64 - 1.0) && y <= (y1 as f64 - 1.0)
    };
    let inside = inside_fraction(roi, sessions[source].width, &map, &in_box);
    if inside < MIN_INSIDE {
        return None;
    }
    let mut fp = RefFootprint::mapped(roi, sessions[source].width, map, w, h);
    let kept: Vec<(u32, f32)> = fp
        .pixels
        .iter()
        .zip(&fp.weights)
        .filter(|(&p, _)| in_box((p as usize % w) as f64, (p as usize / w) as f64))
        .map(|(&p, &v)| (p, v))
        .collect();
    (fp.pixels, fp.weights) = kept.into_iter().unzip();
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
    let on_rois: f64 = fp
        .pixels
        .iter()
        .zip(&fp.weights)
        .filter(|(&p, _)| info.occupied.get(p as usize).copied().unwrap_or(false))
        .map(|(_, &v)| v as f64)
        .sum();
    Some(Transfer {
        cell,
        session: target,
        source,
        source_roi: roi_id,
        pixels: fp.pixels,
        weights: fp.weights,
        centroid,
        overlap: on_rois / total,
    })
}

/// The fraction of the ROI's weight whose pixels map inside the box.
fn inside_fraction(
    roi: &TrackRoi,
    width: usize,
    map: &impl Fn(f64, f64) -> (f64, f64),
    in_box: &impl Fn(f64, f64) -> bool,
) -> f64 {
    let (mut inside, mut total) = (0.0, 0.0);
    for (&p, &wt) in roi.pixels.iter().zip(&roi.weights) {
        let wt = wt.max(0.0) as f64;
        total += wt;
        let (u, v) = map((p as usize % width) as f64, (p as usize / width) as f64);
        if in_box(u, v) {
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

    /// Target sessions with the whole 64 × 64 frame valid and no ROI pixels.
    fn free(n: usize) -> Vec<TargetSession> {
        vec![
            TargetSession {
                valid: [0, 64, 0, 64],
                occupied: vec![false; 64 * 64],
            };
            n
        ]
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
        let plan = plan_transfers(&sessions, &free(sessions.len()), &t, None, 2);
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
        assert!(plan_transfers(&sessions, &free(sessions.len()), &t, Some(5), 2).is_empty());
        // Without an ablation the first cell is filled on day 7; with
        // min_sessions = 1 the second one too.
        let plan = plan_transfers(&sessions, &free(sessions.len()), &t, None, 1);
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
        assert!(plan_transfers(&sessions, &free(sessions.len()), &t, None, 2).is_empty());
    }

    #[test]
    fn footprints_outside_the_valid_box_or_on_a_rois_pixels_are_dropped() {
        let sessions = vec![
            session("a", 1, vec![roi(0, 20, 30)]),
            session("b", 3, vec![roi(0, 20, 30)]),
            session("c", 5, vec![]),
        ];
        let t = tracking(
            vec![cell(vec![Some(0), Some(0), None], Tags::default())],
            vec![Alignment::identity(0); 3],
        );
        let mut targets = free(3);
        assert_eq!(plan_transfers(&sessions, &targets, &t, None, 2).len(), 1);
        // Session c's registration kept only x ≥ 21: most of the cell is outside.
        targets[2].valid = [21, 64, 0, 64];
        assert!(plan_transfers(&sessions, &targets, &t, None, 2).is_empty());
        // Its left part is still valid with the box at x ≥ 19; the pixels left
        // of it are dropped.
        targets[2].valid = [19, 64, 0, 64];
        let plan = plan_transfers(&sessions, &targets, &t, None, 2);
        assert!(plan[0].pixels.iter().all(|&p| p % 64 >= 19));
        // A ROI of session c covers the spot: the trace there would be the ROI's.
        targets[2].valid = [0, 64, 0, 64];
        let (covered, _) = disc(20, 30, 4, 64);
        for p in covered {
            targets[2].occupied[p as usize] = true;
        }
        assert!(plan_transfers(&sessions, &targets, &t, None, 2).is_empty());
    }

    #[test]
    fn of_two_tracks_of_one_cell_only_the_better_found_one_is_transferred() {
        // Cells 0 and 1 are one cell split by the tracker; both are missing on
        // day 5. Cell 1 was found in three sessions, cell 0 in two.
        let sessions = vec![
            session("a", 1, vec![roi(0, 20, 30)]),
            session("b", 3, vec![roi(0, 20, 30)]),
            session("c", 5, vec![]),
            session("d", 7, vec![roi(0, 21, 30)]),
            session("e", 9, vec![roi(0, 21, 30), roi(1, 40, 40)]),
            session("f", 11, vec![roi(0, 21, 30), roi(1, 40, 40)]),
        ];
        let t = tracking(
            vec![
                cell(
                    vec![Some(0), Some(0), None, None, None, None],
                    Tags::default(),
                ),
                cell(
                    vec![None, None, None, Some(0), Some(0), Some(0)],
                    Tags::default(),
                ),
                cell(
                    vec![None, None, None, None, Some(1), Some(1)],
                    Tags::default(),
                ),
            ],
            vec![Alignment::identity(0); 6],
        );
        let plan = plan_transfers(&sessions, &free(6), &t, None, 2);
        let on_c: Vec<usize> = plan
            .iter()
            .filter(|x| x.session == 2)
            .map(|x| x.cell)
            .collect();
        assert_eq!(on_c, vec![1, 2]);
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
