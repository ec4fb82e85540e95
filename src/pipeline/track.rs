//! The `track` stage of a run: reads the detect stage's ROIs and images from the
//! run folder, tracks cells across sessions ([`crate::track`]), transfers the
//! footprints of cells missing in a session there and extracts their traces
//! ([`super::transfer`]), and writes `cells.parquet`, `alignment.parquet`,
//! `track_pairs.parquet`, `rois_ref.parquet`, `transferred_rois.parquet` and
//! `transferred_traces.parquet`.

use super::RunLayout;
use crate::config::{Experiment, Params};
use crate::error::{Error, Result};
use crate::io::table::{read_table, write_table, Column, Table};
use crate::progress::Progress;
use crate::track::align::AlignImage;
use crate::track::footprint::TrackRoi;
use crate::track::{track_sessions, AblationInput, TrackSession, Tracking};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Read a single-page float image written by the run.
pub fn read_image(path: &Path) -> Result<AlignImage> {
    let (width, height, data) = crate::io::tiff::read_image_f32(path)?;
    Ok(AlignImage {
        width,
        height,
        data,
    })
}

/// The pixels of every ROI (cells or not) in rois.parquet, by session id.
fn roi_pixels(t: &Table, path: &Path) -> Result<BTreeMap<String, Vec<Vec<u32>>>> {
    let (sess, pixels) = (t.strs(path, "session")?, t.lists_u32(path, "pixels")?);
    let mut out: BTreeMap<String, Vec<Vec<u32>>> = BTreeMap::new();
    for (s, p) in sess.iter().zip(pixels) {
        out.entry(s.clone()).or_default().push(p.clone());
    }
    Ok(out)
}

/// The corrected frame stores the footprint transfer reads; checked before the
/// track part starts, so a run that cannot finish it changes nothing.
pub fn check_transfer_frames(exp: &Experiment, layout: &RunLayout) -> Result<()> {
    for s in &exp.sessions {
        let store = layout.store(&s.id);
        if !store.exists() {
            return Err(Error::input(
                &store,
                "the corrected frame store is missing: the track stage extracts the traces \
                 of transferred footprints from it (rerun from ingest, or set [track] \
                 transfer = false)",
            ));
        }
    }
    Ok(())
}

/// ROIs of every session in rois.parquet, by session id.
fn track_rois(t: &Table, path: &Path, cells_only: bool) -> Result<BTreeMap<String, Vec<TrackRoi>>> {
    let (sess, roi, cx, cy) = (
        t.strs(path, "session")?,
        t.u32s(path, "roi")?,
        t.f32s(path, "centroid_x")?,
        t.f32s(path, "centroid_y")?,
    );
    let (pixels, weights, is_cell) = (
        t.lists_u32(path, "pixels")?,
        t.lists_f32(path, "weights")?,
        t.bools(path, "is_cell")?,
    );
    // Written by cortexmap's detect stage; other tools' tables may lack them.
    let source = t.strs(path, "source").ok();
    let snr = t.f32s(path, "snr").ok();
    let mut out: BTreeMap<String, Vec<TrackRoi>> = BTreeMap::new();
    for i in 0..sess.len() {
        if cells_only && !is_cell[i] {
            continue;
        }
        if !(cx[i].is_finite() && cy[i].is_finite()) {
            return Err(Error::input(
                path,
                format!(
                    "session '{}' ROI {} has a non-finite centroid",
                    sess[i], roi[i]
                ),
            ));
        }
        out.entry(sess[i].clone()).or_default().push(TrackRoi {
            roi: roi[i],
            x: cx[i] as f64,
            y: cy[i] as f64,
            pixels: pixels[i].clone(),
            weights: weights[i].clone(),
            anatomical: source.is_some_and(|s| s[i] == "anatomy"),
            snr: snr.map_or(f32::INFINITY, |s| s[i]),
        });
    }
    Ok(out)
}

/// The image a session is aligned by: the structural channel's mean when the run
/// has one (nuclei are sharp, stable landmarks), else the enhanced mean.
fn alignment_image(layout: &RunLayout, session: &str) -> Result<AlignImage> {
    let structural = layout.image(session, "structural_mean");
    if structural.exists() {
        return read_image(&structural);
    }
    let enhanced = layout.image(session, "enhanced");
    if !enhanced.exists() {
        return Err(Error::input(
            &enhanced,
            "the detect stage's enhanced mean image is missing; rerun from detect",
        ));
    }
    read_image(&enhanced)
}

