//! The track stage: alignment, matching and tags against the simulator's truth,
//! footprint input, and bad input.

mod common;

use common::bin;
use cortexmap::config::{Params, TrackParams};
use cortexmap::io::csv::Position;
use cortexmap::io::footprints::FootprintFile;
use cortexmap::io::table::read_table;
use cortexmap::pipeline::track::footprint_session;
use cortexmap::pipeline::{run, Stage};
use cortexmap::progress::NoProgress;
use cortexmap::simulate::{self, SimConfig};
use cortexmap::track::{track_sessions, AblationInput, TrackSession};
use std::collections::BTreeMap;
use std::path::Path;

/// Per session (truth order): (cell id, pixels, weights) of every visible cell.
type TruthFootprints = BTreeMap<String, Vec<(u32, Vec<u32>, Vec<f32>)>>;

fn truth_footprints(truth: &Path) -> TruthFootprints {
    let p = truth.join("footprints.parquet");
    let t = read_table(&p).unwrap();
    let (s, c, px, w) = (
        t.strs(&p, "session").unwrap(),
        t.u32s(&p, "cell").unwrap(),
        t.lists_u32(&p, "pixels").unwrap(),
        t.lists_f32(&p, "weights").unwrap(),
    );
    let mut out: TruthFootprints = BTreeMap::new();
    for i in 0..s.len() {
        out.entry(s[i].clone())
            .or_default()
            .push((c[i], px[i].clone(), w[i].clone()));
    }
    out
}

/// A standard-like experiment's true footprints, tracked as if another tool had
/// found them: every link must be right, under the true day-to-day shifts and
/// rotations (up to ~15 px and ~3°).
#[test]
fn tracks_the_true_footprints_of_a_simulated_experiment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SimConfig {
        width: 256,
        height: 256,
        n_cells: 130,
        day_rotation_sd_deg: 1.5,
        ..SimConfig::standard()
    };
    simulate::simulate_truth_only(&cfg, 3, dir.path()).unwrap();
    let fps = truth_footprints(&dir.path().join("truth"));
    let days: Vec<i32> = cfg.days.clone();
    let mut sessions: Vec<TrackSession> = Vec::new();
    let mut cell_of: Vec<Vec<u32>> = Vec::new();
    for d in &days {
        let id = SimConfig::session_id(*d);
        let cells = &fps[&id];
        let file = FootprintFile {
            width: cfg.width,
            height: cfg.height,
            cells: cells
                .iter()
                .map(|(_, p, w)| (p.clone(), w.clone()))
                .collect(),
        };
        let s = footprint_session(&id, *d, &file);
        cell_of.push(s.rois.iter().map(|r| cells[r.roi as usize].0).collect());
        sessions.push(s);
    }
    let reference = days.iter().position(|&d| d == cfg.reference_day).unwrap();
    let track_with = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            track_sessions(
                &sessions,
                reference,
                None,
                &[],
                &TrackParams::default(),
                &NoProgress,
            )
            .unwrap()
        })
    };
    let t = track_with(2);
    let one = track_with(1);
    assert_eq!(one.cells, t.cells, "1 and 2 threads give the same tracks");
    assert_eq!(one.pairs, t.pairs);
    // Every track holds one true cell, and every true cell is one track.
    let mut tracks_of_cell: BTreeMap<u32, usize> = BTreeMap::new();
    for c in &t.cells {
        let truth: Vec<u32> = c
            .rois
            .iter()
            .enumerate()
            .filter_map(|(s, r)| {
                r.map(|r| {
                    let k = sessions[s].rois.iter().position(|x| x.roi == r).unwrap();
                    cell_of[s][k]
                })
            })
            .collect();
        assert!(
            truth.windows(2).all(|w| w[0] == w[1]),
            "mixed track {truth:?}"
        );
        *tracks_of_cell.entry(truth[0]).or_default() += 1;
    }
    let split = tracks_of_cell.values().filter(|&&n| n > 1).count();
    assert_eq!(split, 0, "{split} cells split into several tracks");
    for (s, a) in t.alignments.iter().enumerate() {
        assert!(a.residual_px < 0.3 || s == reference, "{a:?}");
    }
}

