//! The `analyze` stage: trial responses of every tracked cell, responsiveness,
//! single-neuron measures, groups, and the representational maps of every
//! session ([`crate::analysis`]). Reads cells.parquet and traces.parquet; writes
//! trials.parquet, tuning.parquet, neurons.parquet, rsm.parquet,
//! correlations.parquet, correlation_summary.parquet, map_summary.parquet,
//! map_similarity.parquet, stability.parquet and drift.parquet
//! ([`super::stability`]) and spatial.parquet ([`super::spatial`]), and sets
//! `initially_silent` and `spatial_site` in cells.parquet.

use super::{RunLayout, SessionSummary};
use crate::analysis::neurons::{analyse_cell, CellSession, NeuronSettings, Test, TrialDesign};
use crate::analysis::{correlations, maps};
use crate::config::{Experiment, Params, ResponseTest};
use crate::error::{Error, Result};
use crate::io::table::{for_each_batch, read_table, write_table, Column, Table, TableWriter};
use crate::progress::Progress;
use ndarray::Array2;
use rayon::prelude::*;
use std::collections::HashMap;

/// What the stage found, for the run's summary.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisSummary {
    /// Per session with stimuli: (id, cells analysed, fraction responsive).
    pub sessions: Vec<(String, usize, f64)>,
    /// The session whose responsiveness defines the groups.
    pub reference: Option<String>,
    /// Spared cells in the maps.
    pub n_spared: usize,
    /// Traces left out because their neuropil-corrected baseline is not positive
    /// enough for a meaningful ΔF/F, or their noise is far above the session's.
    pub n_unreliable: usize,
    /// Per session: (id, diagonal_norm, off_diagonal_norm).
    pub maps: Vec<(String, f64, f64)>,
    /// Caveats about the settings, for the user.
    pub warnings: Vec<String>,
}

/// The tracked cells: per cell, per session index, the ROI, and whether a
/// transferred footprint stands in for a missing one.
struct Tracked {
    rois: Vec<Vec<Option<u32>>>,
    transferred: Vec<Vec<bool>>,
    targeted: Vec<bool>,
}

fn read_tracked(layout: &RunLayout, sessions: &[SessionSummary]) -> Result<(Table, Tracked)> {
    let path = layout.table("cells");
    if !path.exists() {
        return Err(Error::input(
            &path,
            "the analyze stage needs cells.parquet from the track stage",
        ));
    }
    let t = read_table(&path)?;
    let (cell, sess, roi, targeted) = (
        t.u32s(&path, "cell")?,
        t.strs(&path, "session")?,
        t.opt_u32s(&path, "roi")?,
        t.bools(&path, "targeted")?,
    );
    // Runs of cortexmap before footprint transfer have no such column.
    let transferred = t.bools(&path, "transferred").ok();
    let n = cell.iter().map(|&c| c as usize + 1).max().unwrap_or(0);
    let mut tracked = Tracked {
        rois: vec![vec![None; sessions.len()]; n],
        transferred: vec![vec![false; sessions.len()]; n],
        targeted: vec![false; n],
    };
    for i in 0..cell.len() {
        let c = cell[i] as usize;
        if let Some(s) = sessions.iter().position(|x| x.id == sess[i]) {
            tracked.rois[c][s] = roi[i];
            tracked.transferred[c][s] = roi[i].is_none() && transferred.is_some_and(|t| t[i]);
        }
        tracked.targeted[c] |= targeted[i];
    }
    Ok((t, tracked))
}

/// Where a cell's trace in a session comes from: its ROI there (traces.parquet)
/// or its transferred footprint (transferred_traces.parquet, by cell).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TraceKey {
    Roi(u32),
    Cell(u32),
}

impl Tracked {
    fn key(&self, cell: usize, session: usize) -> Option<TraceKey> {
        match self.rois[cell][session] {
            Some(roi) => Some(TraceKey::Roi(roi)),
            None if self.transferred[cell][session] => Some(TraceKey::Cell(cell as u32)),
            None => None,
        }
    }
}

/// ΔF/F by (session index, trace key).
type Traces = HashMap<(usize, TraceKey), Vec<f32>>;

