//! The study step on a tiny simulated study: tables, statistics, determinism and
//! bad input.

mod common;

use cortexmap::config::{load_study, write_study, Cohort, Params, StudyDoc};
use cortexmap::pipeline::run;
use cortexmap::progress::NoProgress;
use cortexmap::simulate::study::{simulate_study, StudyPreset};
use cortexmap::simulate::SimConfig;
use cortexmap::study::{run_study, write_map_truth, StudyOptions};
use std::path::Path;

fn tiny_study(out: &Path) -> std::path::PathBuf {
    let preset = StudyPreset {
        name: "tiny".into(),
        mice_per_cohort: 2,
        fovs_per_mouse: 1,
        fov: common::tiny_config(),
    };
    let s = simulate_study(&preset, 3, out, false, &NoProgress).unwrap();
    let study = load_study(&s.study_file).unwrap();
    for e in &study.experiments {
        run(
            &e.manifest,
            &e.run,
            &Params::default(),
            None,
            None,
            &NoProgress,
        )
        .unwrap();
    }
    s.study_file
}

/// With one FOV per mouse, a cohort's row of study_spatial.parquet pools the
/// same pairs as its runs' spatial.parquet rows: the pair counts add up and the
/// mean is their pair-weighted mean. Every cohort has sites (controls through the
/// stand-in high-category cells) and pairs.
fn check_spatial_pools_the_runs(study: &cortexmap::config::Study, path: &Path) {
    use std::collections::BTreeMap;
    let t = cortexmap::io::table::read_table(path).unwrap();
    let bins = 14;
    assert_eq!(t.n_rows(), 4 * 3 * 2 * bins, "cohort × day × group × bin");
    type Key = (String, i32, String, u64);
    let mut pooled: BTreeMap<Key, (u32, f64)> = BTreeMap::new();
    for e in &study.experiments {
        let p = e.run.join("spatial.parquet");
        let r = cortexmap::io::table::read_table(&p).unwrap();
        let (day, group, lo, n, mean) = (
            r.i32s(&p, "day").unwrap(),
            r.strs(&p, "group").unwrap(),
            r.f64s(&p, "distance_min_um").unwrap(),
            r.u32s(&p, "n_pairs").unwrap(),
            r.f64s(&p, "norm_best_response").unwrap(),
        );
        for k in 0..r.n_rows() {
            let key = (
                e.cohort.to_string(),
                day[k],
                group[k].clone(),
                lo[k].to_bits(),
            );
            let x = pooled.entry(key).or_insert((0, 0.0));
            x.0 += n[k];
            if n[k] > 0 {
                x.1 += n[k] as f64 * mean[k];
            }
        }
    }
    let (cohort, day, group, lo, n, mean) = (
        t.strs(path, "cohort").unwrap(),
        t.i32s(path, "day").unwrap(),
        t.strs(path, "group").unwrap(),
        t.f64s(path, "distance_min_um").unwrap(),
        t.u32s(path, "n_pairs").unwrap(),
        t.f64s(path, "norm_best_response").unwrap(),
    );
    let mut pairs_per_cohort: BTreeMap<String, u32> = BTreeMap::new();
    for k in 0..t.n_rows() {
        let (runs_n, runs_sum) =
            pooled[&(cohort[k].clone(), day[k], group[k].clone(), lo[k].to_bits())];
        assert_eq!(n[k], runs_n, "row {k}");
        if n[k] > 0 {
            let want = runs_sum / runs_n as f64;
            assert!(
                (mean[k] - want).abs() < 1e-9,
                "row {k}: {} vs {want}",
                mean[k]
            );
        }
        *pairs_per_cohort.entry(cohort[k].clone()).or_default() += n[k];
    }
    assert_eq!(pairs_per_cohort.len(), 4);
    assert!(
        pairs_per_cohort.values().all(|&n| n > 0),
        "{pairs_per_cohort:?}"
    );
}

fn opts() -> StudyOptions {
    StudyOptions {
        permutations: 2_000,
        seed: 5,
        ..StudyOptions::default()
    }
}

