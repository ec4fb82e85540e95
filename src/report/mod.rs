//! `cortexmap report`: one self-contained HTML file with the run's figures.
//!
//! In: a run folder (its Parquet tables, `images/<session>_mean_corrected.tif` and
//! `run.json`). Out: `report.html` in it, written atomically, and the headline
//! numbers ([`Story`]) that `demo` prints. Every figure is inline SVG (plotters'
//! SVG backend; images as embedded PNG), so the file needs nothing else to open.
//! Sections whose tables the run lacks (a run stopped early) say so instead.

mod charts;
mod fov;
mod png;
mod study;

pub use study::{study_report_path, write_study_report};

use crate::error::{Error, Result};
use crate::io::ledger::Ledger;
use crate::io::table::{read_table, Table};
use charts::{heat_map, line_chart, LineChart, Series, PALETTE};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Where the report of the run in `run` goes.
pub fn report_path(run: &Path) -> PathBuf {
    run.join("report.html")
}

/// The experiment's story in a few numbers.
#[derive(Debug, Clone, Default)]
pub struct Story {
    pub sessions: usize,
    /// Tracked cells with a ROI in at least one session, and in every session.
    pub cells_tracked: usize,
    pub cells_in_every_session: usize,
    /// Targeted cells, and those found ablated (`lost`, `filled`, `undetected`).
    pub targeted: usize,
    pub ablated_found: usize,
    /// (day, baseline-normalised map diagonal) per session.
    pub diagonal_norm: Vec<(i32, f64)>,
    pub ablation_after_day: Option<i32>,
}

impl Story {
    /// The first session after the ablation, with its normalised diagonal.
    pub fn dip(&self) -> Option<(i32, f64)> {
        let after = self.ablation_after_day?;
        self.diagonal_norm
            .iter()
            .copied()
            .find(|(d, v)| *d > after && v.is_finite())
    }

    /// The first later session whose normalised diagonal is back within 10% of
    /// the baseline, when the dip left it.
    pub fn recovery(&self) -> Option<(i32, f64)> {
        let (dip_day, dip) = self.dip()?;
        if dip >= RECOVERED {
            return None;
        }
        self.diagonal_norm
            .iter()
            .copied()
            .find(|(d, v)| *d > dip_day && *v >= RECOVERED)
    }

    /// One paragraph for the terminal and the report.
    pub fn text(&self) -> String {
        let mut s = format!(
            "{} sessions; {} cells tracked, {} of them in every session",
            self.sessions, self.cells_tracked, self.cells_in_every_session
        );
        if self.targeted > 0 {
            let _ = write!(
                s,
                "; ablation: {} of {} targeted cells found ablated",
                self.ablated_found, self.targeted
            );
        }
        if self.diagonal_norm.is_empty() {
            s.push_str("; no maps (too few spared cells, or no stimuli)");
            return s;
        }
        match (self.dip(), self.recovery()) {
            (Some((d, v)), Some((rd, rv))) => {
                let _ = write!(
                    s,
                    "; map diagonal (baseline 1): {v:.2} on day {d}, the first after the \
                     ablation; back to {rv:.2} by day {rd}"
                );
            }
            (Some((d, v)), None) if v < RECOVERED => {
                let _ = write!(
                    s,
                    "; map diagonal (baseline 1): {v:.2} on day {d}, the first after the \
                     ablation; not back within 10% of baseline by the last session"
                );
            }
            (Some((d, v)), None) => {
                let _ = write!(
                    s,
                    "; map diagonal (baseline 1): {v:.2} on day {d}, the first after the \
                     ablation: no dip"
                );
            }
            _ => {
                let vals: Vec<String> = self
                    .diagonal_norm
                    .iter()
                    .map(|(d, v)| format!("day {d} {v:.2}"))
                    .collect();
                let _ = write!(s, "; map diagonal (baseline 1): {}", vals.join(", "));
            }
        }
        s
    }
}

/// A normalised map value at or above this counts as recovered.
const RECOVERED: f64 = 0.9;

/// The run's tables, each loaded when present.
struct RunTables {
    root: PathBuf,
    tables: BTreeMap<&'static str, (PathBuf, Table)>,
    ledger: Ledger,
}

const TABLES: [&str; 16] = [
    "sessions",
    "transferred_rois",
    "motion",
    "motion_qc",
    "rois",
    "cells",
    "alignment",
    "neurons",
    "rsm",
    "map_summary",
    "map_similarity",
    "correlation_summary",
    "detection",
    "spatial",
    "stability",
    "drift",
];