/// ΔF/F of the traces the tracked cells use, streamed from traces.parquet (and
/// transferred_traces.parquet), keeping only those whose ΔF/F has a meaningful
/// baseline: the median neuropil-corrected
/// F (F − α·Fneu) must be at least `min_f0_fraction` of the median raw F. Where
/// the neuropil outshines the ROI, F0 sits at the floor and ΔF/F is noise blown up
/// by orders of magnitude; one such cell would dominate every population
/// correlation. Returns the traces and the number of ROIs refused.
fn read_dff(
    layout: &RunLayout,
    sessions: &[SessionSummary],
    wanted: &[std::collections::HashSet<TraceKey>],
    alpha: f64,
    min_f0_fraction: f64,
    max_noise_ratio: f64,
) -> Result<(Traces, usize)> {
    let mut pending = HashMap::new();
    read_trace_table(layout, sessions, wanted, "traces", alpha, &mut pending)?;
    if wanted
        .iter()
        .any(|w| w.iter().any(|k| matches!(k, TraceKey::Cell(_))))
    {
        read_trace_table(
            layout,
            sessions,
            wanted,
            "transferred_traces",
            alpha,
            &mut pending,
        )?;
    }
    let median = |mut v: Vec<f32>| -> f64 {
        v.retain(|x| x.is_finite());
        if v.is_empty() {
            return f64::NAN;
        }
        let m = v.len() / 2;
        *v.select_nth_unstable_by(m, |a, b| a.total_cmp(b)).1 as f64
    };
    let mut refused = 0;
    let mut kept = HashMap::new();
    for (key, (dff, f, fc)) in pending {
        let (mf, mc) = (median(f), median(fc));
        if mc >= min_f0_fraction * mf && mc > 0.0 {
            kept.insert(key, dff);
        } else {
            refused += 1;
        }
    }
    if max_noise_ratio > 0.0 {
        refused += drop_noisy(&mut kept, sessions.len(), max_noise_ratio);
    }
    Ok((kept, refused))
}

/// Drop the traces whose ΔF/F noise exceeds `ratio` times the median noise of
/// their session's traces; returns how many. Pearson correlations across cells
/// weigh each cell by its variance, so one trace with an F0 near zero (a dim
/// cell, or a footprint transferred onto a dim spot) would dominate a session's
/// map.
fn drop_noisy(traces: &mut Traces, n_sessions: usize, ratio: f64) -> usize {
    let noise: HashMap<(usize, TraceKey), f64> = traces
        .par_iter()
        .map(|(k, v)| {
            // No two finite frames in a row: no noise estimate (noise_sd says 0).
            let measurable = v.windows(2).any(|w| w[0].is_finite() && w[1].is_finite());
            let n = if measurable {
                crate::extract::oasis::noise_sd(v) as f64
            } else {
                f64::NAN
            };
            (*k, n)
        })
        .collect();
    let mut limit = vec![f64::INFINITY; n_sessions];
    for (s, l) in limit.iter_mut().enumerate() {
        let mut v: Vec<f64> = noise
            .iter()
            .filter(|(k, n)| k.0 == s && n.is_finite())
            .map(|(_, &n)| n)
            .collect();
        if !v.is_empty() {
            let m = v.len() / 2;
            *l = ratio * *v.select_nth_unstable_by(m, |a, b| a.total_cmp(b)).1;
        }
    }
    let before = traces.len();
    traces.retain(|k, _| noise[k].is_finite() && noise[k] <= limit[k.0]);
    before - traces.len()
}

/// Per trace: ΔF/F by frame, raw F and corrected F (for the baseline check).
type Pending = HashMap<(usize, TraceKey), (Vec<f32>, Vec<f32>, Vec<f32>)>;

/// Stream the wanted traces of table `name` (keyed by `roi` in traces.parquet,
/// by `cell` in transferred_traces.parquet) into `out`.
fn read_trace_table(
    layout: &RunLayout,
    sessions: &[SessionSummary],
    wanted: &[std::collections::HashSet<TraceKey>],
    name: &str,
    alpha: f64,
    out: &mut Pending,
) -> Result<()> {
    let path = layout.table(name);
    if !path.exists() {
        return Err(Error::input(
            &path,
            format!(
                "the analyze stage needs {name}.parquet from the {} stage",
                if name == "traces" { "extract" } else { "track" }
            ),
        ));
    }
    let by_cell = name != "traces";
    let index: HashMap<&str, usize> = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let id_column = if by_cell { "cell" } else { "roi" };
    for_each_batch(
        &path,
        &["session", id_column, "frame", "f", "fneu", "dff"],
        |t| {
            let (s, r, fr) = (
                t.strs(&path, "session")?,
                t.u32s(&path, id_column)?,
                t.u32s(&path, "frame")?,
            );
            let (f, fneu, d) = (
                t.f32s(&path, "f")?,
                t.f32s(&path, "fneu")?,
                t.f32s(&path, "dff")?,
            );
            for i in 0..s.len() {
                let Some(&k) = index.get(s[i].as_str()) else {
                    continue;
                };
                let key = if by_cell {
                    TraceKey::Cell(r[i])
                } else {
                    TraceKey::Roi(r[i])
                };
                if !wanted[k].contains(&key) {
                    continue;
                }
                let n = sessions[k].n_frames;
                let e = out
                    .entry((k, key))
                    .or_insert_with(|| (vec![f32::NAN; n], Vec::new(), Vec::new()));
                if let Some(v) = e.0.get_mut(fr[i] as usize) {
                    *v = d[i];
                }
                e.1.push(f[i]);
                e.2.push(f[i] - alpha as f32 * fneu[i]);
            }
            Ok(())
        },
    )
}

