//! The functional model: tuning, responsiveness, drift and the ablation's effects.
//!
//! Tuning is built from a few shared response modes over the stimulus set (tone
//! bands over log frequency, complex-sound groups, a broadband mode), so population
//! vectors of related sounds correlate and the representational map has structure.
//! Each cell loads on one or two modes plus a private component. A latent
//! responsiveness variable per cell follows an Ornstein–Uhlenbeck process across
//! days (turnover of responsive cells) and the loadings drift slowly
//! (representational drift with a statistically stable map).
//!
//! The cohorts follow Noda et al. 2025 (SCIENCE.md): removing the most responsive
//! cells transiently raises trial-to-trial variability, lowers and narrows the
//! responses of the spared responsive cells (group A), and recruits initially silent
//! cells (group B) with tuning pulled towards the lost cells' tuning, so the map dips
//! and recovers within 3–5 days; removing silent cells changes nothing; removing
//! interneurons causes a prolonged loss of reliability without changing the mean
//! tuning.

use super::anatomy::Scene;
use super::config::SimConfig;
use super::protocol::Stimulus;
use super::rng::{stream, Purpose};
use crate::config::Cohort;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Distribution, LogNormal, StandardNormal};

/// Expected evoked spikes per trial at or above which a (cell, stimulus) pair is
/// truly responsive.
pub const RESPONSIVE_MIN_SPIKES: f64 = 0.5;
/// Smallest best-stimulus drive of a responsive cell, expected spikes per trial.
const MIN_DRIVE: f64 = 0.8;
/// Baseline s.d. of the log trial gain, and its shared (mode-wise) fraction.
const TRIAL_GAIN_SD: f64 = 0.45;
const SHARED_FRACTION: f64 = 0.3;

/// What became of a cell in a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellState {
    /// Imaged and active as modelled.
    Normal,
    /// Not visible this session (out of plane, dim); not ablated.
    Absent,
    /// Ablated and gone (nucleus and GCaMP lost).
    Lost,
    /// Ablated, nucleus lost, soma filled with GCaMP and silent.
    Filled,
}

/// A cell in one session.
#[derive(Debug, Clone)]
pub struct DayCell {
    pub state: CellState,
    /// Expected evoked spikes per trial, per stimulus.
    pub drive: Vec<f64>,
    /// Unit-norm mode loadings (shape the shared trial-to-trial fluctuations).
    pub loadings: Vec<f64>,
    /// Spontaneous firing rate, Hz.
    pub spont_rate_hz: f64,
    /// Resting brightness this session, photons/px/frame.
    pub brightness: f64,
    /// Truly responsive to at least one stimulus.
    pub responsive: bool,
}

/// One session's functional state.
#[derive(Debug, Clone)]
pub struct DayModel {
    pub day: i32,
    pub cells: Vec<DayCell>,
    /// s.d. of the log trial gain and the fraction of it shared along modes.
    pub trial_gain_sd: f64,
    pub shared_fraction: f64,
    /// Disturbance of the network (0 = none, 1 = strongest), for the record.
    pub disturbance: f64,
    /// Overall brightness factor of the session (laser, focus).
    pub global_gain: f64,
}

/// Ablation outcome of a targeted cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Lost,
    Filled,
}

/// The whole functional model of an experiment.
#[derive(Debug, Clone)]
pub struct Model {
    pub n_modes: usize,
    pub days: Vec<DayModel>,
    /// Targeted cells with their outcome (empty for control).
    pub targets: Vec<(usize, Outcome)>,
    /// Cells recruited after the ablation (initially silent, gaining responses).
    pub recruited: Vec<bool>,
}