/// The track stage over the run folder.
pub fn run_track(
    exp: &Experiment,
    layout: &RunLayout,
    params: &Params,
    progress: &dyn Progress,
) -> Result<Tracking> {
    let rois_path = layout.table("rois");
    if !rois_path.exists() {
        return Err(Error::input(
            &rois_path,
            "the track stage needs rois.parquet from the detect stage",
        ));
    }
    let roi_table = read_table(&rois_path)?;
    let mut rois = track_rois(&roi_table, &rois_path, params.track.cells_only)?;
    let mut sessions = Vec::with_capacity(exp.sessions.len());
    for s in &exp.sessions {
        let image = alignment_image(layout, &s.id)?;
        sessions.push(TrackSession {
            id: s.id.clone(),
            day: s.day,
            width: image.width,
            height: image.height,
            rois: rois.remove(&s.id).unwrap_or_default(),
            image,
        });
    }
    let reference = exp
        .sessions
        .iter()
        .position(|s| s.id == exp.reference)
        .ok_or_else(|| Error::internal("the reference session is not in the manifest"))?;
    let ablation = exp.ablation.as_ref().map(|a| AblationInput {
        after_day: a.after_day,
        targets: &a.targets,
        targets_file: &a.targets_path,
    });
    let types = exp.cell_types.clone().unwrap_or_default();
    let tracking = track_sessions(
        &sessions,
        reference,
        ablation.as_ref(),
        &types,
        &params.track,
        progress,
    )?;
    let (summaries, boxes, roi_pixels) = if params.track.transfer {
        let (s, b) = super::resume_before_detect(exp, layout)?;
        (s, b, roi_pixels(&roi_table, &rois_path)?)
    } else {
        (Vec::new(), Vec::new(), BTreeMap::new())
    };
    let plan = super::transfer::run_transfer(
        layout,
        &summaries,
        &boxes,
        &sessions,
        &roi_pixels,
        &tracking,
        exp.ablation.as_ref().map(|a| a.after_day),
        params,
        progress,
    )?;
    let transferred: HashSet<(usize, usize)> = plan.iter().map(|t| (t.cell, t.session)).collect();
    let scale = Scale {
        um_per_pixel: exp.um_per_pixel,
        depth_um: exp.depth_um,
    };
    write_tracking(
        layout,
        &sessions,
        &tracking,
        (exp.cell_types.is_some(), scale),
        &transferred,
    )?;
    Ok(tracking)
}

/// The physical scale of reference coordinates, from the manifest
/// (`um_per_pixel`, `depth_um`); either may be unknown.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Scale {
    pub um_per_pixel: Option<f64>,
    pub depth_um: Option<f64>,
}

/// Write cells.parquet, alignment.parquet, track_pairs.parquet and rois_ref.parquet.
/// `typed`: the experiment has cell types. `transferred` holds the (cell, session
/// index) pairs whose trace comes from a transferred footprint.
pub fn write_tracking(
    layout: &RunLayout,
    sessions: &[TrackSession],
    t: &Tracking,
    (typed, scale): (bool, Scale),
    transferred: &HashSet<(usize, usize)>,
) -> Result<()> {
    write_table(
        layout.table("cells"),
        &cells_table(sessions, t, (typed, scale), transferred),
    )?;
    write_table(layout.table("alignment"), &alignment_table(sessions, t))?;
    write_table(layout.table("track_pairs"), &pairs_table(sessions, t))?;
    write_table(layout.table("rois_ref"), &rois_ref_table(sessions, t))?;
    Ok(())
}

/// One row per tracked ROI: its footprint moved into reference coordinates
/// (pixels index the reference session's frame; weights have unit norm).
pub fn rois_ref_table(sessions: &[TrackSession], t: &Tracking) -> Table {
    let f = &t.ref_footprints;
    Table::new()
        .with(
            "session",
            Column::Str(f.iter().map(|x| sessions[x.0].id.clone()).collect()),
        )
        .with("roi", Column::U32(f.iter().map(|x| x.1).collect()))
        .with(
            "pixels",
            Column::ListU32(f.iter().map(|x| x.2.pixels.clone()).collect()),
        )
        .with(
            "weights",
            Column::ListF32(f.iter().map(|x| x.2.weights.clone()).collect()),
        )
}