/// Sorted stimulus labels over every session, and each session's trial design.
fn designs(
    exp: &Experiment,
    sessions: &[SessionSummary],
) -> (Vec<String>, Vec<Option<TrialDesign>>) {
    let mut labels: Vec<String> = exp
        .sessions
        .iter()
        .filter_map(|s| s.stimuli.as_ref())
        .flat_map(|st| st.events.iter().map(|e| e.stimulus.clone()))
        .collect();
    labels.sort();
    labels.dedup();
    let designs = sessions
        .iter()
        .map(|s| {
            let st = exp.session(&s.id)?.stimuli.as_ref()?;
            let mut ev = st.events.clone();
            ev.sort_by_key(|e| e.trial);
            let stim = ev
                .iter()
                .map(|e| labels.binary_search(&e.stimulus).expect("label listed"))
                .collect();
            let mut d = TrialDesign::new(
                ev.iter().map(|e| e.onset_frame as usize).collect(),
                stim,
                labels.len(),
            );
            d.trial = ev.iter().map(|e| e.trial).collect();
            Some(d)
        })
        .collect();
    (labels, designs)
}

/// The analyze stage.
pub fn run_analyze(
    exp: &Experiment,
    sessions: &[SessionSummary],
    layout: &RunLayout,
    params: &Params,
    progress: &dyn Progress,
) -> Result<AnalysisSummary> {
    let a = &params.analysis;
    let (cells_table, tracked) = read_tracked(layout, sessions)?;
    let (labels, designs) = designs(exp, sessions);
    let wanted: Vec<std::collections::HashSet<TraceKey>> = (0..sessions.len())
        .map(|s| {
            (0..tracked.rois.len())
                .filter_map(|c| tracked.key(c, s))
                .collect()
        })
        .collect();
    let (dff, refused) = read_dff(
        layout,
        sessions,
        &wanted,
        params.extract.neuropil_coefficient,
        a.min_f0_fraction,
        a.max_noise_ratio,
    )?;

    let warnings = test_power_warnings(sessions, &designs, a);
    // Per session, per cell: the single-neuron analysis.
    progress.start("analyze", sessions.len() as u64);
    let results: Vec<Vec<Option<CellSession>>> = sessions
        .iter()
        .enumerate()
        .map(|(s, sess)| {
            let out = match &designs[s] {
                None => vec![None; tracked.rois.len()],
                Some(design) => {
                    let settings = NeuronSettings {
                        baseline_frames: ((a.baseline_window_s * sess.fs).round() as usize).max(1),
                        response_frames: ((a.response_window_s * sess.fs).round() as usize).max(1),
                        test: match a.test {
                            ResponseTest::Wilcoxon => Test::Wilcoxon,
                            ResponseTest::Ttest => Test::PairedT,
                            ResponseTest::Shuffle => Test::Shuffle {
                                shuffles: a.shuffles,
                                seed: 0,
                            },
                        },
                        fdr_q: a.fdr_q,
                        min_amplitude: a.min_amplitude,
                        width_rank: a.width_rank,
                    };
                    tracked
                        .rois
                        .par_iter()
                        .enumerate()
                        .map(|(c, _)| {
                            let trace = dff.get(&(s, tracked.key(c, s)?))?;
                            // One seeded stream per session and cell: deterministic
                            // whatever the thread count.
                            let mut cell_settings = settings;
                            if let Test::Shuffle { shuffles, .. } = settings.test {
                                cell_settings.test = Test::Shuffle {
                                    shuffles,
                                    seed: ((s as u64) << 32) | c as u64,
                                };
                            }
                            Some(analyse_cell(trace, design, &cell_settings))
                        })
                        .collect()
                }
            };
            progress.advance(1);
            out
        })
        .collect();
    progress.finish();

    let reference = reference_session(exp, sessions, &designs);
    let groups = groups(&results, reference);
    let spared = spared_cells(
        &tracked,
        &results,
        &designs,
        reference,
        a.exclude_categories,
    );
    let session_maps = session_maps(&results, &designs, &spared, labels.len());

    write_table(
        layout.table("trials"),
        &trials_table(sessions, &designs, &labels, &results),
    )?;
    write_table(
        layout.table("tuning"),
        &tuning_table(sessions, &labels, &results),
    )?;
    let corr_ref = super::stability::tuning_corr_ref(&results, reference);
    let before = pre_ablation(exp, sessions);
    let strict = strict_group_b(&results, reference, &before);
    write_table(
        layout.table("neurons"),
        &neurons_table(
            sessions,
            &tracked,
            &results,
            (&groups, &spared, &strict),
            &corr_ref,
        ),
    )?;
    write_table(
        layout.table("stability"),
        &super::stability::stability_table(sessions, &designs, &results, &spared),
    )?;
    write_table(
        layout.table("drift"),
        &super::stability::drift_table(&super::stability::DriftInput {
            sessions,
            designs: &designs,
            results: &results,
            spared: &spared,
            reference,
            before: &before,
            corr: &corr_ref,
        }),
    )?;
    let rows = map_rows(sessions, &session_maps, &before);
    write_table(layout.table("rsm"), &maps::rsm_table(&rows, &labels))?;
    let pairs = write_correlations(layout, sessions, &designs, &results)?;
    write_table(
        layout.table("correlation_summary"),
        &correlation_summary(
            sessions,
            &pairs,
            &results,
            &tracked,
            &groups,
            &spared,
            reference,
            &before,
            a.high_sc_threshold,
        ),
    )?;
    drop(pairs);
    let n_spared = spared.iter().filter(|&&x| x).count();
    let baseline: Vec<bool> = rows.iter().map(|r| r.baseline).collect();
    let norm = |f: fn(&Array2<f64>) -> f64| {
        let v: Vec<f64> = rows.iter().map(|r| f(r.single)).collect();
        maps::normalise_to_baseline(&v, &baseline)
    };
    let (diag, off) = (norm(maps::diagonal_mean), norm(maps::off_diagonal_mean));
    let map_values: Vec<(String, f64, f64)> = rows
        .iter()
        .zip(diag.iter().zip(&off))
        .map(|(r, (d, o))| (r.session.to_string(), *d, *o))
        .collect();
    write_table(
        layout.table("map_summary"),
        &maps::map_summary_table(&rows, n_spared),
    )?;
    write_table(
        layout.table("map_similarity"),
        &maps::map_similarity_table(&rows),
    )?;
    let spatial = super::spatial::spatial_analysis(
        &super::spatial::SpatialInput {
            sessions,
            designs: &designs,
            results: &results,
            targeted: &tracked.targeted,
            spared: &spared,
            groups: &groups,
            reference,
            before: &before,
        },
        &cells_table,
        &layout.table("cells"),
        a,
    )?;
    write_table(layout.table("spatial"), &spatial.table)?;
    let mut warnings = warnings;
    warnings.extend(spatial.note);
    let silent: Vec<Option<bool>> = (0..tracked.rois.len())
        .map(|c| reference.and_then(|r| results[r][c].as_ref().map(|x| !x.responsive)))
        .collect();
    write_table(
        layout.table("cells"),
        &with_analysis_flags(&cells_table, layout, &silent, &spatial.sites)?,
    )?;

    Ok(AnalysisSummary {
        sessions: sessions
            .iter()
            .enumerate()
            .filter(|(s, _)| designs[*s].is_some())
            .map(|(s, sess)| {
                let done: Vec<&CellSession> = results[s].iter().flatten().collect();
                let frac =
                    done.iter().filter(|c| c.responsive).count() as f64 / done.len().max(1) as f64;
                (sess.id.clone(), done.len(), frac)
            })
            .collect(),
        reference: reference.map(|r| sessions[r].id.clone()),
        n_spared,
        n_unreliable: refused,
        maps: map_values,
        warnings,
    })
}

