//! Simulation parameters and the named presets.
//!
//! A [`SimConfig`] fully determines a simulated experiment together with its seed.
//! Presets fix every value; command-line overrides (`--frames`, `--size`, `--cells`,
//! `--cohort`, ...) are applied on top by [`SimConfig::apply`]. The whole config is
//! written to `truth/simulation.toml` so a dataset documents how it was made.

use crate::config::Cohort;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// GCaMP variant; sets the calcium kernel and the ΔF/F of one action potential.
///
/// Values are round numbers in the range reported for GCaMP6 in mouse cortex in
/// vivo by Chen et al. 2013 (Nature 499:295), not a fit to any one dataset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Indicator {
    Gcamp6s,
    Gcamp6m,
    Gcamp6f,
}

/// Kinetics of one indicator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kinetics {
    /// Rise time constant, s.
    pub tau_rise_s: f64,
    /// Decay time constant, s.
    pub tau_decay_s: f64,
    /// Peak ΔF/F of one action potential (unsaturated).
    pub dff_per_spike: f64,
    /// Calcium (in single-spike peak units) at which ΔF/F is half its linear value.
    pub saturation_spikes: f64,
}

impl Indicator {
    /// The kinetics of this indicator.
    pub fn kinetics(self) -> Kinetics {
        match self {
            Indicator::Gcamp6s => Kinetics {
                tau_rise_s: 0.10,
                tau_decay_s: 1.3,
                dff_per_spike: 0.25,
                saturation_spikes: 12.0,
            },
            Indicator::Gcamp6m => Kinetics {
                tau_rise_s: 0.06,
                tau_decay_s: 0.75,
                dff_per_spike: 0.18,
                saturation_spikes: 12.0,
            },
            Indicator::Gcamp6f => Kinetics {
                tau_rise_s: 0.04,
                tau_decay_s: 0.40,
                dff_per_spike: 0.14,
                saturation_spikes: 12.0,
            },
        }
    }

    /// Parse "6s", "gcamp6s", ...
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().trim_start_matches("gcamp") {
            "6s" => Some(Indicator::Gcamp6s),
            "6m" => Some(Indicator::Gcamp6m),
            "6f" => Some(Indicator::Gcamp6f),
            _ => None,
        }
    }
}

