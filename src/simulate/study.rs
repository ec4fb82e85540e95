//! Simulated studies: several mice × FOVs in each of the four cohorts.
//!
//! In: a study preset, a seed and an output folder. Out: one simulated experiment
//! per FOV (`<cohort>/<mouse>/fov<k>/`, each with its own truth), and `study.toml`
//! naming them with their run folders (`.../fov<k>/run`, empty until run). Each
//! experiment is the `demo` preset (or a smaller one) with its cohort set and its
//! own seed; mice differ only by seed, as FOVs do (SCIENCE.md §1.5 describes the
//! real cohorts: 6–10 mice, 6–8 FOVs each).

use super::{simulate, SimConfig, Summary};
use crate::config::{write_study, Cohort, StudyDoc, StudyExperimentDoc};
use crate::error::{Error, Result};
use crate::progress::Progress;
use std::path::{Path, PathBuf};

/// Names accepted by `simulate-study --preset`.
pub const STUDY_PRESETS: &[&str] = &["small", "standard"];

/// The size of a simulated study.
#[derive(Debug, Clone)]
pub struct StudyPreset {
    pub name: String,
    pub mice_per_cohort: usize,
    pub fovs_per_mouse: usize,
    /// The experiment simulated for every FOV (its cohort is set per FOV).
    pub fov: SimConfig,
}

impl StudyPreset {
    /// `small`: 2 mice × 1 FOV per cohort of 128×128 FOVs with 60 cells; for
    /// tests and the workflow check, not for the science.
    pub fn small() -> Self {
        StudyPreset {
            name: "small".into(),
            mice_per_cohort: 2,
            fovs_per_mouse: 1,
            fov: SimConfig {
                preset: "study-small".into(),
                width: 128,
                height: 128,
                n_cells: 60,
                n_ablate: 6,
                frames_per_file: 500,
                ..SimConfig::demo()
            },
        }
    }

    /// `standard`: 4 mice × 2 FOVs per cohort of `demo`-sized FOVs.
    pub fn standard() -> Self {
        StudyPreset {
            name: "standard".into(),
            mice_per_cohort: 4,
            fovs_per_mouse: 2,
            fov: SimConfig {
                preset: "study-standard".into(),
                ..SimConfig::demo()
            },
        }
    }

    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "small" => Ok(Self::small()),
            "standard" => Ok(Self::standard()),
            other => Err(Error::usage(format!(
                "unknown study preset '{other}'; choose one of: {}",
                STUDY_PRESETS.join(", ")
            ))),
        }
    }

    /// The experiment of one FOV: the preset's, in `cohort`. Inhibitory ablation
    /// removes fewer cells: one in 50, at least 3 (the `ablate-inhibitory` preset
    /// ablates 8 of 400).
    pub fn fov_config(&self, cohort: Cohort, mouse: usize, fov: usize) -> SimConfig {
        let mut c = self.fov.clone();
        c.cohort = cohort.as_str().into();
        c.name = format!("{}-m{}-fov{}", cohort.as_str(), mouse + 1, fov + 1);
        if cohort == Cohort::AblateInhibitory {
            c.n_ablate = (c.n_cells / 50).max(3);
        }
        // A mouse's FOVs are stacked in L2/3, 40 µm apart (SCIENCE.md §1.3:
        // "vertically aligned"), so the spatial analysis has 3-D distances.
        c.depth_um = FIRST_FOV_DEPTH_UM + FOV_SPACING_UM * fov as f64;
        c
    }
}

/// Depth of a simulated mouse's first FOV, and the spacing of the next ones, µm.
const FIRST_FOV_DEPTH_UM: f64 = 150.0;
const FOV_SPACING_UM: f64 = 40.0;

/// What was simulated.
#[derive(Debug, Clone)]
pub struct StudySimulation {
    pub study_file: PathBuf,
    pub experiments: Vec<(Cohort, String, Summary)>,
}

/// Simulate every FOV of `preset` into `out` and write `out/study.toml`.
pub fn simulate_study(
    preset: &StudyPreset,
    seed: u64,
    out: &Path,
    overwrite: bool,
    progress: &dyn Progress,
) -> Result<StudySimulation> {
    if preset.mice_per_cohort == 0 || preset.fovs_per_mouse == 0 {
        return Err(Error::usage(
            "a study needs at least one mouse per cohort and one FOV per mouse",
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::output(out, e))?;
    let mut docs = Vec::new();
    let mut experiments = Vec::new();
    let mut index = 0u64;
    for cohort in Cohort::ALL {
        for m in 0..preset.mice_per_cohort {
            let mouse = format!("{}-m{}", cohort.as_str(), m + 1);
            for f in 0..preset.fovs_per_mouse {
                let cfg = preset.fov_config(cohort, m, f);
                let rel = format!("{}/m{}/fov{}", cohort.as_str(), m + 1, f + 1);
                let dir = out.join(&rel);
                // Every FOV its own seed: consecutive, so the study is one seed.
                let s = simulate(
                    &cfg,
                    seed.wrapping_mul(1000).wrapping_add(index),
                    &dir,
                    overwrite,
                    progress,
                )?;
                index += 1;
                docs.push(StudyExperimentDoc {
                    manifest: format!("{rel}/experiment.toml"),
                    run: Some(format!("{rel}/run")),
                    mouse: mouse.clone(),
                    cohort,
                });
                experiments.push((cohort, mouse.clone(), s));
            }
        }
    }
    let study_file = out.join("study.toml");
    write_study(
        &study_file,
        &StudyDoc {
            name: format!("simulated-study-{}", preset.name),
            experiments: docs,
        },
    )?;
    Ok(StudySimulation {
        study_file,
        experiments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_inhibitory_ablates_fewer() {
        for name in STUDY_PRESETS {
            let p = StudyPreset::preset(name).unwrap();
            for c in Cohort::ALL {
                p.fov_config(c, 0, 0).validate().unwrap();
            }
            let inh = p.fov_config(Cohort::AblateInhibitory, 0, 0);
            assert!(inh.n_ablate < p.fov.n_ablate);
        }
        assert!(StudyPreset::preset("huge").is_err());
    }
}
