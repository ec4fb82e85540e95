//! The analyze stage's spatial part (SCIENCE.md §5.4, [`crate::analysis::spatial`]).
//!
//! In: cells.parquet's positions in µm (`x_um`, `y_um`, `z_um`, from the manifest's
//! `um_per_pixel` and `depth_um`), the cells' best responses, groups and spared
//! flags. Out: `spatial.parquet` (per session, group and distance bin) and each
//! cell's `spatial_site` flag for cells.parquet.
//!
//! Sites are the targeted cells; without targets (a sham control) the
//! `[analysis] spatial_sites_without_targets` most responsive cells of the groups'
//! reference session stand in, as SCIENCE.md measures controls' distances to
//! their high-category cells. Sites never count as spared neurons here.

use super::SessionSummary;
use crate::analysis::neurons::{CellSession, TrialDesign};
use crate::analysis::spatial::{self, DistanceBins, Neuron};
use crate::config::AnalysisParams;
use crate::error::Result;
use crate::io::table::Table;
use std::path::Path;

/// What the stage knows about every tracked cell, by cell number.
pub struct SpatialInput<'a> {
    pub sessions: &'a [SessionSummary],
    pub designs: &'a [Option<TrialDesign>],
    pub results: &'a [Vec<Option<CellSession>>],
    pub targeted: &'a [bool],
    pub spared: &'a [bool],
    pub groups: &'a [String],
    pub reference: Option<usize>,
    /// Sessions before the ablation.
    pub before: &'a [bool],
}

/// The outcome: the table, the sites, and why the table is empty, if it is.
pub struct SpatialOutput {
    pub table: Table,
    pub sites: Vec<bool>,
    pub note: Option<String>,
}

pub fn bins(a: &AnalysisParams) -> DistanceBins {
    DistanceBins {
        min_um: a.spatial_min_um,
        max_um: a.spatial_max_um,
        width_um: a.spatial_bin_um,
    }
}

/// Each cell's position in µm from cells.parquet (its first row); None for a cell
/// without one, and None overall when the table has no µm columns (a run made
/// before they existed) or no pixel size.
fn positions(cells: &Table, path: &Path, n: usize) -> Result<Option<Vec<Option<[f64; 3]>>>> {
    if cells.column("x_um").is_none() {
        return Ok(None);
    }
    let (id, x, y, z) = (
        cells.u32s(path, "cell")?,
        cells.opt_f32s(path, "x_um")?,
        cells.opt_f32s(path, "y_um")?,
        cells.opt_f32s(path, "z_um")?,
    );
    let mut out = vec![None; n];
    for r in 0..id.len() {
        let c = id[r] as usize;
        if c < n && out[c].is_none() {
            if let (Some(x), Some(y)) = (x[r], y[r]) {
                // One FOV: a missing depth is the same for every cell.
                out[c] = Some([x as f64, y as f64, z[r].unwrap_or(0.0) as f64]);
            }
        }
    }
    Ok(out.iter().any(Option::is_some).then_some(out))
}

/// The cells distances are measured to.
fn sites(input: &SpatialInput, k_without_targets: usize) -> Vec<bool> {
    if input.targeted.iter().any(|&t| t) {
        return input.targeted.to_vec();
    }
    let mut sites = vec![false; input.targeted.len()];
    let Some(r) = input.reference else {
        return sites;
    };
    let mut ranked: Vec<(usize, f64)> = input.results[r]
        .iter()
        .enumerate()
        .filter_map(|(c, x)| x.as_ref().map(|x| (c, x.best)))
        .filter(|(_, b)| b.is_finite())
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    for (c, _) in ranked.into_iter().take(k_without_targets) {
        sites[c] = true;
    }
    sites
}

/// spatial.parquet and the sites.
pub fn spatial_analysis(
    input: &SpatialInput,
    cells: &Table,
    cells_path: &Path,
    params: &AnalysisParams,
) -> Result<SpatialOutput> {
    let n = input.targeted.len();
    let bins = bins(params);
    let rows: Vec<(usize, String, i32)> = (0..input.sessions.len())
        .filter(|&s| input.designs[s].is_some())
        .map(|s| (s, input.sessions[s].id.clone(), input.sessions[s].day))
        .collect();
    let sites = sites(input, params.spatial_sites_without_targets);
    let positions = positions(cells, cells_path, n)?;
    let empty = |note: &str, sites: Vec<bool>| SpatialOutput {
        table: spatial::table(
            &spatial::Contributions::new(input.sessions.len(), bins.edges().len()),
            &bins,
            &[],
            "session",
        ),
        sites,
        note: Some(note.to_string()),
    };
    let Some(positions) = positions else {
        return Ok(empty(
            "spatial.parquet is empty: the manifest gives no um_per_pixel, so cells have \
             no positions in µm (SCIENCE.md §5.4 measures distances in µm)",
            sites,
        ));
    };
    let site_positions: Vec<[f64; 3]> = (0..n)
        .filter(|&c| sites[c])
        .filter_map(|c| positions[c])
        .collect();
    if site_positions.is_empty() {
        return Ok(empty(
            "spatial.parquet is empty: no ablation targets, and no cells to stand in for \
             them ([analysis] spatial_sites_without_targets)",
            sites,
        ));
    }
    let mut neurons = spared_neurons(input, &positions, &sites);
    let baseline: Vec<bool> = (0..input.sessions.len())
        .map(|s| input.before[s] && input.designs[s].is_some())
        .collect();
    spatial::normalise_by_group(&mut neurons, &baseline);
    let c = spatial::accumulate(&neurons, &site_positions, &bins, input.sessions.len());
    Ok(SpatialOutput {
        table: spatial::table(&c, &bins, &rows, "session"),
        sites,
        note: None,
    })
}

/// The spared cells of groups A and B with a position, none of them a site, with
/// their best response per session (NaN where not analysed).
fn spared_neurons(
    input: &SpatialInput,
    positions: &[Option<[f64; 3]>],
    sites: &[bool],
) -> Vec<Neuron> {
    (0..input.targeted.len())
        .filter(|&c| input.spared[c] && !sites[c])
        .filter_map(|c| {
            let group = spatial::GROUPS.iter().position(|g| *g == input.groups[c])?;
            Some(Neuron {
                position: positions[c]?,
                group,
                values: input
                    .results
                    .iter()
                    .map(|res| res[c].as_ref().map_or(f64::NAN, |x| x.best))
                    .collect(),
            })
        })
        .collect()
}