/// Response modes over the stimulus set: M × S, values in [0, 1].
pub fn response_modes(stimuli: &[Stimulus], seed: u64) -> Vec<Vec<f64>> {
    let mut rng = stream(seed, Purpose::Tuning, 0, 1);
    let tones: Vec<usize> = (0..stimuli.len()).filter(|&s| stimuli[s].is_tone).collect();
    let complex: Vec<usize> = (0..stimuli.len())
        .filter(|&s| !stimuli[s].is_tone)
        .collect();
    let mut modes = Vec::new();
    // Three tone bands over log frequency (low, middle, high).
    let nt = tones.len().max(1) as f64;
    for centre in [0.15, 0.5, 0.85] {
        let mut m = vec![0.0f64; stimuli.len()];
        for (j, &s) in tones.iter().enumerate() {
            let pos = if nt > 1.0 { j as f64 / (nt - 1.0) } else { 0.5 };
            m[s] = (-(pos - centre).powi(2) / (2.0 * 0.15f64.powi(2))).exp();
        }
        modes.push(m);
    }
    // Three complex-sound groups, each a random subset with graded weights; the
    // last also responds to high tones (spectrally similar sounds).
    for g in 0..3 {
        let mut m = vec![0.0f64; stimuli.len()];
        for &s in &complex {
            if rng.random::<f64>() < 0.45 {
                m[s] = rng.random_range(0.4..1.0);
            }
        }
        if let Some(&first) = complex.get(g) {
            m[first] = 1.0; // every group has at least one sound
        }
        if g == 2 {
            for (j, &s) in tones.iter().enumerate() {
                if j as f64 >= 0.7 * nt {
                    m[s] = m[s].max(0.5);
                }
            }
        }
        modes.push(m);
    }
    // Broadband onset mode: every complex sound, weaker for tones.
    let mut m = vec![0.0f64; stimuli.len()];
    for s in 0..stimuli.len() {
        m[s] = if stimuli[s].is_tone { 0.35 } else { 0.8 };
    }
    modes.push(m);
    modes
}

/// Static functional identity of a cell.
#[derive(Debug, Clone)]
struct Identity {
    loadings: Vec<f64>,
    private: Vec<f64>,
    gain: f64,
    sharpness: f64,
    spont_rate_hz: f64,
}

fn identities(
    cfg: &SimConfig,
    scene: &Scene,
    n_modes: usize,
    n_stim: usize,
    seed: u64,
) -> Vec<Identity> {
    scene
        .cells
        .iter()
        .enumerate()
        .map(|(i, cell)| {
            let mut rng = stream(seed, Purpose::Tuning, 1, i as u64);
            let mut loadings = vec![0.0; n_modes];
            loadings[rng.random_range(0..n_modes)] = 1.0;
            if rng.random::<f64>() < 0.5 {
                let m = rng.random_range(0..n_modes);
                loadings[m] += rng.random_range(0.2..0.6);
            }
            if cell.inhibitory {
                // Interneurons are broadly tuned.
                for l in &mut loadings {
                    *l += 0.4;
                }
            }
            let private = (0..n_stim)
                .map(|_| 0.3 * rng.random::<f64>().powi(3))
                .collect();
            let gain = LogNormal::new(0.0, 0.5).expect("valid").sample(&mut rng);
            let (sharpness, rate) = if cell.inhibitory {
                (rng.random_range(0.6..1.0), LogNormal::new(3.0f64.ln(), 0.4))
            } else {
                (rng.random_range(1.0..2.0), LogNormal::new(0.3f64.ln(), 0.6))
            };
            let _ = cfg;
            Identity {
                loadings,
                private,
                gain,
                sharpness,
                spont_rate_hz: rate.expect("valid").sample(&mut rng),
            }
        })
        .collect()
}

/// An Ornstein–Uhlenbeck path with unit stationary s.d. sampled at `days`.
fn ou_path(days: &[i32], tau_days: f64, rng: &mut impl Rng) -> Vec<f64> {
    let mut out = Vec::with_capacity(days.len());
    let mut x: f64 = rng.sample(StandardNormal);
    for (k, &d) in days.iter().enumerate() {
        if k > 0 {
            let rho = (-((d - days[k - 1]) as f64) / tau_days).exp();
            x = rho * x + (1.0 - rho * rho).sqrt() * rng.sample::<f64, _>(StandardNormal);
        }
        out.push(x);
    }
    out
}

