//! The ground-truth simulator: a longitudinal two-photon ablation experiment.
//!
//! In: a [`SimConfig`] (a preset plus overrides) and a seed. Out: an experiment on
//! disk exactly as CONTRACT.md describes it (manifest, int16 TIFF stacks per
//! session split into several files, stimuli.csv, ablation_targets.csv,
//! cell_types.csv) and a `truth/` folder of Parquet tables (see [`truth`]).
//!
//! The model, stage by stage: [`anatomy`] (ring-shaped somata, neuropil, vessels),
//! [`protocol`] (the sound set and trial schedule), [`tuning`] (response modes,
//! turnover, drift, the cohorts' ablation effects after Noda et al. 2025),
//! [`activity`] (spikes → GCaMP fluorescence), [`motion`] (rigid wander and
//! optional warp), [`render`] (optics and detector noise). Every random draw comes
//! from a stream named by (seed, purpose, index) ([`rng`]), and frames are rendered
//! in parallel but written in order, so the same seed gives the same bytes
//! whatever the thread count. Memory is bounded by one session's traces and a
//! batch of frames.

pub mod activity;
pub mod anatomy;
pub mod config;
pub mod motion;
pub mod protocol;
pub mod render;
pub mod rng;
pub mod study;
pub mod truth;
pub mod tuning;

pub use config::{Indicator, Overrides, SimConfig, PRESETS};

use crate::config::{write_manifest, AblationDoc, ManifestDoc, SessionDoc};
use crate::error::{Error, Result};
use crate::io::csv::{write_cell_types, write_stimuli, write_targets, CellKind, Position};
use crate::io::tiff::{PixelType, TiffWriter, WriteOptions};
use crate::progress::Progress;
use rand::Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use render::{DayTransform, SessionRenderer};
use rng::{stream, Purpose};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Frames rendered in parallel before being written in order.
const RENDER_BATCH: usize = 32;

/// What a simulation produced.
#[derive(Debug, Clone)]
pub struct Summary {
    pub out: PathBuf,
    pub manifest: PathBuf,
    pub sessions: usize,
    pub frames: usize,
    pub cells: usize,
    pub targets: usize,
    pub responsive_fraction_pre: f64,
    /// Baseline-normalised true map diagonal per session.
    pub diagonal_norm: Vec<(String, f64)>,
    /// Rendering + writing throughput, frames per second.
    pub frames_per_second: f64,
}

/// Removes a staging folder unless disarmed.
struct Staging(Option<PathBuf>);

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

fn create_dir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| Error::output(p, e))
}

/// Refuse to replace a folder that holds something other than an experiment.
fn check_destination(out: &Path, overwrite: bool) -> Result<()> {
    let Ok(mut entries) = std::fs::read_dir(out) else {
        return Ok(()); // does not exist yet
    };
    if entries.next().is_none() {
        return Ok(());
    }
    if !overwrite {
        return Err(Error::usage(format!(
            "{} already exists and is not empty; choose another --out or pass --overwrite",
            out.display()
        )));
    }
    if !out.join("experiment.toml").exists() {
        return Err(Error::usage(format!(
            "{} is not a simulated experiment (no experiment.toml); refusing to overwrite it",
            out.display()
        )));
    }
    Ok(())
}

/// The FOV placement of session `k` relative to the reference session.
pub fn day_transform(cfg: &SimConfig, seed: u64, k: usize) -> DayTransform {
    let id = DayTransform::identity(cfg.width, cfg.height);
    if cfg.days[k] == cfg.reference_day {
        return id;
    }
    let mut rng = stream(seed, Purpose::DayModel, 2, k as u64);
    let mut n = || rng.sample::<f64, _>(StandardNormal);
    DayTransform {
        dx: cfg.day_shift_sd_px * n(),
        dy: cfg.day_shift_sd_px * n(),
        rotation_rad: (cfg.day_rotation_sd_deg * n()).to_radians(),
        ..id
    }
}

/// Simulate an experiment into `out` (created; see [`check_destination`]).
pub fn simulate(
    cfg: &SimConfig,
    seed: u64,
    out: &Path,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<Summary> {
    cfg.validate()?;
    check_destination(out, overwrite)?;
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_dir(parent)?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "experiment".into());
    let staging_path = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging_path);
    create_dir(&staging_path)?;
    let mut staging = Staging(Some(staging_path.clone()));

    let mut summary = write_experiment(cfg, seed, &staging_path, true, progress)?;

    if out.exists() {
        std::fs::remove_dir_all(out).map_err(|e| Error::output(out, e))?;
    }
    std::fs::rename(&staging_path, out).map_err(|e| Error::output(out, e))?;
    staging.0 = None;
    summary.out = out.to_path_buf();
    summary.manifest = out.join("experiment.toml");
    Ok(summary)
}