impl RunTables {
    fn load(root: &Path) -> Result<RunTables> {
        let sp = root.join("sessions.parquet");
        if !sp.exists() {
            return Err(Error::input(
                root,
                "not a run folder: sessions.parquet is missing (make one with `cortexmap run`)",
            ));
        }
        let mut tables = BTreeMap::new();
        for name in TABLES {
            let p = root.join(format!("{name}.parquet"));
            if p.exists() {
                let t = read_table(&p)?;
                tables.insert(name, (p, t));
            }
        }
        Ok(RunTables {
            root: root.to_path_buf(),
            tables,
            ledger: Ledger::load(root),
        })
    }

    fn get(&self, name: &str) -> Option<(&Path, &Table)> {
        self.tables.get(name).map(|(p, t)| (p.as_path(), t))
    }
}

/// A session's id, day, size and frame rate.
struct SessionRow {
    id: String,
    day: i32,
    frames: u32,
    width: usize,
    height: usize,
    fs: f64,
}

fn sessions(t: &RunTables) -> Result<Vec<SessionRow>> {
    let (p, s) = t.get("sessions").expect("checked on load");
    let ids = s.strs(p, "session")?;
    (0..ids.len())
        .map(|i| {
            Ok(SessionRow {
                id: ids[i].clone(),
                day: s.i32s(p, "day")?[i],
                frames: s.u32s(p, "n_frames")?[i],
                width: s.u32s(p, "width")?[i] as usize,
                height: s.u32s(p, "height")?[i] as usize,
                fs: s.f64s(p, "fs")?[i],
            })
        })
        .collect()
}

/// The headline numbers of the run in `run`.
pub fn story(run: &Path) -> Result<Story> {
    let t = RunTables::load(run)?;
    story_of(&t, &sessions(&t)?)
}

fn story_of(t: &RunTables, sessions: &[SessionRow]) -> Result<Story> {
    let mut story = Story {
        sessions: sessions.len(),
        ablation_after_day: t.ledger.ablation_after_day,
        ..Story::default()
    };
    if let Some((p, c)) = t.get("cells") {
        let cell = c.u32s(p, "cell")?;
        let roi = c.opt_u32s(p, "roi")?;
        let mut present: BTreeMap<u32, usize> = BTreeMap::new();
        let mut targeted = BTreeSet::new();
        let mut ablated = BTreeSet::new();
        let (tg, ab) = (c.bools(p, "targeted")?, c.bools(p, "ablated")?);
        for i in 0..cell.len() {
            if roi[i].is_some() {
                *present.entry(cell[i]).or_default() += 1;
            }
            if tg[i] {
                targeted.insert(cell[i]);
            }
            if ab[i] {
                ablated.insert(cell[i]);
            }
        }
        story.cells_tracked = present.len();
        story.cells_in_every_session = present.values().filter(|&&n| n == sessions.len()).count();
        story.targeted = targeted.len();
        story.ablated_found = ablated.len();
    }
    if let Some((p, m)) = t.get("map_summary") {
        let days = m.i32s(p, "day")?;
        let v = m.f64s(p, "diagonal_norm")?;
        story.diagonal_norm = days.iter().copied().zip(v.iter().copied()).collect();
    }
    Ok(story)
}

/// Write `report.html` into the run folder; returns its path.
pub fn write_report(run: &Path) -> Result<PathBuf> {
    let t = RunTables::load(run)?;
    let html = render(&t)?;
    let path = report_path(run);
    crate::io::atomic::write_bytes(&path, html.as_bytes())?;
    Ok(path)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px;max-width:1500px;color:#222}\
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}\
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}\
th{background:#f4f4f4}.grid{display:flex;flex-wrap:wrap;gap:12px}.grid figure{margin:0}\
figcaption{font-size:12px;color:#555;text-align:center}.story{background:#f6f9fc;border:1px solid #cde;padding:10px 14px}\
.missing{color:#a33}";

fn render(t: &RunTables) -> Result<String> {
    let sessions = sessions(t)?;
    let story = story_of(t, &sessions)?;
    let mut h = String::new();
    let title = format!("cortexmap report: {}", t.root.display());
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}</style></head><body><h1>{}</h1>\
         <p>cortexmap {}; manifest {}</p><p class=\"story\" id=\"story\">{}</p>",
        esc(&title),
        esc(&title),
        env!("CARGO_PKG_VERSION"),
        esc(&t.ledger.manifest.display().to_string()),
        esc(&story.text()),
    );
    sessions_section(&mut h, t, &sessions)?;
    fov_section(&mut h, t, &sessions)?;
    motion_section(&mut h, t, &sessions)?;
    tracking_section(&mut h, t, &sessions)?;
    let days: Vec<i32> = sessions.iter().map(|s| s.day).collect();
    let marker = ablation_x(&days, story.ablation_after_day).map(|x| (x, "ablation"));
    responses_section(&mut h, t, &sessions, marker)?;
    maps_section(&mut h, t, &sessions, marker)?;
    spatial_section(&mut h, t, story.ablation_after_day)?;
    h.push_str("</body></html>\n");
    Ok(h)
}

/// Open a section: its heading, then the named table, or a note that the run lacks it.
fn section<'t>(
    h: &mut String,
    t: &'t RunTables,
    id: &str,
    title: &str,
    table: &str,
) -> Option<(&'t Path, &'t Table)> {
    let _ = write!(h, "<h2 id=\"{id}\">{title}</h2>");
    let found = t.get(table);
    if found.is_none() {
        missing(h, &format!("{table}.parquet"));
    }
    found
}

