//! Spikes and fluorescence of every cell in one session.
//!
//! Evoked spikes: per trial a Poisson count with mean `drive × gain`, where the
//! log trial gain has a part shared along the cell's response modes (noise
//! correlations between co-tuned cells) and a private part; spikes follow the onset
//! with a short latency. Spontaneous spikes: Poisson, modulated by a slow population
//! state shared by all cells. Calcium is a sum of double-exponential kernels
//! evaluated exactly at frame centres (two first-order recursions with sub-frame
//! spike times), and ΔF/F saturates as `a·c / (1 + c/c_sat)`.

use super::config::{Kinetics, SimConfig};
use super::protocol::{Schedule, Trial};
use super::rng::{stream, Purpose};
use super::tuning::{CellState, DayModel};
use rand::Rng;
use rand_distr::{Exp, StandardNormal};
use rayon::prelude::*;

/// A Poisson draw: inversion for small means, a rounded normal above 30 (where
/// the two agree to well under one count in distribution).
#[inline]
pub fn poisson(lambda: f64, rng: &mut impl Rng) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda > 30.0 {
        let z: f64 = rng.sample(StandardNormal);
        return (lambda + lambda.sqrt() * z).round().max(0.0) as u32;
    }
    let u: f64 = rng.random();
    let mut p = (-lambda).exp();
    let mut cdf = p;
    let mut k = 0u32;
    while u > cdf && k < 200 {
        k += 1;
        p *= lambda / k as f64;
        cdf += p;
    }
    k
}

/// One cell's true activity in one session.
#[derive(Debug, Clone, Default)]
pub struct CellActivity {
    /// True ΔF/F per frame (noise-free, neuropil-free).
    pub dff: Vec<f32>,
    /// Spikes per frame.
    pub spikes: Vec<u16>,
}

/// A session's activity: cells plus the neuropil time courses.
#[derive(Debug, Clone)]
pub struct SessionActivity {
    pub cells: Vec<CellActivity>,
    /// Time courses of the two neuropil components (mean ≈ 1).
    pub neuropil: [Vec<f32>; 2],
}

/// An OU process per frame with unit stationary s.d. and time constant `tau_s`.
fn ou_frames(n: usize, fs: f64, tau_s: f64, rng: &mut impl Rng) -> Vec<f64> {
    let rho = (-1.0 / (fs * tau_s)).exp();
    let s = (1.0 - rho * rho).sqrt();
    let mut x: f64 = rng.sample(StandardNormal);
    (0..n)
        .map(|_| {
            x = rho * x + s * rng.sample::<f64, _>(StandardNormal);
            x
        })
        .collect()
}

/// Spike times (s) of one cell, unsorted.
#[allow(clippy::too_many_arguments)]
fn spike_times(
    cfg: &SimConfig,
    cell: &super::tuning::DayCell,
    trials: &[Trial],
    shared: &[Vec<f64>],
    gain_sd: f64,
    shared_fraction: f64,
    state: &[f64],
    rng: &mut impl Rng,
) -> Vec<f64> {
    let mut times = Vec::new();
    let latency = Exp::new(1.0 / 0.06).expect("valid rate");
    let (c_sh, c_pr) = (shared_fraction.sqrt(), (1.0 - shared_fraction).sqrt());
    for (k, trial) in trials.iter().enumerate() {
        let private: f64 = rng.sample(StandardNormal);
        let drive = cell.drive[trial.stimulus];
        if drive <= 0.0 {
            continue;
        }
        let common: f64 = cell
            .loadings
            .iter()
            .zip(&shared[k])
            .map(|(l, e)| l * e)
            .sum();
        let xi = c_sh * common + c_pr * private;
        let gain = (gain_sd * xi - 0.5 * gain_sd * gain_sd).exp();
        let onset = trial.onset_frame as f64 / cfg.fs;
        for _ in 0..poisson(drive * gain, rng) {
            times.push(onset + 0.015 + rng.sample(latency));
        }
    }
    if cell.spont_rate_hz > 0.0 {
        for (f, &s) in state.iter().enumerate() {
            let lambda = cell.spont_rate_hz * (0.6 * s - 0.18).exp() / cfg.fs;
            for _ in 0..poisson(lambda, rng) {
                times.push((f as f64 + rng.random::<f64>()) / cfg.fs);
            }
        }
    }
    times
}

