//! `cortexmap run`: the stages of DESIGN.md in order.
//!
//! In: an experiment manifest, parameters, an output folder. Out: the run folder.
//!
//! - `ingest` validates the whole experiment before writing anything (every TIFF's
//!   structure, channel layout, frame rate, stimulus onsets against the movie
//!   length), streams every session's functional channel once into a binary frame
//!   store `frames/<session>.raw` ([`crate::movie::store`]) and writes
//!   `sessions.parquet`.
//! - `motion` registers every session ([`crate::motion`]) into
//!   `frames/<session>.bin`, writes `motion.parquet`, `motion_qc.parquet`,
//!   `motion_blocks.parquet` (nonrigid) and `images/<session>_{reference,mean_raw,
//!   mean_corrected}.tif`. Unless `ingest.keep_raw`, the corrected frames are
//!   written over the raw store's own file, which is gone afterwards.
//!
//! - `detect` and `extract` ([`cells`]) find ROIs and their traces per session.
//! - `track` ([`track`]) aligns the sessions and tracks cells across them, then
//!   ([`transfer`]) extracts the traces of tracked cells in the sessions where they
//!   were not found, through footprints transferred from a session where they were.
//!
//! Later stages (analyze) attach here.

pub mod analyze;
pub mod cache;
mod cells;
mod spatial;
mod stability;
pub mod track;
mod transfer;

use crate::config::{load_experiment, load_experiment_without_movies, Experiment, Params, Session};
use crate::error::{Error, Result};
use crate::io::table::{write_table, Column, Table, TableWriter};
use crate::io::tiff::{write_image_f32, PixelType};
use crate::motion::{register_session, SessionMotion};
use crate::movie::store::{FrameStore, FrameStoreWriter, StoreDtype};
use crate::movie::{probe_movie, MovieInfo, MovieReader, MovieSpec};
use crate::progress::Progress;
use std::path::{Path, PathBuf};

/// The stages of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Ingest,
    Motion,
    Detect,
    Extract,
    Track,
    Analyze,
}