/// With K repetitions the smallest one-sided Wilcoxon p-value is 2^−K; after
/// Benjamini–Hochberg over S stimuli a cell that responds to a single stimulus
/// passes only if 2^−K · S ≤ q. Say so where it cannot.
fn test_power_warnings(
    sessions: &[SessionSummary],
    designs: &[Option<TrialDesign>],
    a: &crate::config::AnalysisParams,
) -> Vec<String> {
    if a.test != ResponseTest::Wilcoxon {
        return Vec::new();
    }
    // Sessions grouped by (repetitions, stimuli).
    let mut weak: std::collections::BTreeMap<(i32, usize), Vec<&str>> = Default::default();
    for (s, d) in sessions.iter().zip(designs) {
        let Some(d) = d else {
            continue;
        };
        let k = d.n_repetitions() as i32;
        if 0.5f64.powi(k) * d.n_stimuli as f64 > a.fdr_q {
            weak.entry((k, d.n_stimuli)).or_default().push(&s.id);
        }
    }
    weak.into_iter()
        .map(|((k, n), ids)| {
            format!(
                "sessions {}: with {k} repetitions of {n} stimuli the Wilcoxon test cannot find a \
                 cell that responds to one stimulus only (smallest p 2^-{k}, times {n} for \
                 Benjamini-Hochberg, exceeds fdr_q = {}); more repetitions or \
                 [analysis] test = \"ttest\" detect more",
                ids.join(", "),
                a.fdr_q
            )
        })
        .collect()
}

/// Sessions before the ablation (all sessions without one).
fn pre_ablation(exp: &Experiment, sessions: &[SessionSummary]) -> Vec<bool> {
    sessions
        .iter()
        .map(|s| exp.ablation.as_ref().is_none_or(|a| s.day <= a.after_day))
        .collect()
}

