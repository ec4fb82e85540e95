//! Cross-session registration: align every session's FOV to the reference
//! session, match ROIs across all sessions into tracked cells, and tag them.
//!
//! In: per session an alignment image (enhanced mean, structural mean, or the sum
//! of footprints) and its ROIs (centroids, weighted pixels, signal quality); the
//! reference session; ablation targets and typed positions. Out: per session an
//! affine map to reference coordinates with quality figures, one [`Cell`] per
//! tracked cell with its ROI (or none) in every session, a match confidence, and
//! the tags.
//!
//! Method (CellReg, Sheintuch et al. 2017, with Suite2p-style phase correlation
//! for the coarse step): [`align`] (rotation search by phase correlation, then
//! an affine fit to paired centroids), [`footprint`] (footprints moved into
//! reference coordinates), [`model`] (a two-population model of candidate pairs'
//! distance and footprint similarity fitted on the data, giving P(same cell)),
//! [`cluster`] (Hungarian per session pair, then constrained average-linkage
//! clustering across all sessions) and [`tags`] (ablated, filled, cell type).
//! [`transfer`] then moves a tracked cell's footprint into the sessions where it
//! was not found, for the extraction of its trace there.

pub mod align;
pub mod cluster;
pub mod field;
pub mod footprint;
pub mod model;
pub mod tags;
pub mod transfer;
pub mod transform;

use crate::config::TrackParams;
use crate::error::{Error, Result};
use crate::io::csv::Position;
use crate::progress::Progress;
use align::{align_session, AlignImage, AlignSettings, Alignment, PointGrid};
use cluster::{build_tracks, Candidate};
use footprint::{RefFootprint, TrackRoi};
use model::{MatchModel, PairFeatures};
use rayon::prelude::*;
use std::path::Path;
use tags::{Tags, TrackView};

/// One session as the tracker sees it.
#[derive(Debug, Clone)]
pub struct TrackSession {
    pub id: String,
    pub day: i32,
    pub width: usize,
    pub height: usize,
    pub image: AlignImage,
    pub rois: Vec<TrackRoi>,
}

/// The ablation, for tagging.
#[derive(Debug, Clone)]
pub struct AblationInput<'a> {
    pub after_day: i32,
    pub targets: &'a [Position],
    pub targets_file: &'a Path,
}

/// A tracked cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Per session (input order): the ROI id there, or None.
    pub rois: Vec<Option<u32>>,
    /// Per session: mean P(same) of that ROI with the cell's other ROIs.
    pub confidence: Vec<Option<f64>>,
    /// Per session: the ROI's centroid in reference coordinates.
    pub ref_xy: Vec<Option<(f64, f64)>>,
    /// Mean position in reference coordinates.
    pub x_ref: f64,
    pub y_ref: f64,
    pub tags: Tags,
}

/// A candidate pair with its features, for the QC table.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredPair {
    pub session_a: usize,
    pub roi_a: u32,
    pub session_b: usize,
    pub roi_b: u32,
    pub distance_px: f64,
    pub similarity: f64,
    pub p_same: f64,
}

/// Everything the tracker found.
#[derive(Debug, Clone)]
pub struct Tracking {
    /// Index of the reference session.
    pub reference: usize,
    pub alignments: Vec<Alignment>,
    pub cells: Vec<Cell>,
    pub model: MatchModel,
    pub pairs: Vec<ScoredPair>,
    /// The candidate gate used, px.
    pub gate_px: f64,
    /// The target tolerance used, px.
    pub tolerance_px: f64,
    /// Every tracked ROI's footprint in reference coordinates: (session index,
    /// ROI id, footprint), in session order.
    pub ref_footprints: Vec<(usize, u32, RefFootprint)>,
}

/// Median diameter of a disc with the ROIs' core area (pixels of at least a fifth
/// of the ROI's peak weight).
pub fn median_diameter(sessions: &[TrackSession]) -> f64 {
    let mut d: Vec<f64> = sessions
        .iter()
        .flat_map(|s| s.rois.iter())
        .map(|r| {
            let peak = r.weights.iter().copied().fold(0f32, f32::max);
            let core = r
                .weights
                .iter()
                .filter(|&&w| w >= 0.2 * peak && w > 0.0)
                .count();
            2.0 * (core as f64 / std::f64::consts::PI).sqrt()
        })
        .filter(|d| *d > 0.0)
        .collect();
    if d.is_empty() {
        return 10.0;
    }
    d.sort_by(|a, b| a.total_cmp(b));
    d[d.len() / 2]
}

