//! `cortexmap study`: many experiments (FOVs) of several mice and cohorts.
//!
//! In: a validated `study.toml` ([`crate::config::Study`]) whose experiments have
//! been run through the analyze stage. Out: `study_map.parquet`,
//! `study_neurons.parquet` and `study_stats.parquet` (CONTRACT.md, "A study"), and
//! `study_spatial.parquet` (SCIENCE.md §5.4; [`spatial`]).
//!
//! Method (SCIENCE.md §4.2 and §6.1): each FOV's measures are normalised to its own
//! baseline (the sessions up to the ablation day), averaged over the FOVs of each
//! mouse, and the mice are the unit of the statistics: each post-ablation day
//! against the baseline by a two-sided paired t-test across mice with
//! Benjamini–Hochberg over the post-ablation days, an ordinary one-way ANOVA across
//! days, and each ablation cohort against control by a two-sided permutation test
//! of mouse labels. The study step reads the run folders' tables; it recomputes
//! nothing of the runs.

mod spatial;
pub mod stats;

use crate::analysis::stats::benjamini_hochberg;
use crate::config::{Cohort, Study, StudyExperiment};
use crate::error::{Error, Result};
use crate::io::ledger::Ledger;
use crate::io::table::{read_table, write_table, write_tables_as_set, Column, Table};
use crate::progress::Progress;
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Options of the study step.
#[derive(Debug, Clone)]
pub struct StudyOptions {
    /// Label shuffles per permutation test (SCIENCE.md: 10,000).
    pub permutations: usize,
    pub seed: u64,
    /// Distance bins of `study_spatial.parquet`.
    pub distance_bins: crate::analysis::spatial::DistanceBins,
}

impl Default for StudyOptions {
    fn default() -> Self {
        StudyOptions {
            permutations: 10_000,
            seed: 1,
            distance_bins: Default::default(),
        }
    }
}

/// The measures of `study_map.parquet`: the run's baseline-normalised map values.
pub const MAP_MEASURES: [&str; 3] = ["diagonal", "off_diagonal", "trial_avg_off_diagonal"];

/// The measures of `study_neurons.parquet`, over each FOV's spared cells. The first
/// four, `ei_ratio`, `stability` and `tuning_corr_day` are ratios to the FOV's
/// baseline mean; the others are differences from it.
pub const NEURON_MEASURES: [&str; 11] = [
    "reliability",
    "fraction_responsive",
    "best_response_a",
    "best_response_b",
    "tuning_width_a_change",
    "high_sc_change_aa",
    "high_sc_change_ab",
    "high_sc_change_bb",
    "ei_ratio",
    "stability",
    "tuning_corr_day",
];

const N_MEASURES: usize = MAP_MEASURES.len() + NEURON_MEASURES.len();

fn measure_name(k: usize) -> &'static str {
    if k < MAP_MEASURES.len() {
        MAP_MEASURES[k]
    } else {
        NEURON_MEASURES[k - MAP_MEASURES.len()]
    }
}

/// The index of the measure called `name` in a [`Measures`] row, so that rows
/// are written by name, not by an offset that must match the lists' order.
fn slot(name: &str) -> usize {
    MAP_MEASURES
        .iter()
        .chain(&NEURON_MEASURES)
        .position(|m| *m == name)
        .unwrap_or_else(|| panic!("'{name}' is not a study measure"))
}

type Measures = [f64; N_MEASURES];

/// One FOV's measures per day.
struct Fov {
    cohort: Cohort,
    mouse: String,
    after_day: Option<i32>,
    days: BTreeMap<i32, Measures>,
}

/// What the study step did.
#[derive(Debug, Clone)]
pub struct StudySummary {
    pub experiments: usize,
    /// Mice per cohort, cohorts in [`Cohort::ALL`] order.
    pub mice: Vec<(Cohort, usize)>,
    pub days: Vec<i32>,
    /// Per cohort and day: the mean over mice of the normalised diagonal and
    /// off-diagonal.
    pub map_means: Vec<(Cohort, i32, f64, f64)>,
    /// Things the user should know (skipped comparisons).
    pub notes: Vec<String>,
    pub tables: Vec<PathBuf>,
    /// The rows of study_stats.parquet.
    pub stats: Vec<StatRow>,
}

/// One row of `study_stats.parquet`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatRow {
    pub cohort: Cohort,
    pub measure: &'static str,
    /// The post-ablation day; None for a test across all days.
    pub day: Option<i32>,
    pub test: &'static str,
    pub statistic: f64,
    pub p_value: f64,
    pub p_fdr: f64,
    pub n_mice: usize,
}