/// The session that defines groups A/B/C: the last one with stimuli before the
/// ablation, else (no ablation) the manifest's reference session.
fn reference_session(
    exp: &Experiment,
    sessions: &[SessionSummary],
    designs: &[Option<TrialDesign>],
) -> Option<usize> {
    match &exp.ablation {
        Some(a) => (0..sessions.len())
            .filter(|&s| designs[s].is_some() && sessions[s].day <= a.after_day)
            .max_by_key(|&s| sessions[s].day),
        None => sessions
            .iter()
            .position(|s| s.id == exp.reference)
            .filter(|&s| designs[s].is_some()),
    }
}

/// Group A (responsive in the reference session), B (not then, responsive in
/// another), C (never); empty where the cell is absent from the reference.
fn groups(results: &[Vec<Option<CellSession>>], reference: Option<usize>) -> Vec<String> {
    let n = results.first().map_or(0, |r| r.len());
    (0..n)
        .map(|c| {
            let Some(r) = reference else {
                return String::new();
            };
            match &results[r][c] {
                None => String::new(),
                Some(x) if x.responsive => "A".into(),
                Some(_) => {
                    let later = results
                        .iter()
                        .any(|s| s[c].as_ref().is_some_and(|x| x.responsive));
                    if later { "B" } else { "C" }.into()
                }
            }
        })
        .collect()
}

/// SCIENCE.md §3.6's stricter group B′: analysed and not responsive in the
/// groups' reference session, responsive in no session before the ablation, and
/// responsive in at least one after it (a cell responsive on an early baseline
/// day but not on the reference day is in B, not in B′).
fn strict_group_b(
    results: &[Vec<Option<CellSession>>],
    reference: Option<usize>,
    before: &[bool],
) -> Vec<bool> {
    let n = results.first().map_or(0, |r| r.len());
    let responsive = |s: usize, c: usize| results[s][c].as_ref().is_some_and(|x| x.responsive);
    (0..n)
        .map(|c| {
            reference.is_some_and(|r| results[r][c].is_some())
                && (0..results.len()).all(|s| !before[s] || !responsive(s, c))
                && (0..results.len()).any(|s| !before[s] && responsive(s, c))
        })
        .collect()
}

/// Cells that enter the maps (SCIENCE.md §1.7): analysed in every session with
/// stimuli (through a ROI or a transferred footprint), not targeted, and (optionally) outside the high and low categories.
/// With k targets: when the targets' median best response in the reference
/// session ranks in the upper half of all cells there, they are the high
/// category and the k non-responsive cells with the smallest best response are
/// the low one; otherwise the targets are the low category and the k cells with
/// the largest best response the high one. (Ranks, not the responsive flags:
/// with few repetitions the test may flag almost no cell.)
fn spared_cells(
    tracked: &Tracked,
    results: &[Vec<Option<CellSession>>],
    designs: &[Option<TrialDesign>],
    reference: Option<usize>,
    exclude: bool,
) -> Vec<bool> {
    let n = tracked.rois.len();
    let mut spared: Vec<bool> = (0..n)
        .map(|c| {
            !tracked.targeted[c]
                && (0..designs.len()).all(|s| designs[s].is_none() || results[s][c].is_some())
        })
        .collect();
    let k = tracked.targeted.iter().filter(|&&t| t).count();
    let Some(r) = reference.filter(|_| exclude && k > 0) else {
        return spared;
    };
    let at_ref = |c: usize| results[r][c].as_ref();
    let best = |c: usize| at_ref(c).map_or(f64::NEG_INFINITY, |x| x.best);
    let mut present: Vec<f64> = (0..n).filter_map(|c| at_ref(c).map(|x| x.best)).collect();
    present.sort_by(|a, b| a.total_cmp(b));
    let percentile =
        |v: f64| present.partition_point(|&x| x < v) as f64 / present.len().max(1) as f64;
    let mut target_pct: Vec<f64> = (0..n)
        .filter(|&c| tracked.targeted[c] && at_ref(c).is_some())
        .map(|c| percentile(best(c)))
        .collect();
    target_pct.sort_by(|a, b| a.total_cmp(b));
    let targets_high = target_pct
        .get(target_pct.len() / 2)
        .is_none_or(|&p| p >= 0.5);
    let mut candidates: Vec<usize> = (0..n).filter(|&c| spared[c]).collect();
    candidates.sort_by(|&a, &b| best(b).total_cmp(&best(a)).then(a.cmp(&b)));
    let excluded: Vec<usize> = if targets_high {
        candidates
            .iter()
            .rev()
            .copied()
            .filter(|&c| at_ref(c).is_some_and(|x| !x.responsive))
            .take(k)
            .collect()
    } else {
        candidates.iter().copied().take(k).collect()
    };
    for c in excluded {
        spared[c] = false;
    }
    spared
}

/// One session's single-trial and trial-averaged maps.
type MapPair = (Array2<f64>, Array2<f64>);

/// Per session with stimuli: its maps.
type Maps = Vec<Option<MapPair>>;

