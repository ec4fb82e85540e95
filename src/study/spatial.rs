//! The study's spatial analysis (SCIENCE.md §5.4; [`crate::analysis::spatial`]).
//!
//! In: each FOV's cells.parquet (positions in µm, `spatial_site`) and
//! neurons.parquet (best response, group, spared). Out: `study_spatial.parquet`,
//! one row per cohort, day, group and distance bin.
//!
//! Per mouse, every spared neuron of groups A and B is paired with every site of
//! the mouse, in any of its FOVs: a mouse's FOVs are "vertically aligned"
//! (SCIENCE.md §1.3), so x and y are taken as shared between them and z is the
//! FOV's `depth_um`. Best amplitudes are normalised to the mouse's baseline mean
//! of the neuron's group; the pairs of all mice of a cohort are pooled (the paper
//! reports mean ± s.e.m. across neurons).

use crate::analysis::spatial::{self, Contributions, DistanceBins, Neuron};
use crate::config::{Cohort, StudyExperiment};
use crate::error::Result;
use crate::io::table::Table;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// One FOV's neurons and sites.
pub struct FovSpatial {
    cohort: Cohort,
    mouse: String,
    /// The FOV's own days, ascending; the neurons' values are indexed by them.
    days: Vec<i32>,
    neurons: Vec<Neuron>,
    sites: Vec<[f64; 3]>,
    depth_known: bool,
}

impl FovSpatial {
    /// The neurons with their values on the study's `days` (NaN on a day this
    /// FOV was not imaged).
    fn neurons_on(&self, days: &[i32]) -> impl Iterator<Item = Neuron> + '_ {
        let at: Vec<Option<usize>> = days
            .iter()
            .map(|d| self.days.binary_search(d).ok())
            .collect();
        self.neurons.iter().map(move |n| Neuron {
            position: n.position,
            group: n.group,
            values: at
                .iter()
                .map(|k| k.map_or(f64::NAN, |k| n.values[k]))
                .collect(),
        })
    }
}

/// One FOV's spatial inputs from its run's `cells.parquet` and `neurons.parquet`;
/// `Ok(Err(why))` when the FOV has none (a run from a release without positions
/// in µm, or a manifest without `um_per_pixel`), which the study reports and
/// skips.
pub fn read_fov_spatial(
    e: &StudyExperiment,
    (cp, c): &(PathBuf, Table),
    (np, n): &(PathBuf, Table),
) -> Result<std::result::Result<FovSpatial, &'static str>> {
    let positions = match spatial::cell_positions(c, cp)? {
        Some(p) if c.column("spatial_site").is_some() => p,
        None if c.column("x_um").is_some() => {
            return Ok(Err(
                "the manifest gives no um_per_pixel, so the cells have no positions in µm",
            ))
        }
        _ => {
            return Ok(Err(
                "cells.parquet has no positions in µm (runs from an older release; rerun them)",
            ))
        }
    };
    let (id, site) = (c.u32s(cp, "cell")?, c.opt_bools(cp, "spatial_site")?);
    let is_site: BTreeSet<u32> = (0..id.len())
        .filter(|&r| site[r] == Some(true))
        .map(|r| id[r])
        .collect();
    let sites: Vec<[f64; 3]> = is_site
        .iter()
        .filter_map(|c| positions.by_cell.get(c).copied())
        .collect();
    let (cell, day, best, group, spared) = (
        n.u32s(np, "cell")?,
        n.i32s(np, "day")?,
        n.f64s(np, "best_response")?,
        n.strs(np, "group")?,
        n.bools(np, "spared")?,
    );
    let days: Vec<i32> = day
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut neurons: BTreeMap<u32, Neuron> = BTreeMap::new();
    for r in 0..cell.len() {
        if !spared[r] || is_site.contains(&cell[r]) {
            continue;
        }
        let (Some(g), Some(p), Ok(d)) = (
            spatial::GROUPS.iter().position(|x| *x == group[r]),
            positions.by_cell.get(&cell[r]),
            days.binary_search(&day[r]),
        ) else {
            continue;
        };
        let x = neurons.entry(cell[r]).or_insert_with(|| Neuron {
            position: *p,
            group: g,
            values: vec![f64::NAN; days.len()],
        });
        x.values[d] = best[r];
    }
    Ok(Ok(FovSpatial {
        cohort: e.cohort,
        mouse: e.mouse.clone(),
        days,
        neurons: neurons.into_values().collect(),
        sites,
        depth_known: positions.depth_known,
    }))
}

