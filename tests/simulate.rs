//! The simulator: determinism, statistics, truth consistent with the movie, the
//! contract's shift sign, and files that Python's tifffile and pyarrow read.

mod common;

use common::{tiny_config, tree_bytes};
use cortexmap::io::table::{read_table, Column};
use cortexmap::movie::{MovieReader, MovieSpec};
use cortexmap::progress::NoProgress;
use cortexmap::simulate::{self, SimConfig};
use std::path::Path;

fn simulate_in_pool(cfg: &SimConfig, seed: u64, out: &Path, threads: usize) {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(|| simulate::simulate(cfg, seed, out, false, &NoProgress).unwrap());
}

#[test]
fn same_seed_same_bytes_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config();
    simulate_in_pool(&cfg, 7, &dir.path().join("a"), 1);
    simulate_in_pool(&cfg, 7, &dir.path().join("b"), 2);
    simulate_in_pool(&cfg, 8, &dir.path().join("c"), 2);
    let a = tree_bytes(&dir.path().join("a"));
    let b = tree_bytes(&dir.path().join("b"));
    let c = tree_bytes(&dir.path().join("c"));
    assert!(a.len() > 10);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.0, y.0);
        assert!(
            x.1 == y.1,
            "{} differs between 1 and 2 threads",
            x.0.display()
        );
    }
    let tif = |t: &[(std::path::PathBuf, Vec<u8>)]| {
        t.iter()
            .find(|(p, _)| p.ends_with("d5_00001.tif"))
            .unwrap()
            .1
            .clone()
    };
    assert_ne!(tif(&a), tif(&c), "another seed gives another movie");
}

#[test]
fn experiment_follows_the_contract_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    let s = simulate::simulate(&tiny_config(), 1, &out, false, &NoProgress).unwrap();
    let exp = cortexmap::config::load_experiment(&s.manifest).unwrap();
    assert_eq!(exp.sessions.len(), 3);
    assert_eq!(exp.reference, "d5");
    assert_eq!(exp.ablation.as_ref().unwrap().after_day, 5);
    assert_eq!(exp.ablation.as_ref().unwrap().targets.len(), 3);
    for sess in &exp.sessions {
        let info = cortexmap::movie::probe_movie(&MovieSpec {
            files: sess.files.clone(),
            channels: 1,
            channel: 0,
        })
        .unwrap();
        assert_eq!((info.width, info.height), (48, 48));
        exp.check_stimuli(sess, info.n_frames as u64).unwrap();
        assert!(
            sess.files.len() >= 2,
            "sessions are split into several files"
        );
    }
    // A second simulation into the same folder is refused without --overwrite.
    assert!(simulate::simulate(&tiny_config(), 1, &out, false, &NoProgress).is_err());
    simulate::simulate(&tiny_config(), 2, &out, true, &NoProgress).unwrap();
    // No staging folder is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
}

fn col_bool<'a>(t: &'a cortexmap::io::table::Table, name: &str) -> &'a [bool] {
    match t.column(name).unwrap() {
        Column::Bool(v) => v,
        other => panic!("{name} is {other:?}"),
    }
}
fn col_str<'a>(t: &'a cortexmap::io::table::Table, name: &str) -> &'a [String] {
    match t.column(name).unwrap() {
        Column::Str(v) => v,
        other => panic!("{name} is {other:?}"),
    }
}
fn col_f64<'a>(t: &'a cortexmap::io::table::Table, name: &str) -> &'a [f64] {
    match t.column(name).unwrap() {
        Column::F64(v) => v,
        other => panic!("{name} is {other:?}"),
    }
}