/// Tuning shape (max 1) from loadings and private component, sharpened by `p`.
fn shape(modes: &[Vec<f64>], loadings: &[f64], private: &[f64], p: f64) -> Vec<f64> {
    let n_stim = private.len();
    let raw: Vec<f64> = (0..n_stim)
        .map(|s| {
            loadings
                .iter()
                .zip(modes)
                .map(|(l, m)| l * m[s])
                .sum::<f64>()
                + private[s]
        })
        .collect();
    let max = raw.iter().cloned().fold(0.0, f64::max).max(1e-9);
    raw.iter().map(|v| (v / max).powf(p)).collect()
}

fn unit(v: &[f64]) -> Vec<f64> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    v.iter().map(|x| x / n).collect()
}

/// Days since the ablation (performed the day after `after_day`); None before it.
fn days_since_ablation(cfg: &SimConfig, day: i32) -> Option<f64> {
    (day > cfg.ablation_after_day).then(|| (day - cfg.ablation_after_day - 1) as f64)
}

/// Transient disturbance after removing responsive cells: 1 on the first day after,
/// recovering with a 2-day time constant (back to baseline within 3–5 days).
fn disturbance_responsive(since: f64) -> f64 {
    (-(since - 1.0).max(0.0) / 2.0).exp()
}

/// Prolonged disturbance after removing interneurons (10-day time constant).
fn disturbance_inhibitory(since: f64) -> f64 {
    (-(since - 1.0).max(0.0) / 10.0).exp()
}

/// Recruitment of initially silent cells: rises over ~2.5 days.
fn recruitment(since: f64) -> f64 {
    1.0 - (-since / 2.5).exp()
}

/// Index of the last session on or before the ablation day.
pub fn last_pre_ablation(cfg: &SimConfig) -> usize {
    cfg.days
        .iter()
        .rposition(|&d| d <= cfg.ablation_after_day)
        .unwrap_or(0)
}