/// One row per tracked cell × session.
pub fn cells_table(
    sessions: &[TrackSession],
    t: &Tracking,
    (typed, scale): (bool, Scale),
    transferred: &HashSet<(usize, usize)>,
) -> Table {
    let um = |px: f64| scale.um_per_pixel.map(|u| (px * u) as f32);
    let mut c = CellColumns::default();
    for (id, cell) in t.cells.iter().enumerate() {
        let n_sessions = cell.rois.iter().flatten().count() as u32;
        for (s, sess) in sessions.iter().enumerate() {
            c.cell.push(id as u32);
            c.session.push(sess.id.clone());
            c.day.push(sess.day);
            c.roi.push(cell.rois[s]);
            c.transferred.push(transferred.contains(&(id, s)));
            c.x_ref.push(cell.x_ref as f32);
            c.y_ref.push(cell.y_ref as f32);
            c.x_um.push(um(cell.x_ref));
            c.y_um.push(um(cell.y_ref));
            c.roi_x_ref.push(cell.ref_xy[s].map(|p| p.0 as f32));
            c.roi_y_ref.push(cell.ref_xy[s].map(|p| p.1 as f32));
            c.n_sessions.push(n_sessions);
            c.confidence.push(cell.confidence[s].map(|p| p as f32));
            c.ablated.push(cell.tags.ablated());
            c.targeted.push(cell.tags.target.is_some());
            c.outcome.push(
                cell.tags
                    .outcome
                    .map(|o| o.as_str().to_string())
                    .unwrap_or_default(),
            );
            c.cell_type
                .push(cell.tags.cell_type.clone().unwrap_or_default());
            c.inhibitory
                .push(typed.then(|| cell.tags.cell_type.as_deref() == Some("inhibitory")));
        }
    }
    let rows = c.cell.len();
    Table::new()
        .with("cell", Column::U32(c.cell))
        .with("session", Column::Str(c.session))
        .with("day", Column::I32(c.day))
        .with("roi", Column::OptU32(c.roi))
        .with("transferred", Column::Bool(c.transferred))
        .with("x_ref", Column::F32(c.x_ref))
        .with("y_ref", Column::F32(c.y_ref))
        .with("x_um", Column::OptF32(c.x_um))
        .with("y_um", Column::OptF32(c.y_um))
        .with(
            "z_um",
            Column::OptF32(vec![scale.depth_um.map(|d| d as f32); rows]),
        )
        .with("roi_x_ref", Column::OptF32(c.roi_x_ref))
        .with("roi_y_ref", Column::OptF32(c.roi_y_ref))
        .with("n_sessions", Column::U32(c.n_sessions))
        .with("ablated", Column::Bool(c.ablated))
        .with("targeted", Column::Bool(c.targeted))
        .with("ablation_outcome", Column::Str(c.outcome))
        .with("cell_type", Column::Str(c.cell_type))
        .with("inhibitory", Column::OptBool(c.inhibitory))
        // Set by the analysis stage (SCIENCE.md §3.6); unknown until then.
        .with("initially_silent", Column::OptBool(vec![None; rows]))
        .with("spatial_site", Column::OptBool(vec![None; rows]))
        .with("match_confidence", Column::OptF32(c.confidence))
}

#[derive(Default)]
struct CellColumns {
    cell: Vec<u32>,
    session: Vec<String>,
    day: Vec<i32>,
    roi: Vec<Option<u32>>,
    transferred: Vec<bool>,
    x_ref: Vec<f32>,
    y_ref: Vec<f32>,
    x_um: Vec<Option<f32>>,
    y_um: Vec<Option<f32>>,
    roi_x_ref: Vec<Option<f32>>,
    roi_y_ref: Vec<Option<f32>>,
    n_sessions: Vec<u32>,
    confidence: Vec<Option<f32>>,
    ablated: Vec<bool>,
    targeted: Vec<bool>,
    outcome: Vec<String>,
    cell_type: Vec<String>,
    inhibitory: Vec<Option<bool>>,
}

/// One row per session: its map to reference coordinates and its quality.
pub fn alignment_table(sessions: &[TrackSession], t: &Tracking) -> Table {
    let a = &t.alignments;
    let f =
        |g: &dyn Fn(&crate::track::align::Alignment) -> f64| Column::F64(a.iter().map(g).collect());
    let m = |i: usize, j: usize| f(&|x| x.transform.m[i][j]);
    Table::new()
        .with(
            "session",
            Column::Str(sessions.iter().map(|s| s.id.clone()).collect()),
        )
        .with("day", Column::I32(sessions.iter().map(|s| s.day).collect()))
        .with(
            "reference",
            Column::Bool((0..sessions.len()).map(|s| s == t.reference).collect()),
        )
        .with("dx", m(0, 2))
        .with("dy", m(1, 2))
        .with("rotation_deg", f(&|x| x.transform.rotation_deg()))
        .with("scale", f(&|x| x.transform.scale()))
        .with("a11", m(0, 0))
        .with("a12", m(0, 1))
        .with("a21", m(1, 0))
        .with("a22", m(1, 1))
        .with("image_corr", f(&|x| x.image_corr))
        .with("image_peak", f(&|x| x.image_peak))
        .with(
            "n_rois",
            Column::U32(sessions.iter().map(|s| s.rois.len() as u32).collect()),
        )
        .with(
            "n_pairs",
            Column::U32(a.iter().map(|x| x.n_pairs as u32).collect()),
        )
        .with("paired_fraction", f(&|x| x.paired_fraction))
        .with("residual_px", f(&|x| x.residual_px))
        .with(
            "point_fit",
            Column::Bool(a.iter().map(|x| x.point_fit).collect()),
        )
        .with(
            "nonrigid",
            Column::Bool(a.iter().map(|x| x.field.is_some()).collect()),
        )
        .with("nonrigid_residual_px", f(&|x| x.nonrigid_residual_px))
        .with(
            "nonrigid_rms_px",
            f(&|x| x.field.as_ref().map_or(0.0, |f| f.rms())),
        )
}

