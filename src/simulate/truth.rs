//! Ground-truth tables written beside a simulated experiment (`truth/`).
//!
//! In: the model, the anatomy and each session's activity and motion. Out: Parquet
//! tables in the contract's conventions (docs/simulator.md lists every column):
//! sessions, stimuli, per-frame shifts (and warp control points), per-frame true
//! ΔF/F and spikes, every cell's identity, state and flags per session, true
//! footprints, per-stimulus expected and realised responses, single-trial
//! responses, and the true representational maps and their summaries computed
//! over the spared cells exactly as SCIENCE.md §1.7 and §4 define them.

use super::activity::{trial_response, SessionActivity};
use super::anatomy::Scene;
use super::config::SimConfig;
use super::motion::{node_position, Motion, WARP_NODES};
use super::protocol::{Schedule, Stimulus};
use super::render::{footprint, DayTransform};
use super::tuning::{last_pre_ablation, CellState, Model, Outcome, RESPONSIVE_MIN_SPIKES};
use crate::analysis::maps;
use crate::config::Cohort;
use crate::error::Result;
use crate::io::table::{write_table, Column, Table, TableWriter};
use ndarray::Array2;
use std::path::{Path, PathBuf};

/// What the truth keeps of one session until the end.
struct SessionRecord {
    id: String,
    day: i32,
    n_frames: usize,
    transform: DayTransform,
    schedule: Schedule,
    /// responses[cell][trial]
    responses: Vec<Vec<f64>>,
}

/// Collects and writes the truth of one experiment.
pub struct TruthWriter {
    dir: PathBuf,
    traces: TableWriter,
    motion: TableWriter,
    warp: Option<TableWriter>,
    sessions: Vec<SessionRecord>,
    seed: u64,
}

fn str_col(v: impl IntoIterator<Item = String>) -> Column {
    Column::Str(v.into_iter().collect())
}