fn missing(h: &mut String, what: &str) {
    let _ = write!(
        h,
        "<p class=\"missing\">{} is not in this run (run every stage to get it).</p>",
        esc(what)
    );
}

/// The x position of the ablation marker: halfway between the last day before it
/// and the first after it.
fn ablation_x(days: &[i32], after: Option<i32>) -> Option<f64> {
    let after = after?;
    let before = days.iter().copied().filter(|&d| d <= after).max()?;
    let next = days.iter().copied().filter(|&d| d > after).min()?;
    Some(0.5 * (before + next) as f64)
}

fn sessions_section(h: &mut String, t: &RunTables, sessions: &[SessionRow]) -> Result<()> {
    h.push_str(
        "<h2 id=\"sessions\">Sessions</h2><table><tr><th>session</th><th>day</th>\
        <th>frames</th><th>size</th><th>fs (Hz)</th><th>ROIs</th><th>cells</th>\
        <th>from anatomy</th><th>dark somata sought</th>\
        <th>crispness raw → corrected</th><th>max |shift| (px)</th></tr>",
    );
    let per_session = |name: &str, col: &str| -> Result<BTreeMap<String, f64>> {
        let mut m = BTreeMap::new();
        if let Some((p, tab)) = t.get(name) {
            let ids = tab.strs(p, "session")?;
            let vals: Vec<f64> = match tab.column(col) {
                Some(crate::io::table::Column::U32(v)) => v.iter().map(|&x| x as f64).collect(),
                Some(crate::io::table::Column::F64(v)) => v.clone(),
                Some(crate::io::table::Column::F32(v)) => v.iter().map(|&x| x as f64).collect(),
                Some(crate::io::table::Column::Bool(v)) => {
                    v.iter().map(|&x| f64::from(u8::from(x))).collect()
                }
                _ => return Ok(m),
            };
            for (i, v) in ids.iter().zip(vals) {
                m.insert(i.clone(), v);
            }
        }
        Ok(m)
    };
    let (rois, cells, anatomy, dark_share) = (
        per_session("detection", "n_rois")?,
        per_session("detection", "n_cells")?,
        per_session("detection", "n_anatomy")?,
        per_session("detection", "dark_centre_fraction")?,
    );
    let dark_sought = per_session("detection", "dark_search")?;
    let (raw, cor, shift) = (
        per_session("motion_qc", "crispness_raw")?,
        per_session("motion_qc", "crispness_corrected")?,
        per_session("motion_qc", "max_abs_shift")?,
    );
    let f = |m: &BTreeMap<String, f64>, id: &str, digits: usize| {
        m.get(id)
            .map_or("–".to_string(), |v| format!("{v:.digits$}"))
    };
    for s in sessions {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}×{}</td><td>{:.2}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{} → {}</td><td>{}</td></tr>",
            esc(&s.id),
            s.day,
            s.frames,
            s.width,
            s.height,
            s.fs,
            f(&rois, &s.id, 0),
            f(&cells, &s.id, 0),
            f(&anatomy, &s.id, 0),
            dark_cell(
                dark_sought.get(&s.id).map(|&v| v > 0.0),
                dark_share.get(&s.id).copied()
            ),
            f(&raw, &s.id, 3),
            f(&cor, &s.id, 3),
            f(&shift, &s.id, 2)
        );
    }
    h.push_str("</table>");
    Ok(())
}

/// "yes" or "no" with the share of dark-centred active cells that decided it.
fn dark_cell(sought: Option<bool>, share: Option<f64>) -> String {
    let share = share.filter(|v| v.is_finite()).map_or(String::new(), |v| {
        format!(" ({:.0} % dark-centred)", 100.0 * v)
    });
    match sought {
        Some(true) => format!("yes{share}"),
        Some(false) => format!("no{share}"),
        None => "–".to_string(),
    }
}