/// Build the functional model of every session.
pub fn build_model(cfg: &SimConfig, scene: &Scene, stimuli: &[Stimulus], seed: u64) -> Model {
    let cohort = cfg.cohort().unwrap_or(Cohort::Control);
    let modes = response_modes(stimuli, seed);
    let n_modes = modes.len();
    let n_stim = stimuli.len();
    let n_cells = scene.cells.len();
    let ids = identities(cfg, scene, n_modes, n_stim, seed);
    let n_days = cfg.days.len();
    let pre = last_pre_ablation(cfg);

    // Latent responsiveness and loading drift, per cell, across days.
    let mut latent = Vec::with_capacity(n_cells);
    let mut drift = Vec::with_capacity(n_cells);
    let mut bright_walk = Vec::with_capacity(n_cells);
    let mut absent = Vec::with_capacity(n_cells);
    for i in 0..n_cells {
        let mut rng = stream(seed, Purpose::DayModel, 0, i as u64);
        latent.push(ou_path(&cfg.days, 20.0, &mut rng));
        drift.push(
            (0..n_modes)
                .map(|_| ou_path(&cfg.days, 20.0, &mut rng))
                .collect::<Vec<_>>(),
        );
        bright_walk.push(ou_path(&cfg.days, 30.0, &mut rng));
        absent.push(
            (0..n_days)
                .map(|_| rng.random::<f64>() < cfg.p_absent)
                .collect::<Vec<_>>(),
        );
    }
    let threshold = |inhibitory: bool| {
        let f = if inhibitory {
            cfg.responsive_fraction_inh
        } else {
            cfg.responsive_fraction_exc
        };
        let mut z: Vec<f64> = (0..n_cells)
            .filter(|&i| scene.cells[i].inhibitory == inhibitory)
            .map(|i| latent[i][pre])
            .collect();
        z.sort_by(|a, b| a.total_cmp(b));
        if z.is_empty() {
            return f64::INFINITY;
        }
        let k = (((1.0 - f) * z.len() as f64).floor() as usize).min(z.len() - 1);
        if k == 0 {
            f64::NEG_INFINITY
        } else {
            0.5 * (z[k - 1] + z[k])
        }
    };
    let thr_exc = threshold(false);
    let thr_inh = threshold(true);
    let thr = |i: usize| {
        if scene.cells[i].inhibitory {
            thr_inh
        } else {
            thr_exc
        }
    };
    let loadings_at = |i: usize, k: usize| -> Vec<f64> {
        ids[i]
            .loadings
            .iter()
            .enumerate()
            .map(|(m, &l)| (l + cfg.drift_sd * drift[i][m][k] * 0.5).max(0.0))
            .collect()
    };
    let drive_on = |i: usize, k: usize| -> f64 {
        let z = latent[i][k];
        if z > thr(i) {
            MIN_DRIVE + ids[i].gain * (1.0 + 0.5 * (z - thr(i)).min(2.0))
        } else {
            0.0
        }
    };

    // Choose the ablation targets from the last pre-ablation session.
    let present_pre = |i: usize| (0..=pre).all(|k| !absent[i][k]);
    let best_pre = |i: usize| drive_on(i, pre);
    let targets = choose_targets(cfg, cohort, scene, &present_pre, &best_pre, seed);
    let is_target: Vec<Option<Outcome>> = {
        let mut v = vec![None; n_cells];
        for &(i, o) in &targets {
            v[i] = Some(o);
        }
        v
    };
    // Each recruit takes over the pre-ablation tuning of one removed cell (chosen
    // at random), so the lost tunings come back with their diversity.
    let lost_loadings: Vec<Vec<f64>> = targets.iter().map(|&(i, _)| loadings_at(i, pre)).collect();
    let (recruit_draw, recruit_model): (Vec<f64>, Vec<usize>) = {
        let mut rng = stream(seed, Purpose::Ablation, 1, 0);
        (0..n_cells)
            .map(|_| {
                let u = rng.random::<f64>();
                (u, rng.random_range(0..targets.len().max(1)))
            })
            .unzip()
    };
    let mut recruited = vec![false; n_cells];

    let mut days = Vec::with_capacity(n_days);
    for (k, &day) in cfg.days.iter().enumerate() {
        let since = days_since_ablation(cfg, day);
        let d_resp = match (cohort, since) {
            (Cohort::AblateResponsive, Some(s)) => disturbance_responsive(s),
            _ => 0.0,
        };
        let d_inh = match (cohort, since) {
            (Cohort::AblateInhibitory, Some(s)) => disturbance_inhibitory(s),
            _ => 0.0,
        };
        let rec = match (cohort, since) {
            (Cohort::AblateResponsive, Some(s)) => recruitment(s),
            _ => 0.0,
        };
        let mut session_rng = stream(seed, Purpose::DayModel, 1, k as u64);
        let global_gain = (0.08 * session_rng.sample::<f64, _>(StandardNormal)).exp();
        let cells = (0..n_cells)
            .map(|i| {
                let cell = &scene.cells[i];
                let brightness = cell.brightness * (0.1 * bright_walk[i][k]).exp();
                let ablated_now = since.is_some() && is_target[i].is_some();
                if ablated_now {
                    let state = match is_target[i] {
                        Some(Outcome::Filled) => CellState::Filled,
                        _ => CellState::Lost,
                    };
                    return DayCell {
                        state,
                        drive: vec![0.0; n_stim],
                        loadings: vec![0.0; n_modes],
                        spont_rate_hz: 0.0,
                        brightness: brightness * 1.5,
                        responsive: false,
                    };
                }
                let mut load = loadings_at(i, k);
                let mut amp = drive_on(i, k);
                let mut sharp = ids[i].sharpness;
                let mut rate = ids[i].spont_rate_hz;
                let was_responsive = drive_on(i, pre) > 0.0;
                if since.is_some() && cohort == Cohort::AblateResponsive {
                    if was_responsive {
                        amp *= 1.0 - 0.3 * d_resp - 0.1;
                        sharp += 0.6 * (0.4 + 0.6 * d_resp);
                    } else if !cell.inhibitory && recruit_draw[i] < 0.2 * rec {
                        recruited[i] = true;
                        amp = amp.max(MIN_DRIVE + ids[i].gain * (0.5 + 1.0 * rec));
                        load = load
                            .iter()
                            .zip(&lost_loadings[recruit_model[i]])
                            .map(|(l, t)| (1.0 - 0.8 * rec) * l + 0.8 * rec * t)
                            .collect();
                    }
                }
                if !cell.inhibitory {
                    rate *= 1.0 + 0.5 * d_inh;
                }
                let drive: Vec<f64> = shape(&modes, &load, &ids[i].private, sharp)
                    .into_iter()
                    .map(|f| amp * f)
                    .collect();
                let state = if absent[i][k] {
                    CellState::Absent
                } else {
                    CellState::Normal
                };
                let responsive =
                    state == CellState::Normal && drive.iter().any(|&d| d >= RESPONSIVE_MIN_SPIKES);
                DayCell {
                    state,
                    drive,
                    loadings: unit(&load),
                    spont_rate_hz: rate,
                    brightness,
                    responsive,
                }
            })
            .collect();
        days.push(DayModel {
            day,
            cells,
            trial_gain_sd: TRIAL_GAIN_SD * (1.0 + 1.2 * d_resp + 1.5 * d_inh),
            shared_fraction: (SHARED_FRACTION + 0.2 * d_resp).min(0.9),
            disturbance: d_resp.max(d_inh),
            global_gain,
        });
    }
    Model {
        n_modes,
        days,
        targets,
        recruited,
    }
}