fn small_tracked() -> SimConfig {
    SimConfig {
        name: "small-track".into(),
        n_cells: 40,
        frames: Some(600),
        frames_per_file: 300,
        n_ablate: 4,
        day_rotation_sd_deg: 1.5,
        ..common::small_standard()
    }
}

/// The whole pipeline up to `track` on a small simulation: links and the
/// ablated tag against the truth; `--from track` reproduces the tables.
#[test]
fn run_until_track_links_cells_and_finds_the_ablated_ones() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp");
    let s = simulate::simulate(&small_tracked(), 2, &exp, false, &NoProgress).unwrap();
    let out = dir.path().join("run");
    let summary = run(
        &s.manifest,
        &out,
        &Params::default(),
        Some(Stage::Track),
        None,
        &NoProgress,
    )
    .unwrap();
    let tracking = summary.tracking.expect("the track stage ran");
    assert_eq!(tracking.alignments.len(), 3);
    let cells = read_table(out.join("cells.parquet")).unwrap();
    assert_eq!(cells.n_rows(), tracking.cells.len() * 3);

    let score = cortexmap::score::score(&exp, &out).unwrap();
    let t = score.tracking.expect("tracking was scored");
    assert!(t.pooled.n_true >= 30, "{:?}", t.pooled);
    assert!(t.pooled.precision >= 0.97, "{:?}", t.pooled);
    assert!(t.pooled.recall >= 0.95, "{:?}", t.pooled);
    for (s, e) in &t.alignment {
        assert!(
            *e < 0.5,
            "session {s}: alignment RMSE {e} px; {:?}",
            tracking.alignments
        );
    }
    let ablated = &t.tags[0];
    assert_eq!(ablated.tag, "ablated");
    assert!(ablated.precision >= 0.99, "{ablated:?}");
    assert!(
        ablated.n_correct >= ablated.n_true_detected.saturating_sub(1),
        "{ablated:?}"
    );
    for name in ["tracking", "tags", "alignment"] {
        assert!(out.join("score").join(format!("{name}.parquet")).exists());
    }

    let before = std::fs::read(out.join("cells.parquet")).unwrap();
    let res = bin()
        .args([
            "run",
            s.manifest.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--from",
            "track",
            "--until",
            "track",
        ])
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(stdout.contains("tracked cells"), "{stdout}");
    assert!(
        std::fs::read(out.join("cells.parquet")).unwrap() == before,
        "--from track rewrote cells.parquet differently"
    );

    // The analyze stage on the same run: its tables, and initially_silent set for
    // every cell found in the last session before the ablation (d5).
    let a = run(
        &s.manifest,
        &out,
        &Params::default(),
        None,
        Some(Stage::Analyze),
        &NoProgress,
    )
    .unwrap()
    .analysis
    .expect("the analyze stage ran");
    assert_eq!(a.reference.as_deref(), Some("d5"));
    assert_eq!(a.sessions.len(), 3);
    for name in cortexmap::pipeline::ANALYSIS_TABLES {
        assert!(out.join(format!("{name}.parquet")).exists(), "{name}");
    }
    let path = out.join("cells.parquet");
    let cells = read_table(&path).unwrap();
    let (sess, roi, silent) = (
        cells.strs(&path, "session").unwrap(),
        cells.opt_u32s(&path, "roi").unwrap(),
        cells.opt_bools(&path, "initially_silent").unwrap(),
    );
    let cell = cells.u32s(&path, "cell").unwrap();
    let in_d5: std::collections::BTreeSet<u32> = (0..cell.len())
        .filter(|&i| sess[i] == "d5" && roi[i].is_some())
        .map(|i| cell[i])
        .collect();
    let set: std::collections::BTreeSet<u32> = (0..cell.len())
        .filter(|&i| silent[i].is_some())
        .map(|i| cell[i])
        .collect();
    assert!(
        set.is_subset(&in_d5) && set.len() + 5 >= in_d5.len(),
        "{set:?} vs {in_d5:?}"
    );

    // Responsiveness against the truth (the default shuffle test).
    let score = cortexmap::score::score(&exp, &out).unwrap();
    let a = score.analysis.expect("the analysis was scored");
    let all = a.responsive.last().unwrap();
    assert_eq!(all.session, "all");
    assert!(all.tp + all.fn_ + all.fp + all.tn >= 40, "{all:?}");
    eprintln!("responsive: {all:?}");
    assert!(all.balanced_accuracy >= 0.6, "{all:?}");
    assert!(out.join("score").join("responsive.parquet").exists());

    // The maps' noise floor: the truth's responses with the run's ΔF/F noise.
    let floor = a.map_noise_floor.as_ref().expect("a noise floor");
    assert_eq!(floor.max_errors.len(), floor.draws);
    assert!(floor.max_errors.iter().all(|e| e.is_finite() && *e > 0.0));
    assert_eq!(floor.session_errors.len(), a.maps.len());
    assert!(floor.session_sigma.iter().all(|s| s.1 > 0.0), "{floor:?}");
    let mp = out.join("score").join("maps.parquet");
    let maps = cortexmap::io::table::read_table(&mp).unwrap();
    assert!(maps
        .f64s(&mp, "noise_floor_error")
        .unwrap()
        .iter()
        .all(|e| e.is_finite()));
}