fn fov_section(h: &mut String, t: &RunTables, sessions: &[SessionRow]) -> Result<()> {
    h.push_str(
        "<h2 id=\"fov\">Fields of view</h2><p>Motion-corrected mean image per session; \
         outlines: <span style=\"color:#20a040\">tracked cells</span> (with their cell \
         number), <span style=\"color:#d02020\">ablated cells</span>, \
         <span style=\"color:#b09000\">untracked cells</span>, \
         <span style=\"color:#808080\">ROIs that are not cells</span>; dashed \
         <span style=\"color:#2080e0\">footprints transferred</span> into a session where \
         the tracked cell had no ROI.</p><div class=\"grid\">",
    );
    let Some((rp, rois)) = t.get("rois") else {
        missing(h, "rois.parquet");
        h.push_str("</div>");
        return Ok(());
    };
    // (session, roi) → (cell, ablated)
    let mut tracked: BTreeMap<(String, u32), (u32, bool)> = BTreeMap::new();
    if let Some((cp, c)) = t.get("cells") {
        let (ses, cell, roi, abl) = (
            c.strs(cp, "session")?,
            c.u32s(cp, "cell")?,
            c.opt_u32s(cp, "roi")?,
            c.bools(cp, "ablated")?,
        );
        for i in 0..cell.len() {
            if let Some(r) = roi[i] {
                tracked.insert((ses[i].clone(), r), (cell[i], abl[i]));
            }
        }
    }
    let (rs, rid) = (rois.strs(rp, "session")?, rois.u32s(rp, "roi")?);
    let (cx, cy) = (rois.f32s(rp, "centroid_x")?, rois.f32s(rp, "centroid_y")?);
    let (px, wt, isc) = (
        rois.lists_u32(rp, "pixels")?,
        rois.lists_f32(rp, "weights")?,
        rois.bools(rp, "is_cell")?,
    );
    for s in sessions {
        let path = t
            .root
            .join("images")
            .join(format!("{}_mean_corrected.tif", s.id));
        if !path.exists() {
            continue;
        }
        let (w, hgt, img) = crate::io::tiff::read_image_f32(&path)?;
        let outlines: Vec<fov::Outline> = (0..rs.len())
            .filter(|&i| rs[i] == s.id)
            .map(|i| {
                let tr = tracked.get(&(s.id.clone(), rid[i]));
                fov::Outline {
                    pixels: px[i].clone(),
                    weights: wt[i].clone(),
                    centroid: (cx[i], cy[i]),
                    cell: tr.map(|x| x.0),
                    ablated: tr.is_some_and(|x| x.1),
                    is_cell: isc[i],
                    transferred: false,
                }
            })
            .chain(transferred_outlines(t, &s.id)?)
            .collect();
        let moved = outlines.iter().filter(|o| o.transferred).count();
        let _ = write!(
            h,
            "<figure>{}<figcaption>{} (day {}): {} ROIs{}</figcaption></figure>",
            fov::fov_svg(&img, w, hgt, &outlines, 460),
            esc(&s.id),
            s.day,
            outlines.len() - moved,
            if moved > 0 {
                format!(", {moved} transferred footprints")
            } else {
                String::new()
            }
        );
    }
    h.push_str("</div>");
    Ok(())
}

/// The footprints transferred into `session` (dashed blue, with the cell number).
fn transferred_outlines(t: &RunTables, session: &str) -> Result<Vec<fov::Outline>> {
    let Some((p, tr)) = t.get("transferred_rois") else {
        return Ok(Vec::new());
    };
    let (ses, cell) = (tr.strs(p, "session")?, tr.u32s(p, "cell")?);
    let (cx, cy) = (tr.f32s(p, "centroid_x")?, tr.f32s(p, "centroid_y")?);
    let (px, wt) = (tr.lists_u32(p, "pixels")?, tr.lists_f32(p, "weights")?);
    Ok((0..ses.len())
        .filter(|&i| ses[i] == session)
        .map(|i| fov::Outline {
            pixels: px[i].clone(),
            weights: wt[i].clone(),
            centroid: (cx[i], cy[i]),
            cell: Some(cell[i]),
            ablated: false,
            is_cell: true,
            transferred: true,
        })
        .collect())
}

/// At most this many points per motion trace: the figure stays small.
const MAX_TRACE_POINTS: usize = 1200;

fn motion_section(h: &mut String, t: &RunTables, sessions: &[SessionRow]) -> Result<()> {
    let Some((p, m)) = section(h, t, "motion", "Motion", "motion") else {
        return Ok(());
    };
    h.push_str("<div class=\"grid\">");
    let (ses, frame) = (m.strs(p, "session")?, m.u32s(p, "frame")?);
    let (sx, sy) = (m.f32s(p, "shift_x")?, m.f32s(p, "shift_y")?);
    for s in sessions {
        let rows: Vec<usize> = (0..ses.len()).filter(|&i| ses[i] == s.id).collect();
        let step = rows.len().div_ceil(MAX_TRACE_POINTS).max(1);
        let pick = |v: &[f32]| -> Vec<(f64, f64)> {
            rows.iter()
                .step_by(step)
                .map(|&i| (frame[i] as f64 / s.fs, v[i] as f64))
                .collect()
        };
        let series = [
            Series {
                name: "x".into(),
                color: PALETTE[0],
                points: pick(sx),
                err: None,
                markers: false,
            },
            Series {
                name: "y".into(),
                color: PALETTE[1],
                points: pick(sy),
                err: None,
                markers: false,
            },
        ];
        let title = format!("{} (day {}): rigid shift", s.id, s.day);
        let svg = line_chart(
            &LineChart {
                title: &title,
                x_label: "time (s)",
                y_label: "shift (px)",
                size: (460, 220),
                marker: None,
                reference: None,
            },
            &series,
        )?;
        let _ = write!(h, "<figure>{svg}</figure>");
    }
    h.push_str("</div>");
    Ok(())
}