/// Pick the cells the cohort's ablation removes (SCIENCE.md §1.5–1.6).
fn choose_targets(
    cfg: &SimConfig,
    cohort: Cohort,
    scene: &Scene,
    present_pre: &dyn Fn(usize) -> bool,
    best_pre: &dyn Fn(usize) -> f64,
    seed: u64,
) -> Vec<(usize, Outcome)> {
    let n = cfg.n_ablate;
    let mut rng = stream(seed, Purpose::Ablation, 0, 0);
    let eligible = |inh: bool| -> Vec<usize> {
        (0..scene.cells.len())
            .filter(|&i| scene.cells[i].inhibitory == inh && present_pre(i))
            .collect()
    };
    let by_drive = |mut v: Vec<usize>| {
        v.sort_by(|&a, &b| best_pre(b).total_cmp(&best_pre(a)).then(a.cmp(&b)));
        v
    };
    let chosen: Vec<usize> = match cohort {
        Cohort::Control => vec![],
        Cohort::AblateResponsive => {
            // Mostly excitatory, as in the paper (92% of SR targets).
            let n_inh = ((0.08 * n as f64).round() as usize).min(n);
            let inh: Vec<usize> = by_drive(eligible(true))
                .into_iter()
                .filter(|&i| best_pre(i) > 0.0)
                .take(n_inh)
                .collect();
            let exc: Vec<usize> = by_drive(eligible(false))
                .into_iter()
                .filter(|&i| best_pre(i) > 0.0)
                .take(n - inh.len())
                .collect();
            exc.into_iter().chain(inh).collect()
        }
        Cohort::AblateSilent => {
            let mut silent: Vec<usize> = eligible(false)
                .into_iter()
                .filter(|&i| best_pre(i) == 0.0)
                .collect();
            silent.shuffle(&mut rng);
            silent.truncate(n);
            silent
        }
        // Highly responsive interneurons only (4–8 per FOV in the paper).
        Cohort::AblateInhibitory => by_drive(eligible(true))
            .into_iter()
            .filter(|&i| best_pre(i) > 0.0)
            .take(n)
            .collect(),
    };
    let mut chosen = chosen;
    chosen.sort_unstable();
    chosen
        .into_iter()
        .map(|i| {
            let o = if rng.random::<f64>() < cfg.ablation_filled_fraction {
                Outcome::Filled
            } else {
                Outcome::Lost
            };
            (i, o)
        })
        .collect()
}