fn describe(i: usize, e: &StudyExperiment) -> String {
    format!(
        "experiment {} (mouse '{}', {}, {})",
        i + 1,
        e.mouse,
        e.cohort,
        e.manifest.display()
    )
}

/// A table of the experiment's run folder, or an error saying the run is incomplete.
fn run_table(i: usize, e: &StudyExperiment, name: &str) -> Result<(PathBuf, Table)> {
    if !e.run.is_dir() {
        return Err(Error::input(
            &e.run,
            format!(
                "{}: the run folder is missing; run `cortexmap run {} --out {}` first",
                describe(i, e),
                e.manifest.display(),
                e.run.display()
            ),
        ));
    }
    let p = e.run.join(format!("{name}.parquet"));
    if !p.exists() {
        return Err(Error::input(
            &p,
            format!(
                "{}: {name}.parquet is missing, the run is incomplete; run it through the \
                 analyze stage",
                describe(i, e)
            ),
        ));
    }
    let t = read_table(&p)?;
    Ok((p, t))
}

/// The run tables that more than one part of the study reads, each read once per
/// FOV: `cells.parquet` (cell types, positions) and `neurons.parquet` (the
/// per-day measures, the spatial inputs).
struct RunTables {
    cells: (PathBuf, Table),
    neurons: (PathBuf, Table),
}

impl RunTables {
    fn read(i: usize, e: &StudyExperiment) -> Result<Self> {
        Ok(RunTables {
            cells: run_table(i, e, "cells")?,
            neurons: run_table(i, e, "neurons")?,
        })
    }
}

/// The ablation day of a run. A run with a ledger must have completed its analyze
/// part and been made from the study's manifest (a half-finished rerun mixes tables
/// of two runs); a run without one (an older release) gives its day from the
/// manifest.
fn after_day(i: usize, e: &StudyExperiment) -> Result<Option<i32>> {
    let ledger = Ledger::load(&e.run);
    if ledger.manifest.as_os_str().is_empty() {
        return Ok(crate::config::load_experiment(&e.manifest)?
            .ablation
            .map(|a| a.after_day));
    }
    if ledger.key("analyze").is_none() {
        return Err(Error::input(
            Ledger::path(&e.run),
            format!(
                "{}: the run's analyze stage has not completed (run.json); rerun \
                 `cortexmap run {} --out {}`",
                describe(i, e),
                e.manifest.display(),
                e.run.display()
            ),
        ));
    }
    // The ledger records the manifest's canonical path; compare where both resolve
    // (a moved experiment keeps its tables).
    let recorded = &ledger.manifest;
    let differs = match (recorded.canonicalize(), e.manifest.canonicalize()) {
        (Ok(x), Ok(y)) => recorded.is_absolute() && x != y,
        _ => false,
    };
    if differs {
        return Err(Error::input(
            Ledger::path(&e.run),
            format!(
                "{}: this run folder was made from {}, not from the study's manifest",
                describe(i, e),
                recorded.display()
            ),
        ));
    }
    Ok(ledger.ablation_after_day)
}

/// The study's baseline: sessions up to one ablation day, the same for every FOV.
/// FOVs without an ablation (sham controls without `[ablation]`) take the others'
/// day; FOVs that disagree are refused.
fn study_after_day(study: &Study, days: &[Option<i32>], notes: &mut Vec<String>) -> Result<i32> {
    let known: BTreeSet<i32> = days.iter().flatten().copied().collect();
    let day = match known.len() {
        1 => *known.iter().next().expect("one element"),
        0 => {
            return Err(Error::input(
                &study.path,
                "no experiment of the study has an ablation day ([ablation] after_day): \
                 a study compares the days after it with the days before",
            ))
        }
        _ => {
            let first = days.iter().position(|d| *d == known.iter().next().copied());
            let other = days.iter().position(|d| *d == known.iter().last().copied());
            return Err(Error::input(
                &study.path,
                format!(
                    "the experiments disagree on the ablation day: {} has {}, {} has {}; one \
                     study needs one baseline",
                    describe(first.unwrap_or(0), &study.experiments[first.unwrap_or(0)]),
                    known.iter().next().expect("two elements"),
                    describe(other.unwrap_or(0), &study.experiments[other.unwrap_or(0)]),
                    known.iter().last().expect("two elements"),
                ),
            ));
        }
    };
    let without: Vec<String> = days
        .iter()
        .enumerate()
        .filter(|(_, d)| d.is_none())
        .map(|(i, _)| format!("{}", i + 1))
        .collect();
    if !without.is_empty() {
        notes.push(format!(
            "experiments {} have no ablation; their baseline is the study's (days up to {day})",
            without.join(", ")
        ));
    }
    Ok(day)
}