/// Footprints of `n` discs scattered with `seed` over a `w × h` frame.
fn scattered(n: usize, w: usize, h: usize, seed: u64) -> FootprintFile {
    let mut s = seed;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut centres: Vec<(f64, f64)> = Vec::new();
    while centres.len() < n {
        let c = (
            6.0 + next() * (w as f64 - 12.0),
            6.0 + next() * (h as f64 - 12.0),
        );
        if centres.iter().all(|q| (q.0 - c.0).hypot(q.1 - c.1) > 10.0) {
            centres.push(c);
        }
    }
    let cells = centres
        .iter()
        .map(|&(cx, cy)| {
            let (mut p, mut wt) = (vec![], vec![]);
            for y in 0..h {
                for x in 0..w {
                    let d = (x as f64 - cx).hypot(y as f64 - cy);
                    if d <= 4.0 {
                        p.push((y * w + x) as u32);
                        wt.push((1.0 - d / 5.0) as f32);
                    }
                }
            }
            (p, wt)
        })
        .collect();
    FootprintFile {
        width: w,
        height: h,
        cells,
    }
}

fn json_of(f: &FootprintFile) -> String {
    let cells: Vec<serde_json::Value> = f
        .cells
        .iter()
        .map(|(p, w)| {
            let coords: Vec<[usize; 2]> = p
                .iter()
                .map(|&i| [i as usize / f.width, i as usize % f.width])
                .collect();
            serde_json::json!({"coordinates": coords, "weights": w})
        })
        .collect();
    serde_json::json!({"height": f.height, "width": f.width, "cells": cells}).to_string()
}

#[test]
fn track_footprints_command_tracks_files_and_refuses_unrelated_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let a = scattered(60, 160, 140, 1);
    // Session b: the same cells minus three, shifted by (3, -2) px.
    let mut b = a.clone();
    b.cells.truncate(57);
    for (p, _) in b.cells.iter_mut() {
        for i in p.iter_mut() {
            let (x, y) = (*i as usize % 160, *i as usize / 160);
            *i = ((y - 2) * 160 + x + 3) as u32;
        }
    }
    let unrelated = scattered(60, 160, 140, 77);
    for (name, f) in [("a", &a), ("b", &b), ("c", &unrelated)] {
        std::fs::write(dir.path().join(format!("{name}.json")), json_of(f)).unwrap();
    }
    let out = dir.path().join("out");
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let res = bin()
        .args(["track-footprints", &p("a.json"), &p("b.json"), "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(stdout.contains("60 tracked cells"), "{stdout}");
    let cells = read_table(out.join("cells.parquet")).unwrap();
    assert_eq!(cells.n_rows(), 120);
    // Every footprint of both files, in reference coordinates.
    let moved = read_table(out.join("rois_ref.parquet")).unwrap();
    assert_eq!(moved.n_rows(), 117);
    let al = read_table(out.join("alignment.parquet")).unwrap();
    let path = out.join("alignment.parquet");
    let dx = al.f64s(&path, "dx").unwrap();
    let dy = al.f64s(&path, "dy").unwrap();
    assert_eq!(al.bools(&path, "reference").unwrap(), &[true, false]);
    assert!(
        (dx[1] + 3.0).abs() < 0.05 && (dy[1] - 2.0).abs() < 0.05,
        "{dx:?} {dy:?}"
    );

    let out2 = dir.path().join("out2");
    let res = bin()
        .args(["track-footprints", &p("a.json"), &p("c.json"), "--out"])
        .arg(&out2)
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("'c'") && err.contains("same field of view"),
        "{err}"
    );
    assert!(!out2.join("cells.parquet").exists());
}