fn tracking_section(h: &mut String, t: &RunTables, sessions: &[SessionRow]) -> Result<()> {
    let Some((p, a)) = section(h, t, "tracking", "Tracking across sessions", "alignment") else {
        return Ok(());
    };
    h.push_str(
        "<table><tr><th>session</th><th>day</th><th>dx (px)</th><th>dy (px)</th>\
        <th>rotation (°)</th><th>scale</th><th>ROIs</th><th>pairs</th><th>residual (px)</th>\
        <th>image r</th></tr>",
    );
    let (ses, day) = (a.strs(p, "session")?, a.i32s(p, "day")?);
    let (dx, dy, rot, scale) = (
        a.f64s(p, "dx")?,
        a.f64s(p, "dy")?,
        a.f64s(p, "rotation_deg")?,
        a.f64s(p, "scale")?,
    );
    let (nr, np, res, ic) = (
        a.u32s(p, "n_rois")?,
        a.u32s(p, "n_pairs")?,
        a.f64s(p, "residual_px")?,
        a.f64s(p, "image_corr")?,
    );
    for i in 0..ses.len() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.4}</td>\
             <td>{}</td><td>{}</td><td>{:.2}</td><td>{:.3}</td></tr>",
            esc(&ses[i]),
            day[i],
            dx[i],
            dy[i],
            rot[i],
            scale[i],
            nr[i],
            np[i],
            res[i],
            ic[i]
        );
    }
    h.push_str("</table>");
    let Some((cp, c)) = t.get("cells") else {
        return Ok(());
    };
    let (cell, roi) = (c.u32s(cp, "cell")?, c.opt_u32s(cp, "roi")?);
    let outcome = c.strs(cp, "ablation_outcome")?;
    let mut present: BTreeMap<u32, usize> = BTreeMap::new();
    let mut outcomes: BTreeMap<u32, String> = BTreeMap::new();
    for i in 0..cell.len() {
        let n = present.entry(cell[i]).or_default();
        if roi[i].is_some() {
            *n += 1;
        }
        if !outcome[i].is_empty() {
            outcomes.insert(cell[i], outcome[i].clone());
        }
    }
    let mut by_count = vec![0usize; sessions.len() + 1];
    for &n in present.values() {
        by_count[n.min(sessions.len())] += 1;
    }
    let svg = line_chart(
        &LineChart {
            title: "tracked cells by the number of sessions they were found in",
            x_label: "sessions with a ROI",
            y_label: "cells",
            size: (520, 260),
            marker: None,
            reference: None,
        },
        &[Series {
            name: "cells".into(),
            color: PALETTE[2],
            points: (1..by_count.len())
                .map(|k| (k as f64, by_count[k] as f64))
                .collect(),
            err: None,
            markers: true,
        }],
    )?;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for o in outcomes.values() {
        *counts.entry(o.as_str()).or_default() += 1;
    }
    let listed: Vec<String> = counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let _ = write!(
        h,
        "<div class=\"grid\"><figure>{svg}</figure></div><p>{} tracked cells. Ablation \
         targets by outcome: {}.</p>",
        present.len(),
        if listed.is_empty() {
            "none".to_string()
        } else {
            esc(&listed.join(", "))
        }
    );
    Ok(())
}

/// A chart of distance profiles from a spatial table (`spatial.parquet`,
/// `study_spatial.parquet`): one series per `(name, rows)`, over those of its
/// rows that have pairs, at the bins' centres, mean ± s.e.m.
fn distance_chart(
    t: &Table,
    path: &Path,
    title: &str,
    lines: &[(String, Vec<usize>)],
) -> Result<String> {
    let (lo, hi, n, mean, sem) = (
        t.f64s(path, "distance_min_um")?,
        t.f64s(path, "distance_max_um")?,
        t.u32s(path, "n_pairs")?,
        t.f64s(path, "norm_best_response")?,
        t.f64s(path, "sem")?,
    );
    let series: Vec<Series> = lines
        .iter()
        .enumerate()
        .map(|(k, (name, rows))| {
            let (points, err) = rows
                .iter()
                .copied()
                .filter(|&r| n[r] > 0)
                .map(|r| ((0.5 * (lo[r] + hi[r]), mean[r]), sem[r]))
                .unzip();
            Series {
                name: name.clone(),
                color: PALETTE[k % PALETTE.len()],
                points,
                err: Some(err),
                markers: true,
            }
        })
        .collect();
    line_chart(
        &LineChart {
            title,
            x_label: "distance to an ablated cell (µm)",
            y_label: "normalised best response",
            size: (600, 340),
            marker: None,
            reference: Some(1.0),
        },
        &series,
    )
}

