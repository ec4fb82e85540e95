//! The analyze stage's later analyses on a tiny simulated experiment, recomputed
//! here by brute force from cells.parquet and neurons.parquet: the spatial
//! analysis (SCIENCE.md §5.4: positions in µm, sites, every bin's pairs and mean),
//! response stability and tuning drift (§3.7, §3.8).

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

/// Every stage with the default parameters.
fn run_all(manifest: &Path, out: &Path) -> cortexmap::pipeline::RunSummary {
    run(manifest, out, &Params::default(), None, None, &NoProgress).unwrap()
}

#[test]
fn spatial_turnover_and_drift_tables_match_a_brute_force_recount() {
    let dir = tempfile::tempdir().unwrap();
    let exp = dir.path().join("exp");
    let cfg = common::tiny_config();
    let s = simulate(&cfg, 11, &exp, false, &NoProgress).unwrap();
    let out = dir.path().join("run");
    run_all(&s.manifest, &out);

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

    check_turnover(&out);

    // Without a pixel size there are no distances: an empty table, and a note.
    let manifest = std::fs::read_to_string(&s.manifest).unwrap();
    let without: String = manifest
        .lines()
        .filter(|l| !l.starts_with("um_per_pixel"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without, manifest);
    std::fs::write(&s.manifest, without).unwrap();
    let summary = run_all(&s.manifest, &out);
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
    run_all(&s.manifest, &out);
    let analysis_tables = ["neurons", "stability", "drift", "spatial", "map_summary"];
    let tables = |out: &Path| -> Vec<Vec<u8>> {
        analysis_tables
            .iter()
            .map(|t| std::fs::read(out.join(format!("{t}.parquet"))).unwrap())
            .collect()
    };
    let before = tables(&out);
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
    let why = refused
        .expect_err("a full rerun needs the movies")
        .to_string();
    assert!(why.contains("matches no file"), "{why}");
    run(
        &s.manifest,
        &out,
        &Params::default(),
        None,
        Some(cortexmap::pipeline::Stage::Analyze),
        &NoProgress,
    )
    .unwrap();
    assert!(
        tables(&out) == before,
        "the analysis changed without the movies"
    );
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

/// stability.parquet and drift.parquet against neurons.parquet.
fn check_turnover(out: &Path) {
    let np = out.join("neurons.parquet");
    let n = read_table(&np).unwrap();
    let (cell, session, responsive, spared) = (
        n.u32s(&np, "cell").unwrap(),
        n.strs(&np, "session").unwrap(),
        n.bools(&np, "responsive").unwrap(),
        n.bools(&np, "spared").unwrap(),
    );
    let (corr, half) = (
        n.f64s(&np, "tuning_corr_ref").unwrap(),
        n.f64s(&np, "split_half").unwrap(),
    );
    let responsive_in = |s: &str| -> BTreeMap<u32, bool> {
        (0..cell.len())
            .filter(|&r| spared[r] && session[r] == s)
            .map(|r| (cell[r], responsive[r]))
            .collect()
    };
    let sp = out.join("stability.parquet");
    let st = read_table(&sp).unwrap();
    let (a, b, n_both, stab) = (
        st.strs(&sp, "session_a").unwrap(),
        st.strs(&sp, "session_b").unwrap(),
        st.u32s(&sp, "n_both").unwrap(),
        st.f64s(&sp, "stability").unwrap(),
    );
    let (n_cells, n_ra, n_rb, union) = (
        st.u32s(&sp, "n_cells").unwrap(),
        st.u32s(&sp, "n_responsive_a").unwrap(),
        st.u32s(&sp, "n_responsive_b").unwrap(),
        st.f64s(&sp, "stability_union").unwrap(),
    );
    assert_eq!(st.n_rows(), 2, "consecutive pairs of three sessions");
    assert!(
        n_both.iter().any(|&n| n > 0),
        "no cell stays responsive: {n_both:?}"
    );
    // A ratio, NaN where its denominator is zero.
    let same = |got: f64, num: usize, den: usize| {
        if den == 0 {
            got.is_nan()
        } else {
            (got - num as f64 / den as f64).abs() < 1e-12
        }
    };
    for r in 0..st.n_rows() {
        let (ra, rb) = (responsive_in(&a[r]), responsive_in(&b[r]));
        let common: Vec<(bool, bool)> = ra
            .iter()
            .filter_map(|(c, &x)| rb.get(c).map(|&y| (x, y)))
            .collect();
        let count = |f: &dyn Fn(&(bool, bool)) -> bool| common.iter().filter(|p| f(p)).count();
        let (n_a, n_b) = (count(&|p| p.0), count(&|p| p.1));
        let (both, either) = (count(&|p| p.0 && p.1), count(&|p| p.0 || p.1));
        assert!(
            n_a > 0,
            "{} -> {}: no responsive cell to follow",
            a[r],
            b[r]
        );
        assert_eq!(
            (
                n_cells[r] as usize,
                n_ra[r] as usize,
                n_rb[r] as usize,
                n_both[r] as usize
            ),
            (common.len(), n_a, n_b, both),
            "{} -> {}",
            a[r],
            b[r]
        );
        assert!(same(stab[r], both, n_a), "{}: {}", a[r], stab[r]);
        assert!(same(union[r], both, either), "{}: {}", a[r], union[r]);
    }
    // Group B′ (SCIENCE.md §3.6): in group B, never responsive on days 3 and 5,
    // responsive on day 7 (after the ablation).
    let (group, strict, day) = (
        n.strs(&np, "group").unwrap(),
        n.bools(&np, "group_b_strict").unwrap(),
        n.i32s(&np, "day").unwrap(),
    );
    let mut per_cell: BTreeMap<u32, (bool, bool, bool)> = BTreeMap::new();
    for r in 0..cell.len() {
        let e = per_cell.entry(cell[r]).or_insert((false, false, false));
        e.0 |= day[r] <= 5 && responsive[r];
        e.1 |= day[r] > 5 && responsive[r];
        e.2 |= session[r] == "d5";
    }
    for r in 0..cell.len() {
        let (before, after, at_reference) = per_cell[&cell[r]];
        assert_eq!(
            strict[r],
            at_reference && !before && after,
            "cell {}",
            cell[r]
        );
        if strict[r] {
            assert_eq!(group[r], "B");
        }
    }
    // Some cell is B′, so the recount above compared true values as well as false
    // ones (in this small experiment every group-B cell happens to be B′ too).
    assert!(strict.iter().any(|&x| x), "no B′ cell");
    // Drift: the reference session is the last before the ablation (d5); its
    // correlation with itself is 1, and the table's mean over the
    // reference-responsive cells matches neurons.parquet.
    let reference = responsive_in("d5");
    let dp = out.join("drift.parquet");
    let d = read_table(&dp).unwrap();
    let (ds, dn, dc) = (
        d.strs(&dp, "session").unwrap(),
        d.u32s(&dp, "n_cells").unwrap(),
        d.f64s(&dp, "tuning_corr").unwrap(),
    );
    let half_ref: BTreeMap<u32, f64> = (0..cell.len())
        .filter(|&r| session[r] == "d5")
        .map(|r| (cell[r], half[r]))
        .collect();
    assert!(
        dn.iter().all(|&n| n > 0),
        "drift rows without cells: {dn:?}"
    );
    for k in 0..d.n_rows() {
        let v: Vec<f64> = (0..cell.len())
            .filter(|&r| session[r] == ds[k] && reference.get(&cell[r]) == Some(&true))
            .filter(|&r| corr[r].is_finite() && half_ref[&cell[r]].is_finite())
            .map(|r| corr[r])
            .collect();
        assert_eq!(dn[k] as usize, v.len(), "{}", ds[k]);
        if !v.is_empty() {
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            assert!(
                (dc[k] - mean).abs() < 1e-9,
                "{}: {} vs {mean}",
                ds[k],
                dc[k]
            );
            if ds[k] == "d5" {
                assert!((mean - 1.0).abs() < 1e-9);
            }
        }
    }
}