/// Track the ROIs of `sessions` across sessions; `reference` indexes `sessions`.
pub fn track_sessions(
    sessions: &[TrackSession],
    reference: usize,
    ablation: Option<&AblationInput>,
    cell_types: &[Position],
    params: &TrackParams,
    progress: &dyn Progress,
) -> Result<Tracking> {
    let refs = sessions
        .get(reference)
        .ok_or_else(|| Error::internal("the reference session index is out of range"))?;
    let diameter = median_diameter(sessions);
    let gate = if params.max_distance_px > 0.0 {
        params.max_distance_px
    } else {
        (params.gate_diameters * diameter).max(3.0)
    };
    let tolerance = if params.target_tolerance_px > 0.0 {
        params.target_tolerance_px
    } else {
        (0.5 * diameter).max(2.0)
    };
    if let Some(a) = ablation {
        tags::check_targets(
            a.targets,
            a.targets_file,
            refs.width,
            refs.height,
            tolerance,
        )?;
    }

    let alignments = align_all(sessions, reference, params, gate, progress)?;
    let (ref_w, ref_h) = (refs.width, refs.height);
    // Every ROI in reference coordinates, with a global index.
    let mut session_of = Vec::new();
    let mut local = Vec::new();
    for (s, sess) in sessions.iter().enumerate() {
        for k in 0..sess.rois.len() {
            session_of.push(s);
            local.push(k);
        }
    }
    let mapped: Vec<((f64, f64), RefFootprint)> = (0..session_of.len())
        .into_par_iter()
        .map(|g| {
            let (s, k) = (session_of[g], local[g]);
            let roi = &sessions[s].rois[k];
            let al = &alignments[s];
            // The field is smooth on the scale of a cell: one shift per ROI.
            let shift = al.field_at(al.transform.apply(roi.x, roi.y));
            let map = |x: f64, y: f64| {
                let q = al.transform.apply(x, y);
                (q.0 + shift.0, q.1 + shift.1)
            };
            (
                map(roi.x, roi.y),
                RefFootprint::mapped(roi, sessions[s].width, map, ref_w, ref_h),
            )
        })
        .collect();
    let centres: Vec<(f64, f64)> = mapped.iter().map(|m| m.0).collect();

    let raw = candidate_pairs(&session_of, &centres, &mapped, gate);
    let features: Vec<PairFeatures> = raw.iter().map(|r| r.1).collect();
    let model = MatchModel::fit(&features, 50);
    let candidates: Vec<Candidate> = raw
        .iter()
        .map(|&((a, b), f)| Candidate {
            a,
            b,
            p: model.p_same(f),
        })
        .collect();
    let tracks = build_tracks(
        sessions.len(),
        &session_of,
        &candidates,
        params.p_same_threshold,
    );

    let mut cells: Vec<Cell> = tracks
        .iter()
        .map(|t| {
            let ref_xy: Vec<Option<(f64, f64)>> =
                t.members.iter().map(|m| m.map(|g| centres[g])).collect();
            let present: Vec<(f64, f64)> = ref_xy.iter().flatten().copied().collect();
            let n = present.len().max(1) as f64;
            Cell {
                rois: t
                    .members
                    .iter()
                    .map(|m| m.map(|g| sessions[session_of[g]].rois[local[g]].roi))
                    .collect(),
                confidence: t.confidence.clone(),
                x_ref: present.iter().map(|p| p.0).sum::<f64>() / n,
                y_ref: present.iter().map(|p| p.1).sum::<f64>() / n,
                ref_xy,
                tags: Tags::default(),
            }
        })
        .collect();

    let post: Vec<bool> = sessions
        .iter()
        .map(|s| ablation.is_some_and(|a| s.day > a.after_day))
        .collect();
    let views: Vec<TrackView> = tracks
        .iter()
        .zip(&cells)
        .map(|(t, c)| TrackView {
            x: c.x_ref,
            y: c.y_ref,
            signal: t
                .members
                .iter()
                .map(|m| {
                    m.map(|g| {
                        let r = &sessions[session_of[g]].rois[local[g]];
                        !r.anatomical && r.snr >= params.silent_snr as f32
                    })
                })
                .collect(),
        })
        .collect();
    let targets = ablation.map(|a| a.targets).unwrap_or(&[]);
    let (tagged, unseen) = tags::tag_tracks(&views, &post, targets, cell_types, tolerance);
    for (c, t) in cells.iter_mut().zip(tagged) {
        c.tags = t;
    }
    // Targets where no ROI was ever found still stand for an ablated cell.
    let any_post = post.iter().any(|&p| p);
    for i in unseen {
        let n = sessions.len();
        cells.push(Cell {
            rois: vec![None; n],
            confidence: vec![None; n],
            ref_xy: vec![None; n],
            x_ref: targets[i].x,
            y_ref: targets[i].y,
            tags: tags::target_only_tags(
                i,
                targets[i].kind.map(|k| k.as_str().to_string()),
                any_post,
            ),
        });
    }

    let pairs = raw
        .iter()
        .zip(&candidates)
        .map(|(&((a, b), f), c)| ScoredPair {
            session_a: session_of[a],
            roi_a: sessions[session_of[a]].rois[local[a]].roi,
            session_b: session_of[b],
            roi_b: sessions[session_of[b]].rois[local[b]].roi,
            distance_px: f.distance * gate,
            similarity: f.similarity,
            p_same: c.p,
        })
        .collect();
    let ref_footprints = mapped
        .into_iter()
        .enumerate()
        .map(|(g, (_, fp))| {
            (
                session_of[g],
                sessions[session_of[g]].rois[local[g]].roi,
                fp,
            )
        })
        .collect();
    Ok(Tracking {
        reference,
        alignments,
        cells,
        model,
        pairs,
        gate_px: gate,
        tolerance_px: tolerance,
        ref_footprints,
    })
}

