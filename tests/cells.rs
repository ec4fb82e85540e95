//! Integration tests of the detect and extract stages on small simulated
//! experiments and hand-made movies.

mod common;

use common::{bin, small_standard, tiny_config};
use cortexmap::config::Params;
use cortexmap::io::table::read_table;
use cortexmap::io::tiff::{PixelType, TiffWriter, WriteOptions};
use cortexmap::pipeline::{run, Stage};
use cortexmap::progress::NoProgress;
use cortexmap::simulate::{self, SimConfig};
use std::path::Path;

#[test]
fn rois_and_traces_match_the_truth_on_a_small_simulation() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp");
    let s = simulate::simulate(&small_standard(), 5, &exp, false, &NoProgress).unwrap();
    let out = dir.path().join("run");
    let summary = run(
        &s.manifest,
        &out,
        &Params::default(),
        None,
        None,
        &NoProgress,
    )
    .unwrap();
    // The ring-shaped somata must not fool the diameter estimate (true 12 px).
    for (id, _, _, d) in &summary.detection {
        assert!((8.0..=18.0).contains(d), "{id}: diameter {d}");
    }
    let score = cortexmap::score::score(&exp, &out).unwrap();
    let cells = score.cells.expect("rois.parquet is scored");
    assert_eq!(cells.len(), 3);
    for c in &cells {
        assert!(
            c.f1 >= 0.6,
            "{}: F1 {:.3} ({} of {} true, {} est)",
            c.session,
            c.f1,
            c.n_matched,
            c.n_true,
            c.n_est
        );
        assert!(
            c.denoised_corr_median >= 0.8,
            "{}: denoised r {}",
            c.session,
            c.denoised_corr_median
        );
        assert!(
            c.trace_corr_median >= 0.5,
            "{}: dff r {}",
            c.session,
            c.trace_corr_median
        );
        // No trace correlates with the truth beyond what its noise allows (up to
        // the sampling error of the two medians).
        assert!(
            c.trace_corr_median <= c.trace_corr_ceiling_median + 0.05,
            "{}: dff r {} above its ceiling {}",
            c.session,
            c.trace_corr_median,
            c.trace_corr_ceiling_median
        );
    }
    // Every ROI has one trace row per frame; pixels are sorted and in the frame.
    let rp = out.join("rois.parquet");
    let rois = read_table(&rp).unwrap();
    let n_rois = rois.n_rows();
    let tp = out.join("traces.parquet");
    let traces = read_table(&tp).unwrap();
    assert_eq!(traces.n_rows(), n_rois * 700);
    for px in rois.lists_u32(&rp, "pixels").unwrap() {
        assert!(!px.is_empty() && px.windows(2).all(|w| w[0] < w[1]));
        assert!(*px.last().unwrap() < 128 * 128);
    }
    for col in ["f", "fneu", "dff", "spikes", "dff_denoised"] {
        assert!(
            traces.f32s(&tp, col).unwrap().iter().all(|v| v.is_finite()),
            "{col}"
        );
    }
    for img in ["max", "correlation", "enhanced"] {
        assert!(out.join(format!("images/d5_{img}.tif")).exists(), "{img}");
    }
    // The simulator's somata are bright: no session is taken for a dark-soma field.
    let dp = out.join("detection.parquet");
    let det = read_table(&dp).unwrap();
    assert_eq!(det.bools(&dp, "dark_search").unwrap(), vec![false; 3]);
    for &f in det.f32s(&dp, "dark_centre_fraction").unwrap() {
        assert!(f.is_finite() && f < 0.2, "dark centre fraction {f}");
    }
}

#[test]
fn detection_is_identical_with_one_and_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp");
    let s = simulate::simulate(&tiny_config(), 2, &exp, false, &NoProgress).unwrap();
    let tables = |threads: usize| {
        let out = dir.path().join(format!("run{threads}"));
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            run(
                &s.manifest,
                &out,
                &Params::default(),
                None,
                None,
                &NoProgress,
            )
        })
        .unwrap();
        ["rois", "traces"].map(|t| std::fs::read(out.join(format!("{t}.parquet"))).unwrap())
    };
    assert!(
        tables(1) == tables(2),
        "rois/traces differ between 1 and 2 threads"
    );
}

/// One session of `frames` from `pixel(frame, x, y)`, with its manifest.
fn write_movie(
    dir: &Path,
    w: usize,
    h: usize,
    frames: usize,
    pixel: impl Fn(usize, usize, usize) -> i16,
) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("s1")).unwrap();
    let mut t = TiffWriter::create(
        &dir.join("s1/movie.tif"),
        w,
        h,
        PixelType::I16,
        WriteOptions::default(),
    )
    .unwrap();
    for f in 0..frames {
        let page: Vec<i16> = (0..w * h).map(|p| pixel(f, p % w, p / w)).collect();
        t.write_page_i16(&page).unwrap();
    }
    t.finish().unwrap();
    one_session_manifest(dir, "s1/*.tif", 10.0)
}

