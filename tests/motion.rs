//! Motion correction on simulated experiments, scored against the truth.

mod common;

use common::{bin, tiny_config, tree_bytes};
use cortexmap::config::Params;
use cortexmap::pipeline::{run, Stage};
use cortexmap::progress::NoProgress;
use cortexmap::simulate;

fn run_motion(manifest: &std::path::Path, out: &std::path::Path, params: &Params) {
    run(
        manifest,
        out,
        params,
        Some(Stage::Motion),
        None,
        &NoProgress,
    )
    .unwrap();
}

#[test]
fn rigid_shifts_match_the_truth_to_a_few_hundredths_of_a_pixel() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp");
    let mut cfg = tiny_config();
    cfg.width = 96;
    cfg.height = 96;
    cfg.n_cells = 60;
    cfg.motion_sd_px = 1.0;
    let s = simulate::simulate(&cfg, 11, &exp, false, &NoProgress).unwrap();
    let out = dir.path().join("run");
    run_motion(&s.manifest, &out, &Params::default());
    let score = cortexmap::score::score(&exp, &out).unwrap();
    assert_eq!(score.motion.len(), 3);
    for m in &score.motion {
        assert!(m.rmse < 0.08, "{}: rmse {} px", m.session, m.rmse);
    }
    for t in ["motion", "motion_qc", "sessions"] {
        assert!(out.join(format!("{t}.parquet")).exists(), "{t}");
    }
    assert!(out.join("frames/d5.bin").exists() && !out.join("frames/d5.raw").exists());
    assert!(out.join("images/d5_reference.tif").exists());
    // The corrected mean image is crisper than the raw one.
    let qc = cortexmap::io::table::read_table(out.join("motion_qc.parquet")).unwrap();
    let p = out.join("motion_qc.parquet");
    let raw = qc.f64s(&p, "crispness_raw").unwrap();
    let cor = qc.f64s(&p, "crispness_corrected").unwrap();
    for (r, c) in raw.iter().zip(cor) {
        assert!(c > r, "crispness {r} -> {c}");
    }
}

#[test]
fn nonrigid_blocks_reduce_the_field_error() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp");
    let mut cfg = tiny_config();
    cfg.width = 160;
    cfg.height = 160;
    cfg.n_cells = 200;
    cfg.nonrigid = true;
    cfg.warp_sd_px = 1.0;
    cfg.days = vec![5, 7];
    let s = simulate::simulate(&cfg, 3, &exp, false, &NoProgress).unwrap();
    let rigid_run = dir.path().join("rigid");
    run_motion(&s.manifest, &rigid_run, &Params::default());
    let mut p = Params::default();
    p.motion.nonrigid = true;
    p.motion.block_size = 48;
    let nr_run = dir.path().join("nonrigid");
    run_motion(&s.manifest, &nr_run, &p);
    let rigid = cortexmap::score::score(&exp, &rigid_run).unwrap().motion[0]
        .field_rmse
        .unwrap();
    let nonrigid = cortexmap::score::score(&exp, &nr_run).unwrap().motion[0]
        .field_rmse
        .unwrap();
    assert!(
        nonrigid < 0.75 * rigid,
        "field rmse rigid {rigid} vs nonrigid {nonrigid}"
    );
    let static_removed = cortexmap::score::score(&exp, &nr_run).unwrap().motion[0]
        .field_rmse_static
        .unwrap();
    // A short session's reference carries a visible mean warp.
    assert!(
        static_removed < nonrigid,
        "field rmse {nonrigid}, static part removed {static_removed}"
    );
    assert!(nr_run.join("motion_blocks.parquet").exists());
}

#[test]
fn registration_is_identical_with_one_and_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp");
    let s = simulate::simulate(&tiny_config(), 2, &exp, false, &NoProgress).unwrap();
    let mut p = Params::default();
    p.motion.nonrigid = true;
    p.motion.block_size = 24;
    for (threads, name) in [(1, "a"), (2, "b")] {
        let out = dir.path().join(name);
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| run_motion(&s.manifest, &out, &p));
    }
    let a = tree_bytes(&dir.path().join("a"));
    let b = tree_bytes(&dir.path().join("b"));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!(x.1 == y.1, "{} differs", x.0.display());
    }
}