#[test]
fn standard_cohorts_have_plausible_statistics_and_the_papers_effects() {
    let dir = tempfile::tempdir().unwrap();
    for (preset, seed) in [
        ("ablate-responsive", 1),
        ("ablate-silent", 1),
        ("ablate-inhibitory", 1),
        ("control", 1),
    ] {
        let out = dir.path().join(preset);
        let cfg = SimConfig::preset(preset).unwrap();
        let s = simulate::simulate_truth_only(&cfg, seed, &out).unwrap();
        assert!(
            (0.2..=0.45).contains(&s.responsive_fraction_pre),
            "{preset}: responsive fraction {}",
            s.responsive_fraction_pre
        );
        let cells = read_table(out.join("truth/cells.parquet")).unwrap();
        let sessions = col_str(&cells, "session");
        let ablated = col_bool(&cells, "ablated");
        let inhibitory = col_bool(&cells, "inhibitory");
        let responsive = col_bool(&cells, "responsive");
        let in_d5: Vec<usize> = (0..sessions.len())
            .filter(|&i| sessions[i] == "d5")
            .collect();
        let n_ablated = in_d5.iter().filter(|&&i| ablated[i]).count();
        let n_inh = in_d5.iter().filter(|&&i| inhibitory[i]).count();
        assert_eq!(n_inh, 40, "{preset}: 10% interneurons");
        let summary = read_table(out.join("truth/map_summary.parquet")).unwrap();
        let diag = col_f64(&summary, "diagonal_norm").to_vec();
        match preset {
            "control" => {
                assert_eq!(n_ablated, 0);
                assert!(
                    diag.iter().all(|d| (0.75..1.3).contains(d)),
                    "control map stable: {diag:?}"
                );
            }
            "ablate-responsive" => {
                assert!((30..=40).contains(&n_ablated), "{n_ablated} ablated");
                assert!(
                    in_d5
                        .iter()
                        .filter(|&&i| ablated[i])
                        .all(|&i| responsive[i]),
                    "targets were responsive on day 5"
                );
                assert!(diag[3] < 0.85, "dip on day 7: {diag:?}");
                assert!(
                    diag[5] > 0.85 && diag[6] > 0.85,
                    "recovery by day 11-15: {diag:?}"
                );
            }
            "ablate-silent" => {
                assert!((30..=40).contains(&n_ablated));
                assert!(in_d5
                    .iter()
                    .filter(|&&i| ablated[i])
                    .all(|&i| !responsive[i] && !inhibitory[i]));
                assert!(
                    diag.iter().all(|d| (0.75..1.3).contains(d)),
                    "no effect: {diag:?}"
                );
            }
            "ablate-inhibitory" => {
                assert!(
                    (4..=8).contains(&n_ablated),
                    "{n_ablated} interneurons ablated"
                );
                assert!(in_d5
                    .iter()
                    .filter(|&&i| ablated[i])
                    .all(|&i| responsive[i]));
                assert!(in_d5
                    .iter()
                    .filter(|&&i| ablated[i])
                    .all(|&i| inhibitory[i]));
                assert!(
                    diag[3] < 0.85 && diag[4] < 0.9 && diag[5] < 0.9,
                    "prolonged loss: {diag:?}"
                );
            }
            _ => unreachable!(),
        }
    }
}

fn read_session(manifest_dir: &Path, id: &str) -> (Vec<f32>, usize) {
    let mut files: Vec<_> = std::fs::read_dir(manifest_dir.join(id))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tif"))
        .collect();
    files.sort();
    let mut r = MovieReader::open(&MovieSpec {
        files,
        channels: 1,
        channel: 0,
    })
    .unwrap();
    let mut all = Vec::new();
    let mut n = 0;
    while let Some(b) = r.read_batch(64).unwrap() {
        n += b.frames.shape()[0];
        all.extend(b.frames.iter().copied());
    }
    (all, n)
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    cortexmap::analysis::maps::pearson(a, b).unwrap_or(f64::NAN)
}

