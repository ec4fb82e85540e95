//! The study report: `study_report.html` beside the study tables, with the paper's
//! main panels (normalised map values over days per cohort, mean ± s.e.m. across
//! mice, with the FDR-corrected significance of each post-ablation day).

use super::charts::{line_chart, LineChart, Series, PALETTE};
use super::{distance_chart, esc, mean_sem, STYLE};
use crate::error::{Error, Result};
use crate::io::table::read_table;
use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Where the study report goes.
pub fn study_report_path(study_out: &Path) -> PathBuf {
    study_out.join("study_report.html")
}

/// Significance marks as the paper prints them: * p < 0.05, ** p < 0.001.
fn stars(p: f64) -> &'static str {
    if p < 0.001 {
        "**"
    } else if p < 0.05 {
        "*"
    } else {
        ""
    }
}

/// Write `study_report.html` into the study's output folder: per map measure the
/// cohorts' mean ± s.e.m. across mice over days, and the FDR-corrected tests
/// against baseline and against control with significance marks.
pub fn write_study_report(study_out: &Path) -> Result<PathBuf> {
    let mp = study_out.join("study_map.parquet");
    let sp = study_out.join("study_stats.parquet");
    for p in [&mp, &sp] {
        if !p.exists() {
            return Err(Error::input(
                p,
                "missing: run `cortexmap study STUDY.toml --out DIR` first",
            ));
        }
    }
    let (m, s) = (read_table(&mp)?, read_table(&sp)?);
    let (cohort, day) = (m.strs(&mp, "cohort")?, m.i32s(&mp, "day")?);
    let mut cohorts: Vec<&str> = Vec::new();
    for c in cohort {
        if !cohorts.contains(&c.as_str()) {
            cohorts.push(c);
        }
    }
    let days: BTreeSet<i32> = day.iter().copied().collect();
    let (sc, sm, sd, st, sq) = (
        s.strs(&sp, "cohort")?,
        s.strs(&sp, "measure")?,
        s.opt_i32s(&sp, "day")?,
        s.strs(&sp, "test")?,
        s.f64s(&sp, "p_fdr")?,
    );
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>cortexmap \
         study report</title><style>{STYLE}</style></head><body><h1>cortexmap study report: \
         {}</h1><p>Baseline-normalised map values, mean ± s.e.m. across mice (FOVs averaged \
         within each mouse). Marks: * p<sub>FDR</sub> &lt; 0.05, ** p<sub>FDR</sub> &lt; 0.001; \
         t: post-ablation day against baseline (two-sided paired t-test across mice, \
         Benjamini–Hochberg over the post-ablation days); perm: cohort against control \
         (permutation test of mouse labels).</p>",
        esc(&study_out.display().to_string())
    );
    for measure in crate::study::MAP_MEASURES {
        let v = m.f64s(&mp, measure)?;
        let series: Vec<Series> = cohorts
            .iter()
            .enumerate()
            .map(|(j, c)| {
                let (points, err): (Vec<(f64, f64)>, Vec<f64>) = days
                    .iter()
                    .map(|&d| {
                        let vals: Vec<f64> = (0..v.len())
                            .filter(|&r| cohort[r] == *c && day[r] == d)
                            .map(|r| v[r])
                            .collect();
                        let (mu, se) = mean_sem(&vals);
                        ((d as f64, mu), se)
                    })
                    .unzip();
                Series {
                    name: (*c).to_string(),
                    color: PALETTE[j % PALETTE.len()],
                    points,
                    err: Some(err),
                    markers: true,
                }
            })
            .collect();
        let title = format!("{} (normalised)", measure.replace('_', " "));
        let svg = line_chart(
            &LineChart {
                title: &title,
                x_label: "day",
                y_label: "normalised value",
                size: (640, 360),
                marker: None,
                reference: Some(1.0),
            },
            &series,
        )?;
        let _ = write!(
            h,
            "<h2 id=\"{measure}\">{}</h2><div class=\"grid\"><figure>{svg}</figure></div>\
             <table><tr><th>cohort</th><th>test</th>",
            esc(&title)
        );
        for d in &days {
            let _ = write!(h, "<th>day {d}</th>");
        }
        h.push_str("</tr>");
        for c in &cohorts {
            for (test, label) in [("t_vs_baseline", "t"), ("permutation_vs_control", "perm")] {
                let cells: Vec<String> = days
                    .iter()
                    .map(|&d| {
                        (0..sc.len())
                            .find(|&r| {
                                sc[r] == *c
                                    && sm[r] == *measure
                                    && sd[r] == Some(d)
                                    && st[r] == test
                            })
                            .map_or(String::new(), |r| format!("{:.3}{}", sq[r], stars(sq[r])))
                    })
                    .collect();
                if cells.iter().all(|x| x.is_empty()) {
                    continue;
                }
                let _ = write!(h, "<tr><td>{}</td><td>{label}</td>", esc(c));
                for x in cells {
                    let _ = write!(h, "<td>{x}</td>");
                }
                h.push_str("</tr>");
            }
        }
        h.push_str("</table>");
    }
    spatial_section(&mut h, study_out, &cohorts, &stats_days(sd, st))?;
    h.push_str("</body></html>\n");
    let path = study_report_path(study_out);
    crate::io::atomic::write_bytes(&path, h.as_bytes())?;
    Ok(path)
}

/// The post-ablation days: those with a test against baseline.
fn stats_days(day: &[Option<i32>], test: &[String]) -> Vec<i32> {
    let set: BTreeSet<i32> = (0..day.len())
        .filter(|&r| test[r] == "t_vs_baseline")
        .filter_map(|r| day[r])
        .collect();
    set.into_iter().collect()
}

/// SCIENCE.md §5.4 (ED Fig. 7c): per group, each cohort's normalised best
/// response by distance to the ablated cells on the first post-ablation day.
/// Skipped quietly for a study folder from a release without the table.
fn spatial_section(h: &mut String, out: &Path, cohorts: &[&str], post: &[i32]) -> Result<()> {
    let p = out.join("study_spatial.parquet");
    let Some(&d) = post.first().filter(|_| p.exists()) else {
        return Ok(());
    };
    let t = read_table(&p)?;
    let (cohort, day, group) = (
        t.strs(&p, "cohort")?,
        t.i32s(&p, "day")?,
        t.strs(&p, "group")?,
    );
    let _ = write!(
        h,
        "<h2 id=\"spatial\">Spatial extent of the effect, day {d}</h2><p>Every pair of a \
         spared cell and an ablated cell of the same mouse (controls: its most responsive \
         cells), in 3-D across the mouse's FOVs, contributes the spared cell's best \
         response divided by its group's baseline mean in that mouse; mean ± s.e.m. \
         across cells of the cohort (study_spatial.parquet).</p><div class=\"grid\">"
    );
    for g in crate::analysis::spatial::GROUPS {
        let lines: Vec<(String, Vec<usize>)> = cohorts
            .iter()
            .map(|c| {
                let rows =
                    (0..day.len()).filter(|&r| cohort[r] == *c && day[r] == d && group[r] == g);
                (c.to_string(), rows.collect())
            })
            .collect();
        let svg = distance_chart(&t, &p, &format!("group {g}, day {d}"), &lines)?;
        let _ = write!(h, "<figure>{svg}</figure>");
    }
    h.push_str("</div>");
    Ok(())
}