/// `study_spatial.parquet`: the pooled pairs of every cohort's mice per day.
/// `after`: the study's ablation day (baseline = days up to it).
pub fn study_spatial(
    fovs: Vec<FovSpatial>,
    days: &[i32],
    after: i32,
    bins: &DistanceBins,
    notes: &mut Vec<String>,
) -> crate::io::table::Table {
    let mut by_mouse: BTreeMap<(Cohort, String), Vec<FovSpatial>> = BTreeMap::new();
    for f in fovs {
        by_mouse
            .entry((f.cohort, f.mouse.clone()))
            .or_default()
            .push(f);
    }
    let cohorts: Vec<Cohort> = Cohort::ALL
        .into_iter()
        .filter(|c| by_mouse.keys().any(|k| k.0 == *c))
        .collect();
    let nd = days.len();
    let mut all = Contributions::new(cohorts.len() * nd, bins.edges().len());
    let baseline: Vec<bool> = days.iter().map(|&d| d <= after).collect();
    let mut no_depth = Vec::new();
    for ((cohort, mouse), fs) in by_mouse {
        if fs.len() > 1 && fs.iter().any(|f| !f.depth_known) {
            no_depth.push(mouse);
            continue;
        }
        let mut neurons: Vec<Neuron> = fs.iter().flat_map(|f| f.neurons_on(days)).collect();
        let sites: Vec<[f64; 3]> = fs.iter().flat_map(|f| f.sites.clone()).collect();
        spatial::normalise_by_group(&mut neurons, &baseline);
        let c = spatial::accumulate(&neurons, &sites, bins, nd);
        let k = cohorts.iter().position(|x| *x == cohort).expect("listed");
        all.extend_at(k * nd, c);
    }
    if !no_depth.is_empty() {
        notes.push(format!(
            "study_spatial.parquet leaves out mice {}: they have several FOVs and some \
             manifest lacks depth_um, so distances between FOVs are unknown",
            no_depth.join(", ")
        ));
    }
    let rows: Vec<(usize, String, i32)> = cohorts
        .iter()
        .enumerate()
        .flat_map(|(k, c)| {
            days.iter()
                .enumerate()
                .map(move |(j, &d)| (k * nd + j, c.to_string(), d))
        })
        .collect();
    spatial::table(&all, bins, &rows, "cohort")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SCIENCE.md's 15–350 µm in 25 µm steps.
    fn bins() -> DistanceBins {
        DistanceBins::default()
    }

    fn fov(
        mouse: &str,
        depth: Option<f64>,
        neuron: Option<[f64; 2]>,
        site: [f64; 2],
    ) -> FovSpatial {
        let z = depth.unwrap_or(0.0);
        FovSpatial {
            cohort: Cohort::AblateResponsive,
            mouse: mouse.into(),
            days: vec![5, 7],
            neurons: neuron
                .map(|p| Neuron {
                    position: [p[0], p[1], z],
                    group: 0,
                    values: vec![2.0, 4.0],
                })
                .into_iter()
                .collect(),
            sites: vec![[site[0], site[1], z]],
            depth_known: depth.is_some(),
        }
    }

    fn pairs_per_bin(t: &crate::io::table::Table) -> Vec<(i32, f64, u32, f64)> {
        let p = std::path::Path::new("study_spatial.parquet");
        let (day, group, lo, n, mean) = (
            t.i32s(p, "day").unwrap(),
            t.strs(p, "group").unwrap(),
            t.f64s(p, "distance_min_um").unwrap(),
            t.u32s(p, "n_pairs").unwrap(),
            t.f64s(p, "norm_best_response").unwrap(),
        );
        (0..t.n_rows())
            .filter(|&k| n[k] > 0 && group[k] == "A")
            .map(|k| (day[k], lo[k], n[k], mean[k]))
            .collect()
    }

    #[test]
    fn a_mouses_fovs_pair_across_depths() {
        // A neuron at 150 µm depth, its FOV's site 20 µm away in x; the other FOV's
        // site 40 µm deeper straight below it, and far away in x and y.
        let fovs = vec![
            fov("m1", Some(150.0), Some([0.0, 0.0]), [20.0, 0.0]),
            fov("m1", Some(190.0), None, [0.0, 0.0]),
        ];
        let mut notes = Vec::new();
        let t = study_spatial(fovs, &[5, 7], 5, &bins(), &mut notes);
        assert!(notes.is_empty(), "{notes:?}");
        // Baseline (day 5) value 2 is the group's mean: day 5 → 1, day 7 → 2.
        assert_eq!(
            pairs_per_bin(&t),
            vec![
                (5, 15.0, 1, 1.0),
                (5, 40.0, 1, 1.0),
                (7, 15.0, 1, 2.0),
                (7, 40.0, 1, 2.0)
            ]
        );
    }

    #[test]
    fn a_fovs_days_are_placed_among_the_studys_days() {
        // Imaged on days 5 and 9 only, in a study of days 5, 7 and 9.
        let mut f = fov("m1", Some(150.0), Some([0.0, 0.0]), [20.0, 0.0]);
        f.days = vec![5, 9];
        let mut notes = Vec::new();
        let t = study_spatial(vec![f], &[5, 7, 9], 5, &bins(), &mut notes);
        assert_eq!(
            pairs_per_bin(&t),
            vec![(5, 15.0, 1, 1.0), (9, 15.0, 1, 2.0)]
        );
    }

    #[test]
    fn a_mouse_with_several_fovs_and_an_unknown_depth_is_left_out() {
        let fovs = vec![
            fov("m1", Some(150.0), Some([0.0, 0.0]), [20.0, 0.0]),
            fov("m1", None, None, [0.0, 0.0]),
            fov("m2", None, Some([0.0, 0.0]), [30.0, 0.0]),
        ];
        let mut notes = Vec::new();
        let t = study_spatial(fovs, &[5, 7], 5, &bins(), &mut notes);
        assert!(notes.len() == 1 && notes[0].contains("m1"), "{notes:?}");
        // m2 has one FOV: its distances hold without a depth.
        assert_eq!(
            pairs_per_bin(&t),
            vec![(5, 15.0, 1, 1.0), (7, 15.0, 1, 2.0)]
        );
    }
}