/// `dir/experiment.toml` naming one session `s1` of the TIFF glob `tiff`.
fn one_session_manifest(dir: &Path, tiff: &str, fs: f64) -> std::path::PathBuf {
    let manifest = dir.join("experiment.toml");
    std::fs::write(
        &manifest,
        format!(
            "name = \"x\"\nfs = {fs}\nreference = \"s1\"\n[[session]]\nid = \"s1\"\nday = 1\ntiff = [\"{tiff}\"]\n"
        ),
    )
    .unwrap();
    manifest
}

fn noise(f: usize, x: usize, y: usize) -> f32 {
    // A hash, not a generator: reproducible and free of dependencies.
    let mut h = (f as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((x as u64) << 20) ^ (y as u64);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h % 1000) as f32 / 1000.0 - 0.5
}

#[test]
fn pure_noise_gives_zero_rois_and_empty_tables() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_movie(dir.path(), 64, 64, 200, |f, x, y| {
        (500.0 + 40.0 * noise(f, x, y)) as i16
    });
    let out = dir.path().join("run");
    let mut p = Params::default();
    p.detect.anatomy = false;
    let s = run(&manifest, &out, &p, None, None, &NoProgress).unwrap();
    let rp = out.join("rois.parquet");
    let t = read_table(&rp).unwrap();
    assert_eq!(
        s.detection[0].1,
        0,
        "ROIs found in pure noise: snr {:?} npix {:?}",
        t.f32s(&rp, "snr").unwrap(),
        t.u32s(&rp, "npix").unwrap()
    );
    assert_eq!(read_table(out.join("rois.parquet")).unwrap().n_rows(), 0);
    assert_eq!(read_table(out.join("traces.parquet")).unwrap().n_rows(), 0);
}

#[test]
fn saturated_and_constant_movies_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    // A saturated square over a flat field, and no activity at all.
    let manifest = write_movie(dir.path(), 48, 48, 60, |_, x, y| {
        if (10..20).contains(&x) && (10..20).contains(&y) {
            i16::MAX
        } else {
            300
        }
    });
    let out = dir.path().join("run");
    let s = run(&manifest, &out, &Params::default(), None, None, &NoProgress).unwrap();
    let n = s.detection[0].1;
    let traces = read_table(out.join("traces.parquet")).unwrap();
    assert_eq!(traces.n_rows(), n * 60);
}

#[test]
fn from_detect_reuses_motion_and_needs_an_earlier_run() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp");
    let s = simulate::simulate(&tiny_config(), 4, &exp, false, &NoProgress).unwrap();
    let out = dir.path().join("run");
    // Nothing there yet: a clear input error naming the missing table.
    let res = bin()
        .args([
            "run",
            s.manifest.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--from",
            "detect",
        ])
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("sessions.parquet"), "{err}");
    run(
        &s.manifest,
        &out,
        &Params::default(),
        Some(Stage::Motion),
        None,
        &NoProgress,
    )
    .unwrap();
    assert!(!out.join("rois.parquet").exists());
    let motion_before = std::fs::read(out.join("motion.parquet")).unwrap();
    run(
        &s.manifest,
        &out,
        &Params::default(),
        None,
        Some(Stage::Detect),
        &NoProgress,
    )
    .unwrap();
    assert!(out.join("rois.parquet").exists() && out.join("traces.parquet").exists());
    assert_eq!(
        std::fs::read(out.join("motion.parquet")).unwrap(),
        motion_before
    );
}

#[test]
fn bad_detect_parameters_name_the_key() {
    let mut p = Params::default();
    p.detect.footprint_corr = 1.5;
    assert!(p.validate().unwrap_err().contains("detect.footprint_corr"));
    let mut p = Params::default();
    p.extract.ar_order = 3;
    assert!(p.validate().unwrap_err().contains("extract.ar_order"));
    let mut p = Params::default();
    p.indicator.tau_rise_s = 2.0;
    assert!(p.validate().unwrap_err().contains("indicator.tau_rise_s"));
}

#[test]
fn a_structural_channel_gives_a_corrected_mean_bright_at_the_cells() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp");
    let cfg = SimConfig {
        structural_channel: true,
        ..tiny_config()
    };
    let s = simulate::simulate(&cfg, 8, &exp, false, &NoProgress).unwrap();
    let out = dir.path().join("run");
    // Dark somata forced on: never sought where a structural channel shows nuclei.
    let mut params = Params::default();
    params.detect.dark_somata = cortexmap::config::DarkSomata::On;
    run(&s.manifest, &out, &params, None, None, &NoProgress).unwrap();
    let dp = out.join("detection.parquet");
    let det = read_table(&dp).unwrap();
    assert!(det.bools(&dp, "dark_search").unwrap().iter().all(|&d| !d));
    // ... although the anatomical search itself ran.
    assert!(det.u32s(&dp, "n_anatomy").unwrap().iter().any(|&n| n > 0));
    let img_path = out.join("images/d5_structural_mean.tif");
    let mut reader = cortexmap::io::tiff::TiffPageReader::open(&img_path).unwrap();
    let mut img = vec![0f32; cfg.width * cfg.height];
    assert!(reader.read_page_into(&mut img).unwrap());
    let (w, _h) = (cfg.width, cfg.height);
    let cp = exp.join("truth/cells.parquet");
    let cells = read_table(&cp).unwrap();
    let (sess, x, y, present) = (
        cells.strs(&cp, "session").unwrap(),
        cells.f32s(&cp, "x").unwrap(),
        cells.f32s(&cp, "y").unwrap(),
        cells.bools(&cp, "present").unwrap(),
    );
    let mut sorted = img.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted[sorted.len() / 2];
    let at_cells: Vec<f32> = (0..sess.len())
        .filter(|&i| sess[i] == "d5" && present[i])
        .filter(|&i| {
            x[i] >= 1.0 && y[i] >= 1.0 && (x[i] as usize) < w - 1 && (y[i] as usize) < w - 1
        })
        .map(|i| img[y[i].round() as usize * w + x[i].round() as usize])
        .collect();
    let brighter = at_cells.iter().filter(|&&v| v > median).count();
    assert!(
        brighter * 4 >= at_cells.len() * 3,
        "{brighter} of {} cell centres brighter than the median",
        at_cells.len()
    );
}