/// Calcium at frame centres from sorted spike times, and spikes per frame.
pub fn fluorescence(times: &mut [f64], n_frames: usize, fs: f64, k: &Kinetics) -> CellActivity {
    times.sort_by(|a, b| a.total_cmp(b));
    // Peak of exp(-t/τd) - exp(-t/τr), to normalise one spike's calcium to 1.
    let t_peak = (k.tau_decay_s * k.tau_rise_s / (k.tau_decay_s - k.tau_rise_s))
        * (k.tau_decay_s / k.tau_rise_s).ln();
    let peak = (-t_peak / k.tau_decay_s).exp() - (-t_peak / k.tau_rise_s).exp();
    let dt = 1.0 / fs;
    let (ad, ar) = ((-dt / k.tau_decay_s).exp(), (-dt / k.tau_rise_s).exp());
    let (mut sd, mut sr) = (0.0f64, 0.0f64);
    let mut dff = Vec::with_capacity(n_frames);
    let mut spikes = vec![0u16; n_frames];
    let mut next = 0;
    let mut t_prev = -0.5 * dt;
    for f in 0..n_frames {
        let t = (f as f64 + 0.5) * dt;
        sd *= ad;
        sr *= ar;
        while next < times.len() && times[next] <= t {
            let ts = times[next];
            if ts > t_prev {
                sd += (-(t - ts) / k.tau_decay_s).exp();
                sr += (-(t - ts) / k.tau_rise_s).exp();
            }
            let frame = (ts * fs).floor();
            if frame >= 0.0 && (frame as usize) < n_frames {
                spikes[frame as usize] = spikes[frame as usize].saturating_add(1);
            }
            next += 1;
        }
        t_prev = t;
        let c = ((sd - sr) / peak).max(0.0);
        dff.push((k.dff_per_spike * c / (1.0 + c / k.saturation_spikes)) as f32);
    }
    // Spikes after the last frame centre still count in their frame.
    for &ts in &times[next..] {
        let frame = (ts * fs).floor();
        if frame >= 0.0 && (frame as usize) < n_frames {
            spikes[frame as usize] = spikes[frame as usize].saturating_add(1);
        }
    }
    CellActivity { dff, spikes }
}

/// Simulate every cell of session `k`.
pub fn simulate_session(
    cfg: &SimConfig,
    seed: u64,
    k: usize,
    model: &DayModel,
    n_modes: usize,
    schedule: &Schedule,
) -> SessionActivity {
    let n = schedule.n_frames;
    let kin = cfg.indicator.kinetics();
    let mut state_rng = stream(seed, Purpose::PopulationState, k as u64, 0);
    let state = ou_frames(n, cfg.fs, 2.0, &mut state_rng);
    let np_noise = [
        ou_frames(n, cfg.fs, 3.0, &mut state_rng),
        ou_frames(n, cfg.fs, 10.0, &mut state_rng),
    ];
    let mut trial_rng = stream(seed, Purpose::TrialNoise, k as u64, 0);
    let shared: Vec<Vec<f64>> = (0..schedule.trials.len())
        .map(|_| {
            (0..n_modes)
                .map(|_| trial_rng.sample(StandardNormal))
                .collect()
        })
        .collect();
    let cells: Vec<CellActivity> = model
        .cells
        .par_iter()
        .enumerate()
        .map(|(i, cell)| {
            if matches!(cell.state, CellState::Lost | CellState::Filled) {
                return CellActivity {
                    dff: vec![0.0; n],
                    spikes: vec![0; n],
                };
            }
            let mut rng = stream(seed, Purpose::Spikes, k as u64, i as u64);
            let mut times = spike_times(
                cfg,
                cell,
                &schedule.trials,
                &shared,
                model.trial_gain_sd,
                model.shared_fraction,
                &state,
                &mut rng,
            );
            fluorescence(&mut times, n, cfg.fs, &kin)
        })
        .collect();
    let neuropil = neuropil_time_courses(&cells, model, &np_noise);
    SessionActivity { cells, neuropil }
}