impl TruthWriter {
    /// Start writing into `dir` (created).
    pub fn create(dir: &Path, nonrigid: bool, seed: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| crate::error::Error::output(dir, e))?;
        Ok(TruthWriter {
            dir: dir.to_path_buf(),
            traces: TableWriter::create(dir.join("traces.parquet"))?,
            motion: TableWriter::create(dir.join("motion.parquet"))?,
            warp: if nonrigid {
                Some(TableWriter::create(dir.join("warp.parquet"))?)
            } else {
                None
            },
            sessions: Vec::new(),
            seed,
        })
    }

    /// Record one session: stream its traces and motion, keep its responses.
    #[allow(clippy::too_many_arguments)]
    pub fn add_session(
        &mut self,
        cfg: &SimConfig,
        id: &str,
        day: i32,
        model_day: &super::tuning::DayModel,
        activity: &SessionActivity,
        motion: &Motion,
        transform: DayTransform,
        schedule: &Schedule,
    ) -> Result<()> {
        let n = schedule.n_frames;
        let n_cells = activity.cells.len();
        let bleach: Vec<f64> = (0..n)
            .map(|f| {
                let t = f as f64 / cfg.fs;
                1.0 - cfg.bleach_fraction * (1.0 - (-t / cfg.bleach_tau_s).exp())
            })
            .collect();
        let mut cell_col = Vec::with_capacity(n * n_cells);
        let mut frame_col = Vec::with_capacity(n * n_cells);
        let mut dff_col = Vec::with_capacity(n * n_cells);
        let mut f_col = Vec::with_capacity(n * n_cells);
        let mut spikes_col = Vec::with_capacity(n * n_cells);
        for (i, a) in activity.cells.iter().enumerate() {
            let c = &model_day.cells[i];
            let visible = matches!(c.state, CellState::Normal | CellState::Filled);
            for (f, &bleach_f) in bleach.iter().enumerate() {
                cell_col.push(i as u32);
                frame_col.push(f as u32);
                dff_col.push(a.dff[f]);
                spikes_col.push(a.spikes[f]);
                let photons = if visible {
                    model_day.global_gain * bleach_f * c.brightness * (1.0 + a.dff[f] as f64)
                } else {
                    0.0
                };
                f_col.push(photons as f32);
            }
        }
        self.traces.write(
            &Table::new()
                .with(
                    "session",
                    str_col(std::iter::repeat_n(id.to_string(), n * n_cells)),
                )
                .with("cell", Column::U32(cell_col))
                .with("frame", Column::U32(frame_col))
                .with("f", Column::F32(f_col))
                .with("dff", Column::F32(dff_col))
                .with("spikes", Column::U16(spikes_col)),
        )?;
        self.motion.write(
            &Table::new()
                .with("session", str_col(std::iter::repeat_n(id.to_string(), n)))
                .with("frame", Column::U32((0..n as u32).collect()))
                .with("shift_x", Column::F32(motion.shift_x.clone()))
                .with("shift_y", Column::F32(motion.shift_y.clone())),
        )?;
        if let Some(w) = self.warp.as_mut() {
            w.write(&warp_rows(cfg, id, motion))?;
        }
        let responses = activity
            .cells
            .iter()
            .map(|a| {
                schedule
                    .trials
                    .iter()
                    .map(|t| trial_response(&a.dff, t.onset_frame, cfg))
                    .collect()
            })
            .collect();
        self.sessions.push(SessionRecord {
            id: id.to_string(),
            day,
            n_frames: n,
            transform,
            schedule: schedule.clone(),
            responses,
        });
        Ok(())
    }

    /// Write every remaining table.
    pub fn finish(
        self,
        cfg: &SimConfig,
        scene: &Scene,
        model: &Model,
        stimuli: &[Stimulus],
    ) -> Result<TruthSummary> {
        let empty_motion = Table::new();
        self.traces.finish(&empty_motion)?;
        self.motion.finish(&empty_motion)?;
        if let Some(w) = self.warp {
            w.finish(&empty_motion)?;
        }
        let dir = &self.dir;
        let sessions = &self.sessions;
        write_table(
            dir.join("sessions.parquet"),
            &sessions_table(cfg, model, sessions),
        )?;
        write_table(dir.join("stimuli.parquet"), &stimuli_table(stimuli))?;
        let flags = CellFlags::compute(cfg, model, sessions, stimuli.len());
        write_table(
            dir.join("cells.parquet"),
            &cells_table(cfg, scene, model, sessions, &flags),
        )?;
        write_table(
            dir.join("footprints.parquet"),
            &footprints_table(cfg, scene, model, sessions),
        )?;
        write_table(
            dir.join("tuning.parquet"),
            &tuning_table(model, sessions, stimuli),
        )?;
        write_table(dir.join("trials.parquet"), &trials_table(sessions, stimuli))?;
        let maps = SessionMaps::compute(sessions, &flags, stimuli.len());
        let rows = maps.rows(cfg, sessions);
        let labels: Vec<String> = stimuli.iter().map(|x| x.label.clone()).collect();
        write_table(dir.join("rsm.parquet"), &maps::rsm_table(&rows, &labels))?;
        write_table(
            dir.join("map_summary.parquet"),
            &maps::map_summary_table(&rows, maps.n_spared),
        )?;
        write_table(
            dir.join("map_similarity.parquet"),
            &maps::map_similarity_table(&rows),
        )?;
        let toml = format!(
            "# cortexmap {} simulation; rerun with the same seed and these values\nseed = {}\n{}",
            env!("CARGO_PKG_VERSION"),
            self.seed,
            toml::to_string_pretty(cfg)
                .map_err(|e| crate::error::Error::internal(e.to_string()))?
        );
        crate::io::atomic::write_bytes(dir.join("simulation.toml"), toml.as_bytes())?;
        Ok(TruthSummary {
            n_spared: flags.spared.iter().filter(|&&s| s).count(),
            diagonal_norm: maps.diagonal_norm(cfg, sessions),
            responsive_fraction_pre: flags.responsive_fraction_pre,
        })
    }
}

/// Headline truth figures, for the command's summary line.
#[derive(Debug, Clone)]
pub struct TruthSummary {
    pub n_spared: usize,
    /// Baseline-normalised diagonal per session, in session order.
    pub diagonal_norm: Vec<f64>,
    pub responsive_fraction_pre: f64,
}