fn session_maps(
    results: &[Vec<Option<CellSession>>],
    designs: &[Option<TrialDesign>],
    spared: &[bool],
    n_stim: usize,
) -> Maps {
    let cells: Vec<usize> = (0..spared.len()).filter(|&c| spared[c]).collect();
    results
        .iter()
        .zip(designs)
        .map(|(res, design)| {
            let design = design.as_ref()?;
            if cells.len() < 2 {
                return None;
            }
            let per_stim: Vec<Array2<f64>> = (0..n_stim)
                .map(|st| {
                    // Trials of the stimulus whose responses are finite for every cell.
                    let trials: Vec<usize> = (0..design.stimulus.len())
                        .filter(|&t| design.stimulus[t] == st)
                        .filter(|&t| {
                            cells.iter().all(|&c| {
                                res[c].as_ref().is_some_and(|x| x.responses[t].is_finite())
                            })
                        })
                        .collect();
                    Array2::from_shape_fn((trials.len(), cells.len()), |(k, i)| {
                        res[cells[i]]
                            .as_ref()
                            .expect("spared cells are present")
                            .responses[trials[k]]
                    })
                })
                .collect();
            Some((
                maps::single_trial_map(&per_stim),
                maps::trial_averaged_map(&per_stim),
            ))
        })
        .collect()
}

/// correlations.parquet: per session, every pair of analysed cells, written
/// session by session.
fn write_correlations(
    layout: &RunLayout,
    sessions: &[SessionSummary],
    designs: &[Option<TrialDesign>],
    results: &[Vec<Option<CellSession>>],
) -> Result<Vec<Vec<Pair>>> {
    let rows = |session: &str, pairs: &[Pair]| {
        Table::new()
            .with(
                "session",
                Column::Str(vec![session.to_string(); pairs.len()]),
            )
            .with("cell_a", Column::U32(pairs.iter().map(|p| p.0).collect()))
            .with("cell_b", Column::U32(pairs.iter().map(|p| p.1).collect()))
            .with(
                "signal_corr",
                Column::F64(pairs.iter().map(|p| p.2).collect()),
            )
            .with(
                "noise_corr",
                Column::F64(pairs.iter().map(|p| p.3).collect()),
            )
    };
    let mut w = TableWriter::create(layout.table("correlations"))?;
    let mut all = vec![Vec::new(); results.len()];
    for (s, res) in results.iter().enumerate() {
        let Some(design) = &designs[s] else {
            continue;
        };
        let ids: Vec<usize> = (0..res.len()).filter(|&c| res[c].is_some()).collect();
        let cells: Vec<&CellSession> = ids.iter().filter_map(|&c| res[c].as_ref()).collect();
        let pairs: Vec<(u32, u32, f64, f64)> = correlations::pair_correlations(&cells, design)
            .into_iter()
            .map(|p| (ids[p.a] as u32, ids[p.b] as u32, p.signal, p.noise))
            .collect();
        if !pairs.is_empty() {
            w.write(&rows(&sessions[s].id, &pairs))?;
        }
        all[s] = pairs;
    }
    w.finish(&rows("", &[]))?;
    Ok(all)
}

/// A cell pair of one session: (cell_a, cell_b, signal, noise).
type Pair = (u32, u32, f64, f64);