/// Neuropil follows the population's mean ΔF/F plus its own slow fluctuations.
fn neuropil_time_courses(
    cells: &[CellActivity],
    model: &DayModel,
    noise: &[Vec<f64>; 2],
) -> [Vec<f32>; 2] {
    let n = noise[0].len();
    let active: Vec<&CellActivity> = cells
        .iter()
        .zip(&model.cells)
        .filter(|(_, c)| c.state == CellState::Normal)
        .map(|(a, _)| a)
        .collect();
    let mut pop = vec![0.0f64; n];
    for a in &active {
        for (p, &v) in pop.iter_mut().zip(&a.dff) {
            *p += v as f64;
        }
    }
    let denom = active.len().max(1) as f64;
    let mean = pop.iter().sum::<f64>() / (n.max(1) as f64 * denom);
    let course = |coupling: f64, noise_sd: f64, z: &[f64]| -> Vec<f32> {
        (0..n)
            .map(|f| {
                let v = 1.0 + coupling * (pop[f] / denom - mean) + noise_sd * z[f];
                v.max(0.3) as f32
            })
            .collect()
    };
    [course(1.5, 0.04, &noise[0]), course(0.6, 0.06, &noise[1])]
}

/// Window of frames [start, end) clipped to the movie.
pub fn window(onset: usize, from_s: f64, to_s: f64, fs: f64, n: usize) -> (usize, usize) {
    let start = onset as f64 + (from_s * fs).round();
    let end = onset as f64 + (to_s * fs).round();
    let start = start.clamp(0.0, n as f64) as usize;
    let end = (end.clamp(0.0, n as f64) as usize).max((start + 1).min(n));
    (start, end)
}

/// True single-trial response: mean F over the response window relative to the
/// mean F over the pre-stimulus window, minus 1 (SCIENCE.md §2).
pub fn trial_response(dff: &[f32], onset: usize, cfg: &SimConfig) -> f64 {
    let n = dff.len();
    let (b0, b1) = window(onset, -cfg.baseline_window_s, 0.0, cfg.fs, n);
    let (r0, r1) = window(onset, 0.0, cfg.response_window_s, cfg.fs, n);
    let mean = |a: usize, b: usize| -> f64 {
        if b <= a {
            return 1.0;
        }
        dff[a..b].iter().map(|&v| 1.0 + v as f64).sum::<f64>() / (b - a) as f64
    };
    mean(r0, r1) / mean(b0, b1) - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::config::Indicator;
    use rand::SeedableRng;

    #[test]
    fn poisson_mean_and_variance() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for &lambda in &[0.3, 4.0, 50.0] {
            let n = 20000;
            let draws: Vec<f64> = (0..n).map(|_| poisson(lambda, &mut rng) as f64).collect();
            let m = draws.iter().sum::<f64>() / n as f64;
            let v = draws.iter().map(|d| (d - m).powi(2)).sum::<f64>() / n as f64;
            assert!(
                (m - lambda).abs() < 0.05 * lambda + 0.02,
                "mean {m} for {lambda}"
            );
            assert!(
                (v - lambda).abs() < 0.1 * lambda + 0.05,
                "var {v} for {lambda}"
            );
        }
    }

    #[test]
    fn one_spike_peaks_at_dff_per_spike_and_decays() {
        let k = Indicator::Gcamp6m.kinetics();
        let fs = 100.0;
        let mut t = vec![0.1];
        let a = fluorescence(&mut t, 400, fs, &k);
        let peak = a.dff.iter().cloned().fold(0.0f32, f32::max) as f64;
        let expected = k.dff_per_spike / (1.0 + 1.0 / k.saturation_spikes);
        assert!((peak - expected).abs() < 0.01, "peak {peak}");
        assert_eq!(a.spikes.iter().map(|&s| s as u32).sum::<u32>(), 1);
        assert_eq!(a.spikes[10], 1);
        assert!(a.dff[399] < 0.01 * peak as f32);
    }
}