fn warp_rows(cfg: &SimConfig, id: &str, motion: &Motion) -> Table {
    let nodes = WARP_NODES * WARP_NODES;
    let n = motion.warp_x.len();
    let mut frame = Vec::with_capacity(n * nodes);
    let mut node = Vec::with_capacity(n * nodes);
    let mut nx = Vec::with_capacity(n * nodes);
    let mut ny = Vec::with_capacity(n * nodes);
    let mut dx = Vec::with_capacity(n * nodes);
    let mut dy = Vec::with_capacity(n * nodes);
    for f in 0..n {
        for j in 0..nodes {
            frame.push(f as u32);
            node.push(j as u32);
            nx.push(node_position(j % WARP_NODES, cfg.width) as f32);
            ny.push(node_position(j / WARP_NODES, cfg.height) as f32);
            dx.push(motion.warp_x[f][j]);
            dy.push(motion.warp_y[f][j]);
        }
    }
    Table::new()
        .with(
            "session",
            str_col(std::iter::repeat_n(id.to_string(), n * nodes)),
        )
        .with("frame", Column::U32(frame))
        .with("node", Column::U32(node))
        .with("node_x", Column::F32(nx))
        .with("node_y", Column::F32(ny))
        .with("dx", Column::F32(dx))
        .with("dy", Column::F32(dy))
}

fn sessions_table(cfg: &SimConfig, model: &Model, s: &[SessionRecord]) -> Table {
    Table::new()
        .with("session", str_col(s.iter().map(|r| r.id.clone())))
        .with("day", Column::I32(s.iter().map(|r| r.day).collect()))
        .with(
            "n_frames",
            Column::U32(s.iter().map(|r| r.n_frames as u32).collect()),
        )
        .with("height", Column::U32(vec![cfg.height as u32; s.len()]))
        .with("width", Column::U32(vec![cfg.width as u32; s.len()]))
        .with("fs", Column::F64(vec![cfg.fs; s.len()]))
        .with(
            "repetitions",
            Column::U32(s.iter().map(|r| r.schedule.repetitions as u32).collect()),
        )
        .with(
            "fov_dx",
            Column::F64(s.iter().map(|r| r.transform.dx).collect()),
        )
        .with(
            "fov_dy",
            Column::F64(s.iter().map(|r| r.transform.dy).collect()),
        )
        .with(
            "fov_rotation_deg",
            Column::F64(
                s.iter()
                    .map(|r| r.transform.rotation_rad.to_degrees())
                    .collect(),
            ),
        )
        .with(
            "global_gain",
            Column::F64(model.days.iter().map(|d| d.global_gain).collect()),
        )
        .with(
            "disturbance",
            Column::F64(model.days.iter().map(|d| d.disturbance).collect()),
        )
        .with(
            "post_ablation",
            Column::Bool(s.iter().map(|r| r.day > cfg.ablation_after_day).collect()),
        )
        .with("gain_adu", Column::F64(vec![cfg.gain_adu; s.len()]))
        .with("offset_adu", Column::F64(vec![cfg.offset_adu; s.len()]))
        .with(
            "read_noise_adu",
            Column::F64(vec![cfg.read_noise_adu; s.len()]),
        )
}

fn stimuli_table(stimuli: &[Stimulus]) -> Table {
    Table::new()
        .with("stimulus", str_col(stimuli.iter().map(|s| s.label.clone())))
        .with("index", Column::U32((0..stimuli.len() as u32).collect()))
        .with(
            "kind",
            str_col(
                stimuli
                    .iter()
                    .map(|s| if s.is_tone { "tone" } else { "complex" }.to_string()),
            ),
        )
        .with(
            "frequency_hz",
            Column::F64(stimuli.iter().map(|s| s.frequency_hz).collect()),
        )
}

/// Per-cell flags of SCIENCE.md §1.7 and §3.6, from the truth.
struct CellFlags {
    targeted: Vec<Option<Outcome>>,
    tracked: Vec<bool>,
    high: Vec<bool>,
    low: Vec<bool>,
    spared: Vec<bool>,
    initially_silent: Vec<bool>,
    group: Vec<char>,
    responsive_fraction_pre: f64,
}