/// Only the model and its truth tables, without rendering any frame: for studying
/// the model's statistics quickly (`truth/` is written into `dir`; there is no
/// movie, so `dir` is not an experiment).
pub fn simulate_truth_only(cfg: &SimConfig, seed: u64, dir: &Path) -> Result<Summary> {
    cfg.validate()?;
    check_destination(dir, false)?;
    create_dir(dir)?;
    write_experiment(cfg, seed, dir, false, &crate::progress::NoProgress)
}

fn write_experiment(
    cfg: &SimConfig,
    seed: u64,
    dir: &Path,
    render_movie: bool,
    progress: &dyn Progress,
) -> Result<Summary> {
    let scene = anatomy::build_scene(cfg, seed);
    let stimuli = protocol::stimulus_set(cfg);
    let model = tuning::build_model(cfg, &scene, &stimuli, seed);
    let mut truth = truth::TruthWriter::create(&dir.join("truth"), cfg.nonrigid, seed)?;
    let schedules: Vec<protocol::Schedule> = (0..cfg.days.len())
        .map(|k| protocol::schedule(cfg, seed, k, stimuli.len()))
        .collect::<Result<_>>()?;
    let total_frames: usize = schedules.iter().map(|s| s.n_frames).sum();
    progress.start("simulate", total_frames as u64);
    let started = Instant::now();
    let mut session_docs = Vec::new();
    for (k, &day) in cfg.days.iter().enumerate() {
        let id = SimConfig::session_id(day);
        let schedule = &schedules[k];
        let day_model = &model.days[k];
        let activity = activity::simulate_session(cfg, seed, k, day_model, model.n_modes, schedule);
        let motion = motion::session_motion(cfg, seed, k, schedule.n_frames);
        let transform = day_transform(cfg, seed, k);
        if render_movie {
            let session_dir = dir.join(&id);
            create_dir(&session_dir)?;
            let renderer = SessionRenderer::new(
                cfg, &scene, day_model, &activity, &motion, transform, seed, k,
            );
            write_session_movie(
                cfg,
                &renderer,
                &session_dir,
                &id,
                schedule.n_frames,
                progress,
            )?;
            write_stimuli(&session_dir.join("stimuli.csv"), &schedule.events(&stimuli))?;
        }
        truth.add_session(
            cfg, &id, day, day_model, &activity, &motion, transform, schedule,
        )?;
        session_docs.push(SessionDoc {
            id: id.clone(),
            day,
            tiff: vec![format!("{id}/*.tif")],
            stimuli: Some(format!("{id}/stimuli.csv")),
            ..Default::default()
        });
    }
    progress.finish();
    let elapsed = started.elapsed().as_secs_f64();
    let t = truth.finish(cfg, &scene, &model, &stimuli)?;
    if render_movie {
        write_experiment_files(cfg, seed, dir, &scene, &model, session_docs)?;
    }
    Ok(Summary {
        out: dir.to_path_buf(),
        manifest: dir.join("experiment.toml"),
        sessions: cfg.days.len(),
        frames: total_frames,
        cells: scene.cells.len(),
        targets: model.targets.len(),
        responsive_fraction_pre: t.responsive_fraction_pre,
        diagonal_norm: cfg
            .days
            .iter()
            .map(|&d| SimConfig::session_id(d))
            .zip(t.diagonal_norm)
            .collect(),
        frames_per_second: total_frames as f64 / elapsed.max(1e-9),
    })
}

/// The manifest, the CSV files and a README beside the sessions.
fn write_experiment_files(
    cfg: &SimConfig,
    seed: u64,
    dir: &Path,
    scene: &anatomy::Scene,
    model: &tuning::Model,
    session_docs: Vec<SessionDoc>,
) -> Result<()> {
    write_targets(
        &dir.join("ablation_targets.csv"),
        &target_positions(cfg, scene, model, seed),
    )?;
    write_cell_types(&dir.join("cell_types.csv"), &interneuron_positions(scene))?;
    let manifest = ManifestDoc {
        name: cfg.name.clone(),
        fs: Some(cfg.fs),
        reference: Some(SimConfig::session_id(cfg.reference_day)),
        channels: cfg.structural_channel.then_some(2),
        functional_channel: cfg.structural_channel.then_some(0),
        structural_channel: cfg.structural_channel.then_some(1),
        cell_types: Some("cell_types.csv".into()),
        um_per_pixel: Some(cfg.um_per_pixel),
        depth_um: Some(cfg.depth_um),
        sessions: session_docs,
        ablation: Some(AblationDoc {
            after_day: cfg.ablation_after_day,
            targets: "ablation_targets.csv".into(),
        }),
    };
    write_manifest(&dir.join("experiment.toml"), &manifest)?;
    crate::io::atomic::write_bytes(dir.join("README.md"), readme(cfg, seed).as_bytes())
}

