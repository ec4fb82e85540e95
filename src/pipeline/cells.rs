//! The per-session cell stages of a run: `detect` (ROIs and summary images) and
//! `extract` (traces), with their tables.

use super::{RunLayout, SessionSummary};
use crate::config::{Experiment, Params, Session};
use crate::detect::{detect_session, DetectInput, Detection};
use crate::error::{Error, Result};
use crate::extract::{extract_session, RoiInput, SessionTraces};
use crate::imgproc::Rect;
use crate::io::table::read_table;
use crate::io::table::{write_table, Column, Table, TableWriter};
use crate::io::tiff::write_image_f32;
use crate::motion::interp::shift_image;
use crate::motion::MotionQc;
use crate::movie::store::FrameStore;
use crate::movie::{MovieReader, MovieSpec};
use crate::progress::Progress;
use std::collections::BTreeMap;

/// Each session's valid box `[x0, x1, y0, y1]` from the motion stage.
pub type ValidBoxes = [(String, [usize; 4])];

fn valid_box(motion: &ValidBoxes, session: &str, w: usize, h: usize) -> [usize; 4] {
    motion
        .iter()
        .find(|(id, _)| id == session)
        .map(|(_, v)| *v)
        .unwrap_or([0, w, 0, h])
}

/// A session's valid box as a rectangle; the whole frame when the box is empty.
pub fn valid_rect(motion: &ValidBoxes, session: &str, w: usize, h: usize) -> Rect {
    crate::detect::valid_rect(valid_box(motion, session, w, h), w, h)
}

/// The valid boxes of the motion stage's QC.
pub fn boxes_of(motion: &[(String, MotionQc)]) -> Vec<(String, [usize; 4])> {
    motion.iter().map(|(id, q)| (id.clone(), q.valid)).collect()
}

/// Detect ROIs in every session; writes rois.parquet, detection.parquet and the
/// summary images.
pub fn run_detect(
    exp: &Experiment,
    sessions: &[SessionSummary],
    motion: &ValidBoxes,
    layout: &RunLayout,
    params: &Params,
    progress: &dyn Progress,
) -> Result<Vec<(String, Detection)>> {
    let mut rois = TableWriter::create(layout.table("rois"))?;
    let mut out = Vec::new();
    let mut shifts = None;
    for s in sessions {
        let store = FrameStore::open(layout.store(&s.id))?;
        let structural = match exp.sessions.iter().find(|m| m.id == s.id) {
            Some(m) if m.structural_channel.is_some() => {
                if shifts.is_none() {
                    shifts = Some(session_shifts(&layout.table("motion"))?);
                }
                let sh = shifts.as_ref().and_then(|t| t.get(&s.id)).ok_or_else(|| {
                    Error::input(
                        layout.table("motion"),
                        format!("no shifts for session {}", s.id),
                    )
                })?;
                let img = structural_mean(m, sh, s.width, s.height, params.ingest.batch_frames)?;
                write_image_f32(
                    &layout.image(&s.id, "structural_mean"),
                    s.width,
                    s.height,
                    &img,
                    &format!(
                        "cortexmap motion-corrected structural mean of session {}",
                        s.id
                    ),
                )?;
                Some(img)
            }
            _ => None,
        };
        let input = DetectInput {
            session: &s.id,
            fs: s.fs,
            valid: valid_box(motion, &s.id, s.width, s.height),
            structural,
        };
        let d = detect_session(&store, &input, &params.detect, &params.indicator, progress)?;
        tracing::info!(
            "session {}: {} ROIs ({} is_cell, {} from anatomy), cell diameter {:.1} px{}",
            s.id,
            d.rois.len(),
            d.rois.iter().filter(|r| r.is_cell).count(),
            d.rois
                .iter()
                .filter(|r| r.source == crate::detect::Source::Anatomy)
                .count(),
            d.diameter,
            if d.diameter_estimated {
                " (estimated)"
            } else {
                ""
            }
        );
        if d.dark_search {
            let share = if d.dark_centre_fraction.is_finite() {
                format!(
                    "{:.0} % of active cells are darker at their centre",
                    100.0 * d.dark_centre_fraction
                )
            } else {
                "too few active cells to judge; dark_somata = \"on\"".to_string()
            };
            tracing::info!("session {}: dark somata sought ({share})", s.id);
        }
        if d.rois.is_empty() {
            tracing::warn!("session {}: no ROIs found", s.id);
        }
        rois.write(&roi_rows(&s.id, &d))?;
        for (what, img) in [
            ("max", &d.images.max),
            ("correlation", &d.images.correlation),
            ("enhanced", &d.images.enhanced),
        ] {
            write_image_f32(
                &layout.image(&s.id, what),
                d.width,
                d.height,
                img,
                &format!("cortexmap {what} image of session {}", s.id),
            )?;
        }
        out.push((s.id.clone(), d));
    }
    rois.finish(&roi_rows("", &Detection::empty()))?;
    write_table(layout.table("detection"), &detection_table(&out))?;
    Ok(out)
}