impl CellFlags {
    fn compute(cfg: &SimConfig, model: &Model, s: &[SessionRecord], n_stim: usize) -> Self {
        let n_cells = model.days[0].cells.len();
        let pre = last_pre_ablation(cfg);
        let cohort = cfg.cohort().unwrap_or(Cohort::Control);
        let mut targeted = vec![None; n_cells];
        for &(i, o) in &model.targets {
            targeted[i] = Some(o);
        }
        let tracked: Vec<bool> = (0..n_cells)
            .map(|i| {
                targeted[i].is_none()
                    && model
                        .days
                        .iter()
                        .all(|d| d.cells[i].state == CellState::Normal)
            })
            .collect();
        // Best trial-averaged response on the last pre-ablation day.
        let best_pre: Vec<f64> = (0..n_cells)
            .map(|i| {
                let mut sums = vec![(0.0, 0usize); n_stim];
                for (t, trial) in s[pre].schedule.trials.iter().enumerate() {
                    let e = &mut sums[trial.stimulus];
                    e.0 += s[pre].responses[i][t];
                    e.1 += 1;
                }
                sums.iter()
                    .filter(|e| e.1 > 0)
                    .map(|e| e.0 / e.1 as f64)
                    .fold(f64::NEG_INFINITY, f64::max)
            })
            .collect();
        let responsive_pre: Vec<bool> =
            model.days[pre].cells.iter().map(|c| c.responsive).collect();
        let k = if model.targets.is_empty() {
            cfg.n_ablate
        } else {
            model.targets.len()
        };
        let mut candidates: Vec<usize> = (0..n_cells).filter(|&i| tracked[i]).collect();
        candidates.sort_by(|&a, &b| best_pre[b].total_cmp(&best_pre[a]).then(a.cmp(&b)));
        let mut high = vec![false; n_cells];
        if cohort != Cohort::AblateResponsive {
            for &i in candidates.iter().take(k) {
                high[i] = true;
            }
        }
        let mut low = vec![false; n_cells];
        if cohort != Cohort::AblateSilent {
            for &i in candidates
                .iter()
                .rev()
                .filter(|&&i| !responsive_pre[i] && !high[i])
                .take(k)
            {
                low[i] = true;
            }
        }
        let spared: Vec<bool> = (0..n_cells)
            .map(|i| tracked[i] && !high[i] && !low[i])
            .collect();
        let initially_silent: Vec<bool> = responsive_pre.iter().map(|r| !r).collect();
        let group = (0..n_cells)
            .map(|i| {
                if responsive_pre[i] {
                    'A'
                } else if model.days.iter().any(|d| d.cells[i].responsive) {
                    'B'
                } else {
                    'C'
                }
            })
            .collect();
        let present_pre: Vec<usize> = (0..n_cells)
            .filter(|&i| model.days[pre].cells[i].state == CellState::Normal)
            .collect();
        let responsive_fraction_pre = present_pre.iter().filter(|&&i| responsive_pre[i]).count()
            as f64
            / present_pre.len().max(1) as f64;
        CellFlags {
            targeted,
            tracked,
            high,
            low,
            spared,
            initially_silent,
            group,
            responsive_fraction_pre,
        }
    }
}

fn state_name(s: CellState) -> &'static str {
    match s {
        CellState::Normal => "normal",
        CellState::Absent => "absent",
        CellState::Lost => "lost",
        CellState::Filled => "filled",
    }
}

fn cells_table(
    cfg: &SimConfig,
    scene: &Scene,
    model: &Model,
    s: &[SessionRecord],
    f: &CellFlags,
) -> Table {
    let n_cells = scene.cells.len();
    let rows = n_cells * s.len();
    let mut t = CellsColumns::with_capacity(rows);
    for (k, rec) in s.iter().enumerate() {
        for (i, cell) in scene.cells.iter().enumerate() {
            let c = &model.days[k].cells[i];
            let (x, y) = rec.transform.to_session(cell.x, cell.y);
            t.session.push(rec.id.clone());
            t.day.push(rec.day);
            t.cell.push(i as u32);
            t.present
                .push(matches!(c.state, CellState::Normal | CellState::Filled));
            t.state.push(state_name(c.state).to_string());
            t.x_ref.push(cell.x as f32);
            t.y_ref.push(cell.y as f32);
            t.x.push(x as f32);
            t.y.push(y as f32);
            t.radius.push(cell.radius() as f32);
            t.inhibitory.push(cell.inhibitory);
            t.ablated.push(f.targeted[i].is_some());
            t.outcome.push(
                match f.targeted[i] {
                    Some(Outcome::Lost) => "lost",
                    Some(Outcome::Filled) => "filled",
                    None => "",
                }
                .to_string(),
            );
            t.responsive.push(c.responsive);
            t.initially_silent.push(f.initially_silent[i]);
            t.group.push(f.group[i].to_string());
            t.recruited.push(model.recruited[i]);
            t.tracked.push(f.tracked[i]);
            t.high.push(f.high[i]);
            t.low.push(f.low[i]);
            t.spared.push(f.spared[i]);
            t.brightness
                .push((c.brightness * model.days[k].global_gain) as f32);
            let _ = cfg;
        }
    }
    t.into_table()
}