/// Mean of the finite values; NaN without any.
fn mean(v: impl IntoIterator<Item = f64>) -> f64 {
    let (s, n) = v
        .into_iter()
        .filter(|x| x.is_finite())
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n > 0 {
        s / n as f64
    } else {
        f64::NAN
    }
}

/// The stimulus labels of a run (from tuning.parquet).
fn stimuli(i: usize, e: &StudyExperiment) -> Result<BTreeSet<String>> {
    let (p, t) = run_table(i, e, "tuning")?;
    Ok(t.strs(&p, "stimulus")?.iter().cloned().collect())
}

/// Read one FOV's measures.
/// Per measure, the experiments (indices) whose baseline was zero or negative.
type Unnormalisable = BTreeMap<String, BTreeSet<usize>>;

/// `value / base`, or NaN when the baseline is zero or negative (a ratio to it
/// means nothing; recorded in `skipped` for one note per measure). A NaN baseline
/// (no value on any baseline day) gives NaN silently.
fn ratio(value: f64, base: f64, what: &str, i: usize, skipped: &mut Unnormalisable) -> f64 {
    if base > 0.0 {
        value / base
    } else {
        if !base.is_nan() {
            skipped.entry(what.to_string()).or_default().insert(i);
        }
        f64::NAN
    }
}

/// One note per measure that some FOVs could not normalise.
fn unnormalisable_notes(skipped: &Unnormalisable, n: usize) -> Vec<String> {
    skipped
        .iter()
        .map(|(what, fovs)| {
            let list: Vec<String> = fovs.iter().map(|i| (i + 1).to_string()).collect();
            format!(
                "{what}: the baseline is zero or negative in {} of {n} experiments ({}); \
                 their normalised values are left out",
                fovs.len(),
                list.join(", ")
            )
        })
        .collect()
}

/// Refuse two sessions on one day: the study's rows are per day.
fn check_one_session_per_day(
    i: usize,
    e: &StudyExperiment,
    path: &Path,
    days: &[i32],
) -> Result<()> {
    let mut seen = BTreeSet::new();
    for d in days {
        if !seen.insert(*d) {
            return Err(Error::input(
                path,
                format!(
                    "{}: two sessions on day {d}; the study step needs one session per day",
                    describe(i, e)
                ),
            ));
        }
    }
    Ok(())
}

/// From `stability.parquet` and `drift.parquet` (SCIENCE.md §3.7, §3.8): the
/// response stability of the transition into each day, as a ratio to its mean
/// over the baseline days (the transitions within the baseline), and the tuning
/// correlation of each day's responsive cells with the reference session, as a
/// ratio to its mean over the baseline days other than the reference. A run
/// from a release without these tables leaves them NaN (`missing` lists it).
fn read_turnover(
    i: usize,
    e: &StudyExperiment,
    days: &mut BTreeMap<i32, Measures>,
    is_baseline: impl Fn(i32) -> bool,
    skipped: &mut Unnormalisable,
    missing: &mut BTreeSet<usize>,
) -> Result<()> {
    if !(e.run.join("stability.parquet").exists() && e.run.join("drift.parquet").exists()) {
        missing.insert(i);
        return Ok(());
    }
    let (sp, st) = run_table(i, e, "stability")?;
    let (into, stability) = (st.i32s(&sp, "day_b")?, st.f64s(&sp, "stability")?);
    let base = mean(
        (0..into.len())
            .filter(|&r| is_baseline(into[r]))
            .map(|r| stability[r]),
    );
    for r in 0..into.len() {
        let row = days.entry(into[r]).or_insert([f64::NAN; N_MEASURES]);
        row[slot("stability")] = ratio(stability[r], base, "stability", i, skipped);
    }
    // Normalised here to the study's baseline, as the maps are (the run takes a
    // FOV without an ablation to be all baseline); the reference session, whose
    // correlation with itself is 1 by construction, is neither baseline nor value.
    let (dp, dr) = run_table(i, e, "drift")?;
    let (day, corr, reference) = (
        dr.i32s(&dp, "day")?,
        dr.f64s(&dp, "tuning_corr_norm_day")?,
        dr.bools(&dp, "reference")?,
    );
    let base = mean(
        (0..day.len())
            .filter(|&r| is_baseline(day[r]) && !reference[r])
            .map(|r| corr[r]),
    );
    for r in (0..day.len()).filter(|&r| !reference[r]) {
        let row = days.entry(day[r]).or_insert([f64::NAN; N_MEASURES]);
        row[slot("tuning_corr_day")] = ratio(corr[r], base, "tuning_corr_day", i, skipped);
    }
    Ok(())
}

