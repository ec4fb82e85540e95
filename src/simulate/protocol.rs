//! The sound protocol: stimulus set and per-session trial schedule.
//!
//! Follows SCIENCE.md §1.2: pure tones log-spaced over 2–45 kHz and complex sounds,
//! each repeated K times per session in block-randomised order (every block plays
//! every sound once, in a fresh random order), with a jittered inter-trial interval.

use super::config::SimConfig;
use super::rng::{stream, Purpose};
use crate::error::{Error, Result};
use crate::io::csv::StimulusEvent;
use rand::seq::SliceRandom;
use rand::Rng;

/// One sound of the stimulus set.
#[derive(Debug, Clone, PartialEq)]
pub struct Stimulus {
    /// Label written to stimuli.csv (`pt01`…, `cs01`…).
    pub label: String,
    /// True for pure tones.
    pub is_tone: bool,
    /// Tone frequency, Hz (0 for complex sounds).
    pub frequency_hz: f64,
}

/// The stimulus set: tones first (ascending frequency), then complex sounds.
pub fn stimulus_set(cfg: &SimConfig) -> Vec<Stimulus> {
    let tones = (0..cfg.n_tones).map(|i| {
        let frac = if cfg.n_tones > 1 {
            i as f64 / (cfg.n_tones - 1) as f64
        } else {
            0.5
        };
        Stimulus {
            label: format!("pt{:02}", i + 1),
            is_tone: true,
            frequency_hz: (2000.0f64.ln() + frac * (45000.0f64 / 2000.0).ln()).exp(),
        }
    });
    let complex = (0..cfg.n_complex).map(|i| Stimulus {
        label: format!("cs{:02}", i + 1),
        is_tone: false,
        frequency_hz: 0.0,
    });
    tones.chain(complex).collect()
}

/// One presentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trial {
    /// Index into the stimulus set.
    pub stimulus: usize,
    /// Repetition index (block number), 0-based.
    pub repetition: usize,
    /// Frame at which the sound starts.
    pub onset_frame: usize,
}

/// A session's schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub trials: Vec<Trial>,
    pub n_frames: usize,
    pub repetitions: usize,
}

impl Schedule {
    /// The trials as stimuli.csv rows.
    pub fn events(&self, stimuli: &[Stimulus]) -> Vec<StimulusEvent> {
        self.trials
            .iter()
            .enumerate()
            .map(|(i, t)| StimulusEvent {
                trial: i as u32,
                onset_frame: t.onset_frame as u64,
                stimulus: stimuli[t.stimulus].label.clone(),
            })
            .collect()
    }
}

/// Onset times (s) of `blocks` randomised blocks, and the time after the last trial.
fn onset_times(
    cfg: &SimConfig,
    n_stim: usize,
    blocks: usize,
    rng: &mut impl Rng,
) -> Vec<(f64, usize, usize)> {
    let mut t = cfg.lead_in_s;
    let mut out = Vec::with_capacity(n_stim * blocks);
    let mut order: Vec<usize> = (0..n_stim).collect();
    for rep in 0..blocks {
        order.shuffle(rng);
        for &s in &order {
            out.push((t, s, rep));
            let jitter = if cfg.iti_jitter_s > 0.0 {
                rng.random_range(-cfg.iti_jitter_s..=cfg.iti_jitter_s)
            } else {
                0.0
            };
            t += cfg.iti_s + jitter;
        }
    }
    out
}

/// Frames needed for `blocks` blocks (upper bound, no jitter luck needed).
fn frames_needed(cfg: &SimConfig, n_stim: usize, blocks: usize) -> usize {
    let last = cfg.lead_in_s + (n_stim * blocks) as f64 * (cfg.iti_s + cfg.iti_jitter_s);
    ((last + cfg.tail_s) * cfg.fs).ceil() as usize
}

/// The schedule of session `session_index`.
pub fn schedule(
    cfg: &SimConfig,
    seed: u64,
    session_index: usize,
    n_stim: usize,
) -> Result<Schedule> {
    let blocks = match cfg.frames {
        None => cfg.repetitions,
        Some(frames) => {
            let mut b = 0;
            while frames_needed(cfg, n_stim, b + 1) <= frames {
                b += 1;
            }
            if b < 2 {
                return Err(Error::usage(format!(
                    "--frames {frames} is too short for 2 repetitions of {n_stim} sounds at {} s per trial at {} Hz (needs {} frames)",
                    cfg.iti_s,
                    cfg.fs,
                    frames_needed(cfg, n_stim, 2)
                )));
            }
            b
        }
    };
    let mut rng = stream(seed, Purpose::Protocol, session_index as u64, 0);
    let times = onset_times(cfg, n_stim, blocks, &mut rng);
    let n_frames = cfg
        .frames
        .unwrap_or_else(|| frames_needed(cfg, n_stim, blocks));
    let trials = times
        .into_iter()
        .map(|(t, s, rep)| Trial {
            stimulus: s,
            repetition: rep,
            onset_frame: (t * cfg.fs).round() as usize,
        })
        .collect();
    Ok(Schedule {
        trials,
        n_frames,
        repetitions: blocks,
    })
}