#[test]
fn a_session_without_rois_and_targets_outside_the_fov() {
    let a = footprint_session("d1", 1, &scattered(40, 120, 120, 5));
    let mut empty = footprint_session("d3", 3, &scattered(40, 120, 120, 5));
    empty.rois.clear();
    let sessions = vec![a, empty];
    let t = track_sessions(
        &sessions,
        0,
        None,
        &[],
        &TrackParams::default(),
        &NoProgress,
    )
    .unwrap();
    assert_eq!(t.cells.len(), 40);
    assert!(t.cells.iter().all(|c| c.rois[1].is_none()));

    let targets = [Position {
        x: 500.0,
        y: 20.0,
        kind: None,
    }];
    let ablation = AblationInput {
        after_day: 1,
        targets: &targets,
        targets_file: Path::new("ablation_targets.csv"),
    };
    let err = track_sessions(
        &sessions,
        0,
        Some(&ablation),
        &[],
        &TrackParams::default(),
        &NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("ablation_targets.csv") && err.contains("outside"),
        "{err}"
    );
}

/// Pearson correlation of two equally long series (NaN when either is flat).
fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (
        a.iter().map(|&x| x as f64).sum::<f64>() / n,
        b.iter().map(|&x| x as f64).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa * sbb).sqrt()
}

/// Traces by (session, id) from a table keyed by `id` ("cell" or "roi").
fn traces_by(path: &Path, id: &str) -> BTreeMap<(String, u32), Vec<f32>> {
    let t = read_table(path).unwrap();
    let (s, c, f, d) = (
        t.strs(path, "session").unwrap(),
        t.u32s(path, id).unwrap(),
        t.u32s(path, "frame").unwrap(),
        t.f32s(path, "dff").unwrap(),
    );
    let mut out: BTreeMap<(String, u32), Vec<f32>> = BTreeMap::new();
    for i in 0..s.len() {
        let v = out.entry((s[i].clone(), c[i])).or_default();
        assert_eq!(v.len(), f[i] as usize, "frames in order");
        v.push(d[i]);
    }
    out
}

