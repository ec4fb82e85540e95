//! `cortexmap run`: the stages of DESIGN.md in order.
//!
//! In: an experiment manifest, parameters, an output folder. Out: the run folder's
//! tables. This release has the first stage, `ingest`: it validates the whole
//! experiment before writing anything (every TIFF's structure, channel layout,
//! frame rate, stimulus onsets against the movie length), then streams every frame
//! of every session once (catching truncated pages and NaN), and writes
//! `sessions.parquet`. Later stages (motion, detect, extract, track, analyze)
//! attach here.

use crate::config::{load_experiment, Experiment, Params, Session};
use crate::error::{Error, Result};
use crate::io::table::{write_table, Column, Table};
use crate::movie::{probe_movie, MovieInfo, MovieReader, MovieSpec};
use crate::progress::Progress;
use std::path::{Path, PathBuf};

/// The stages of a run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Ingest,
}

impl Stage {
    /// All stages this build implements, in order.
    pub const ALL: &'static [Stage] = &[Stage::Ingest];

    /// The stage's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
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
    pub tables: Vec<PathBuf>,
}

/// The movie of a session's functional channel.
pub fn functional_movie(session: &Session) -> MovieSpec {
    MovieSpec {
        files: session.files.clone(),
        channels: session.channels,
        channel: session.functional_channel,
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
fn validate(exp: &Experiment) -> Result<Vec<(MovieInfo, f64)>> {
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

/// Stream every frame of a session once; returns its mean intensity.
fn ingest_session(session: &Session, params: &Params, progress: &dyn Progress) -> Result<f64> {
    let mut reader = MovieReader::open(&functional_movie(session))?;
    let (mut sum, mut count) = (0.0f64, 0usize);
    while let Some(batch) = reader.read_batch(params.ingest.batch_frames)? {
        sum += batch.frames.iter().map(|&v| v as f64).sum::<f64>();
        count += batch.frames.len();
        progress.advance(batch.frames.shape()[0] as u64);
    }
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

/// Run the pipeline on `manifest` into `out`, up to and including `until`.
pub fn run(
    manifest: &Path,
    out: &Path,
    params: &Params,
    until: Option<Stage>,
    progress: &dyn Progress,
) -> Result<RunSummary> {
    let exp = load_experiment(manifest)?;
    let infos = validate(&exp)?;
    let _until = until.unwrap_or(Stage::Ingest);
    let total: usize = infos.iter().map(|(i, _)| i.n_frames).sum();
    progress.start("ingest", total as u64);
    let mut sessions = Vec::with_capacity(exp.sessions.len());
    for (s, (info, fs)) in exp.sessions.iter().zip(&infos) {
        let mean = ingest_session(s, params, progress)?;
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
    std::fs::create_dir_all(out).map_err(|e| Error::output(out, e))?;
    let table = out.join("sessions.parquet");
    write_table(&table, &sessions_table(&sessions))?;
    Ok(RunSummary {
        out: out.to_path_buf(),
        sessions,
        tables: vec![table],
    })
}