/// The first day after the ablation among `days` (sorted); without an ablation,
/// the last day.
fn first_day_after(days: &[i32], after: Option<i32>) -> Option<i32> {
    match after {
        Some(a) => days.iter().copied().find(|&d| d > a),
        None => days.last().copied(),
    }
}

/// SCIENCE.md §5.4: groups A and B by distance to the ablated cells, on the first
/// session after the ablation.
fn spatial_section(h: &mut String, t: &RunTables, after: Option<i32>) -> Result<()> {
    let Some((p, sp)) = section(
        h,
        t,
        "spatial",
        "Spatial extent of the effect (SCIENCE.md §5.4)",
        "spatial",
    ) else {
        return Ok(());
    };
    let (day, group) = (sp.i32s(p, "day")?, sp.strs(p, "group")?);
    let days: Vec<i32> = day
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let Some(d) = first_day_after(&days, after) else {
        h.push_str(if days.is_empty() {
            "<p>No distances: the manifest gives no um_per_pixel, or there are no ablated \
             cells (the run's log says which).</p>"
        } else {
            "<p>No session after the ablation.</p>"
        });
        return Ok(());
    };
    let lines: Vec<(String, Vec<usize>)> = crate::analysis::spatial::GROUPS
        .iter()
        .map(|g| {
            let rows = (0..day.len()).filter(|&r| day[r] == d && group[r] == *g);
            (format!("group {g}"), rows.collect())
        })
        .collect();
    let svg = distance_chart(
        sp,
        p,
        &format!("day {d}: normalised best response by distance to the ablated cells"),
        &lines,
    )?;
    let _ = write!(
        h,
        "<p>Every pair of a spared cell and an ablated cell (in a control, one of the most \
         responsive cells) contributes the spared cell's best response, divided by its \
         group's mean before the ablation; mean ± s.e.m. across cells per distance bin \
         (spatial.parquet).</p><div class=\"grid\"><figure>{svg}</figure></div>"
    );
    Ok(())
}