/// Everything that defines a simulated experiment (besides the seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    /// Preset this config started from.
    pub preset: String,
    /// Cohort: which cells the ablation removes (or none, for control).
    pub cohort: String,
    /// Experiment name written into the manifest.
    pub name: String,
    /// Frame width and height, px.
    pub width: usize,
    pub height: usize,
    /// Number of neurons placed in the tissue.
    pub n_cells: usize,
    /// Mean soma radius, px.
    pub cell_radius_px: f64,
    /// Pixel size, µm, written into the manifest (`um_per_pixel`).
    #[serde(default = "default_um_per_pixel")]
    pub um_per_pixel: f64,
    /// Imaging depth below the pia, µm, written into the manifest (`depth_um`).
    #[serde(default = "default_depth_um")]
    pub depth_um: f64,
    /// Frame rate, Hz.
    pub fs: f64,
    /// Imaging days, in order; session ids are `d<day>`.
    pub days: Vec<i32>,
    /// The ablation (or sham) happens after this day's imaging.
    pub ablation_after_day: i32,
    /// Day of the reference session (the common coordinate frame).
    pub reference_day: i32,
    /// Pure tones (log-spaced 2–45 kHz) and complex sounds in the stimulus set.
    pub n_tones: usize,
    pub n_complex: usize,
    /// Repetitions of every stimulus per session (block-randomised order).
    pub repetitions: usize,
    /// Inter-trial interval and its uniform jitter (±), s.
    pub iti_s: f64,
    pub iti_jitter_s: f64,
    /// Silence before the first and after the last trial, s.
    pub lead_in_s: f64,
    pub tail_s: f64,
    /// Frames per session; when set, the number of repetitions is fitted to it.
    pub frames: Option<usize>,
    /// Frames per TIFF file (sessions are split into several files, like ScanImage).
    pub frames_per_file: usize,
    /// Calcium indicator.
    pub indicator: Indicator,
    /// Fraction of inhibitory neurons.
    pub inhibitory_fraction: f64,
    /// Stationary fraction of sound-responsive excitatory / inhibitory neurons.
    pub responsive_fraction_exc: f64,
    pub responsive_fraction_inh: f64,
    /// Neurons targeted by the ablation (ignored for control).
    pub n_ablate: usize,
    /// Fraction of targets that keep a filled GCaMP soma (lose only the nucleus).
    pub ablation_filled_fraction: f64,
    /// Targeting jitter of the written ablation positions, px (s.d. per axis).
    pub target_jitter_px: f64,
    /// Write a second, structural (nuclear) channel interleaved with the functional one.
    pub structural_channel: bool,
    /// Add a smooth nonrigid warp to the rigid motion.
    pub nonrigid: bool,
    /// Rigid motion: stationary s.d. of the slow wander, px; bound, px.
    pub motion_sd_px: f64,
    pub motion_max_px: f64,
    /// Sudden jumps: rate (Hz) and size (s.d., px); they relax over ~5 s.
    pub jump_rate_hz: f64,
    pub jump_sd_px: f64,
    /// Nonrigid warp: s.d. of control-point displacements, px.
    pub warp_sd_px: f64,
    /// Between-day FOV change: translation s.d. (px) and rotation s.d. (degrees).
    pub day_shift_sd_px: f64,
    pub day_rotation_sd_deg: f64,
    /// Median resting brightness of a soma, photons per pixel per frame.
    pub photons_per_cell: f64,
    /// Neuropil and background brightness relative to the median soma.
    pub neuropil_level: f64,
    pub background_level: f64,
    /// Fraction of the neuropil signal seen through a soma (Suite2p's α).
    pub neuropil_contamination: f64,
    /// Detector: ADU per photon, offset (ADU, may be negative) and read noise (ADU s.d.).
    pub gain_adu: f64,
    pub offset_adu: f64,
    pub read_noise_adu: f64,
    /// Photobleaching within a session: lost fraction and time constant, s.
    pub bleach_fraction: f64,
    pub bleach_tau_s: f64,
    /// Representational drift: scale of the slow (20-day OU) change of a cell's
    /// tuning loadings; the loading change has s.d. `0.5 × drift_sd` at long lags.
    pub drift_sd: f64,
    /// Probability that a cell is not visible in a session (out of plane, dim).
    pub p_absent: f64,
    /// Compress TIFF pages with Deflate (the committed sample uses it).
    pub deflate: bool,
    /// Trial windows used for the truth responses and maps, s (SCIENCE.md §2).
    pub baseline_window_s: f64,
    pub response_window_s: f64,
}

fn default_um_per_pixel() -> f64 {
    1.0
}

fn default_depth_um() -> f64 {
    200.0
}

/// Names accepted by `--preset`.
pub const PRESETS: &[&str] = &[
    "sample",
    "demo",
    "standard",
    "control",
    "ablate-responsive",
    "ablate-silent",
    "ablate-inhibitory",
];