#[test]
fn study_of_a_tiny_simulated_study() {
    let dir = tempfile::tempdir().unwrap();
    let file = tiny_study(&dir.path().join("study"));
    let study = load_study(&file).unwrap();
    assert_eq!(study.experiments.len(), 8);
    let out = dir.path().join("out");
    let s = run_study(&study, &out, &opts(), &NoProgress).unwrap();
    assert_eq!(s.days, vec![3, 5, 7]);
    assert_eq!(s.mice.len(), 4);
    assert!(
        !s.notes.iter().any(|n| n.contains("no control cohort")),
        "{:?}",
        s.notes
    );

    let map = cortexmap::io::table::read_table(out.join("study_map.parquet")).unwrap();
    assert_eq!(map.n_rows(), 8 * 3, "one row per mouse and day");
    let neurons = cortexmap::io::table::read_table(out.join("study_neurons.parquet")).unwrap();
    assert_eq!(neurons.n_rows(), 8 * 3);
    // Per cohort and measure (14): one t-test (day 7) and one ANOVA; the three
    // ablation cohorts add one permutation test against control.
    let count = |test: &str| s.stats.iter().filter(|r| r.test == test).count();
    assert_eq!(count("t_vs_baseline"), 4 * 14);
    assert_eq!(count("anova_days"), 4 * 14);
    assert_eq!(count("permutation_vs_control"), 3 * 14);
    // Response stability: the transitions into days 5 (the baseline's only one)
    // and 7; day 3 has none before it. Every mouse's day-5 ratio is 1.
    let np0 = out.join("study_neurons.parquet");
    let (sd, stab) = (
        neurons.i32s(&np0, "day").unwrap(),
        neurons.f64s(&np0, "stability").unwrap(),
    );
    for r in 0..sd.len() {
        match sd[r] {
            3 => assert!(stab[r].is_nan(), "day 3 has no transition into it"),
            // NaN where a tiny FOV has no responsive cell on day 3 to follow.
            5 => assert!(
                stab[r].is_nan() || (stab[r] - 1.0).abs() < 1e-9,
                "{}",
                stab[r]
            ),
            _ => {}
        }
    }
    assert!(
        (0..sd.len()).any(|r| sd[r] == 5 && stab[r].is_finite()),
        "{stab:?}"
    );
    assert!(
        (0..sd.len()).any(|r| sd[r] == 7 && stab[r].is_finite()),
        "{stab:?}"
    );
    // Every mouse's ratio measures average 1 over its baseline days (3 and 5), and
    // the tests produced numbers.
    let np = out.join("study_neurons.parquet");
    let (nd, rel) = (
        neurons.i32s(&np, "day").unwrap(),
        neurons.f64s(&np, "reliability").unwrap(),
    );
    let mice = neurons.strs(&np, "mouse").unwrap();
    for m in mice.iter().collect::<std::collections::BTreeSet<_>>() {
        let base: Vec<f64> = (0..nd.len())
            .filter(|&r| &mice[r] == m && nd[r] <= 5 && rel[r].is_finite())
            .map(|r| rel[r])
            .collect();
        if base.len() == 2 {
            let mean = (base[0] + base[1]) / 2.0;
            assert!((mean - 1.0).abs() < 1e-9, "{m}: baseline mean {mean}");
        }
    }
    assert!(
        s.stats.iter().filter(|r| r.p_value.is_finite()).count() > 20,
        "too few finite tests: {:?}",
        s.stats
    );
    // The simulator types its cells, so the E/I ratio is defined somewhere.
    let ei = neurons.f64s(&np, "ei_ratio").unwrap();
    assert!(ei.iter().any(|v| v.is_finite()), "{ei:?}");
    for r in &s.stats {
        assert_eq!(r.day.is_none(), r.test == "anova_days", "{r:?}");
        assert!(
            r.p_value.is_nan() || (0.0..=1.0).contains(&r.p_value),
            "{r:?}"
        );
        if r.test == "permutation_vs_control" && r.p_value.is_finite() {
            assert!(r.p_value >= 1.0 / 2_001.0, "{r:?}");
        }
    }
    check_spatial_pools_the_runs(&study, &out.join("study_spatial.parquet"));
    // Same input and seed, same bytes.
    let again = dir.path().join("again");
    run_study(&study, &again, &opts(), &NoProgress).unwrap();
    for t in ["study_map", "study_neurons", "study_stats", "study_spatial"] {
        let a = std::fs::read(out.join(format!("{t}.parquet"))).unwrap();
        let b = std::fs::read(again.join(format!("{t}.parquet"))).unwrap();
        assert!(a == b, "{t} differs between two identical runs");
    }
    // The study truth: the truth's normalised maps, averaged the same way.
    let truth = write_map_truth(&study, &dir.path().join("truth")).unwrap();
    let t = cortexmap::study::cohort_map_means(&truth).unwrap();
    assert_eq!(t.len(), 4 * 3);
    let baseline = t[&("control".to_string(), 5)];
    assert!(baseline[0].is_finite());

    // Without control: the comparisons are skipped, and said so.
    let mut doc: StudyDoc = toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    doc.experiments.retain(|e| e.cohort != Cohort::Control);
    let no_control = dir.path().join("study").join("no-control.toml");
    write_study(&no_control, &doc).unwrap();
    let s = run_study(
        &load_study(&no_control).unwrap(),
        &dir.path().join("nc"),
        &opts(),
        &NoProgress,
    )
    .unwrap();
    assert!(
        s.notes.iter().any(|n| n.contains("no control cohort")),
        "{:?}",
        s.notes
    );
    assert!(s.stats.iter().all(|r| r.test != "permutation_vs_control"));
}