/// Mean and standard error of the finite values.
fn mean_sem(v: &[f64]) -> (f64, f64) {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = f.len() as f64;
    let m = f.iter().sum::<f64>() / n;
    if f.len() < 2 {
        return (m, f64::NAN);
    }
    let var = f.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

fn responses_section(
    h: &mut String,
    t: &RunTables,
    sessions: &[SessionRow],
    marker: Option<(f64, &str)>,
) -> Result<()> {
    let Some((p, n)) = section(h, t, "responses", "Responses", "neurons") else {
        return Ok(());
    };
    let (ses, resp, best) = (
        n.strs(p, "session")?,
        n.bools(p, "responsive")?,
        n.f64s(p, "best_response")?,
    );
    let (group, spared) = (n.strs(p, "group")?, n.bools(p, "spared")?);
    let mut fraction = Vec::new();
    let mut groups: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    let mut errs: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for s in sessions {
        let rows: Vec<usize> = (0..ses.len()).filter(|&i| ses[i] == s.id).collect();
        if rows.is_empty() {
            continue;
        }
        let r = rows.iter().filter(|&&i| resp[i]).count() as f64 / rows.len() as f64;
        fraction.push((s.day as f64, r));
        for (k, g) in ["A", "B"].iter().enumerate() {
            let v: Vec<f64> = rows
                .iter()
                .filter(|&&i| spared[i] && group[i] == *g)
                .map(|&i| best[i])
                .collect();
            let (m, e) = mean_sem(&v);
            groups[k].push((s.day as f64, m));
            errs[k].push(e);
        }
    }
    let frac_svg = line_chart(
        &LineChart {
            title: "fraction of analysed cells responsive",
            x_label: "day",
            y_label: "fraction",
            size: (520, 300),
            marker,
            reference: None,
        },
        &[Series {
            name: "responsive".into(),
            color: PALETTE[0],
            points: fraction,
            err: None,
            markers: true,
        }],
    )?;
    let [ga, gb] = groups;
    let [ea, eb] = errs;
    let group_svg = line_chart(
        &LineChart {
            title: "best response of spared cells by group (mean ± s.e.m.)",
            x_label: "day",
            y_label: "best response (ΔF/F)",
            size: (520, 300),
            marker,
            reference: None,
        },
        &[
            Series {
                name: "group A (responsive before)".into(),
                color: PALETTE[0],
                points: ga,
                err: Some(ea),
                markers: true,
            },
            Series {
                name: "group B (recruited)".into(),
                color: PALETTE[1],
                points: gb,
                err: Some(eb),
                markers: true,
            },
        ],
    )?;
    let _ = write!(
        h,
        "<div class=\"grid\"><figure>{frac_svg}</figure><figure>{group_svg}</figure>"
    );
    turnover_charts(h, t, marker)?;
    h.push_str("</div>");
    Ok(())
}

/// SCIENCE.md §3.7–3.8: response stability between consecutive sessions (plotted
/// at the later day) and the tuning correlation with the reference session.
fn turnover_charts(h: &mut String, t: &RunTables, marker: Option<(f64, &str)>) -> Result<()> {
    if let Some((p, st)) = t.get("stability") {
        let (day, stab, union) = (
            st.i32s(p, "day_b")?,
            st.f64s(p, "stability")?,
            st.f64s(p, "stability_union")?,
        );
        let points = |v: &[f64]| -> Vec<(f64, f64)> {
            day.iter().zip(v).map(|(&d, &x)| (d as f64, x)).collect()
        };
        let svg = line_chart(
            &LineChart {
                title: "response stability from the session before (spared cells)",
                x_label: "day",
                y_label: "fraction",
                size: (520, 300),
                marker,
                reference: None,
            },
            &[
                Series {
                    name: "|R₁ ∩ R₂| / |R₁|".into(),
                    color: PALETTE[0],
                    points: points(stab),
                    err: None,
                    markers: true,
                },
                Series {
                    name: "|R₁ ∩ R₂| / |R₁ ∪ R₂|".into(),
                    color: PALETTE[1],
                    points: points(union),
                    err: None,
                    markers: true,
                },
            ],
        )?;
        let _ = write!(h, "<figure>{svg}</figure>");
    }
    if let Some((p, dr)) = t.get("drift") {
        let (day, corr) = (dr.i32s(p, "day")?, dr.f64s(p, "tuning_corr")?);
        let svg = line_chart(
            &LineChart {
                title: "tuning correlation with the reference session (its responsive cells)",
                x_label: "day",
                y_label: "Pearson r",
                size: (520, 300),
                marker,
                reference: None,
            },
            &[Series {
                name: "mean r".into(),
                color: PALETTE[2],
                points: day.iter().zip(corr).map(|(&d, &x)| (d as f64, x)).collect(),
                err: None,
                markers: true,
            }],
        )?;
        let _ = write!(h, "<figure>{svg}</figure>");
    }
    Ok(())
}

fn maps_section(
    h: &mut String,
    t: &RunTables,
    sessions: &[SessionRow],
    marker: Option<(f64, &str)>,
) -> Result<()> {
    let Some((p, r)) = section(h, t, "maps", "Representational maps", "rsm") else {
        return Ok(());
    };
    let (ses, a, b, sim) = (
        r.strs(p, "session")?,
        r.strs(p, "stimulus_a")?,
        r.strs(p, "stimulus_b")?,
        r.f64s(p, "similarity")?,
    );
    // Stimuli in the order they first appear.
    let mut labels: Vec<&str> = Vec::new();
    for x in a {
        if !labels.contains(&x.as_str()) {
            labels.push(x);
        }
    }
    let n = labels.len();
    let index: BTreeMap<&str, usize> = labels.iter().enumerate().map(|(i, l)| (*l, i)).collect();
    let limit = sim
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-6);
    let _ = write!(
        h,
        "<p>Single-trial maps: mean Pearson correlation of population vectors of spared \
         cells between trials of two stimuli (diagonal: reliability). Colour scale ±{limit:.3}; \
         stimuli in the order {}.</p><div class=\"grid\">",
        esc(&labels.join(", "))
    );
    for s in sessions {
        let mut m = vec![f64::NAN; n * n];
        let mut any = false;
        for i in (0..ses.len()).filter(|&i| ses[i] == s.id) {
            if let (Some(&x), Some(&y)) = (index.get(a[i].as_str()), index.get(b[i].as_str())) {
                m[x * n + y] = sim[i];
                any = true;
            }
        }
        if any {
            let title = format!("{} (day {})", s.id, s.day);
            let _ = write!(
                h,
                "<figure>{}</figure>",
                heat_map(&title, &m, n, limit, 220)?
            );
        }
    }
    h.push_str("</div>");
    if let Some((sp, ms)) = t.get("map_summary") {
        let d = ms.i32s(sp, "day")?;
        let col = |c: &str| -> Result<Vec<(f64, f64)>> {
            Ok(d.iter()
                .zip(ms.f64s(sp, c)?)
                .map(|(&x, &y)| (x as f64, y))
                .collect())
        };
        let series = [
            ("diagonal", "diagonal_norm"),
            ("off-diagonal", "off_diagonal_norm"),
            ("trial-averaged off-diagonal", "trial_avg_off_diagonal_norm"),
        ]
        .iter()
        .enumerate()
        .map(|(k, (name, c))| {
            Ok(Series {
                name: (*name).into(),
                color: PALETTE[k],
                points: col(c)?,
                err: None,
                markers: true,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        let svg = line_chart(
            &LineChart {
                title: "map values over days, normalised to the sessions before the ablation",
                x_label: "day",
                y_label: "normalised value",
                size: (620, 340),
                marker,
                reference: Some(1.0),
            },
            &series,
        )?;
        let _ = write!(h, "<div class=\"grid\"><figure>{svg}</figure>");
    } else {
        h.push_str("<div class=\"grid\">");
    }
    if let Some((cp, cs)) = t.get("correlation_summary") {
        let (set, d, frac) = (
            cs.strs(cp, "pair_set")?,
            cs.i32s(cp, "day")?,
            cs.f64s(cp, "high_fraction")?,
        );
        let mut sets: Vec<&str> = Vec::new();
        for x in set {
            if !sets.contains(&x.as_str()) {
                sets.push(x);
            }
        }
        let series: Vec<Series> = sets
            .iter()
            .enumerate()
            .map(|(k, name)| Series {
                name: (*name).to_string(),
                color: PALETTE[k % PALETTE.len()],
                points: (0..set.len())
                    .filter(|&i| set[i] == *name)
                    .map(|i| (d[i] as f64, frac[i]))
                    .collect(),
                err: None,
                markers: true,
            })
            .collect();
        let svg = line_chart(
            &LineChart {
                title: "fraction of highly co-tuned pairs of spared cells",
                x_label: "day",
                y_label: "fraction",
                size: (620, 340),
                marker,
                reference: None,
            },
            &series,
        )?;
        let _ = write!(h, "<figure>{svg}</figure>");
    }
    h.push_str("</div>");
    if let Some((mp, msim)) = t.get("map_similarity") {
        let (sa, sb, v) = (
            msim.strs(mp, "session_a")?,
            msim.strs(mp, "session_b")?,
            msim.f64s(mp, "similarity")?,
        );
        let ids: Vec<&str> = sessions.iter().map(|s| s.id.as_str()).collect();
        let k = ids.len();
        let mut m = vec![f64::NAN; k * k];
        for i in 0..sa.len() {
            let (x, y) = (
                ids.iter().position(|s| *s == sa[i]),
                ids.iter().position(|s| *s == sb[i]),
            );
            if let (Some(x), Some(y)) = (x, y) {
                m[x * k + y] = v[i];
            }
        }
        let _ = write!(
            h,
            "<p>Map similarity between sessions (Pearson correlation of trial-averaged maps; \
             rows and columns in session order {}).</p><div class=\"grid\"><figure>{}</figure></div>",
            esc(&ids.join(", ")),
            heat_map("map similarity", &m, k, 1.0, 300)?
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn story_finds_the_dip_and_the_recovery() {
        let s = Story {
            sessions: 5,
            diagonal_norm: vec![(1, 1.0), (5, 1.0), (7, 0.4), (9, 0.8), (11, 0.95)],
            ablation_after_day: Some(5),
            ..Story::default()
        };
        assert_eq!(s.dip(), Some((7, 0.4)));
        assert_eq!(s.recovery(), Some((11, 0.95)));
        assert!(s.text().contains("back to 0.95 by day 11"));
        let flat = Story {
            diagonal_norm: vec![(1, 1.0), (5, 1.0), (7, 0.97)],
            ..s.clone()
        };
        assert_eq!(flat.recovery(), None);
        assert!(flat.text().contains("no dip"));
    }

    #[test]
    fn ablation_marker_sits_between_the_sessions() {
        assert_eq!(ablation_x(&[1, 3, 5, 7], Some(5)), Some(6.0));
        assert_eq!(ablation_x(&[1, 3], Some(5)), None);
        assert_eq!(ablation_x(&[1, 3], None), None);
    }

    #[test]
    fn dark_search_cell_says_whether_and_why() {
        assert_eq!(dark_cell(Some(true), Some(0.27)), "yes (27 % dark-centred)");
        assert_eq!(dark_cell(Some(false), Some(0.04)), "no (4 % dark-centred)");
        assert_eq!(dark_cell(Some(true), Some(f64::NAN)), "yes");
        assert_eq!(dark_cell(None, None), "–");
    }
}