impl SimConfig {
    /// The `standard` experiment: 512×512, ~400 cells, 7 sessions of ~3,100 frames.
    pub fn standard() -> Self {
        SimConfig {
            preset: "standard".into(),
            cohort: Cohort::AblateResponsive.as_str().into(),
            name: "sim-fov".into(),
            width: 512,
            height: 512,
            n_cells: 400,
            cell_radius_px: 6.0,
            // Somata 12 µm across; a 512 µm field of view.
            um_per_pixel: 1.0,
            depth_um: 200.0,
            fs: 15.0,
            days: vec![1, 3, 5, 7, 9, 11, 15],
            ablation_after_day: 5,
            reference_day: 5,
            n_tones: 19,
            n_complex: 15,
            repetitions: 5,
            iti_s: 1.1,
            iti_jitter_s: 0.1,
            lead_in_s: 3.0,
            tail_s: 2.0,
            frames: None,
            frames_per_file: 1000,
            indicator: Indicator::Gcamp6m,
            inhibitory_fraction: 0.1,
            responsive_fraction_exc: 0.3,
            responsive_fraction_inh: 0.5,
            n_ablate: 35,
            ablation_filled_fraction: 0.106,
            target_jitter_px: 0.5,
            structural_channel: false,
            nonrigid: false,
            motion_sd_px: 1.0,
            motion_max_px: 10.0,
            jump_rate_hz: 0.02,
            jump_sd_px: 2.5,
            warp_sd_px: 0.8,
            day_shift_sd_px: 5.0,
            day_rotation_sd_deg: 1.0,
            photons_per_cell: 5.0,
            neuropil_level: 0.5,
            background_level: 0.15,
            neuropil_contamination: 0.7,
            gain_adu: 30.0,
            offset_adu: -30.0,
            read_noise_adu: 12.0,
            bleach_fraction: 0.08,
            bleach_tau_s: 200.0,
            drift_sd: 0.3,
            p_absent: 0.03,
            deflate: false,
            baseline_window_s: 0.5,
            response_window_s: 0.5,
        }
    }

    /// The `sample` experiment: small enough to commit, seconds to generate.
    pub fn sample() -> Self {
        SimConfig {
            preset: "sample".into(),
            name: "sample-fov".into(),
            width: 64,
            height: 64,
            n_cells: 50,
            cell_radius_px: 3.2,
            um_per_pixel: 2.0,
            fs: 5.0,
            n_tones: 7,
            n_complex: 5,
            repetitions: 4,
            iti_s: 0.8,
            iti_jitter_s: 0.0,
            lead_in_s: 2.0,
            tail_s: 1.0,
            frames_per_file: 120,
            n_ablate: 5,
            motion_sd_px: 0.5,
            motion_max_px: 3.0,
            jump_sd_px: 1.0,
            day_shift_sd_px: 2.0,
            photons_per_cell: 8.0,
            deflate: true,
            // Trials start every 4 frames: keep the windows from overlapping.
            baseline_window_s: 0.4,
            response_window_s: 0.4,
            ..Self::standard()
        }
    }

    /// The `demo` experiment: the whole story in seconds. 256×256 with 180 cells and
    /// 15 ablated, big enough that the maps, their dip and their recovery show.
    pub fn demo() -> Self {
        SimConfig {
            preset: "demo".into(),
            name: "demo-fov".into(),
            width: 256,
            height: 256,
            n_cells: 180,
            cell_radius_px: 5.0,
            um_per_pixel: 1.2,
            fs: 5.0,
            n_tones: 15,
            n_complex: 3,
            repetitions: 4,
            iti_s: 1.0,
            iti_jitter_s: 0.1,
            lead_in_s: 2.0,
            tail_s: 1.0,
            frames_per_file: 500,
            n_ablate: 15,
            motion_max_px: 6.0,
            day_shift_sd_px: 3.0,
            ..Self::standard()
        }
    }

    /// The preset called `name`.
    pub fn preset(name: &str) -> Result<Self> {
        let cohort_preset = |c: Cohort| SimConfig {
            preset: name.to_string(),
            cohort: c.as_str().into(),
            ..Self::standard()
        };
        match name {
            "sample" => Ok(Self::sample()),
            "demo" => Ok(Self::demo()),
            "standard" => Ok(Self::standard()),
            "control" => Ok(cohort_preset(Cohort::Control)),
            "ablate-responsive" => Ok(cohort_preset(Cohort::AblateResponsive)),
            "ablate-silent" => Ok(cohort_preset(Cohort::AblateSilent)),
            "ablate-inhibitory" => Ok(SimConfig {
                n_ablate: 8,
                ..cohort_preset(Cohort::AblateInhibitory)
            }),
            other => Err(Error::usage(format!(
                "unknown preset '{other}'; choose one of: {}",
                PRESETS.join(", ")
            ))),
        }
    }