#[test]
fn rendered_movie_matches_the_truth_traces() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    let mut cfg = tiny_config();
    cfg.motion_sd_px = 0.0;
    cfg.jump_rate_hz = 0.0;
    cfg.photons_per_cell = 40.0;
    simulate::simulate(&cfg, 3, &out, false, &NoProgress).unwrap();
    let (movie, n) = read_session(&out, "d5");
    let px = cfg.width * cfg.height;
    let fp = read_table(out.join("truth/footprints.parquet")).unwrap();
    let traces = read_table(out.join("truth/traces.parquet")).unwrap();
    let (Column::Str(fs), Column::U32(fc), Column::ListU32(pixels)) = (
        fp.column("session").unwrap(),
        fp.column("cell").unwrap(),
        fp.column("pixels").unwrap(),
    ) else {
        panic!("footprint columns")
    };
    let (Column::Str(ts), Column::U32(tc), Column::F32(tf)) = (
        traces.column("session").unwrap(),
        traces.column("cell").unwrap(),
        traces.column("f").unwrap(),
    ) else {
        panic!("trace columns")
    };
    let mut correlations = Vec::new();
    for k in 0..fs.len() {
        if fs[k] != "d5" {
            continue;
        }
        let truth: Vec<f64> = (0..ts.len())
            .filter(|&i| ts[i] == "d5" && tc[i] == fc[k])
            .map(|i| tf[i] as f64)
            .collect();
        assert_eq!(truth.len(), n);
        let observed: Vec<f64> = (0..n)
            .map(|f| {
                pixels[k]
                    .iter()
                    .map(|&p| movie[f * px + p as usize] as f64)
                    .sum::<f64>()
            })
            .collect();
        correlations.push(pearson(&truth, &observed));
    }
    correlations.sort_by(|a, b| a.total_cmp(b));
    let median = correlations[correlations.len() / 2];
    assert!(
        median > 0.6,
        "median correlation of raw ROI sum with true F: {median} ({correlations:?})"
    );
}

#[test]
fn shift_sign_follows_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    let mut cfg = tiny_config();
    cfg.width = 64;
    cfg.height = 64;
    cfg.motion_sd_px = 2.0;
    cfg.motion_max_px = 6.0;
    cfg.photons_per_cell = 400.0;
    cfg.read_noise_adu = 0.0;
    simulate::simulate(&cfg, 5, &out, false, &NoProgress).unwrap();
    let (movie, n) = read_session(&out, "d5");
    let motion = read_table(out.join("truth/motion.parquet")).unwrap();
    let (Column::Str(sess), Column::F32(sx), Column::F32(sy)) = (
        motion.column("session").unwrap(),
        motion.column("shift_x").unwrap(),
        motion.column("shift_y").unwrap(),
    ) else {
        panic!("motion columns")
    };
    let rows: Vec<usize> = (0..sess.len()).filter(|&i| sess[i] == "d5").collect();
    assert_eq!(rows.len(), n);
    let px = 64 * 64;
    let frame = |f: usize| &movie[f * px..(f + 1) * px];
    // Pair frame 0 with the frame whose true shift differs most from it.
    let (far, _) = (1..n)
        .map(|f| {
            (
                f,
                (sx[rows[f]] - sx[rows[0]]).abs() + (sy[rows[f]] - sy[rows[0]]).abs(),
            )
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap();
    let est = cortexmap::motion::phase_correlate(frame(0), frame(far), 64, 64, 12);
    let true_dx = (sx[rows[far]] - sx[rows[0]]) as f64;
    let true_dy = (sy[rows[far]] - sy[rows[0]]) as f64;
    assert!(
        true_dx.abs() + true_dy.abs() > 1.0,
        "test needs real motion"
    );
    assert!(
        (est.x - true_dx).abs() < 0.35,
        "x: estimated {} true {true_dx}",
        est.x
    );
    assert!(
        (est.y - true_dy).abs() < 0.35,
        "y: estimated {} true {true_dy}",
        est.y
    );
}

#[test]
fn python_tifffile_and_pyarrow_read_the_experiment() {
    let Some(python) = std::env::var_os("CORTEXMAP_PYTHON") else {
        assert!(
            std::env::var_os("CORTEXMAP_REQUIRE_PYTHON").is_none(),
            "CORTEXMAP_PYTHON must point at a Python with tifffile and pyarrow"
        );
        eprintln!("note: CORTEXMAP_PYTHON not set; skipping the Python interop check");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    let mut cfg = tiny_config();
    cfg.structural_channel = true;
    cfg.nonrigid = true;
    simulate::simulate(&cfg, 1, &out, false, &NoProgress).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/check_experiment.py");
    let res = std::process::Command::new(python)
        .arg(&script)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "python check failed:\n{}\n{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
}