impl Stage {
    /// All stages this build implements, in order.
    pub const ALL: &'static [Stage] = &[
        Stage::Ingest,
        Stage::Motion,
        Stage::Detect,
        Stage::Extract,
        Stage::Track,
        Stage::Analyze,
    ];

    /// The stage's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Motion => "motion",
            Stage::Detect => "detect",
            Stage::Extract => "extract",
            Stage::Track => "track",
            Stage::Analyze => "analyze",
        }
    }

    /// Parse a stage name.
    pub fn parse(s: &str) -> Result<Stage> {
        Stage::ALL
            .iter()
            .copied()
            .find(|st| st.name() == s)
            .ok_or_else(|| {
                Error::usage(format!(
                    "unknown stage '{s}'; this build has: {}",
                    Stage::ALL
                        .iter()
                        .map(|s| s.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }
}

/// The tables the track stage writes.
pub const TRACK_TABLES: [&str; 6] = [
    "cells",
    "alignment",
    "track_pairs",
    "rois_ref",
    "transferred_rois",
    "transferred_traces",
];

/// The tables the analyze stage writes (cells.parquet is rewritten with
/// `initially_silent` and `spatial_site`).
pub const ANALYSIS_TABLES: [&str; 12] = [
    "trials",
    "tuning",
    "neurons",
    "rsm",
    "correlations",
    "correlation_summary",
    "map_summary",
    "map_similarity",
    "stability",
    "drift",
    "spatial",
    "cells",
];

/// One ingested session.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    pub id: String,
    pub day: i32,
    pub n_frames: usize,
    pub height: usize,
    pub width: usize,
    pub fs: f64,
    pub mean_intensity: f64,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub out: PathBuf,
    pub sessions: Vec<SessionSummary>,
    pub motion: Vec<(String, crate::motion::MotionQc)>,
    /// Per session: (ROIs, of which `is_cell`, cell diameter used).
    pub detection: Vec<(String, usize, usize, f64)>,
    /// The track stage's result, when it ran.
    pub tracking: Option<crate::track::Tracking>,
    /// The analyze stage's summary, when it ran.
    pub analysis: Option<analyze::AnalysisSummary>,
    pub tables: Vec<PathBuf>,
    /// Parts (by restart stage) skipped because their inputs, parameters and
    /// outputs were unchanged since the last run.
    pub skipped: Vec<Stage>,
}

/// The movie of a session's functional channel.
pub fn functional_movie(session: &Session) -> MovieSpec {
    MovieSpec {
        files: session.files.clone(),
        channels: session.channels,
        channel: session.functional_channel,
    }
}

/// Paths inside a run folder.
pub struct RunLayout {
    pub root: PathBuf,
}

impl RunLayout {
    pub fn raw_store(&self, session: &str) -> PathBuf {
        self.root.join("frames").join(format!("{session}.raw"))
    }
    pub fn store(&self, session: &str) -> PathBuf {
        self.root.join("frames").join(format!("{session}.bin"))
    }
    pub fn image(&self, session: &str, what: &str) -> PathBuf {
        self.root
            .join("images")
            .join(format!("{session}_{what}.tif"))
    }
    pub fn table(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.parquet"))
    }
}

/// The frame rate: the manifest's `fs`, else the ScanImage header's.
fn frame_rate(exp: &Experiment, session: &Session, info: &MovieInfo) -> Result<f64> {
    if let Some(fs) = exp.fs {
        return Ok(fs);
    }
    info.scanimage
        .as_ref()
        .and_then(|m| m.frame_rate)
        .filter(|f| f.is_finite() && *f > 0.0)
        .ok_or_else(|| {
            Error::input(
                &exp.manifest,
                format!(
                    "session '{}': no frame rate in the manifest (key 'fs') and none in the TIFF metadata",
                    session.id
                ),
            )
        })
}

/// Check everything about the inputs that can be checked without decoding pixels.
pub fn validate(exp: &Experiment) -> Result<Vec<(MovieInfo, f64)>> {
    exp.sessions
        .iter()
        .map(|s| {
            let info = probe_movie(&functional_movie(s))?;
            exp.check_stimuli(s, info.n_frames as u64)?;
            let fs = frame_rate(exp, s, &info)?;
            Ok((info, fs))
        })
        .collect()
}

/// Integer data keep 2 bytes per pixel; other types are stored as float32.
fn store_dtype(pixel: PixelType) -> StoreDtype {
    match pixel {
        PixelType::I16 | PixelType::U8 => StoreDtype::I16,
        _ => StoreDtype::F32,
    }
}

/// Stream a session's frames into its raw store; returns the mean intensity.
fn ingest_session(
    session: &Session,
    info: &MovieInfo,
    dest: &Path,
    params: &Params,
    progress: &dyn Progress,
) -> Result<f64> {
    let mut reader = MovieReader::open(&functional_movie(session))?;
    let mut writer =
        FrameStoreWriter::create(dest, info.height, info.width, store_dtype(info.pixel_type))?;
    let (mut sum, mut count) = (0.0f64, 0usize);
    while let Some(batch) = reader.read_batch(params.ingest.batch_frames)? {
        let frames = batch
            .frames
            .as_slice()
            .ok_or_else(|| Error::internal("frame batch is not contiguous"))?;
        sum += frames.iter().map(|&v| v as f64).sum::<f64>();
        count += frames.len();
        writer.write_frames(frames)?;
        progress.advance(batch.frames.shape()[0] as u64);
    }
    writer.finish()?;
    Ok(if count > 0 {
        sum / count as f64
    } else {
        f64::NAN
    })
}

fn sessions_table(sessions: &[SessionSummary]) -> Table {
    Table::new()
        .with(
            "session",
            Column::Str(sessions.iter().map(|s| s.id.clone()).collect()),
        )
        .with("day", Column::I32(sessions.iter().map(|s| s.day).collect()))
        .with(
            "n_frames",
            Column::U32(sessions.iter().map(|s| s.n_frames as u32).collect()),
        )
        .with(
            "height",
            Column::U32(sessions.iter().map(|s| s.height as u32).collect()),
        )
        .with(
            "width",
            Column::U32(sessions.iter().map(|s| s.width as u32).collect()),
        )
        .with("fs", Column::F64(sessions.iter().map(|s| s.fs).collect()))
        .with(
            "mean_intensity",
            Column::F64(sessions.iter().map(|s| s.mean_intensity).collect()),
        )
}

fn create_dir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| Error::output(p, e))
}

/// Run the pipeline on `manifest` into `out`, up to and including `until`
/// (default: every stage this build has).
pub fn run(
    manifest: &Path,
    out: &Path,
    params: &Params,
    until: Option<Stage>,
    from: Option<Stage>,
    progress: &dyn Progress,
) -> Result<RunSummary> {
    params.validate().map_err(Error::usage)?;
    let until = until.unwrap_or(*Stage::ALL.last().expect("stages exist"));
    if let Some(from) = from {
        if !cache::PARTS.contains(&from) {
            return Err(Error::usage(format!(
                "--from {}: a run can restart from 'ingest', 'detect', 'track' or 'analyze'",
                from.name()
            )));
        }
        if until < from {
            return Err(Error::usage(format!(
                "--until {} comes before --from {}",
                until.name(),
                from.name()
            )));
        }
    }
    // A restart after the movies were read does not need them: the raw TIFFs
    // may have been archived since.
    let exp = if from.is_some_and(|f| f >= Stage::Track) {
        load_experiment_without_movies(manifest)?
    } else {
        load_experiment(manifest)?
    };
    let layout = RunLayout {
        root: out.to_path_buf(),
    };
    create_dir(out)?;
    let mut book = Book::open(&exp, params, out, from)?;
    let from = match from {
        Some(f) => f,
        None => match cache::first_stale(&book.ledger, &book.keys, &exp, &layout, until, params) {
            Some(part) => part,
            None => return up_to_date(&exp, &layout, until),
        },
    };
    let skipped: Vec<Stage> = cache::PARTS.into_iter().filter(|p| *p < from).collect();
    if from == Stage::Track && until >= Stage::Track && params.track.transfer {
        track::check_transfer_frames(&exp, &layout)?;
    }
    cache::forget_from(&mut book.ledger, out, from)?;
    let mut tables = Vec::new();
    let (sessions, motion, detection) = if from >= Stage::Track {
        let sessions = resume_sessions(&exp, &layout)?;
        check_resumed_stimuli(&exp, &sessions)?;
        (sessions, Vec::new(), Vec::new())
    } else {
        session_stages(
            &exp,
            &layout,
            params,
            (from, until),
            progress,
            &mut tables,
            &mut book,
        )?
    };
    let mut tracking = None;
    if from <= Stage::Track && until >= Stage::Track {
        tracking = Some(track::run_track(&exp, &layout, params, progress)?);
        tables.extend(TRACK_TABLES.map(|t| layout.table(t)));
        book.done(Stage::Track)?;
    }
    let mut analysis = None;
    if until >= Stage::Analyze {
        analysis = Some(analyze::run_analyze(
            &exp, &sessions, &layout, params, progress,
        )?);
        tables.extend(ANALYSIS_TABLES.map(|t| layout.table(t)));
        book.done(Stage::Analyze)?;
        tables.push(crate::report::write_report(out)?);
    }
    Ok(RunSummary {
        out: out.to_path_buf(),
        sessions,
        motion,
        detection,
        tracking,
        analysis,
        tables,
        skipped,
    })
}

/// The ledger and the part keys of this run.
struct Book {
    ledger: cache::Ledger,
    keys: [u64; 4],
    root: PathBuf,
}

impl Book {
    /// With a forced restart (`from`), the part before it is taken as recorded.
    fn open(exp: &Experiment, params: &Params, root: &Path, from: Option<Stage>) -> Result<Book> {
        let mut ledger = cache::Ledger::load(root);
        ledger.cortexmap = env!("CARGO_PKG_VERSION").to_string();
        ledger.manifest = exp
            .manifest
            .canonicalize()
            .unwrap_or_else(|_| exp.manifest.clone());
        ledger.ablation_after_day = exp.ablation.as_ref().map(|a| a.after_day);
        let known = from
            .and_then(|f| cache::PARTS.iter().position(|p| *p == f))
            .filter(|&i| i > 0)
            .and_then(|i| Some((i - 1, ledger.key(cache::PARTS[i - 1].name())?)));
        Ok(Book {
            keys: cache::part_keys(exp, params, known)?,
            ledger,
            root: root.to_path_buf(),
        })
    }

    /// Record the part that starts at `part` as complete.
    fn done(&mut self, part: Stage) -> Result<()> {
        let i = cache::PARTS
            .iter()
            .position(|p| *p == part)
            .ok_or_else(|| Error::internal(format!("'{}' starts no part", part.name())))?;
        self.ledger.complete(&self.root, part.name(), self.keys[i])
    }
}

/// Nothing changed since the last run up to `until`: report that, rewriting only
/// a missing report.
fn up_to_date(exp: &Experiment, layout: &RunLayout, until: Stage) -> Result<RunSummary> {
    let sessions = resume_sessions(exp, layout)?;
    let mut tables = Vec::new();
    if until >= Stage::Analyze && !crate::report::report_path(&layout.root).exists() {
        tables.push(crate::report::write_report(&layout.root)?);
    }
    Ok(RunSummary {
        out: layout.root.clone(),
        sessions,
        motion: Vec::new(),
        detection: Vec::new(),
        tracking: None,
        analysis: None,
        tables,
        skipped: cache::PARTS.into_iter().filter(|p| *p <= until).collect(),
    })
}

/// A run restarted after the per-session stages still checks the stimulus onsets
/// against the recorded movie lengths (the stimulus files may have changed).
fn check_resumed_stimuli(exp: &Experiment, sessions: &[SessionSummary]) -> Result<()> {
    for (s, summary) in exp.sessions.iter().zip(sessions) {
        exp.check_stimuli(s, summary.n_frames as u64)?;
    }
    Ok(())
}

/// What the per-session stages report: the sessions, each session's motion QC,
/// and per session (ROIs, of which `is_cell`, cell diameter).
type SessionStages = (
    Vec<SessionSummary>,
    Vec<(String, crate::motion::MotionQc)>,
    Vec<(String, usize, usize, f64)>,
);

/// The per-session stages (ingest, motion, detect, extract) that `from..=until`
/// covers; their tables are added to `tables`.
fn session_stages(
    exp: &Experiment,
    layout: &RunLayout,
    params: &Params,
    (from, until): (Stage, Stage),
    progress: &dyn Progress,
    tables: &mut Vec<PathBuf>,
    book: &mut Book,
) -> Result<SessionStages> {
    let infos = validate(exp)?;
    if until >= Stage::Motion && from < Stage::Detect {
        for (s, (info, _)) in exp.sessions.iter().zip(&infos) {
            crate::motion::check_registrable(
                &s.id,
                info.n_frames,
                info.width,
                info.height,
                &params.motion,
            )?;
        }
    }
    let mut motion = Vec::new();
    let (sessions, boxes) = if from >= Stage::Detect {
        resume_before_detect(exp, layout)?
    } else {
        create_dir(&layout.root.join("frames"))?;
        let total: usize = infos.iter().map(|(i, _)| i.n_frames).sum();
        progress.start("ingest", total as u64);
        let mut sessions = Vec::with_capacity(exp.sessions.len());
        for (s, (info, fs)) in exp.sessions.iter().zip(&infos) {
            let mean = ingest_session(s, info, &layout.raw_store(&s.id), params, progress)?;
            sessions.push(SessionSummary {
                id: s.id.clone(),
                day: s.day,
                n_frames: info.n_frames,
                height: info.height,
                width: info.width,
                fs: *fs,
                mean_intensity: mean,
            });
        }
        progress.finish();
        tables.push(layout.table("sessions"));
        write_table(&tables[0], &sessions_table(&sessions))?;
        if until >= Stage::Motion {
            motion = run_motion(exp, layout, params, progress)?;
            tables.extend(["motion", "motion_qc"].map(|t| layout.table(t)));
            if params.motion.nonrigid {
                tables.push(layout.table("motion_blocks"));
            }
            book.done(Stage::Ingest)?;
        }
        let boxes = cells::boxes_of(&motion);
        (sessions, boxes)
    };
    let mut detection = Vec::new();
    if until >= Stage::Detect {
        let found = cells::run_detect(exp, &sessions, &boxes, layout, params, progress)?;
        tables.extend(["rois", "detection"].map(|t| layout.table(t)));
        if until >= Stage::Extract {
            cells::run_extract(&sessions, &boxes, &found, layout, params, progress)?;
            tables.push(layout.table("traces"));
            book.done(Stage::Detect)?;
        }
        detection = found
            .iter()
            .map(|(id, d)| {
                (
                    id.clone(),
                    d.rois.len(),
                    d.rois.iter().filter(|r| r.is_cell).count(),
                    d.diameter,
                )
            })
            .collect();
    }
    Ok((sessions, motion, detection))
}

/// The sessions, and each session's valid box `[x0, x1, y0, y1]`.
type Resumed = (Vec<SessionSummary>, Vec<(String, [usize; 4])>);

/// The sessions an earlier run recorded in sessions.parquet, in manifest order.
fn resume_sessions(exp: &Experiment, layout: &RunLayout) -> Result<Vec<SessionSummary>> {
    let sp = layout.table("sessions");
    if !sp.exists() {
        return Err(Error::input(
            &layout.root,
            "sessions.parquet from an earlier run is missing: --from detect, track or analyze \
             needs the earlier stages' tables; run from ingest",
        ));
    }
    let st = crate::io::table::read_table(&sp)?;
    let ids = st.strs(&sp, "session")?;
    exp.sessions
        .iter()
        .map(|s| {
            let i = ids.iter().position(|x| x == &s.id).ok_or_else(|| {
                Error::input(
                    &sp,
                    format!("session '{}' of the manifest is not in this run", s.id),
                )
            })?;
            Ok(SessionSummary {
                id: s.id.clone(),
                day: s.day,
                n_frames: st.u32s(&sp, "n_frames")?[i] as usize,
                height: st.u32s(&sp, "height")?[i] as usize,
                width: st.u32s(&sp, "width")?[i] as usize,
                fs: st.f64s(&sp, "fs")?[i],
                mean_intensity: st.f64s(&sp, "mean_intensity")?[i],
            })
        })
        .collect()
}

/// What the stages before `detect` left in the run folder: the sessions and the
/// valid boxes, with every session's corrected frame store present.
pub(super) fn resume_before_detect(exp: &Experiment, layout: &RunLayout) -> Result<Resumed> {
    let sessions = resume_sessions(exp, layout)?;
    let qp = layout.table("motion_qc");
    if !qp.exists() {
        return Err(Error::input(
            &layout.root,
            "--from detect needs motion_qc.parquet from an earlier run; it is missing",
        ));
    }
    let qt = crate::io::table::read_table(&qp)?;
    let qids = qt.strs(&qp, "session")?;
    let mut boxes = Vec::new();
    for s in &exp.sessions {
        let j = qids.iter().position(|x| x == &s.id).ok_or_else(|| {
            Error::input(
                &qp,
                format!("session '{}' has no motion QC in this run", s.id),
            )
        })?;
        let v = |c: &str| -> Result<usize> { Ok(qt.u32s(&qp, c)?[j] as usize) };
        boxes.push((
            s.id.clone(),
            [
                v("valid_x0")?,
                v("valid_x1")?,
                v("valid_y0")?,
                v("valid_y1")?,
            ],
        ));
        let store = layout.store(&s.id);
        if !store.exists() {
            return Err(Error::input(
                &store,
                "the corrected frame store is missing; rerun from ingest",
            ));
        }
    }
    Ok((sessions, boxes))
}

/// The motion stage over every session.
fn run_motion(
    exp: &Experiment,
    layout: &RunLayout,
    params: &Params,
    progress: &dyn Progress,
) -> Result<Vec<(String, crate::motion::MotionQc)>> {
    create_dir(&layout.root.join("images"))?;
    // A rigid rerun must not leave an earlier nonrigid run's block table behind.
    let stale = layout.table("motion_blocks");
    if !params.motion.nonrigid && stale.exists() {
        std::fs::remove_file(&stale).map_err(|e| Error::output(&stale, e))?;
    }
    let mut shifts = TableWriter::create(layout.table("motion"))?;
    let mut blocks = params
        .motion
        .nonrigid
        .then(|| TableWriter::create(layout.table("motion_blocks")))
        .transpose()?;
    let mut qcs = Vec::new();
    for s in &exp.sessions {
        let raw_path = layout.raw_store(&s.id);
        let input = FrameStore::open(&raw_path)?;
        let (dest, (h, w), dtype) = (
            layout.store(&s.id),
            (input.height(), input.width()),
            input.dtype(),
        );
        let mut writer = if params.ingest.keep_raw {
            FrameStoreWriter::create(&dest, h, w, dtype)?
        } else {
            // The raw store is not kept: the corrected frames go over it.
            FrameStoreWriter::recycle(&raw_path, &dest, h, w, dtype)?
        };
        let m = register_session(&s.id, &input, &mut writer, &params.motion, progress)?;
        writer.finish()?;
        shifts.write(&motion_rows(&s.id, &m))?;
        if let (Some(w), Some((grid, rows))) = (blocks.as_mut(), &m.blocks) {
            w.write(&block_rows(&s.id, grid, rows))?;
        }
        for (what, img) in [
            ("reference", &m.reference),
            ("mean_raw", &m.mean_raw),
            ("mean_corrected", &m.mean_corrected),
        ] {
            write_image_f32(
                &layout.image(&s.id, what),
                w,
                h,
                img,
                &format!("cortexmap {what} image of session {}", s.id),
            )?;
        }
        drop(input);
        qcs.push((s.id.clone(), m.qc));
    }
    shifts.finish(&motion_rows("", &empty_motion()))?;
    if let Some(w) = blocks {
        w.finish(&block_rows(
            "",
            &crate::motion::nonrigid::BlockGrid::new(16, 16, 16),
            &[],
        ))?;
    }
    write_table(layout.table("motion_qc"), &qc_table(&qcs))?;
    Ok(qcs)
}

fn empty_motion() -> SessionMotion {
    SessionMotion {
        frames: vec![],
        blocks: None,
        reference: vec![],
        mean_raw: vec![],
        mean_corrected: vec![],
        reference_seconds: 0.0,
        register_seconds: 0.0,
        qc: crate::motion::MotionQc {
            crispness_raw: 0.0,
            crispness_corrected: 0.0,
            mean_corr: 0.0,
            bidi_offset: 0.0,
            bidi_applied: false,
            n_clamped: 0,
            n_constant: 0,
            max_abs_shift: 0.0,
            valid: [0; 4],
            clamped_values: 0,
        },
    }
}

fn motion_rows(session: &str, m: &SessionMotion) -> Table {
    let f = &m.frames;
    Table::new()
        .with("session", Column::Str(vec![session.to_string(); f.len()]))
        .with("frame", Column::U32((0..f.len() as u32).collect()))
        .with(
            "shift_x",
            Column::F32(f.iter().map(|r| r.shift_x).collect()),
        )
        .with(
            "shift_y",
            Column::F32(f.iter().map(|r| r.shift_y).collect()),
        )
        .with("corr", Column::F32(f.iter().map(|r| r.corr).collect()))
        .with("peak", Column::F32(f.iter().map(|r| r.peak).collect()))
        .with("snr", Column::F32(f.iter().map(|r| r.snr).collect()))
        .with(
            "clamped",
            Column::Bool(f.iter().map(|r| r.clamped).collect()),
        )
        .with(
            "constant",
            Column::Bool(f.iter().map(|r| r.constant).collect()),
        )
}

fn block_rows(
    session: &str,
    grid: &crate::motion::nonrigid::BlockGrid,
    rows: &[Vec<crate::motion::nonrigid::BlockShift>],
) -> Table {
    let nx = grid.x0.len();
    let (mut frame, mut block, mut cx, mut cy, mut sx, mut sy, mut snr) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for (f, r) in rows.iter().enumerate() {
        for (k, b) in r.iter().enumerate() {
            frame.push(f as u32);
            block.push(k as u32);
            cx.push(grid.centre_x(k % nx) as f32);
            cy.push(grid.centre_y(k / nx) as f32);
            sx.push(b.x);
            sy.push(b.y);
            snr.push(b.snr);
        }
    }
    Table::new()
        .with(
            "session",
            Column::Str(vec![session.to_string(); frame.len()]),
        )
        .with("frame", Column::U32(frame))
        .with("block", Column::U32(block))
        .with("block_x", Column::F32(cx))
        .with("block_y", Column::F32(cy))
        .with("shift_x", Column::F32(sx))
        .with("shift_y", Column::F32(sy))
        .with("snr", Column::F32(snr))
}

fn qc_table(qcs: &[(String, crate::motion::MotionQc)]) -> Table {
    let col_f64 = |f: &dyn Fn(&crate::motion::MotionQc) -> f64| {
        Column::F64(qcs.iter().map(|(_, q)| f(q)).collect())
    };
    let col_u32 = |f: &dyn Fn(&crate::motion::MotionQc) -> usize| {
        Column::U32(qcs.iter().map(|(_, q)| f(q) as u32).collect())
    };
    Table::new()
        .with(
            "session",
            Column::Str(qcs.iter().map(|(s, _)| s.clone()).collect()),
        )
        .with("crispness_raw", col_f64(&|q| q.crispness_raw))
        .with("crispness_corrected", col_f64(&|q| q.crispness_corrected))
        .with("mean_corr", col_f64(&|q| q.mean_corr))
        .with("bidi_offset", col_f64(&|q| q.bidi_offset))
        .with(
            "bidi_applied",
            Column::Bool(qcs.iter().map(|(_, q)| q.bidi_applied).collect()),
        )
        .with("n_clamped", col_u32(&|q| q.n_clamped))
        .with("n_constant", col_u32(&|q| q.n_constant))
        .with("max_abs_shift", col_f64(&|q| q.max_abs_shift))
        .with("valid_x0", col_u32(&|q| q.valid[0]))
        .with("valid_x1", col_u32(&|q| q.valid[1]))
        .with("valid_y0", col_u32(&|q| q.valid[2]))
        .with("valid_y1", col_u32(&|q| q.valid[3]))
        .with(
            "clamped_values",
            Column::U64(qcs.iter().map(|(_, q)| q.clamped_values).collect()),
        )
}
