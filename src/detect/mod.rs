//! Stage `detect`: ROIs of one session from its motion-corrected frames.
//!
//! In: the corrected frame store, the frame rate, the registration's valid box, the
//! `[detect]` and `[indicator]` parameters. Out: ROIs (pixels, weights, centroid,
//! quality, `is_cell`, whether found by activity or by anatomy) and the summary
//! images (mean, max of the binned movie, local correlation, enhanced mean).
//!
//! Method: the movie is binned in time over about one indicator decay time
//! ([`binned`]), high-passed in time and space (neuropil and background vary on
//! scales far above a cell), then searched greedily as Suite2p's sparse detection
//! does, each cell's pixels factorised rank-1 with faer's SVD and subtracted before
//! the next seed ([`greedy`]). Cells that never fire are then added from the
//! enhanced mean image when they stand out as blobs of the cell's size and do not
//! overlap an active ROI ([`anatomy`]); they are flagged `source = anatomy`. The
//! cell diameter is a parameter or estimated from the mean image's blob scale.
//!
//! With a structural channel (a nuclear marker, say) the anatomical cells are sought
//! in its motion-corrected mean image instead of the functional one.
//!
//! ROIs are confined to the registration's valid box; a cell cut by it keeps the
//! pixels inside and stays an ROI when enough of it is inside (`min_size_fraction`
//! of a disc of the cell's diameter), so edge cells do not vanish.

pub mod anatomy;
pub mod binned;
pub mod greedy;
pub mod quality;

use crate::config::{DarkSomata, DetectParams, IndicatorParams};
use crate::error::Result;
use crate::imgproc::Rect;
use crate::movie::store::FrameStore;
use crate::progress::Progress;
use quality::Quality;

/// How an ROI was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Seeded by its activity.
    Activity,
    /// Seen in the enhanced mean image only.
    Anatomy,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Activity => "activity",
            Source::Anatomy => "anatomy",
        }
    }
}

/// One ROI in the session's corrected coordinates.
#[derive(Debug, Clone)]
pub struct Roi {
    /// Linear indices `y * width + x`, ascending.
    pub pixels: Vec<u32>,
    /// Footprint weight of each pixel, maximum 1.
    pub weights: Vec<f32>,
    pub centroid_x: f64,
    pub centroid_y: f64,
    pub source: Source,
    pub quality: Quality,
    pub is_cell: bool,
}

/// Summary images of a session, row-major.
#[derive(Debug, Clone)]
pub struct SummaryImages {
    pub mean: Vec<f32>,
    pub max: Vec<f32>,
    pub correlation: Vec<f32>,
    pub enhanced: Vec<f32>,
}

/// Everything detection found in one session.
#[derive(Debug, Clone)]
pub struct Detection {
    pub rois: Vec<Roi>,
    pub images: SummaryImages,
    pub width: usize,
    pub height: usize,
    /// The cell diameter used, px (given or estimated).
    pub diameter: f64,
    pub diameter_estimated: bool,
    pub bin_frames: usize,
    pub n_bins: usize,
    /// The share of active cells darker at their centre than around it (NaN with
    /// too few of them), and whether dark somata were sought.
    pub dark_centre_fraction: f64,
    pub dark_search: bool,
}

impl Detection {
    /// No ROIs, no images: the schema template for empty tables.
    pub fn empty() -> Self {
        Detection {
            rois: vec![],
            images: SummaryImages {
                mean: vec![],
                max: vec![],
                correlation: vec![],
                enhanced: vec![],
            },
            width: 0,
            height: 0,
            diameter: 0.0,
            diameter_estimated: false,
            bin_frames: 0,
            n_bins: 0,
            dark_centre_fraction: f64::NAN,
            dark_search: false,
        }
    }
}