/// Render a session's frames in parallel batches and write them, in order, into
/// TIFF files of `frames_per_file` frames (channels interleaved page by page).
fn write_session_movie(
    cfg: &SimConfig,
    renderer: &SessionRenderer,
    dir: &Path,
    id: &str,
    n_frames: usize,
    progress: &dyn Progress,
) -> Result<()> {
    let channels = if cfg.structural_channel { 2 } else { 1 };
    let n_files = n_frames.div_ceil(cfg.frames_per_file);
    for file in 0..n_files {
        let first = file * cfg.frames_per_file;
        let last = (first + cfg.frames_per_file).min(n_frames);
        let path = dir.join(format!("{id}_{:05}.tif", file + 1));
        let mut writer = TiffWriter::create(
            &path,
            cfg.width,
            cfg.height,
            PixelType::I16,
            WriteOptions {
                expected_pages: (last - first) * channels,
                bigtiff: None,
                deflate: cfg.deflate,
                software: Some(format!("cortexmap {} simulate", env!("CARGO_PKG_VERSION"))),
                description: Some(format!(
                    "cortexmap simulated movie\nsession = {id}\nfs = {}\nchannels = {channels}\nfirst_frame = {first}",
                    cfg.fs
                )),
            },
        )?;
        for start in (first..last).step_by(RENDER_BATCH) {
            let end = (start + RENDER_BATCH).min(last);
            let frames: Vec<render::Frame> = (start..end)
                .into_par_iter()
                .map(|f| renderer.frame(f))
                .collect();
            for fr in &frames {
                writer.write_page_i16(&fr.functional)?;
                if let Some(s) = &fr.structural {
                    writer.write_page_i16(s)?;
                }
            }
            progress.advance((end - start) as u64);
        }
        writer.finish()?;
    }
    Ok(())
}

/// Ablation target positions as the experimenter would note them: the true
/// centre plus targeting jitter, with the cell's type.
fn target_positions(
    cfg: &SimConfig,
    scene: &anatomy::Scene,
    model: &tuning::Model,
    seed: u64,
) -> Vec<Position> {
    let mut rng = stream(seed, Purpose::Ablation, 2, 0);
    model
        .targets
        .iter()
        .map(|&(i, _)| {
            let c = &scene.cells[i];
            let mut n = || cfg.target_jitter_px * rng.sample::<f64, _>(StandardNormal);
            Position {
                x: c.x + n(),
                y: c.y + n(),
                kind: Some(if c.inhibitory {
                    CellKind::Inhibitory
                } else {
                    CellKind::Excitatory
                }),
            }
        })
        .collect()
}

/// Interneuron positions, as a tagBFP image would mark them.
fn interneuron_positions(scene: &anatomy::Scene) -> Vec<Position> {
    scene
        .cells
        .iter()
        .filter(|c| c.inhibitory)
        .map(|c| Position {
            x: c.x,
            y: c.y,
            kind: Some(CellKind::Inhibitory),
        })
        .collect()
}

fn readme(cfg: &SimConfig, seed: u64) -> String {
    format!(
        "# Simulated experiment `{name}`\n\n\
         Written by `cortexmap simulate --preset {preset} --seed {seed}` (cortexmap {ver}).\n\
         Cohort: {cohort}. {n} cells, {w}x{h} px, {fs} Hz, days {days:?}, ablation after day {after}.\n\n\
         - `experiment.toml`: the manifest (CONTRACT.md).\n\
         - `d<day>/`: int16 TIFF stacks and `stimuli.csv` per session.\n\
         - `ablation_targets.csv`, `cell_types.csv`: reference-frame positions.\n\
         - `truth/`: ground truth as Parquet tables; `truth/simulation.toml` holds every parameter.\n\
         See docs/simulator.md in the cortexmap repository for the model and every truth column.\n",
        name = cfg.name,
        preset = cfg.preset,
        ver = env!("CARGO_PKG_VERSION"),
        cohort = cfg.cohort,
        n = cfg.n_cells,
        w = cfg.width,
        h = cfg.height,
        fs = cfg.fs,
        days = cfg.days,
        after = cfg.ablation_after_day,
    )
}