/// correlation_summary.parquet (SCIENCE.md §5.1): per session and set of spared
/// pairs (groups A–A, A–B, B–B; and spared cells against the targets' tuning in
/// the reference session), the number of pairs, the mean signal correlation and
/// the fraction above `threshold`, with their changes from the mean over the
/// sessions before the ablation.
#[allow(clippy::too_many_arguments)]
fn correlation_summary(
    sessions: &[SessionSummary],
    pairs: &[Vec<Pair>],
    results: &[Vec<Option<CellSession>>],
    tracked: &Tracked,
    groups: &[String],
    spared: &[bool],
    reference: Option<usize>,
    before: &[bool],
    threshold: f64,
) -> Table {
    const SETS: [&str; 4] = ["A-A", "A-B", "B-B", "spared-targets"];
    // Per session and set: the signal correlations.
    let mut values: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); SETS.len()]; sessions.len()];
    for (s, list) in pairs.iter().enumerate() {
        for &(a, b, sc, _) in list {
            let (a, b) = (a as usize, b as usize);
            if !(spared[a] && spared[b] && sc.is_finite()) {
                continue;
            }
            let mut g = [groups[a].as_str(), groups[b].as_str()];
            g.sort_unstable();
            let set = match g {
                ["A", "A"] => 0,
                ["A", "B"] => 1,
                ["B", "B"] => 2,
                _ => continue,
            };
            values[s][set].push(sc);
        }
    }
    if let Some(r) = reference {
        let targets: Vec<&CellSession> = (0..tracked.targeted.len())
            .filter(|&c| tracked.targeted[c])
            .filter_map(|c| results[r][c].as_ref())
            .collect();
        for (s, res) in results.iter().enumerate() {
            for (c, cell) in res.iter().enumerate() {
                let Some(cell) = cell.as_ref().filter(|_| spared[c]) else {
                    continue;
                };
                for t in &targets {
                    if let Some(r) = maps::pearson(&cell.tuning, &t.tuning) {
                        values[s][3].push(r);
                    }
                }
            }
        }
    }
    let stats = |v: &[f64]| {
        let n = v.len() as f64;
        if v.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        (
            v.iter().sum::<f64>() / n,
            v.iter().filter(|&&x| x > threshold).count() as f64 / n,
        )
    };
    let mut t = SummaryColumns::default();
    for (k, name) in SETS.iter().enumerate() {
        let per: Vec<(f64, f64)> = values.iter().map(|v| stats(&v[k])).collect();
        let base = |f: fn(&(f64, f64)) -> f64| {
            let b: Vec<f64> = (0..sessions.len())
                .filter(|&s| before[s])
                .map(|s| f(&per[s]))
                .filter(|x| x.is_finite())
                .collect();
            if b.is_empty() {
                f64::NAN
            } else {
                b.iter().sum::<f64>() / b.len() as f64
            }
        };
        let (base_mean, base_high) = (base(|x| x.0), base(|x| x.1));
        for (s, sess) in sessions.iter().enumerate() {
            if values[s][k].is_empty() {
                continue;
            }
            t.session.push(sess.id.clone());
            t.day.push(sess.day);
            t.set.push(name.to_string());
            t.n.push(values[s][k].len() as u32);
            t.mean.push(per[s].0);
            t.high.push(per[s].1);
            t.mean_change.push(per[s].0 - base_mean);
            t.high_change.push(per[s].1 - base_high);
        }
    }
    Table::new()
        .with("session", Column::Str(t.session))
        .with("day", Column::I32(t.day))
        .with("pair_set", Column::Str(t.set))
        .with("n_pairs", Column::U32(t.n))
        .with("mean_signal_corr", Column::F64(t.mean))
        .with("high_fraction", Column::F64(t.high))
        .with("mean_signal_corr_change", Column::F64(t.mean_change))
        .with("high_fraction_change", Column::F64(t.high_change))
}

#[derive(Default)]
struct SummaryColumns {
    session: Vec<String>,
    day: Vec<i32>,
    set: Vec<String>,
    n: Vec<u32>,
    mean: Vec<f64>,
    high: Vec<f64>,
    mean_change: Vec<f64>,
    high_change: Vec<f64>,
}

fn trials_table(
    sessions: &[SessionSummary],
    designs: &[Option<TrialDesign>],
    labels: &[String],
    results: &[Vec<Option<CellSession>>],
) -> Table {
    let (mut session, mut cell, mut trial, mut stim, mut rep, mut resp) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (s, res) in results.iter().enumerate() {
        let Some(d) = &designs[s] else {
            continue;
        };
        for (c, r) in res.iter().enumerate() {
            let Some(r) = r else {
                continue;
            };
            for t in 0..d.stimulus.len() {
                session.push(sessions[s].id.clone());
                cell.push(c as u32);
                trial.push(d.trial[t]);
                stim.push(labels[d.stimulus[t]].clone());
                rep.push(d.repetition[t] as u32);
                resp.push(r.responses[t] as f32);
            }
        }
    }
    Table::new()
        .with("session", Column::Str(session))
        .with("cell", Column::U32(cell))
        .with("trial", Column::U32(trial))
        .with("stimulus", Column::Str(stim))
        .with("repetition", Column::U32(rep))
        .with("response", Column::F32(resp))
}

fn tuning_table(
    sessions: &[SessionSummary],
    labels: &[String],
    results: &[Vec<Option<CellSession>>],
) -> Table {
    let (mut session, mut cell, mut stim, mut mean, mut sem, mut p, mut q, mut resp) = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    for (s, res) in results.iter().enumerate() {
        for (c, r) in res.iter().enumerate() {
            let Some(r) = r else {
                continue;
            };
            for (j, label) in labels.iter().enumerate() {
                session.push(sessions[s].id.clone());
                cell.push(c as u32);
                stim.push(label.clone());
                mean.push(r.tuning[j]);
                sem.push(r.sem[j]);
                p.push(r.p[j]);
                q.push(r.q[j]);
                resp.push(r.responsive_to[j]);
            }
        }
    }
    Table::new()
        .with("session", Column::Str(session))
        .with("cell", Column::U32(cell))
        .with("stimulus", Column::Str(stim))
        .with("mean_response", Column::F64(mean))
        .with("sem", Column::F64(sem))
        .with("p_value", Column::F64(p))
        .with("p_fdr", Column::F64(q))
        .with("responsive", Column::Bool(resp))
}