#[test]
fn dark_somata_on_and_off_are_obeyed_without_a_structural_channel() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp");
    let s = simulate::simulate(&tiny_config(), 4, &exp, false, &NoProgress).unwrap();
    let mut counts = Vec::new();
    for (setting, out) in [
        (cortexmap::config::DarkSomata::On, "on"),
        (cortexmap::config::DarkSomata::Off, "off"),
    ] {
        let mut params = Params::default();
        params.detect.dark_somata = setting;
        let out = dir.path().join(out);
        run(
            &s.manifest,
            &out,
            &params,
            Some(Stage::Detect),
            None,
            &NoProgress,
        )
        .unwrap();
        let dp = out.join("detection.parquet");
        let det = read_table(&dp).unwrap();
        let searched = det.bools(&dp, "dark_search").unwrap().to_vec();
        assert!(searched
            .iter()
            .all(|&d| d == (setting == cortexmap::config::DarkSomata::On)));
        counts.push(det.u32s(&dp, "n_anatomy").unwrap().to_vec());
    }
    // The dark search only adds ROIs, after the bright ones, and here it finds some
    // (gaps between the simulated somata: this is why "auto" asks the active cells).
    assert!(counts[0].iter().zip(&counts[1]).all(|(on, off)| on >= off));
    let total = |c: &[u32]| c.iter().sum::<u32>();
    assert!(total(&counts[0]) > total(&counts[1]), "{counts:?}");
}

#[test]
fn neurofinder_crop_beats_the_peers_f1() {
    let Some(real) = common::real_data() else {
        return;
    };
    let nf = real.join("neurofinder_crop192");
    let dir = tempfile::tempdir().unwrap();
    let movie = nf.join("movie_600x192x192_u16.tif");
    let manifest = one_session_manifest(dir.path(), &movie.to_string_lossy(), 7.0);
    let out = dir.path().join("run");
    run(&manifest, &out, &Params::default(), None, None, &NoProgress).unwrap();
    let s = cortexmap::score::cells::score_regions(&nf.join("regions_crop.json"), &out, None, 5.0)
        .unwrap();
    // Suite2p 0.25 and CaImAn 0.36 on these labels (../shared/peers/README.md);
    // the dark-soma search lifts cortexmap from 0.43 to 0.60.
    assert!(s.cells.4 > 0.55, "F1 {:?}", s.cells);
    let dp = out.join("detection.parquet");
    let det = read_table(&dp).unwrap();
    assert_eq!(det.bools(&dp, "dark_search").unwrap(), vec![true]);
    assert!(det.f32s(&dp, "dark_centre_fraction").unwrap()[0] >= 0.2);
    // Without the dark search the anatomical cells are the bright ones only, and
    // the score falls back.
    let mut off = Params::default();
    off.detect.dark_somata = cortexmap::config::DarkSomata::Off;
    let out_off = dir.path().join("run-off");
    run(&manifest, &out_off, &off, None, None, &NoProgress).unwrap();
    let s_off =
        cortexmap::score::cells::score_regions(&nf.join("regions_crop.json"), &out_off, None, 5.0)
            .unwrap();
    assert!(
        s.cells.4 > s_off.cells.4 + 0.1,
        "{:?} vs {:?}",
        s.cells,
        s_off.cells
    );
}

#[test]
fn a_very_short_session_runs_through() {
    // 25 frames (the motion stage needs 20): one bin per frame, a blinking spot.
    let dir = tempfile::tempdir().unwrap();
    let manifest = write_movie(dir.path(), 48, 48, 25, |f, x, y| {
        let spot = (x as f32 - 24.0).hypot(y as f32 - 20.0) < 4.0 && f % 5 == 0;
        (400.0 + 20.0 * noise(f, x, y) + if spot { 400.0 } else { 0.0 }) as i16
    });
    let out = dir.path().join("run");
    let s = run(&manifest, &out, &Params::default(), None, None, &NoProgress).unwrap();
    let traces = read_table(out.join("traces.parquet")).unwrap();
    assert_eq!(traces.n_rows(), s.detection[0].1 * 25);
}