fn read_fov(
    i: usize,
    e: &StudyExperiment,
    tables: &RunTables,
    own_after: Option<i32>,
    after: i32,
    (skipped, missing): (&mut Unnormalisable, &mut BTreeSet<usize>),
) -> Result<Fov> {
    let is_baseline = |d: i32| d <= after;
    let mut days: BTreeMap<i32, Measures> = BTreeMap::new();
    // The run's raw map values, normalised here to the study's baseline (the run
    // normalises a FOV without an ablation to all its sessions).
    let (mp, m) = run_table(i, e, "map_summary")?;
    let md = m.i32s(&mp, "day")?;
    check_one_session_per_day(i, e, &mp, md)?;
    for (k, c) in ["diagonal", "off_diagonal", "trial_avg_off_diagonal"]
        .iter()
        .enumerate()
    {
        let v = m.f64s(&mp, c)?;
        let base = mean((0..md.len()).filter(|&r| is_baseline(md[r])).map(|r| v[r]));
        for r in 0..md.len() {
            let row = days.entry(md[r]).or_insert([f64::NAN; N_MEASURES]);
            row[k] = ratio(v[r], base, &format!("map {c}"), i, skipped);
        }
    }
    // Per day over spared cells: reliability, fraction responsive, best response of
    // groups A and B, tuning width of group A.
    let (np, n) = (&tables.neurons.0, &tables.neurons.1);
    let (nd, spared, resp) = (
        n.i32s(np, "day")?,
        n.bools(np, "spared")?,
        n.bools(np, "responsive")?,
    );
    let (rel, best, width, group) = (
        n.f64s(np, "reliability")?,
        n.f64s(np, "best_response")?,
        n.f64s(np, "tuning_width")?,
        n.strs(np, "group")?,
    );
    let inhibitory = cell_types(&tables.cells)?;
    let cell = n.u32s(np, "cell")?;
    let mut raw: BTreeMap<i32, [f64; 6]> = BTreeMap::new();
    for &d in nd.iter().collect::<BTreeSet<_>>() {
        let rows: Vec<usize> = (0..nd.len()).filter(|&r| nd[r] == d && spared[r]).collect();
        let of = |g: &str, v: &[f64]| mean(rows.iter().filter(|&&r| group[r] == g).map(|&r| v[r]));
        let frac = if rows.is_empty() {
            f64::NAN
        } else {
            rows.iter().filter(|&&r| resp[r]).count() as f64 / rows.len() as f64
        };
        raw.insert(
            d,
            [
                mean(rows.iter().map(|&r| rel[r])),
                frac,
                of("A", best),
                of("B", best),
                of("A", width),
                ei_ratio(&rows, cell, best, &inhibitory),
            ],
        );
    }
    let base: Vec<f64> = (0..6)
        .map(|k| {
            mean(
                raw.iter()
                    .filter(|(d, _)| is_baseline(**d))
                    .map(|(_, v)| v[k]),
            )
        })
        .collect();
    for (d, v) in &raw {
        let row = days.entry(*d).or_insert([f64::NAN; N_MEASURES]);
        for (k, name) in NEURON_MEASURES[..4].iter().enumerate() {
            row[slot(name)] = ratio(v[k], base[k], name, i, skipped);
        }
        row[slot("tuning_width_a_change")] = v[4] - base[4];
        row[slot("ei_ratio")] = ratio(v[5], base[5], "ei_ratio", i, skipped);
    }
    read_turnover(i, e, &mut days, is_baseline, skipped, missing)?;
    let (cp, c) = run_table(i, e, "correlation_summary")?;
    let (cd, set, change) = (
        c.i32s(&cp, "day")?,
        c.strs(&cp, "pair_set")?,
        c.f64s(&cp, "high_fraction_change")?,
    );
    for r in 0..cd.len() {
        let k = match set[r].as_str() {
            "A-A" => slot("high_sc_change_aa"),
            "A-B" => slot("high_sc_change_ab"),
            "B-B" => slot("high_sc_change_bb"),
            _ => continue,
        };
        let row = days.entry(cd[r]).or_insert([f64::NAN; N_MEASURES]);
        row[k] = change[r];
    }
    Ok(Fov {
        cohort: e.cohort,
        mouse: e.mouse.clone(),
        after_day: Some(own_after.unwrap_or(after)),
        days,
    })
}