/// The session facts detection needs.
pub struct DetectInput<'a> {
    pub session: &'a str,
    pub fs: f64,
    /// Pixels valid in every corrected frame: `[x0, x1) × [y0, y1)`.
    pub valid: [usize; 4],
    /// The motion-corrected mean of a structural (e.g. nuclear) channel, when the
    /// session has one: anatomical cells are then sought in it instead of in the
    /// functional mean image.
    pub structural: Option<Vec<f32>>,
}

/// The valid box as a rectangle; the whole frame when the box is empty.
pub fn valid_rect(valid: [usize; 4], width: usize, height: usize) -> Rect {
    let [x0, x1, y0, y1] = valid;
    let (x1, y1) = (x1.min(width), y1.min(height));
    if x1 > x0 && y1 > y0 {
        Rect { x0, x1, y0, y1 }
    } else {
        Rect {
            x0: 0,
            x1: width,
            y0: 0,
            y1: height,
        }
    }
}

/// Detect the ROIs of one session.
pub fn detect_session(
    store: &FrameStore,
    input: &DetectInput,
    params: &DetectParams,
    indicator: &IndicatorParams,
    progress: &dyn Progress,
) -> Result<Detection> {
    let (w, h) = (store.width(), store.height());
    let valid = valid_rect(input.valid, w, h);
    let bin = binned::bin_width(
        store.n_frames(),
        input.fs,
        indicator.tau_decay_s,
        params.max_binned_frames,
    );
    progress.start(
        &format!("detect {}", input.session),
        store.n_frames() as u64,
    );
    let (mut movie, mean) = binned::read_binned(store, bin, progress)?;
    progress.finish();
    let mut clock = std::time::Instant::now();
    let mut lap = |what: &str| {
        tracing::debug!(
            "detect {}: {what} {:.2} s, peak RSS {:.0} MB",
            input.session,
            clock.elapsed().as_secs_f64(),
            crate::bench::peak_rss_mb().unwrap_or(0.0)
        );
        clock = std::time::Instant::now();
    };
    lap("binning");
    let max = binned::max_image(&movie);
    let (diameter, estimated) = if params.cell_diameter_px > 0.0 {
        (params.cell_diameter_px, false)
    } else {
        (anatomy::estimate_diameter(&mean, w, h, valid), true)
    };
    lap("diameter");
    binned::highpass_time(&mut movie, params.highpass_bins);
    lap("temporal high-pass");
    binned::highpass_space(&mut movie, params.neuropil_scale * diameter);
    lap("spatial high-pass");
    let correlation = binned::correlation_image(&movie);
    lap("correlation image");
    let enhanced = binned::enhanced_mean(&mean, w, h, diameter);
    let n_bins = movie.n_bins;
    let opts = greedy::GreedyOptions {
        diameter,
        event_threshold_sd: params.event_threshold_sd,
        seed_threshold: params.seed_threshold,
        footprint_corr: params.footprint_corr,
        max_rois: params.max_rois,
        min_event_sd: params.min_event_sd,
        valid,
    };
    let active = greedy::detect_active(&mut movie, &opts, |_| {});
    lap("active search");
    drop(movie);
    let mut rois: Vec<Roi> = active
        .into_iter()
        .map(|a| {
            let q = Quality {
                npix: a.pixels.len(),
                compactness: quality::compactness(&a.pixels, w),
                snr: quality::trace_snr(&a.trace, a.noise),
                skewness: quality::skewness(&a.trace),
            };
            make_roi(a.pixels, a.weights, Source::Activity, q, w)
        })
        .collect();
    mark_cells(&mut rois, diameter, valid, params);
    let n_active = rois.len();
    let mut dark_fraction = f64::NAN;
    let mut dark_search = false;
    if params.anatomy && rois.len() < params.max_rois {
        let structural = input
            .structural
            .as_ref()
            .filter(|img| img.len() == w * h)
            .map(|img| binned::enhanced_mean(img, w, h, diameter));
        let occupied = occupied_mask(&rois, w, h, diameter);
        let found = anatomy::find_candidates(
            structural.as_ref().unwrap_or(&enhanced),
            w,
            h,
            diameter,
            params.anatomy_threshold,
            valid,
            &occupied,
        );
        push_anatomical(&mut rois, found, params.max_rois, w);
        let active_cells: Vec<(f64, f64)> = rois[..n_active]
            .iter()
            .filter(|r| r.is_cell)
            .map(|r| (r.centroid_x, r.centroid_y))
            .collect();
        dark_fraction = anatomy::dark_centre_fraction(
            &enhanced,
            w,
            h,
            diameter,
            &active_cells,
            anatomy::DARK_FIELD_MIN_CELLS,
        )
        .unwrap_or(f64::NAN);
        // A structural channel shows nuclei bright; dark spots there are not cells.
        let wanted = structural.is_none()
            && match params.dark_somata {
                DarkSomata::On => true,
                DarkSomata::Off => false,
                DarkSomata::Auto => dark_fraction >= anatomy::DARK_FIELD_FRACTION,
            };
        dark_search = wanted && rois.len() < params.max_rois;
        if dark_search {
            let occupied = occupied_mask(&rois, w, h, diameter);
            let dark = anatomy::find_dark_candidates(
                &enhanced,
                w,
                h,
                diameter,
                params.anatomy_threshold,
                params.max_elongation,
                valid,
                &occupied,
            );
            push_anatomical(&mut rois, dark, params.max_rois, w);
        }
    }
    lap("anatomy");
    for r in &mut rois[n_active..] {
        r.is_cell = is_cell(r, diameter, valid, params);
    }
    Ok(Detection {
        rois,
        images: SummaryImages {
            mean,
            max,
            correlation,
            enhanced,
        },
        width: w,
        height: h,
        diameter,
        diameter_estimated: estimated,
        bin_frames: bin,
        n_bins,
        dark_centre_fraction: dark_fraction,
        dark_search,
    })
}