#[test]
fn short_sessions_are_refused_and_nothing_is_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp");
    let s = simulate::simulate(&tiny_config(), 2, &exp, false, &NoProgress).unwrap();
    let out = dir.path().join("run");
    let mut p = Params::default();
    p.motion.min_frames = 100_000;
    let err = run(
        &s.manifest,
        &out,
        &p,
        Some(Stage::Motion),
        None,
        &NoProgress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("min_frames"), "{err}");
    assert!(!out.join("motion.parquet").exists());
    // The CLI says the same with exit code 1.
    let params = dir.path().join("p.toml");
    std::fs::write(&params, "[motion]\nmin_frames = 100000\n").unwrap();
    let res = bin()
        .args(["run", s.manifest.to_str().unwrap(), "--out"])
        .arg(dir.path().join("run2"))
        .arg("--params")
        .arg(&params)
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(1));
}

#[test]
fn constant_frames_are_flagged_not_fatal() {
    use cortexmap::movie::store::{FrameStore, FrameStoreWriter, StoreDtype};
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (48, 40);
    let raw = dir.path().join("in.raw");
    let mut wtr = FrameStoreWriter::create(&raw, h, w, StoreDtype::F32).unwrap();
    for f in 0..30 {
        let frame: Vec<f32> = if f == 7 {
            vec![100.0; w * h]
        } else {
            (0..w * h)
                .map(|i| {
                    (((i % w) as f32 / 3.0).sin() + ((i / w) as f32 / 4.0).cos()) * 50.0 + 200.0
                })
                .collect()
        };
        wtr.write_frames(&frame).unwrap();
    }
    wtr.finish().unwrap();
    let input = FrameStore::open(&raw).unwrap();
    let mut out =
        FrameStoreWriter::create(&dir.path().join("out.bin"), h, w, StoreDtype::F32).unwrap();
    let m = cortexmap::motion::register_session(
        "s",
        &input,
        &mut out,
        &Default::default(),
        &NoProgress,
    )
    .unwrap();
    assert!(m.frames[7].constant);
    assert_eq!(m.qc.n_constant, 1);
    assert!(m
        .frames
        .iter()
        .enumerate()
        .all(|(i, f)| i == 7 || !f.constant));
    // The constant frame is written unchanged, in its place.
    let out = FrameStore::open(out.finish().unwrap()).unwrap();
    assert_eq!(out.n_frames(), 30);
    assert_eq!(out.frame(7).unwrap(), vec![100.0; w * h]);

    // Nonrigid: every frame has its block rows, the constant one its rigid shift.
    let mut out =
        FrameStoreWriter::create(&dir.path().join("nr.bin"), h, w, StoreDtype::F32).unwrap();
    let params = cortexmap::config::MotionParams {
        nonrigid: true,
        block_size: 24,
        ..Default::default()
    };
    let m =
        cortexmap::motion::register_session("s", &input, &mut out, &params, &NoProgress).unwrap();
    let (grid, rows) = m.blocks.expect("block shifts with nonrigid");
    assert_eq!(rows.len(), 30);
    assert!(rows.iter().all(|r| r.len() == grid.n_blocks()));
    assert!(rows[7]
        .iter()
        .all(|b| b.x == 0.0 && b.y == 0.0 && b.snr == 0.0));

    // The corrected store may be the raw file itself: a different frame size, or
    // frames already written, are refused before anything is written.
    let mut narrow =
        FrameStoreWriter::create(&dir.path().join("i16.bin"), h, w, StoreDtype::I16).unwrap();
    let mut started =
        FrameStoreWriter::create(&dir.path().join("f32.bin"), h, w, StoreDtype::F32).unwrap();
    started.write_frames(&vec![0.0; w * h]).unwrap();
    for out in [&mut narrow, &mut started] {
        let err =
            cortexmap::motion::register_session("s", &input, out, &Default::default(), &NoProgress)
                .unwrap_err();
        assert!(err.to_string().contains("must start empty"), "{err}");
    }
}
