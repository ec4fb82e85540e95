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

/// The cells distances are measured to: the ablated cells (`ablated` in
/// cells.parquet: lost, filled or undetected; a target that survived is not a
/// site); without any target, the `k_without_targets` most responsive cells of
/// the groups' reference session.
fn sites(input: &SpatialInput, ablated: &[bool], k_without_targets: usize) -> Vec<bool> {
    if input.targeted.iter().any(|&t| t) {
        return ablated.to_vec();
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

/// Each tracked cell's `ablated` flag from cells.parquet.
fn ablated(cells: &Table, path: &Path, n: usize) -> Result<Vec<bool>> {
    let mut out = vec![false; n];
    for (&c, &a) in cells
        .u32s(path, "cell")?
        .iter()
        .zip(cells.bools(path, "ablated")?)
    {
        if let Some(x) = out.get_mut(c as usize) {
            *x |= a;
        }
    }
    Ok(out)
}

/// spatial.parquet and the sites.
pub fn spatial_analysis(
    input: &SpatialInput,
    cells: &Table,
    cells_path: &Path,
    params: &AnalysisParams,
) -> Result<SpatialOutput> {
    let n = input.targeted.len();
    let bins = DistanceBins::from(params);
    let rows: Vec<(usize, String, i32)> = (0..input.sessions.len())
        .filter(|&s| input.designs[s].is_some())
        .map(|s| (s, input.sessions[s].id.clone(), input.sessions[s].day))
        .collect();
    let sites = sites(
        input,
        &ablated(cells, cells_path, n)?,
        params.spatial_sites_without_targets,
    );
    let positions = spatial::cell_positions(cells, cells_path)?.map(|p| {
        (0..n as u32)
            .map(|c| p.by_cell.get(&c).copied())
            .collect::<Vec<_>>()
    });
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
            "spatial.parquet is empty: no ablated cells (targets that all survived), or \
             no targets and no cells to stand in for them ([analysis] \
             spatial_sites_without_targets)",
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