/// Per session, the rigid shift of every frame from motion.parquet.
fn session_shifts(path: &std::path::Path) -> Result<BTreeMap<String, Vec<(f32, f32)>>> {
    let t = read_table(path)?;
    let (ids, frames) = (t.strs(path, "session")?, t.u32s(path, "frame")?);
    let (sx, sy) = (t.f32s(path, "shift_x")?, t.f32s(path, "shift_y")?);
    let mut m: BTreeMap<String, Vec<(u32, f32, f32)>> = BTreeMap::new();
    for i in 0..ids.len() {
        m.entry(ids[i].clone())
            .or_default()
            .push((frames[i], sx[i], sy[i]));
    }
    Ok(m.into_iter()
        .map(|(k, mut v)| {
            v.sort_by_key(|r| r.0);
            (k, v.into_iter().map(|r| (r.1, r.2)).collect())
        })
        .collect())
}

/// The mean of a session's structural channel, every frame moved by the functional
/// channel's shift first (both channels see the same motion).
fn structural_mean(
    session: &Session,
    shifts: &[(f32, f32)],
    width: usize,
    height: usize,
    batch: usize,
) -> Result<Vec<f32>> {
    let spec = MovieSpec {
        files: session.files.clone(),
        channels: session.channels,
        channel: session.structural_channel.unwrap_or(0),
    };
    let mut reader = MovieReader::open(&spec)?;
    let npix = width * height;
    let (mut tmp, mut moved) = (vec![0f32; npix], vec![0f32; npix]);
    let mut sum = vec![0f64; npix];
    let mut t = 0usize;
    while let Some(b) = reader.read_batch(batch)? {
        let frames = b
            .frames
            .as_slice()
            .ok_or_else(|| Error::internal("frame batch is not contiguous"))?;
        for frame in frames.chunks(npix) {
            let (dx, dy) = shifts.get(t).copied().unwrap_or((0.0, 0.0));
            shift_image(
                frame, width, height, dx as f64, dy as f64, &mut tmp, &mut moved,
            );
            for (s, &v) in sum.iter_mut().zip(&moved) {
                *s += v as f64;
            }
            t += 1;
        }
    }
    let n = t.max(1) as f64;
    Ok(sum.iter().map(|&v| (v / n) as f32).collect())
}

/// Extract traces of every session's ROIs; writes traces.parquet.
pub fn run_extract(
    sessions: &[SessionSummary],
    motion: &ValidBoxes,
    found: &[(String, Detection)],
    layout: &RunLayout,
    params: &Params,
    progress: &dyn Progress,
) -> Result<()> {
    let mut traces = TableWriter::create(layout.table("traces"))?;
    for s in sessions {
        let d = found
            .iter()
            .find(|(id, _)| id == &s.id)
            .map(|(_, d)| d)
            .ok_or_else(|| Error::internal(format!("no detection for session {}", s.id)))?;
        let store = FrameStore::open(layout.store(&s.id))?;
        let valid = valid_rect(motion, &s.id, s.width, s.height);
        let inputs: Vec<RoiInput> = d
            .rois
            .iter()
            .map(|r| RoiInput {
                pixels: &r.pixels,
                weights: &r.weights,
                centroid: (r.centroid_x, r.centroid_y),
            })
            .collect();
        let t = extract_session(
            &s.id,
            &store,
            &inputs,
            &[],
            s.fs,
            valid,
            &params.extract,
            &params.indicator,
            progress,
        )?;
        for k in 0..t.f.len() {
            traces.write(&trace_rows(&s.id, ("roi", k as u32), k, &t))?;
        }
    }
    traces.finish(&trace_rows("", ("roi", 0), 0, &SessionTraces::default()))?;
    Ok(())
}