/// Cells missing a ROI in a session get their footprint transferred there: it
/// lands on the true cell, its trace follows the true one, ablated cells are not
/// transferred after the ablation, and the transfer needs the corrected frames.
#[test]
fn transferred_footprints_land_on_their_cells_and_carry_their_traces() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp");
    let cfg = SimConfig {
        n_cells: 50,
        days: vec![1, 3, 5, 7],
        ..small_tracked()
    };
    let s = simulate::simulate(&cfg, 5, &exp, false, &NoProgress).unwrap();
    let out = dir.path().join("run");
    run(
        &s.manifest,
        &out,
        &Params::default(),
        Some(Stage::Track),
        None,
        &NoProgress,
    )
    .unwrap();
    // Run coordinates + the session's motion offset = truth coordinates.
    let offsets: BTreeMap<String, (f32, f32)> = cortexmap::score::score(&exp, &out)
        .unwrap()
        .motion
        .iter()
        .map(|m| (m.session.clone(), (m.offset_x as f32, m.offset_y as f32)))
        .collect();
    let cp = out.join("cells.parquet");
    let cells = read_table(&cp).unwrap();
    let (cell, day, roi, moved, ablated) = (
        cells.u32s(&cp, "cell").unwrap(),
        cells.i32s(&cp, "day").unwrap(),
        cells.opt_u32s(&cp, "roi").unwrap(),
        cells.bools(&cp, "transferred").unwrap(),
        cells.bools(&cp, "ablated").unwrap(),
    );
    let n_moved = moved.iter().filter(|&&m| m).count();
    assert!(n_moved >= 3, "only {n_moved} transfers");
    for i in 0..cell.len() {
        if moved[i] {
            assert!(roi[i].is_none(), "a transferred row has a ROI");
            assert!(
                !(ablated[i] && day[i] > 5),
                "an ablated cell was transferred"
            );
        }
    }

    // A transferred footprint lands on a cell: its centroid is within the radius
    // of a true cell of that session.
    let rp = out.join("transferred_rois.parquet");
    let rois = read_table(&rp).unwrap();
    assert_eq!(rois.n_rows(), n_moved);
    let (rs, rc, rx, ry) = (
        rois.strs(&rp, "session").unwrap(),
        rois.u32s(&rp, "cell").unwrap(),
        rois.f32s(&rp, "centroid_x").unwrap(),
        rois.f32s(&rp, "centroid_y").unwrap(),
    );
    let tp = exp.join("truth").join("cells.parquet");
    let truth = read_table(&tp).unwrap();
    let (ts, tc, tx, ty, present) = (
        truth.strs(&tp, "session").unwrap(),
        truth.u32s(&tp, "cell").unwrap(),
        truth.f32s(&tp, "x").unwrap(),
        truth.f32s(&tp, "y").unwrap(),
        truth.bools(&tp, "present").unwrap(),
    );
    let radius = truth.f32s(&tp, "radius_px").unwrap();
    let true_traces = traces_by(&exp.join("truth").join("traces.parquet"), "cell");
    let moved_traces = traces_by(&out.join("transferred_traces.parquet"), "cell");
    assert_eq!(moved_traces.len(), n_moved);
    let (mut on_cell, mut rs_found) = (0, Vec::new());
    for i in 0..rs.len() {
        let (ox, oy) = offsets[&rs[i]];
        let nearest = (0..ts.len())
            .filter(|&j| ts[j] == rs[i] && present[j])
            .map(|j| {
                let d = ((tx[j] - rx[i] - ox).powi(2) + (ty[j] - ry[i] - oy).powi(2)).sqrt();
                (d, tc[j], radius[j])
            })
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let Some((_, true_cell, _)) = nearest.filter(|n| n.0 <= n.2) else {
            eprintln!("{} cell {}: nearest true cell {nearest:?}", rs[i], rc[i]);
            continue;
        };
        on_cell += 1;
        let got = &moved_traces[&(rs[i].clone(), rc[i])];
        let want = &true_traces[&(rs[i].clone(), true_cell)];
        let r = pearson(got, want);
        if r.is_finite() {
            rs_found.push(r);
        }
    }
    eprintln!(
        "{on_cell} of {} transferred footprints on a true cell; trace r: {rs_found:?}",
        rs.len()
    );
    assert!(on_cell * 100 >= rs.len() * 85, "{on_cell} of {}", rs.len());
    rs_found.sort_by(|a, b| a.total_cmp(b));
    let median = rs_found[rs_found.len() / 2];
    assert!(median >= 0.5, "median trace r {median}: {rs_found:?}");

    // Without the corrected frames the transfer cannot run: a clear error; with
    // the transfer off the track part runs without them.
    std::fs::remove_dir_all(out.join("frames")).unwrap();
    let err = run(
        &s.manifest,
        &out,
        &Params::default(),
        Some(Stage::Track),
        Some(Stage::Track),
        &NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("transfer = false"), "{err}");
    let off = Params {
        track: TrackParams {
            transfer: false,
            ..TrackParams::default()
        },
        ..Params::default()
    };
    run(
        &s.manifest,
        &out,
        &off,
        Some(Stage::Track),
        None,
        &NoProgress,
    )
    .unwrap();
    let cells = read_table(&cp).unwrap();
    assert!(cells.bools(&cp, "transferred").unwrap().iter().all(|&m| !m));
    assert_eq!(read_table(&rp).unwrap().n_rows(), 0);
    // Turning it back on with the frames gone restarts from ingest.
    run(
        &s.manifest,
        &out,
        &Params::default(),
        Some(Stage::Track),
        None,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(read_table(&rp).unwrap().n_rows(), n_moved);
}