/// Anatomical candidates as ROIs, up to `max_rois` in all.
fn push_anatomical(
    rois: &mut Vec<Roi>,
    found: Vec<anatomy::Candidate>,
    max_rois: usize,
    width: usize,
) {
    let room = max_rois.saturating_sub(rois.len());
    for c in found.into_iter().take(room) {
        let q = Quality {
            npix: c.pixels.len(),
            compactness: quality::compactness(&c.pixels, width),
            snr: 0.0,
            skewness: 0.0,
        };
        rois.push(make_roi(c.pixels, c.weights, Source::Anatomy, q, width));
    }
}

fn make_roi(
    pixels: Vec<u32>,
    weights: Vec<f32>,
    source: Source,
    quality: Quality,
    width: usize,
) -> Roi {
    let px: Vec<usize> = pixels.iter().map(|&p| p as usize).collect();
    let (cx, cy) = greedy::centroid(&px, &weights, width);
    Roi {
        pixels,
        weights,
        centroid_x: cx,
        centroid_y: cy,
        source,
        quality,
        is_cell: false,
    }
}

/// Pixels an anatomical candidate may not claim: every ROI's pixels (active ones,
/// and the bright anatomical ones when dark somata are sought after them) and a
/// disc of half a diameter around each centroid.
fn occupied_mask(rois: &[Roi], width: usize, height: usize, diameter: f64) -> Vec<bool> {
    let mut m = vec![false; width * height];
    for roi in rois {
        for &p in &roi.pixels {
            m[p as usize] = true;
        }
        let centre = (
            roi.centroid_x.round() as isize,
            roi.centroid_y.round() as isize,
        );
        for (x, y) in
            crate::imgproc::disc_pixels(centre, diameter / 2.0, Rect::frame(width, height))
        {
            m[y * width + x] = true;
        }
    }
    m
}