fn neurons_table(
    sessions: &[SessionSummary],
    tracked: &Tracked,
    results: &[Vec<Option<CellSession>>],
    (groups, spared, strict): (&[String], &[bool], &[bool]),
    corr_ref: &[Vec<f64>],
) -> Table {
    let mut t = NeuronColumns::default();
    for (s, res) in results.iter().enumerate() {
        for (c, r) in res.iter().enumerate() {
            let Some(r) = r else {
                continue;
            };
            t.session.push(sessions[s].id.clone());
            t.day.push(sessions[s].day);
            t.cell.push(c as u32);
            t.roi.push(tracked.rois[c][s]);
            t.transferred.push(tracked.transferred[c][s]);
            t.responsive.push(r.responsive);
            t.best.push(r.best);
            t.reliability.push(r.reliability);
            t.width.push(r.width);
            t.split_half.push(r.split_half);
            t.corr_ref.push(corr_ref[s][c]);
            t.group.push(groups[c].clone());
            t.strict.push(strict[c]);
            t.spared.push(spared[c]);
        }
    }
    Table::new()
        .with("session", Column::Str(t.session))
        .with("day", Column::I32(t.day))
        .with("cell", Column::U32(t.cell))
        .with("roi", Column::OptU32(t.roi))
        .with("transferred", Column::Bool(t.transferred))
        .with("responsive", Column::Bool(t.responsive))
        .with("best_response", Column::F64(t.best))
        .with("reliability", Column::F64(t.reliability))
        .with("tuning_width", Column::F64(t.width))
        .with("split_half", Column::F64(t.split_half))
        .with("tuning_corr_ref", Column::F64(t.corr_ref))
        .with("group", Column::Str(t.group))
        .with("group_b_strict", Column::Bool(t.strict))
        .with("spared", Column::Bool(t.spared))
}

#[derive(Default)]
struct NeuronColumns {
    session: Vec<String>,
    day: Vec<i32>,
    cell: Vec<u32>,
    roi: Vec<Option<u32>>,
    transferred: Vec<bool>,
    responsive: Vec<bool>,
    best: Vec<f64>,
    reliability: Vec<f64>,
    width: Vec<f64>,
    split_half: Vec<f64>,
    corr_ref: Vec<f64>,
    group: Vec<String>,
    strict: Vec<bool>,
    spared: Vec<bool>,
}

/// The sessions with maps, as the shared map tables take them.
fn map_rows<'a>(
    sessions: &'a [SessionSummary],
    m: &'a Maps,
    before: &[bool],
) -> Vec<maps::SessionMapRow<'a>> {
    sessions
        .iter()
        .zip(m)
        .zip(before)
        .filter_map(|((s, pair), &b)| {
            pair.as_ref().map(|(single, averaged)| maps::SessionMapRow {
                session: &s.id,
                day: s.day,
                single,
                averaged,
                baseline: b,
            })
        })
        .collect()
}

/// cells.parquet with `initially_silent` and `spatial_site` set per cell (the
/// latter appended to a table from a release before it).
fn with_analysis_flags(
    cells: &Table,
    layout: &RunLayout,
    silent: &[Option<bool>],
    sites: &[bool],
) -> Result<Table> {
    let path = layout.table("cells");
    let ids = cells.u32s(&path, "cell")?;
    let per_row = |f: &dyn Fn(usize) -> Option<bool>| -> Vec<Option<bool>> {
        ids.iter().map(|&c| f(c as usize)).collect()
    };
    let silent = per_row(&|c| silent.get(c).copied().flatten());
    let sites = per_row(&|c| Some(sites.get(c).copied().unwrap_or(false)));
    let mut out = Table::new();
    for (name, col) in cells.columns() {
        out = match name {
            "initially_silent" => out.with(name, Column::OptBool(silent.clone())),
            "spatial_site" => out.with(name, Column::OptBool(sites.clone())),
            _ => out.with(name, col.clone()),
        };
    }
    if cells.column("spatial_site").is_none() {
        out = out.with("spatial_site", Column::OptBool(sites));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uniform noise of amplitude `amp` (s.d. proportional to `amp`).
    fn noisy(amp: f32, n: usize) -> Vec<f32> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                amp * ((x >> 11) as f32 / (1u64 << 53) as f32 - 0.5)
            })
            .collect()
    }

    #[test]
    fn traces_far_noisier_than_their_sessions_median_are_dropped() {
        let mut t: Traces = HashMap::new();
        for r in 0..5 {
            t.insert((0, TraceKey::Roi(r)), noisy(1.0 + 0.1 * r as f32, 200));
        }
        // Ten times the others' noise: an F0 near zero.
        t.insert((0, TraceKey::Cell(9)), noisy(10.0, 200));
        // Session 1 is noisier as a whole: judged against its own median.
        for r in 0..3 {
            t.insert((1, TraceKey::Roi(r)), noisy(8.0, 200));
        }
        // Session 0 also has traces with no finite frames: dropped, and not
        // counted into its median.
        for r in 10..20 {
            t.insert((0, TraceKey::Roi(r)), vec![f32::NAN; 200]);
        }
        assert_eq!(drop_noisy(&mut t, 2, 5.0), 11);
        assert!(!t.contains_key(&(0, TraceKey::Cell(9))));
        assert_eq!(t.len(), 8);
    }
}
