//! The footprint-transfer step of the `track` part: after tracking, every tracked
//! cell found in at least `[track] transfer_min_sessions` sessions gets its
//! footprint moved into the sessions where it was not found
//! ([`crate::track::transfer`]) and its trace extracted there from the corrected
//! frames ([`crate::extract`], the session's own ROIs left out of its footprint
//! and neuropil). Writes `transferred_rois.parquet` and
//! `transferred_traces.parquet` (empty with `[track] transfer = false`); the
//! analyze stage reads a cell's trace from there where `cells.parquet` says
//! `transferred`.

use super::cells::{trace_rows, valid_rect};
use super::{RunLayout, SessionSummary};
use crate::config::Params;
use crate::error::{Error, Result};
use crate::extract::{extract_session, RoiInput, SessionTraces};
use crate::io::table::{write_table, Column, Table, TableWriter};
use crate::movie::store::FrameStore;
use crate::progress::Progress;
use crate::track::transfer::{plan_transfers, TargetSession, Transfer};
use crate::track::{TrackSession, Tracking};
use std::collections::BTreeMap;

/// Plan the transfers, extract their traces and write both tables; returns the
/// transfers made.
#[allow(clippy::too_many_arguments)]
pub fn run_transfer(
    layout: &RunLayout,
    summaries: &[SessionSummary],
    boxes: &[(String, [usize; 4])],
    sessions: &[TrackSession],
    roi_pixels: &BTreeMap<String, Vec<Vec<u32>>>,
    tracking: &Tracking,
    ablation_after_day: Option<i32>,
    params: &Params,
    progress: &dyn Progress,
) -> Result<Vec<Transfer>> {
    let plan = if params.track.transfer {
        let targets = sessions
            .iter()
            .map(|s| target_session(s, summaries, boxes, roi_pixels))
            .collect::<Result<Vec<_>>>()?;
        plan_transfers(
            sessions,
            &targets,
            tracking,
            ablation_after_day,
            params.track.transfer_min_sessions,
        )
    } else {
        Vec::new()
    };
    let mut traces = TableWriter::create(layout.table("transferred_traces"))?;
    for (s, sess) in sessions.iter().enumerate() {
        let todo: Vec<&Transfer> = plan.iter().filter(|t| t.session == s).collect();
        if todo.is_empty() {
            continue;
        }
        let summary = summary_of(summaries, &sess.id)?;
        let store = FrameStore::open(layout.store(&sess.id))?;
        let valid = valid_rect(boxes, &sess.id, summary.width, summary.height);
        let inputs: Vec<RoiInput> = todo
            .iter()
            .map(|t| RoiInput {
                pixels: &t.pixels,
                weights: &t.weights,
                centroid: t.centroid,
            })
            .collect();
        let neighbours: Vec<&[u32]> = roi_pixels
            .get(&sess.id)
            .map(|v| v.iter().map(|p| p.as_slice()).collect())
            .unwrap_or_default();
        let t = extract_session(
            &format!("{} (transferred)", sess.id),
            &store,
            &inputs,
            &neighbours,
            summary.fs,
            valid,
            &params.extract,
            &params.indicator,
            progress,
        )?;
        for (k, tr) in todo.iter().enumerate() {
            traces.write(&trace_rows(&sess.id, ("cell", tr.cell as u32), k, &t))?;
        }
    }
    traces.finish(&trace_rows("", ("cell", 0), 0, &SessionTraces::default()))?;
    write_table(
        layout.table("transferred_rois"),
        &transferred_rois_table(sessions, &plan),
    )?;
    tracing::info!(
        "transferred {} footprints into sessions where their cell was not found",
        plan.len()
    );
    Ok(plan)
}

fn summary_of<'a>(summaries: &'a [SessionSummary], id: &str) -> Result<&'a SessionSummary> {
    summaries
        .iter()
        .find(|x| x.id == id)
        .ok_or_else(|| Error::internal(format!("no summary of session {id}")))
}

/// A session as the planner sees it: its valid box and the pixels its ROIs cover.
/// The frame store and the alignment image must have one size.
fn target_session(
    s: &TrackSession,
    summaries: &[SessionSummary],
    boxes: &[(String, [usize; 4])],
    roi_pixels: &BTreeMap<String, Vec<Vec<u32>>>,
) -> Result<TargetSession> {
    let summary = summary_of(summaries, &s.id)?;
    if (summary.width, summary.height) != (s.width, s.height) {
        return Err(Error::internal(format!(
            "session {}: frames are {}x{} but its alignment image is {}x{}",
            s.id, summary.width, summary.height, s.width, s.height
        )));
    }
    let r = valid_rect(boxes, &s.id, s.width, s.height);
    let mut occupied = vec![false; s.width * s.height];
    for pixels in roi_pixels.get(&s.id).into_iter().flatten() {
        for &p in pixels {
            if let Some(o) = occupied.get_mut(p as usize) {
                *o = true;
            }
        }
    }
    Ok(TargetSession {
        valid: [r.x0, r.x1, r.y0, r.y1],
        occupied,
    })
}

/// One row per transferred footprint, in its target session's coordinates.
fn transferred_rois_table(sessions: &[TrackSession], plan: &[Transfer]) -> Table {
    let id = |s: usize| sessions[s].id.clone();
    Table::new()
        .with(
            "session",
            Column::Str(plan.iter().map(|t| id(t.session)).collect()),
        )
        .with(
            "cell",
            Column::U32(plan.iter().map(|t| t.cell as u32).collect()),
        )
        .with(
            "source_session",
            Column::Str(plan.iter().map(|t| id(t.source)).collect()),
        )
        .with(
            "source_roi",
            Column::U32(plan.iter().map(|t| t.source_roi).collect()),
        )
        .with(
            "centroid_x",
            Column::F32(plan.iter().map(|t| t.centroid.0 as f32).collect()),
        )
        .with(
            "centroid_y",
            Column::F32(plan.iter().map(|t| t.centroid.1 as f32).collect()),
        )
        .with(
            "overlap",
            Column::F32(plan.iter().map(|t| t.overlap as f32).collect()),
        )
        .with(
            "npix",
            Column::U32(plan.iter().map(|t| t.pixels.len() as u32).collect()),
        )
        .with(
            "pixels",
            Column::ListU32(plan.iter().map(|t| t.pixels.clone()).collect()),
        )
        .with(
            "weights",
            Column::ListF32(plan.iter().map(|t| t.weights.clone()).collect()),
        )
}