fn roi_rows(session: &str, d: &Detection) -> Table {
    let r = &d.rois;
    Table::new()
        .with("session", Column::Str(vec![session.to_string(); r.len()]))
        .with("roi", Column::U32((0..r.len() as u32).collect()))
        .with(
            "centroid_x",
            Column::F32(r.iter().map(|x| x.centroid_x as f32).collect()),
        )
        .with(
            "centroid_y",
            Column::F32(r.iter().map(|x| x.centroid_y as f32).collect()),
        )
        .with(
            "npix",
            Column::U32(r.iter().map(|x| x.pixels.len() as u32).collect()),
        )
        .with(
            "pixels",
            Column::ListU32(r.iter().map(|x| x.pixels.clone()).collect()),
        )
        .with(
            "weights",
            Column::ListF32(r.iter().map(|x| x.weights.clone()).collect()),
        )
        .with(
            "is_cell",
            Column::Bool(r.iter().map(|x| x.is_cell).collect()),
        )
        .with(
            "source",
            Column::Str(r.iter().map(|x| x.source.as_str().to_string()).collect()),
        )
        .with(
            "snr",
            Column::F32(r.iter().map(|x| x.quality.snr).collect()),
        )
        .with(
            "skewness",
            Column::F32(r.iter().map(|x| x.quality.skewness).collect()),
        )
        .with(
            "compactness",
            Column::F32(r.iter().map(|x| x.quality.compactness).collect()),
        )
}

fn detection_table(found: &[(String, Detection)]) -> Table {
    let count = |d: &Detection, f: &dyn Fn(&crate::detect::Roi) -> bool| {
        d.rois.iter().filter(|r| f(r)).count() as u32
    };
    Table::new()
        .with(
            "session",
            Column::Str(found.iter().map(|x| x.0.clone()).collect()),
        )
        .with(
            "diameter_px",
            Column::F32(found.iter().map(|x| x.1.diameter as f32).collect()),
        )
        .with(
            "diameter_estimated",
            Column::Bool(found.iter().map(|x| x.1.diameter_estimated).collect()),
        )
        .with(
            "bin_frames",
            Column::U32(found.iter().map(|x| x.1.bin_frames as u32).collect()),
        )
        .with(
            "n_bins",
            Column::U32(found.iter().map(|x| x.1.n_bins as u32).collect()),
        )
        .with(
            "n_rois",
            Column::U32(found.iter().map(|x| x.1.rois.len() as u32).collect()),
        )
        .with(
            "n_cells",
            Column::U32(found.iter().map(|x| count(&x.1, &|r| r.is_cell)).collect()),
        )
        .with(
            "n_anatomy",
            Column::U32(
                found
                    .iter()
                    .map(|x| count(&x.1, &|r| r.source == crate::detect::Source::Anatomy))
                    .collect(),
            ),
        )
        .with(
            "dark_centre_fraction",
            Column::F32(
                found
                    .iter()
                    .map(|x| x.1.dark_centre_fraction as f32)
                    .collect(),
            ),
        )
        .with(
            "dark_search",
            Column::Bool(found.iter().map(|x| x.1.dark_search).collect()),
        )
}

/// The rows of trace `roi` of `t`, identified by `key` (column name and value).
pub fn trace_rows(session: &str, key: (&str, u32), roi: usize, t: &SessionTraces) -> Table {
    let n = t.f.get(roi).map_or(0, |f| f.len());
    let col = |v: &[Vec<f32>]| Column::F32(v.get(roi).cloned().unwrap_or_default());
    let or_nan = |v: &[Vec<f32>]| {
        if v.is_empty() {
            Column::F32(vec![f32::NAN; n])
        } else {
            col(v)
        }
    };
    Table::new()
        .with("session", Column::Str(vec![session.to_string(); n]))
        .with(key.0, Column::U32(vec![key.1; n]))
        .with("frame", Column::U32((0..n as u32).collect()))
        .with("f", col(&t.f))
        .with("fneu", col(&t.fneu))
        .with("dff", col(&t.dff))
        .with("spikes", or_nan(&t.spikes))
        .with("dff_denoised", or_nan(&t.dff_denoised))
}