/// One row per candidate pair of ROIs: features and P(same cell).
pub fn pairs_table(sessions: &[TrackSession], t: &Tracking) -> Table {
    let p = &t.pairs;
    let id = |s: usize| sessions[s].id.clone();
    Table::new()
        .with(
            "session_a",
            Column::Str(p.iter().map(|x| id(x.session_a)).collect()),
        )
        .with("roi_a", Column::U32(p.iter().map(|x| x.roi_a).collect()))
        .with(
            "session_b",
            Column::Str(p.iter().map(|x| id(x.session_b)).collect()),
        )
        .with("roi_b", Column::U32(p.iter().map(|x| x.roi_b).collect()))
        .with(
            "distance_px",
            Column::F32(p.iter().map(|x| x.distance_px as f32).collect()),
        )
        .with(
            "similarity",
            Column::F32(p.iter().map(|x| x.similarity as f32).collect()),
        )
        .with(
            "p_same",
            Column::F32(p.iter().map(|x| x.p_same as f32).collect()),
        )
}

/// A session built from a footprint file: its ROIs, and the sum of its
/// footprints (each scaled to a peak of 1, lightly blurred) as alignment image.
pub fn footprint_session(
    id: &str,
    day: i32,
    file: &crate::io::footprints::FootprintFile,
) -> TrackSession {
    let (w, h) = (file.width, file.height);
    let mut image = vec![0f32; w * h];
    let mut rois = Vec::with_capacity(file.cells.len());
    for (k, (pixels, weights)) in file.cells.iter().enumerate() {
        let peak = weights.iter().copied().fold(0f32, f32::max);
        let (mut sx, mut sy, mut sw) = (0f64, 0f64, 0f64);
        for (&p, &wt) in pixels.iter().zip(weights) {
            let wt = wt.max(0.0);
            if peak > 0.0 {
                image[p as usize] += wt / peak;
            }
            sx += wt as f64 * (p as usize % w) as f64;
            sy += wt as f64 * (p as usize / w) as f64;
            sw += wt as f64;
        }
        if sw <= 0.0 {
            continue;
        }
        rois.push(TrackRoi {
            roi: k as u32,
            x: sx / sw,
            y: sy / sw,
            pixels: pixels.clone(),
            weights: weights.clone(),
            anatomical: false,
            snr: f32::INFINITY,
        });
    }
    TrackSession {
        id: id.to_string(),
        day,
        width: w,
        height: h,
        image: AlignImage {
            width: w,
            height: h,
            data: crate::imgproc::gaussian_blur(&image, w, h, 1.0),
        },
        rois,
    }
}

/// `cortexmap track-footprints`: track the footprints of `files` (one session
/// each, in order; sessions are named by file stem and numbered from 1 as days)
/// against session `reference` (an index into `files`), writing the track tables
/// into `out`.
pub fn track_footprint_files(
    files: &[std::path::PathBuf],
    reference: usize,
    out: &Path,
    params: &Params,
    progress: &dyn Progress,
) -> Result<(Vec<TrackSession>, Tracking)> {
    params.validate().map_err(Error::usage)?;
    if files.len() < 2 {
        return Err(Error::usage(
            "track-footprints needs at least two footprint files",
        ));
    }
    if reference >= files.len() {
        return Err(Error::usage(format!(
            "--reference {}: there are {} files",
            reference + 1,
            files.len()
        )));
    }
    let mut sessions = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let doc = crate::io::footprints::read_footprints(f)?;
        let stem = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("s{}", i + 1));
        if sessions.iter().any(|s: &TrackSession| s.id == stem) {
            return Err(Error::input(f, "two footprint files have the same name"));
        }
        sessions.push(footprint_session(&stem, i as i32 + 1, &doc));
    }
    let tracking = track_sessions(&sessions, reference, None, &[], &params.track, progress)?;
    std::fs::create_dir_all(out).map_err(|e| Error::output(out, e))?;
    let layout = RunLayout {
        root: out.to_path_buf(),
    };
    write_tracking(
        &layout,
        &sessions,
        &tracking,
        (false, Scale::default()),
        &HashSet::new(),
    )?;
    Ok((sessions, tracking))
}