/// Each tracked cell's type from cells.parquet: Some(true) inhibitory, Some(false)
/// excitatory; absent without `cell_types.csv`.
fn cell_types((p, t): &(PathBuf, Table)) -> Result<BTreeMap<u32, bool>> {
    Ok(t.u32s(p, "cell")?
        .iter()
        .zip(t.opt_bools(p, "inhibitory")?)
        .filter_map(|(&c, x)| x.map(|x| (c, x)))
        .collect())
}

/// SCIENCE.md §5.3: the summed best response of the excitatory cells among `rows`
/// over that of the inhibitory ones. NaN without typed cells or with a
/// non-positive inhibitory sum.
fn ei_ratio(rows: &[usize], cell: &[u32], best: &[f64], types: &BTreeMap<u32, bool>) -> f64 {
    let (mut e, mut i) = (0.0, 0.0);
    for &r in rows {
        if !best[r].is_finite() {
            continue;
        }
        match types.get(&cell[r]) {
            Some(true) => i += best[r],
            Some(false) => e += best[r],
            None => {}
        }
    }
    if i > 0.0 {
        e / i
    } else {
        f64::NAN
    }
}

/// Refuse experiments whose stimulus sets differ from the first one's.
fn check_stimuli(study: &Study) -> Result<()> {
    let sets: Vec<BTreeSet<String>> = study
        .experiments
        .iter()
        .enumerate()
        .map(|(i, e)| stimuli(i, e))
        .collect::<Result<_>>()?;
    for (i, s) in sets.iter().enumerate().skip(1) {
        if s != &sets[0] {
            let extra: Vec<&String> = s.difference(&sets[0]).collect();
            let lacking: Vec<&String> = sets[0].difference(s).collect();
            return Err(Error::input(
                &study.path,
                format!(
                    "{} has a different stimulus set from experiment 1: {} not in experiment \
                     1, {} missing; a study compares maps over the same stimuli",
                    describe(i, &study.experiments[i]),
                    list(&extra),
                    list(&lacking)
                ),
            ));
        }
    }
    Ok(())
}