/// The `is_cell` rule: a plausible size and shape, and for active ROIs enough signal
/// and a trace not skewed to the left (calcium transients rise fast and decay
/// slowly, so a cell's trace is skewed to the right, or near symmetric for a cell
/// that fires all the time; a trace that dips more than it rises follows something
/// else, a vessel's flow or a structure moving at the frame's edge).
/// The size is judged against the part of a disc of the cell's diameter, centred on
/// the ROI's centroid, that lies inside the valid box, so a cell cut by the border
/// needs fewer pixels (a cell cut in half has its centroid 0.42 radii inside, where
/// about three quarters of the disc lie inside). An ROI without a finite centroid is
/// not a cell.
pub fn is_cell(roi: &Roi, diameter: f64, valid: Rect, p: &DetectParams) -> bool {
    if !(roi.centroid_x.is_finite() && roi.centroid_y.is_finite()) {
        return false;
    }
    let disc = std::f64::consts::PI * diameter * diameter / 4.0;
    let inside = disc_area_inside(roi.centroid_x, roi.centroid_y, diameter / 2.0, valid);
    let n = roi.quality.npix as f64;
    let size_ok = n >= p.min_size_fraction * inside && n <= p.max_size_fraction * disc;
    let shape_ok = (roi.quality.compactness as f64) <= p.max_compactness;
    let signal_ok = roi.source == Source::Anatomy
        || (roi.quality.snr as f64 >= p.min_snr && roi.quality.skewness as f64 > p.min_skewness);
    size_ok && shape_ok && signal_ok
}

/// `is_cell` of every ROI, then residues unmarked.
fn mark_cells(rois: &mut [Roi], diameter: f64, valid: Rect, params: &DetectParams) {
    for r in rois.iter_mut() {
        r.is_cell = is_cell(r, diameter, valid, params);
    }
    unmark_residues(rois, diameter);
}

/// An active ROI centred within a quarter diameter of a cell found before it is
/// what the subtraction of that cell left behind (a rim or a saturated core that a
/// rank-1 footprint cannot hold), not a second cell: its `is_cell` is cleared. Two
/// somata cannot lie that close; overlapping cells that the search demixes are
/// further apart.
fn unmark_residues(rois: &mut [Roi], diameter: f64) {
    let near = diameter / 4.0;
    for k in 0..rois.len() {
        if rois[k].source != Source::Activity || !rois[k].is_cell {
            continue;
        }
        let (x, y) = (rois[k].centroid_x, rois[k].centroid_y);
        let residue = rois[..k]
            .iter()
            .any(|r| r.is_cell && (r.centroid_x - x).hypot(r.centroid_y - y) < near);
        if residue {
            rois[k].is_cell = false;
        }
    }
}