    /// The cohort as an enum.
    pub fn cohort(&self) -> Result<Cohort> {
        self.cohort.parse::<Cohort>().map_err(|_| {
            Error::usage(format!(
                "unknown cohort '{}'; choose one of: {}",
                self.cohort,
                Cohort::ALL
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// Apply command-line overrides and check the result.
    pub fn apply(&mut self, o: &Overrides) -> Result<()> {
        if let Some((w, h)) = o.size {
            self.width = w;
            self.height = h;
        }
        if let Some(n) = o.cells {
            self.n_cells = n;
        }
        if let Some(f) = o.frames {
            self.frames = Some(f);
        }
        if let Some(c) = &o.cohort {
            self.cohort = c.clone();
        }
        if let Some(i) = o.indicator {
            self.indicator = i;
        }
        if let Some(r) = o.repetitions {
            self.repetitions = r;
        }
        if let Some(n) = o.n_ablate {
            self.n_ablate = n;
        }
        self.structural_channel |= o.structural;
        self.nonrigid |= o.nonrigid;
        self.validate()
    }

    /// Reject configurations the simulator cannot honour, with the reason.
    pub fn validate(&self) -> Result<()> {
        self.cohort()?;
        let bad = |m: String| Err(Error::usage(m));
        if self.width < 16 || self.height < 16 {
            return bad(format!(
                "frame size {}x{} is too small (at least 16x16)",
                self.width, self.height
            ));
        }
        if self.width > 4096 || self.height > 4096 {
            return bad(format!(
                "frame size {}x{} is too large (at most 4096x4096)",
                self.width, self.height
            ));
        }
        if self.n_cells == 0 {
            return bad("--cells must be at least 1".into());
        }
        if !(self.fs.is_finite() && self.fs > 0.0) {
            return bad(format!("frame rate {} must be positive", self.fs));
        }
        if self.days.is_empty() || !self.days.windows(2).all(|w| w[0] < w[1]) {
            return bad("days must be a non-empty increasing list".into());
        }
        if !self.days.contains(&self.reference_day) {
            return bad(format!(
                "reference day {} is not an imaging day",
                self.reference_day
            ));
        }
        if !self.days.iter().any(|&d| d > self.ablation_after_day) {
            return bad(format!(
                "no imaging day after the ablation (after day {})",
                self.ablation_after_day
            ));
        }
        if self.n_tones + self.n_complex < 2 {
            return bad("the stimulus set needs at least 2 sounds".into());
        }
        if self.repetitions < 2 {
            return bad("at least 2 repetitions per stimulus are needed".into());
        }
        if self.frames_per_file == 0 {
            return bad("frames_per_file must be at least 1".into());
        }
        if let Some(f) = self.frames {
            if f == 0 {
                return bad("--frames must be at least 1".into());
            }
        }
        Ok(())
    }

    /// Session id for an imaging day.
    pub fn session_id(day: i32) -> String {
        format!("d{day}")
    }
}

/// Command-line overrides of a preset.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub size: Option<(usize, usize)>,
    pub cells: Option<usize>,
    pub frames: Option<usize>,
    pub cohort: Option<String>,
    pub indicator: Option<Indicator>,
    pub repetitions: Option<usize>,
    pub n_ablate: Option<usize>,
    pub structural: bool,
    pub nonrigid: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_valid() {
        for p in PRESETS {
            SimConfig::preset(p).unwrap().validate().unwrap();
        }
        assert!(SimConfig::preset("nope").is_err());
    }

    #[test]
    fn overrides_are_checked() {
        let mut c = SimConfig::sample();
        let o = Overrides {
            size: Some((8, 8)),
            ..Default::default()
        };
        assert!(c.apply(&o).is_err());
        let o = Overrides {
            cohort: Some("bogus".into()),
            ..Default::default()
        };
        let mut c = SimConfig::sample();
        assert!(c.apply(&o).is_err());
    }
}