#[test]
fn study_refuses_missing_runs_and_different_stimuli() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("study");
    let file = tiny_study(&root);
    let study = load_study(&file).unwrap();
    let out = dir.path().join("out");

    // An incomplete run: the table and the experiment are named.
    let victim = &study.experiments[3];
    let table = victim.run.join("map_summary.parquet");
    let saved = std::fs::read(&table).unwrap();
    std::fs::remove_file(&table).unwrap();
    let err = run_study(&study, &out, &opts(), &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("map_summary.parquet is missing") && err.contains("experiment 4"),
        "{err}"
    );
    std::fs::write(&table, saved).unwrap();

    // A run whose analyze part did not complete (a killed rerun): refused.
    let ledger = victim.run.join("run.json");
    let saved = std::fs::read_to_string(&ledger).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&saved).unwrap();
    doc["completed"].as_object_mut().unwrap().remove("analyze");
    std::fs::write(&ledger, doc.to_string()).unwrap();
    let err = run_study(&study, &out, &opts(), &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("analyze stage has not completed"), "{err}");
    std::fs::write(&ledger, saved).unwrap();

    // A missing run folder.
    let moved = victim.run.with_file_name("run-elsewhere");
    std::fs::rename(&victim.run, &moved).unwrap();
    let err = run_study(&study, &out, &opts(), &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("run folder is missing") && err.contains("cortexmap run"),
        "{err}"
    );
    std::fs::rename(&moved, &victim.run).unwrap();

    // An experiment with other sounds.
    let other = root.join("other");
    let cfg = SimConfig {
        n_tones: 4,
        ..common::tiny_config()
    };
    let s = cortexmap::simulate::simulate(&cfg, 9, &other, false, &NoProgress).unwrap();
    run(
        &s.manifest,
        &other.join("run"),
        &Params::default(),
        None,
        None,
        &NoProgress,
    )
    .unwrap();
    let mut doc: StudyDoc = toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let mut extra = doc.experiments[0].clone();
    extra.manifest = "other/experiment.toml".into();
    extra.run = Some("other/run".into());
    extra.mouse = "odd-mouse".into();
    doc.experiments.push(extra);
    let mixed = root.join("mixed.toml");
    write_study(&mixed, &doc).unwrap();
    let err = run_study(&load_study(&mixed).unwrap(), &out, &opts(), &NoProgress)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("different stimulus set") && err.contains("experiment 9"),
        "{err}"
    );
    assert!(
        !out.join("study_stats.parquet").exists(),
        "no half-written study"
    );
}

/// The Snakemake workflow (pipeline/Snakefile) on a tiny study: every experiment
/// job and the study step; nothing to do on a rerun; one added experiment runs
/// alone and the study step follows. Runs where scripts/test installed Snakemake
/// (CORTEXMAP_SNAKEMAKE); required when CORTEXMAP_REQUIRE_SNAKEMAKE is set.
#[test]
fn snakemake_workflow_runs_a_study_and_takes_one_more_experiment() {
    let Some(snakemake) = std::env::var_os("CORTEXMAP_SNAKEMAKE") else {
        assert!(
            std::env::var_os("CORTEXMAP_REQUIRE_SNAKEMAKE").is_none(),
            "Snakemake required but CORTEXMAP_SNAKEMAKE is not set"
        );
        eprintln!("note: CORTEXMAP_SNAKEMAKE not set; skipping the workflow test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("study");
    // The `small` preset, as `cortexmap simulate-study --preset small` writes it.
    let preset = StudyPreset::small();
    let s = simulate_study(&preset, 3, &root, false, &NoProgress).unwrap();
    let out = dir.path().join("out");
    let snakefile = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline/Snakefile");
    let workflow = || {
        let o = std::process::Command::new(&snakemake)
            .arg("-s")
            .arg(&snakefile)
            .args(["--cores", "2", "-d"])
            .arg(dir.path())
            .arg("--config")
            .arg(format!("study={}", s.study_file.display()))
            .arg(format!("out={}", out.display()))
            .arg(format!("cortexmap={}", env!("CARGO_BIN_EXE_cortexmap")))
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "snakemake failed:\n{log}");
        log
    };
    let first = workflow();
    assert!(first.contains("run_experiment"), "{first}");
    let rows = |p: &Path| cortexmap::io::table::read_table(p).unwrap().n_rows();
    let map = out.join("study_map.parquet");
    let days = preset.fov.days.len();
    assert_eq!(rows(&map), 8 * days);
    for e in &load_study(&s.study_file).unwrap().experiments {
        assert!(
            e.run.join("report.html").exists(),
            "{} not run",
            e.run.display()
        );
    }

    let second = workflow();
    assert!(second.contains("Nothing to be done"), "{second}");

    // One more FOV of a control mouse: its job, then the study step, and no other.
    let cfg = SimConfig {
        cohort: "control".into(),
        ..StudyPreset::small().fov
    };
    cortexmap::simulate::simulate(&cfg, 77, &root.join("extra"), false, &NoProgress).unwrap();
    let mut doc: StudyDoc =
        toml::from_str(&std::fs::read_to_string(&s.study_file).unwrap()).unwrap();
    let mut extra = doc.experiments[0].clone();
    extra.manifest = "extra/experiment.toml".into();
    extra.run = Some("extra/run".into());
    extra.mouse = "control-m3".into();
    doc.experiments.push(extra);
    write_study(&s.study_file, &doc).unwrap();
    let third = workflow();
    assert_eq!(
        third.matches("rule run_experiment:").count(),
        1,
        "only the new experiment should run:\n{third}"
    );
    assert!(third.contains("experiment9"), "{third}");
    assert_eq!(rows(&map), 9 * days);
}