fn list(v: &[&String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// One mouse: its cohort, id, baseline day and per-day means over its FOVs.
struct Mouse {
    cohort: Cohort,
    id: String,
    after_day: Option<i32>,
    days: BTreeMap<i32, (usize, Measures)>,
}

fn average_mice(fovs: &[Fov]) -> Vec<Mouse> {
    let mut by_mouse: BTreeMap<(Cohort, String), Vec<&Fov>> = BTreeMap::new();
    for f in fovs {
        by_mouse
            .entry((f.cohort, f.mouse.clone()))
            .or_default()
            .push(f);
    }
    by_mouse
        .into_iter()
        .map(|((cohort, id), fs)| {
            let days: BTreeSet<i32> = fs.iter().flat_map(|f| f.days.keys().copied()).collect();
            let days = days
                .into_iter()
                .map(|d| {
                    let here: Vec<&Measures> = fs.iter().filter_map(|f| f.days.get(&d)).collect();
                    let mut m = [f64::NAN; N_MEASURES];
                    for (k, v) in m.iter_mut().enumerate() {
                        *v = mean(here.iter().map(|x| x[k]));
                    }
                    (d, (here.len(), m))
                })
                .collect();
            Mouse {
                cohort,
                id,
                after_day: fs.iter().find_map(|f| f.after_day),
                days,
            }
        })
        .collect()
}

/// A stable per-test seed, so every test has its own permutation streams.
fn test_seed(seed: u64, cohort: Cohort, measure: usize, day: i32) -> u64 {
    let mut h = seed ^ 0x9E37_79B9_7F4A_7C15;
    for x in [cohort as u64, measure as u64, day as u64] {
        h = (h ^ x).wrapping_mul(0xBF58_476D_1CE4_E5B9).rotate_left(31);
    }
    h
}

/// The statistics of every cohort and measure.
fn statistics(mice: &[Mouse], opts: &StudyOptions, notes: &mut Vec<String>) -> Vec<StatRow> {
    let cohorts: BTreeSet<Cohort> = mice.iter().map(|m| m.cohort).collect();
    let has_control = cohorts.contains(&Cohort::Control);
    if !has_control && !cohorts.is_empty() {
        notes.push(
            "no control cohort in the study: the comparisons of each cohort with control \
             (permutation tests) are skipped"
                .into(),
        );
    }
    let value = |m: &Mouse, d: i32, k: usize| m.days.get(&d).map_or(f64::NAN, |x| x.1[k]);
    let mut jobs = Vec::new();
    for &c in &cohorts {
        for k in 0..N_MEASURES {
            jobs.push((c, k));
        }
    }
    jobs.par_iter()
        .flat_map_iter(|&(c, k)| {
            let ms: Vec<&Mouse> = mice.iter().filter(|m| m.cohort == c).collect();
            let days: BTreeSet<i32> = ms.iter().flat_map(|m| m.days.keys().copied()).collect();
            let post: Vec<i32> = days
                .iter()
                .copied()
                .filter(|&d| ms.iter().any(|m| m.after_day.is_some_and(|a| d > a)))
                .collect();
            let baseline: Vec<f64> = ms
                .iter()
                .map(|m| {
                    mean(
                        m.days
                            .keys()
                            .filter(|&&d| m.after_day.is_none_or(|a| d <= a))
                            .map(|&d| value(m, d, k)),
                    )
                })
                .collect();
            let mut rows = Vec::new();
            // Each post-ablation day against the baseline.
            let tests: Vec<(f64, f64, usize)> = post
                .iter()
                .map(|&d| {
                    let after: Vec<f64> = ms.iter().map(|m| value(m, d, k)).collect();
                    let n = after
                        .iter()
                        .zip(&baseline)
                        .filter(|(a, b)| a.is_finite() && b.is_finite())
                        .count();
                    let (t, p) = stats::paired_t_two_sided(&baseline, &after);
                    (t, p, n)
                })
                .collect();
            let fdr = benjamini_hochberg(&tests.iter().map(|x| x.1).collect::<Vec<_>>());
            for ((&d, &(t, p, n)), q) in post.iter().zip(&tests).zip(fdr) {
                rows.push(StatRow {
                    cohort: c,
                    measure: measure_name(k),
                    day: Some(d),
                    test: "t_vs_baseline",
                    statistic: t,
                    p_value: p,
                    p_fdr: q,
                    n_mice: n,
                });
            }
            // Across all days.
            let groups: Vec<Vec<f64>> = days
                .iter()
                .map(|&d| ms.iter().map(|m| value(m, d, k)).collect())
                .collect();
            let (f, p) = stats::one_way_anova(&groups);
            rows.push(StatRow {
                cohort: c,
                measure: measure_name(k),
                day: None,
                test: "anova_days",
                statistic: f,
                p_value: p,
                p_fdr: p,
                n_mice: ms.len(),
            });
            // Against control, on each post-ablation day.
            if has_control && c != Cohort::Control {
                let control: Vec<&Mouse> = mice
                    .iter()
                    .filter(|m| m.cohort == Cohort::Control)
                    .collect();
                let perms: Vec<(f64, f64, usize)> = post
                    .iter()
                    .map(|&d| {
                        let a: Vec<f64> = ms.iter().map(|m| value(m, d, k)).collect();
                        let b: Vec<f64> = control.iter().map(|m| value(m, d, k)).collect();
                        let n = a.iter().chain(&b).filter(|v| v.is_finite()).count();
                        let (s, p) = stats::permutation_two_sided(
                            &a,
                            &b,
                            opts.permutations,
                            test_seed(opts.seed, c, k, d),
                        );
                        (s, p, n)
                    })
                    .collect();
                let fdr = benjamini_hochberg(&perms.iter().map(|x| x.1).collect::<Vec<_>>());
                for ((&d, &(s, p, n)), q) in post.iter().zip(&perms).zip(fdr) {
                    rows.push(StatRow {
                        cohort: c,
                        measure: measure_name(k),
                        day: Some(d),
                        test: "permutation_vs_control",
                        statistic: s,
                        p_value: p,
                        p_fdr: q,
                        n_mice: n,
                    });
                }
            }
            rows
        })
        .collect()
}

fn mouse_table(mice: &[Mouse], measures: std::ops::Range<usize>) -> Table {
    let rows: Vec<(&Mouse, i32, usize, &Measures)> = mice
        .iter()
        .flat_map(|m| m.days.iter().map(move |(d, (n, v))| (m, *d, *n, v)))
        .collect();
    let mut t = Table::new()
        .with(
            "cohort",
            Column::Str(rows.iter().map(|r| r.0.cohort.to_string()).collect()),
        )
        .with(
            "mouse",
            Column::Str(rows.iter().map(|r| r.0.id.clone()).collect()),
        )
        .with("day", Column::I32(rows.iter().map(|r| r.1).collect()))
        .with(
            "n_fovs",
            Column::U32(rows.iter().map(|r| r.2 as u32).collect()),
        );
    for k in measures {
        t = t.with(
            measure_name(k),
            Column::F64(rows.iter().map(|r| r.3[k]).collect()),
        );
    }
    t
}

fn stats_table(rows: &[StatRow]) -> Table {
    Table::new()
        .with(
            "cohort",
            Column::Str(rows.iter().map(|r| r.cohort.to_string()).collect()),
        )
        .with(
            "measure",
            Column::Str(rows.iter().map(|r| r.measure.to_string()).collect()),
        )
        .with("day", Column::OptI32(rows.iter().map(|r| r.day).collect()))
        .with(
            "test",
            Column::Str(rows.iter().map(|r| r.test.to_string()).collect()),
        )
        .with(
            "statistic",
            Column::F64(rows.iter().map(|r| r.statistic).collect()),
        )
        .with(
            "p_value",
            Column::F64(rows.iter().map(|r| r.p_value).collect()),
        )
        .with("p_fdr", Column::F64(rows.iter().map(|r| r.p_fdr).collect()))
        .with(
            "n_mice",
            Column::U32(rows.iter().map(|r| r.n_mice as u32).collect()),
        )
}

/// Run the study step: read every experiment's run, aggregate per mouse, test,
/// and write the three study tables into `out`.
pub fn run_study(
    study: &Study,
    out: &Path,
    opts: &StudyOptions,
    progress: &dyn Progress,
) -> Result<StudySummary> {
    if opts.permutations == 0 {
        return Err(Error::usage("--permutations must be at least 1"));
    }
    check_stimuli(study)?;
    let mut notes = Vec::new();
    let own: Vec<Option<i32>> = study
        .experiments
        .iter()
        .enumerate()
        .map(|(i, e)| after_day(i, e))
        .collect::<Result<_>>()?;
    let after = study_after_day(study, &own, &mut notes)?;
    progress.start("study", study.experiments.len() as u64);
    let mut fovs = Vec::with_capacity(study.experiments.len());
    let mut skipped = Unnormalisable::new();
    let mut no_turnover = BTreeSet::new();
    let mut located = Vec::with_capacity(study.experiments.len());
    let mut unlocated: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (i, e) in study.experiments.iter().enumerate() {
        let tables = RunTables::read(i, e)?;
        fovs.push(read_fov(
            i,
            e,
            &tables,
            own[i],
            after,
            (&mut skipped, &mut no_turnover),
        )?);
        match spatial::read_fov_spatial(e, &tables.cells, &tables.neurons)? {
            Ok(f) => located.push(f),
            Err(why) => unlocated.entry(why).or_default().push((i + 1).to_string()),
        }
        progress.advance(1);
    }
    if !no_turnover.is_empty() {
        let list: Vec<String> = no_turnover.iter().map(|i| (i + 1).to_string()).collect();
        notes.push(format!(
            "stability and tuning_corr_day are NaN for {} of {} experiments ({}): their runs \
             have no stability.parquet or drift.parquet (an older release); rerun them",
            list.len(),
            study.experiments.len(),
            list.join(", ")
        ));
    }
    let study_days: Vec<i32> = fovs
        .iter()
        .flat_map(|f| f.days.keys().copied())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    progress.finish();
    for (why, which) in &unlocated {
        notes.push(format!(
            "study_spatial.parquet leaves out {} of {} experiments ({}): {why}",
            which.len(),
            study.experiments.len(),
            which.join(", ")
        ));
    }
    let spatial_t =
        spatial::study_spatial(located, &study_days, after, &opts.distance_bins, &mut notes);
    notes.extend(unnormalisable_notes(&skipped, study.experiments.len()));
    let mice = average_mice(&fovs);
    let mut stats = statistics(&mice, opts, &mut notes);
    stats.sort_by(|a, b| {
        (a.cohort, a.measure, a.test, a.day).cmp(&(b.cohort, b.measure, b.test, b.day))
    });
    std::fs::create_dir_all(out).map_err(|e| Error::output(out, e))?;
    let tables = vec![
        out.join("study_map.parquet"),
        out.join("study_neurons.parquet"),
        out.join("study_stats.parquet"),
        out.join("study_spatial.parquet"),
    ];
    let (map_t, neurons_t, stats_t) = (
        mouse_table(&mice, 0..MAP_MEASURES.len()),
        mouse_table(&mice, MAP_MEASURES.len()..N_MEASURES),
        stats_table(&stats),
    );
    write_tables_as_set(&[
        (&tables[0], &map_t),
        (&tables[1], &neurons_t),
        (&tables[2], &stats_t),
        (&tables[3], &spatial_t),
    ])?;
    let days: BTreeSet<i32> = mice.iter().flat_map(|m| m.days.keys().copied()).collect();
    let mut map_means = Vec::new();
    let mut counts = Vec::new();
    for c in Cohort::ALL {
        let ms: Vec<&Mouse> = mice.iter().filter(|m| m.cohort == c).collect();
        if ms.is_empty() {
            continue;
        }
        counts.push((c, ms.len()));
        for &d in &days {
            let v = |k: usize| mean(ms.iter().filter_map(|m| m.days.get(&d)).map(|x| x.1[k]));
            map_means.push((c, d, v(0), v(1)));
        }
    }
    Ok(StudySummary {
        experiments: study.experiments.len(),
        mice: counts,
        days: days.into_iter().collect(),
        map_means,
        notes,
        tables,
        stats,
    })
}

/// The study-level truth of a simulated study: the truth's normalised map values
/// (`truth/map_summary.parquet` beside each experiment's manifest) averaged per
/// mouse like the run's. Written as `study_map.parquet` into `out`.
pub fn write_map_truth(study: &Study, out: &Path) -> Result<PathBuf> {
    let fovs = study
        .experiments
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let dir = e.manifest.parent().unwrap_or(Path::new("."));
            let p = dir.join("truth").join("map_summary.parquet");
            if !p.exists() {
                return Err(Error::input(
                    &p,
                    format!("{}: no simulator truth beside the manifest", describe(i, e)),
                ));
            }
            let t = read_table(&p)?;
            let mut days = BTreeMap::new();
            for (r, &d) in t.i32s(&p, "day")?.iter().enumerate() {
                let mut row = [f64::NAN; N_MEASURES];
                row[0] = t.f64s(&p, "diagonal_norm")?[r];
                row[1] = t.f64s(&p, "off_diagonal_norm")?[r];
                row[2] = t.f64s(&p, "trial_avg_off_diagonal_norm")?[r];
                days.insert(d, row);
            }
            Ok(Fov {
                cohort: e.cohort,
                mouse: e.mouse.clone(),
                after_day: None,
                days,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(out).map_err(|e| Error::output(out, e))?;
    let path = out.join("study_map.parquet");
    write_table(
        &path,
        &mouse_table(&average_mice(&fovs), 0..MAP_MEASURES.len()),
    )?;
    Ok(path)
}

/// Per cohort and day, the mean over mice of each map measure in a
/// `study_map.parquet` (run or truth).
pub fn cohort_map_means(path: &Path) -> Result<BTreeMap<(String, i32), [f64; 3]>> {
    let t = read_table(path)?;
    let (c, d) = (t.strs(path, "cohort")?, t.i32s(path, "day")?);
    let cols: Vec<&[f64]> = MAP_MEASURES
        .iter()
        .map(|m| t.f64s(path, m))
        .collect::<Result<_>>()?;
    let mut acc: BTreeMap<(String, i32), Vec<[f64; 3]>> = BTreeMap::new();
    for r in 0..c.len() {
        acc.entry((c[r].clone(), d[r]))
            .or_default()
            .push([cols[0][r], cols[1][r], cols[2][r]]);
    }
    Ok(acc
        .into_iter()
        .map(|(k, v)| {
            let m = |j: usize| mean(v.iter().map(|x| x[j]));
            (k, [m(0), m(1), m(2)])
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_measure_has_its_own_slot() {
        for k in 0..N_MEASURES {
            assert_eq!(slot(measure_name(k)), k);
        }
    }

    #[test]
    fn ei_ratio_sums_best_responses_by_type() {
        let cell = [0, 1, 2, 3];
        let best = [1.0, 2.0, 0.5, f64::NAN];
        let types: BTreeMap<u32, bool> = [(0, false), (1, false), (2, true), (3, true)].into();
        assert!((ei_ratio(&[0, 1, 2, 3], &cell, &best, &types) - 6.0).abs() < 1e-12);
        assert!(
            ei_ratio(&[0, 1], &cell, &best, &types).is_nan(),
            "no inhibitory cell"
        );
        assert!(
            ei_ratio(&[0, 2], &cell, &best, &BTreeMap::new()).is_nan(),
            "untyped"
        );
    }
}
