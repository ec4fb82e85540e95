//! The analyze stage's spatial analysis (SCIENCE.md §5.4) on a tiny simulated
//! experiment: positions in µm, sites, and every bin's pairs and mean recomputed
//! here by brute force from cells.parquet and neurons.parquet.

mod common;

use cortexmap::config::Params;
use cortexmap::io::table::{read_table, Table};
use cortexmap::pipeline::run;
use cortexmap::progress::NoProgress;
use cortexmap::simulate::simulate;
use std::collections::BTreeMap;
use std::path::Path;

struct Cell {
    position: [f64; 3],
    site: bool,
    ablated: bool,
}

fn cells(path: &Path) -> BTreeMap<u32, Cell> {
    let t = read_table(path).unwrap();
    let (id, x, y, z) = (
        t.u32s(path, "cell").unwrap(),
        t.opt_f32s(path, "x_um").unwrap(),
        t.opt_f32s(path, "y_um").unwrap(),
        t.opt_f32s(path, "z_um").unwrap(),
    );
    let (site, ablated) = (
        t.opt_bools(path, "spatial_site").unwrap(),
        t.bools(path, "ablated").unwrap(),
    );
    (0..id.len())
        .map(|r| {
            (
                id[r],
                Cell {
                    position: [
                        x[r].unwrap() as f64,
                        y[r].unwrap() as f64,
                        z[r].unwrap() as f64,
                    ],
                    site: site[r].unwrap(),
                    ablated: ablated[r],
                },
            )
        })
        .collect()
}

/// (session, group, bin index) → (pairs, sum of values over pairs).
type Expected = BTreeMap<(String, String, usize), (u32, f64)>;