/// Area (px) of the disc of `radius` around (cx, cy) inside the valid box, counted
/// on a grid of 4 × 4 points per pixel.
fn disc_area_inside(cx: f64, cy: f64, radius: f64, valid: Rect) -> f64 {
    const SUB: usize = 4;
    let step = 1.0 / SUB as f64;
    let (x_lo, x_hi) = (
        (cx - radius).max(valid.x0 as f64 - 0.5),
        (cx + radius).min(valid.x1 as f64 - 0.5),
    );
    let (y_lo, y_hi) = (
        (cy - radius).max(valid.y0 as f64 - 0.5),
        (cy + radius).min(valid.y1 as f64 - 0.5),
    );
    if x_hi <= x_lo || y_hi <= y_lo {
        return 0.0;
    }
    let nx = ((x_hi - x_lo) / step).ceil() as usize;
    let ny = ((y_hi - y_lo) / step).ceil() as usize;
    let mut hits = 0usize;
    for j in 0..ny {
        let y = y_lo + (j as f64 + 0.5) * step;
        for i in 0..nx {
            let x = x_lo + (i as f64 + 0.5) * step;
            if (x - cx).hypot(y - cy) <= radius && x < x_hi && y < y_hi {
                hits += 1;
            }
        }
    }
    hits as f64 * step * step
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roi(cx: f64, cy: f64, npix: usize, source: Source, skewness: f32) -> Roi {
        Roi {
            pixels: vec![],
            weights: vec![],
            centroid_x: cx,
            centroid_y: cy,
            source,
            quality: Quality {
                npix,
                compactness: 1.0,
                snr: 10.0,
                skewness,
            },
            is_cell: false,
        }
    }

    const BOX: Rect = Rect {
        x0: 0,
        x1: 100,
        y0: 0,
        y1: 100,
    };

    #[test]
    fn disc_area_inside_counts_the_part_in_the_box() {
        let whole = disc_area_inside(50.0, 50.0, 6.0, BOX);
        assert!((whole - std::f64::consts::PI * 36.0).abs() < 2.0, "{whole}");
        // Centred on the box's edge (x = −0.5): half the disc.
        let half = disc_area_inside(-0.5, 50.0, 6.0, BOX);
        assert!((half - whole / 2.0).abs() < 2.0, "{half}");
        assert_eq!(disc_area_inside(-20.0, 50.0, 6.0, BOX), 0.0);
    }

    #[test]
    fn a_cell_cut_by_the_border_needs_fewer_pixels() {
        let p = DetectParams {
            min_size_fraction: 0.6,
            ..DetectParams::default()
        };
        // A cell of 12 px cut in half by the box's left edge (x = −0.5): 56 of its
        // 113 px inside, the centroid 4r/3π = 2.55 px in from the edge.
        let cx = -0.5 + 4.0 * 6.0 / (3.0 * std::f64::consts::PI);
        let at_edge = roi(cx, 50.0, 56, Source::Activity, 1.0);
        let inside = roi(50.0, 50.0, 56, Source::Activity, 1.0);
        assert!(is_cell(&at_edge, 12.0, BOX, &p));
        assert!(!is_cell(&inside, 12.0, BOX, &p));
        assert!(is_cell(
            &roi(50.0, 50.0, 70, Source::Activity, 1.0),
            12.0,
            BOX,
            &p
        ));
        let lost = roi(f64::NAN, 50.0, 70, Source::Activity, 1.0);
        assert!(!is_cell(&lost, 12.0, BOX, &p));
    }

    #[test]
    fn active_rois_need_a_trace_not_skewed_to_the_left_and_anatomical_ones_none() {
        let p = DetectParams::default();
        let active = |skew: f32| roi(50.0, 50.0, 100, Source::Activity, skew);
        assert!(is_cell(&active(0.5), 12.0, BOX, &p));
        assert!(is_cell(&active(0.0), 12.0, BOX, &p));
        assert!(is_cell(&active(-0.2), 12.0, BOX, &p));
        assert!(!is_cell(&active(-0.25), 12.0, BOX, &p));
        assert!(!is_cell(&active(-0.7), 12.0, BOX, &p));
        let anatomical = roi(50.0, 50.0, 100, Source::Anatomy, -1.0);
        assert!(is_cell(&anatomical, 12.0, BOX, &p));
    }

    #[test]
    fn a_weaker_roi_centred_on_a_stronger_cell_is_its_residue() {
        let mut rois = vec![
            roi(50.0, 50.0, 100, Source::Activity, 1.0),
            roi(51.5, 50.5, 30, Source::Activity, 1.0),
            roi(56.0, 50.0, 100, Source::Activity, 1.0),
            roi(20.0, 80.0, 100, Source::Activity, 1.0),
        ];
        for r in &mut rois {
            r.is_cell = true;
        }
        unmark_residues(&mut rois, 12.0);
        let flags: Vec<bool> = rois.iter().map(|r| r.is_cell).collect();
        // 1.6 px from the first: a residue; 6 px away: a neighbour, kept.
        assert_eq!(flags, vec![true, false, true, true]);
        // A residue of an ROI that is not a cell is judged on its own.
        let mut rois = vec![
            roi(50.0, 50.0, 100, Source::Activity, 1.0),
            roi(51.0, 50.0, 100, Source::Activity, 1.0),
        ];
        rois[1].is_cell = true;
        unmark_residues(&mut rois, 12.0);
        assert!(rois[1].is_cell);
    }
}