#[derive(Default)]
struct CellsColumns {
    session: Vec<String>,
    day: Vec<i32>,
    cell: Vec<u32>,
    present: Vec<bool>,
    state: Vec<String>,
    x_ref: Vec<f32>,
    y_ref: Vec<f32>,
    x: Vec<f32>,
    y: Vec<f32>,
    radius: Vec<f32>,
    inhibitory: Vec<bool>,
    ablated: Vec<bool>,
    outcome: Vec<String>,
    responsive: Vec<bool>,
    initially_silent: Vec<bool>,
    group: Vec<String>,
    recruited: Vec<bool>,
    tracked: Vec<bool>,
    high: Vec<bool>,
    low: Vec<bool>,
    spared: Vec<bool>,
    brightness: Vec<f32>,
}

impl CellsColumns {
    fn with_capacity(_rows: usize) -> Self {
        Self::default()
    }

    fn into_table(self) -> Table {
        Table::new()
            .with("cell", Column::U32(self.cell))
            .with("session", Column::Str(self.session))
            .with("day", Column::I32(self.day))
            .with("present", Column::Bool(self.present))
            .with("state", Column::Str(self.state))
            .with("x_ref", Column::F32(self.x_ref))
            .with("y_ref", Column::F32(self.y_ref))
            .with("x", Column::F32(self.x))
            .with("y", Column::F32(self.y))
            .with("radius_px", Column::F32(self.radius))
            .with("inhibitory", Column::Bool(self.inhibitory))
            .with("ablated", Column::Bool(self.ablated))
            .with("ablation_outcome", Column::Str(self.outcome))
            .with("responsive", Column::Bool(self.responsive))
            .with("initially_silent", Column::Bool(self.initially_silent))
            .with("group", Column::Str(self.group))
            .with("recruited", Column::Bool(self.recruited))
            .with("tracked", Column::Bool(self.tracked))
            .with("high_category", Column::Bool(self.high))
            .with("low_category", Column::Bool(self.low))
            .with("spared", Column::Bool(self.spared))
            .with("brightness", Column::F32(self.brightness))
    }
}

fn footprints_table(cfg: &SimConfig, scene: &Scene, model: &Model, s: &[SessionRecord]) -> Table {
    let (mut session, mut cell, mut pixels, mut weights) = (vec![], vec![], vec![], vec![]);
    for (k, rec) in s.iter().enumerate() {
        for i in 0..scene.cells.len() {
            let state = model.days[k].cells[i].state;
            if !matches!(state, CellState::Normal | CellState::Filled) {
                continue;
            }
            let (p, w) = footprint(cfg, scene, i, state == CellState::Filled, &rec.transform);
            if p.is_empty() {
                continue;
            }
            session.push(rec.id.clone());
            cell.push(i as u32);
            pixels.push(p);
            weights.push(w);
        }
    }
    Table::new()
        .with("session", Column::Str(session))
        .with("cell", Column::U32(cell))
        .with("pixels", Column::ListU32(pixels))
        .with("weights", Column::ListF32(weights))
}