fn expected(neurons: &Table, np: &Path, cells: &BTreeMap<u32, Cell>, after_day: i32) -> Expected {
    let (cell, session, day) = (
        neurons.u32s(np, "cell").unwrap(),
        neurons.strs(np, "session").unwrap(),
        neurons.i32s(np, "day").unwrap(),
    );
    let (best, group, spared) = (
        neurons.f64s(np, "best_response").unwrap(),
        neurons.strs(np, "group").unwrap(),
        neurons.bools(np, "spared").unwrap(),
    );
    let counted =
        |r: usize| spared[r] && (group[r] == "A" || group[r] == "B") && !cells[&cell[r]].site;
    // The group's mean best response over the sessions before the ablation.
    let base = |g: &str| {
        let v: Vec<f64> = (0..cell.len())
            .filter(|&r| counted(r) && group[r] == g && day[r] <= after_day && best[r].is_finite())
            .map(|r| best[r])
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let (base_a, base_b) = (base("A"), base("B"));
    let sites: Vec<[f64; 3]> = cells
        .values()
        .filter(|c| c.site)
        .map(|c| c.position)
        .collect();
    let mut out = Expected::new();
    for r in (0..cell.len()).filter(|&r| counted(r) && best[r].is_finite()) {
        let b = if group[r] == "A" { base_a } else { base_b };
        let p = cells[&cell[r]].position;
        for s in &sites {
            let d = ((p[0] - s[0]).powi(2) + (p[1] - s[1]).powi(2) + (p[2] - s[2]).powi(2)).sqrt();
            if (15.0..350.0).contains(&d) {
                let bin = ((d - 15.0) / 25.0).floor() as usize;
                let e = out
                    .entry((session[r].clone(), group[r].clone(), bin))
                    .or_insert((0, 0.0));
                e.0 += 1;
                e.1 += best[r] / b;
            }
        }
    }
    out
}

#[test]
fn spatial_table_pairs_spared_cells_with_the_ablated_ones() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp");
    let cfg = common::tiny_config();
    let s = simulate(&cfg, 11, &exp, false, &NoProgress).unwrap();
    let out = dir.path().join("run");
    run(
        &s.manifest,
        &out,
        &Params::default(),
        None,
        None,
        &NoProgress,
    )
    .unwrap();

    let cp = out.join("cells.parquet");
    let cells = cells(&cp);
    let t = read_table(&cp).unwrap();
    // Positions in µm are the reference positions times the pixel size.
    let (x_ref, x_um) = (
        t.f32s(&cp, "x_ref").unwrap(),
        t.opt_f32s(&cp, "x_um").unwrap(),
    );
    for (a, b) in x_ref.iter().zip(x_um) {
        assert!((a * cfg.um_per_pixel as f32 - b.unwrap()).abs() < 1e-3);
    }
    assert!(cells.values().all(|c| c.position[2] == cfg.depth_um));
    // The sites are the ablated cells.
    assert!(cells.values().any(|c| c.site));
    assert!(cells.values().all(|c| c.site == c.ablated));

    let np = out.join("neurons.parquet");
    let want = expected(
        &read_table(&np).unwrap(),
        &np,
        &cells,
        cfg.ablation_after_day,
    );
    assert!(!want.is_empty(), "no pairs in the tiny experiment");
    let sp = out.join("spatial.parquet");
    let got = read_table(&sp).unwrap();
    assert_eq!(got.n_rows(), cfg.days.len() * 2 * 14);
    let (session, group, lo, n, mean) = (
        got.strs(&sp, "session").unwrap(),
        got.strs(&sp, "group").unwrap(),
        got.f64s(&sp, "distance_min_um").unwrap(),
        got.u32s(&sp, "n_pairs").unwrap(),
        got.f64s(&sp, "norm_best_response").unwrap(),
    );
    for r in 0..got.n_rows() {
        let bin = ((lo[r] - 15.0) / 25.0).round() as usize;
        let key = (session[r].clone(), group[r].clone(), bin);
        let (pairs, sum) = want.get(&key).copied().unwrap_or((0, 0.0));
        assert_eq!(n[r], pairs, "{key:?}");
        if pairs > 0 {
            let m = sum / pairs as f64;
            assert!((mean[r] - m).abs() < 1e-9, "{key:?}: {} vs {m}", mean[r]);
        } else {
            assert!(mean[r].is_nan());
        }
    }

    // Without a pixel size there are no distances: an empty table, and a note.
    let manifest = std::fs::read_to_string(&s.manifest).unwrap();
    let without: String = manifest
        .lines()
        .filter(|l| !l.starts_with("um_per_pixel"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without, manifest);
    std::fs::write(&s.manifest, without).unwrap();
    let summary = run(
        &s.manifest,
        &out,
        &Params::default(),
        None,
        None,
        &NoProgress,
    )
    .unwrap();
    let notes = summary.analysis.expect("analyze ran").warnings;
    assert!(
        notes.iter().any(|n| n.contains("um_per_pixel")),
        "{notes:?}"
    );
    assert_eq!(read_table(&sp).unwrap().n_rows(), 0);
    let t = read_table(&cp).unwrap();
    assert!(t.opt_f32s(&cp, "x_um").unwrap().iter().all(Option::is_none));

    // The analysis reruns without the raw movies (archived elsewhere), to the
    // same tables.
    std::fs::write(&s.manifest, &manifest).unwrap();
    run(
        &s.manifest,
        &out,
        &Params::default(),
        None,
        None,
        &NoProgress,
    )
    .unwrap();
    let before = std::fs::read(&sp).unwrap();
    for entry in walk(&exp) {
        if entry.extension().is_some_and(|x| x == "tif") {
            std::fs::remove_file(entry).unwrap();
        }
    }
    let refused = run(
        &s.manifest,
        &out,
        &Params::default(),
        None,
        None,
        &NoProgress,
    );
    assert!(refused.is_err(), "a full rerun needs the movies");
    run(
        &s.manifest,
        &out,
        &Params::default(),
        None,
        Some(cortexmap::pipeline::Stage::Analyze),
        &NoProgress,
    )
    .unwrap();
    assert!(std::fs::read(&sp).unwrap() == before);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