/// Align every session to the reference, in parallel.
fn align_all(
    sessions: &[TrackSession],
    reference: usize,
    params: &TrackParams,
    gate: f64,
    progress: &dyn Progress,
) -> Result<Vec<Alignment>> {
    let settings = AlignSettings {
        max_rotation_deg: params.max_rotation_deg,
        max_shift_px: params.max_shift_px,
        affine: params.affine,
        gate_px: gate,
        nonrigid: params.nonrigid,
        nonrigid_sigma_px: params.nonrigid_sigma_px,
    };
    let refs = &sessions[reference];
    let ref_pts: Vec<(f64, f64)> = refs.rois.iter().map(|r| (r.x, r.y)).collect();
    progress.start("track: align", sessions.len() as u64);
    let out: Result<Vec<Alignment>> = sessions
        .par_iter()
        .enumerate()
        .map(|(s, sess)| {
            let a = if s == reference {
                Ok(Alignment::identity(sess.rois.len()))
            } else {
                let pts: Vec<(f64, f64)> = sess.rois.iter().map(|r| (r.x, r.y)).collect();
                align_session(
                    &sess.id,
                    (&refs.image, &ref_pts),
                    (&sess.image, &pts),
                    &settings,
                )
            };
            progress.advance(1);
            a
        })
        .collect();
    progress.finish();
    out
}

type RawPair = ((usize, usize), PairFeatures);

/// Every pair of ROIs from different sessions within `gate` in reference
/// coordinates, with its features; `a < b`, sorted.
fn candidate_pairs(
    session_of: &[usize],
    centres: &[(f64, f64)],
    mapped: &[((f64, f64), RefFootprint)],
    gate: f64,
) -> Vec<RawPair> {
    let grid = PointGrid::new(centres, gate);
    let mut out: Vec<RawPair> = (0..centres.len())
        .into_par_iter()
        .flat_map_iter(|a| {
            grid.near(centres, centres[a], gate)
                .into_iter()
                .filter(move |&b| b > a && session_of[b] != session_of[a])
                .map(move |b| {
                    let d = (centres[a].0 - centres[b].0).hypot(centres[a].1 - centres[b].1);
                    (
                        (a, b),
                        PairFeatures {
                            distance: d / gate,
                            similarity: mapped[a].1.similarity(&mapped[b].1),
                        },
                    )
                })
        })
        .collect();
    out.sort_by_key(|p| p.0);
    out
}