/// Mean and s.e.m. of each stimulus's trial responses for one cell.
fn per_stimulus(responses: &[f64], schedule: &Schedule, n_stim: usize) -> Vec<(f64, f64)> {
    let mut groups: Vec<Vec<f64>> = vec![Vec::new(); n_stim];
    for (t, trial) in schedule.trials.iter().enumerate() {
        groups[trial.stimulus].push(responses[t]);
    }
    groups
        .iter()
        .map(|g| {
            let n = g.len() as f64;
            if g.is_empty() {
                return (f64::NAN, f64::NAN);
            }
            let m = g.iter().sum::<f64>() / n;
            let sem = if g.len() > 1 {
                (g.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() / n.sqrt()
            } else {
                f64::NAN
            };
            (m, sem)
        })
        .collect()
}

fn tuning_table(model: &Model, s: &[SessionRecord], stimuli: &[Stimulus]) -> Table {
    let n_stim = stimuli.len();
    let (mut session, mut cell, mut stim, mut expected, mut mean, mut sem, mut resp) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for (k, rec) in s.iter().enumerate() {
        for (i, r) in rec.responses.iter().enumerate() {
            let c = &model.days[k].cells[i];
            for (j, (m, e)) in per_stimulus(r, &rec.schedule, n_stim)
                .into_iter()
                .enumerate()
            {
                session.push(rec.id.clone());
                cell.push(i as u32);
                stim.push(stimuli[j].label.clone());
                expected.push(c.drive[j] as f32);
                mean.push(m as f32);
                sem.push(e as f32);
                resp.push(c.state == CellState::Normal && c.drive[j] >= RESPONSIVE_MIN_SPIKES);
            }
        }
    }
    Table::new()
        .with("session", Column::Str(session))
        .with("cell", Column::U32(cell))
        .with("stimulus", Column::Str(stim))
        .with("expected_spikes", Column::F32(expected))
        .with("mean_response", Column::F32(mean))
        .with("sem", Column::F32(sem))
        .with("responsive", Column::Bool(resp))
}

fn trials_table(s: &[SessionRecord], stimuli: &[Stimulus]) -> Table {
    let (mut session, mut cell, mut trial, mut stim, mut rep, mut onset, mut response) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for rec in s {
        for (i, r) in rec.responses.iter().enumerate() {
            for (t, tr) in rec.schedule.trials.iter().enumerate() {
                session.push(rec.id.clone());
                cell.push(i as u32);
                trial.push(t as u32);
                stim.push(stimuli[tr.stimulus].label.clone());
                rep.push(tr.repetition as u32);
                onset.push(tr.onset_frame as u32);
                response.push(r[t] as f32);
            }
        }
    }
    Table::new()
        .with("session", Column::Str(session))
        .with("cell", Column::U32(cell))
        .with("trial", Column::U32(trial))
        .with("stimulus", Column::Str(stim))
        .with("repetition", Column::U32(rep))
        .with("onset_frame", Column::U32(onset))
        .with("response", Column::F32(response))
}

/// True maps of every session over the spared cells.
struct SessionMaps {
    single: Vec<Array2<f64>>,
    averaged: Vec<Array2<f64>>,
    n_spared: usize,
}

impl SessionMaps {
    fn compute(s: &[SessionRecord], flags: &CellFlags, n_stim: usize) -> Self {
        let spared: Vec<usize> = (0..flags.spared.len())
            .filter(|&i| flags.spared[i])
            .collect();
        let per_session: Vec<Vec<Array2<f64>>> = s
            .iter()
            .map(|rec| {
                (0..n_stim)
                    .map(|stim| {
                        let trials: Vec<usize> = rec
                            .schedule
                            .trials
                            .iter()
                            .enumerate()
                            .filter(|(_, t)| t.stimulus == stim)
                            .map(|(k, _)| k)
                            .collect();
                        Array2::from_shape_fn((trials.len(), spared.len()), |(k, c)| {
                            rec.responses[spared[c]][trials[k]]
                        })
                    })
                    .collect()
            })
            .collect();
        SessionMaps {
            single: per_session
                .iter()
                .map(|r| maps::single_trial_map(r))
                .collect(),
            averaged: per_session
                .iter()
                .map(|r| maps::trial_averaged_map(r))
                .collect(),
            n_spared: spared.len(),
        }
    }

    /// The sessions' maps as the shared map tables take them.
    fn rows<'a>(&'a self, cfg: &SimConfig, s: &'a [SessionRecord]) -> Vec<maps::SessionMapRow<'a>> {
        s.iter()
            .enumerate()
            .map(|(k, r)| maps::SessionMapRow {
                session: &r.id,
                day: r.day,
                single: &self.single[k],
                averaged: &self.averaged[k],
                baseline: r.day <= cfg.ablation_after_day,
            })
            .collect()
    }

    fn diagonal_norm(&self, cfg: &SimConfig, s: &[SessionRecord]) -> Vec<f64> {
        let diag: Vec<f64> = self.single.iter().map(maps::diagonal_mean).collect();
        let baseline: Vec<bool> = s.iter().map(|r| r.day <= cfg.ablation_after_day).collect();
        maps::normalise_to_baseline(&diag, &baseline)
    }
}
