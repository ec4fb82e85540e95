//! Stage `extract`: fluorescence traces of one session's ROIs.
//!
//! In: the corrected frame store, the ROIs from `detect`, the frame rate, the
//! registration's valid box, the `[extract]` and `[indicator]` parameters. Out, per
//! ROI and frame: F (weighted mean of the ROI's pixels, pixels shared with another
//! ROI left out, as Suite2p does), Fneu (mean of its neuropil annulus,
//! [`neuropil`]), ΔF/F of the neuropil-corrected F − α·Fneu against a running
//! baseline ([`baseline`]: Suite2p's maximin or a running percentile) and
//! deconvolved activity by OASIS ([`oasis`], Friedrich, Zhou & Paninski 2017).
//!
//! The frames are read once, batch by batch; each batch is a sparse product of the
//! footprints with the frames, parallel over ROIs. Memory holds one batch of frames
//! plus the traces themselves.

pub mod baseline;
pub mod neuropil;
pub mod oasis;
#[cfg(test)]
mod test_rng;

use crate::config::{BaselineMethod, ExtractParams, IndicatorParams};
use crate::error::Result;
use crate::imgproc::Rect;
use crate::movie::store::FrameStore;
use crate::progress::Progress;
use rayon::prelude::*;

/// A footprint prepared for the trace pass: pixel indices and normalised weights.
struct Mask {
    pixels: Vec<u32>,
    weights: Vec<f32>,
}

/// The traces of one session, ROI-major (`f[roi][frame]`).
#[derive(Debug, Clone, Default)]
pub struct SessionTraces {
    pub f: Vec<Vec<f32>>,
    pub fneu: Vec<Vec<f32>>,
    pub dff: Vec<Vec<f32>>,
    /// Deconvolved activity (ΔF/F units); empty when deconvolution is off.
    pub spikes: Vec<Vec<f32>>,
    /// The deconvolution's calcium fit: a denoised ΔF/F (baseline-subtracted);
    /// empty when deconvolution is off.
    pub dff_denoised: Vec<Vec<f32>>,
    /// Pixels in each ROI's neuropil annulus.
    pub neuropil_pixels: Vec<usize>,
}

/// One ROI as extraction sees it.
pub struct RoiInput<'a> {
    pub pixels: &'a [u32],
    pub weights: &'a [f32],
    pub centroid: (f64, f64),
}

/// Footprint masks: pixels shared with another ROI or a neighbour dropped (unless
/// that would empty the ROI), weights normalised to sum 1.
fn cell_masks(rois: &[RoiInput], neighbours: &[&[u32]], npix: usize) -> Vec<Mask> {
    let mut owners = vec![0u16; npix];
    let all = rois
        .iter()
        .map(|r| r.pixels)
        .chain(neighbours.iter().copied());
    for pixels in all {
        for &p in pixels {
            if let Some(o) = owners.get_mut(p as usize) {
                *o = o.saturating_add(1);
            }
        }
    }
    rois.iter()
        .map(|r| {
            let own: Vec<(u32, f32)> = r
                .pixels
                .iter()
                .zip(r.weights)
                .filter(|(&p, _)| owners[p as usize] == 1)
                .map(|(&p, &w)| (p, w))
                .collect();
            let chosen: Vec<(u32, f32)> = if own.iter().map(|x| x.1).sum::<f32>() > 0.0 {
                own
            } else {
                r.pixels
                    .iter()
                    .copied()
                    .zip(r.weights.iter().copied())
                    .collect()
            };
            normalised(chosen)
        })
        .collect()
}

fn normalised(pairs: Vec<(u32, f32)>) -> Mask {
    let total: f32 = pairs.iter().map(|x| x.1.max(0.0)).sum();
    let n = pairs.len().max(1) as f32;
    Mask {
        pixels: pairs.iter().map(|x| x.0).collect(),
        weights: pairs
            .iter()
            .map(|x| {
                if total > 0.0 {
                    x.1.max(0.0) / total
                } else {
                    1.0 / n
                }
            })
            .collect(),
    }
}

/// Weighted sums of every mask over a batch of frames (frame-major `frames`).
fn batch_traces(masks: &[Mask], frames: &[f32], frame_len: usize) -> Vec<Vec<f32>> {
    let n = frames.len() / frame_len.max(1);
    masks
        .par_iter()
        .map(|m| {
            (0..n)
                .map(|t| {
                    let frame = &frames[t * frame_len..(t + 1) * frame_len];
                    m.pixels
                        .iter()
                        .zip(&m.weights)
                        .map(|(&p, &w)| w * frame[p as usize])
                        .sum()
                })
                .collect()
        })
        .collect()
}

/// Extract F, Fneu, ΔF/F and (optionally) deconvolved activity for `rois`.
/// `neighbours` are the pixels of other ROIs of the session whose traces are not
/// wanted: their pixels are left out of the footprints and the neuropil annuli as
/// the ROIs' own are.
#[allow(clippy::too_many_arguments)]
pub fn extract_session(
    session: &str,
    store: &FrameStore,
    rois: &[RoiInput],
    neighbours: &[&[u32]],
    fs: f64,
    valid: Rect,
    params: &ExtractParams,
    indicator: &IndicatorParams,
    progress: &dyn Progress,
) -> Result<SessionTraces> {
    let (w, h, n) = (store.width(), store.height(), store.n_frames());
    if rois.is_empty() {
        return Ok(SessionTraces::default());
    }
    let cells = cell_masks(rois, neighbours, w * h);
    let all: Vec<&[u32]> = rois
        .iter()
        .map(|r| r.pixels)
        .chain(neighbours.iter().copied())
        .collect();
    let forbidden = neuropil::forbidden_mask(&all, w, h, params.neuropil_gap_px);
    let rings: Vec<Mask> = rois
        .par_iter()
        .map(|r| {
            let ring = neuropil::annulus(
                r.centroid,
                r.pixels.len(),
                &forbidden,
                w,
                valid,
                params.neuropil_gap_px,
                params.neuropil_min_pixels,
            );
            normalised(ring.into_iter().map(|p| (p, 1.0)).collect())
        })
        .collect();
    let k = rois.len();
    let mut f = vec![Vec::with_capacity(n); k];
    let mut fneu = vec![Vec::with_capacity(n); k];
    progress.start(&format!("extract {session}"), n as u64);
    let batch = params.batch_frames.max(1);
    let mut frames = vec![0f32; batch * w * h];
    let mut start = 0;
    while start < n {
        let m = batch.min(n - start);
        let buf = &mut frames[..m * w * h];
        store.read_frames_into(start, buf)?;
        for (dst, src) in f.iter_mut().zip(batch_traces(&cells, buf, w * h)) {
            dst.extend(src);
        }
        for (dst, src) in fneu.iter_mut().zip(batch_traces(&rings, buf, w * h)) {
            dst.extend(src);
        }
        progress.advance(m as u64);
        start += m;
    }
    progress.finish();
    let (dff, spikes, dff_denoised) = dff_and_spikes(&f, &fneu, fs, params, indicator);
    Ok(SessionTraces {
        f,
        fneu,
        dff,
        spikes,
        dff_denoised,
        neuropil_pixels: rings.iter().map(|r| r.pixels.len()).collect(),
    })
}

/// Traces per ROI: ΔF/F, deconvolved activity, denoised ΔF/F.
type Derived = (Vec<Vec<f32>>, Vec<Vec<f32>>, Vec<Vec<f32>>);

/// ΔF/F of F − α·Fneu against the running baseline, and OASIS on ΔF/F.
fn dff_and_spikes(
    f: &[Vec<f32>],
    fneu: &[Vec<f32>],
    fs: f64,
    params: &ExtractParams,
    indicator: &IndicatorParams,
) -> Derived {
    let alpha = params.neuropil_coefficient as f32;
    let window = ((params.baseline_window_s * fs).round() as usize).max(3);
    let g: Vec<f32> = if params.estimate_ar {
        vec![]
    } else if params.ar_order == 2 {
        let (g1, g2) = oasis::ar2_from_taus(
            indicator.tau_rise_s as f32,
            indicator.tau_decay_s as f32,
            fs as f32,
        );
        vec![g1, g2]
    } else {
        vec![oasis::ar1_from_tau(indicator.tau_decay_s as f32, fs as f32)]
    };
    let per_roi: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = f
        .par_iter()
        .zip(fneu)
        .map(|(fc, fn_)| {
            let corrected: Vec<f32> = fc.iter().zip(fn_).map(|(a, b)| a - alpha * b).collect();
            let f0 = match params.baseline {
                BaselineMethod::Maximin => {
                    baseline::maximin(&corrected, (params.baseline_sigma_s * fs) as f32, window)
                }
                BaselineMethod::Percentile => baseline::running_percentile(
                    &corrected,
                    window,
                    params.baseline_percentile as f32,
                ),
            };
            let dff = baseline::dff(&corrected, &f0, params.dff_floor_fraction as f32);
            if params.deconvolve {
                let d = oasis::deconvolve(&dff, &g, params.spike_min_sd as f32);
                (dff, d.spikes, d.calcium)
            } else {
                (dff, Vec::new(), Vec::new())
            }
        })
        .collect();
    let mut out: Derived = (Vec::new(), Vec::new(), Vec::new());
    for (dff, spikes, calcium) in per_roi {
        out.0.push(dff);
        if params.deconvolve {
            out.1.push(spikes);
            out.2.push(calcium);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_pixels_are_left_out_and_weights_sum_to_one() {
        let a = [0u32, 1, 2];
        let b = [2u32, 3];
        let wa = [1.0f32, 1.0, 1.0];
        let wb = [1.0f32, 0.5];
        let rois = [
            RoiInput {
                pixels: &a,
                weights: &wa,
                centroid: (1.0, 0.0),
            },
            RoiInput {
                pixels: &b,
                weights: &wb,
                centroid: (2.5, 0.0),
            },
        ];
        let m = cell_masks(&rois, &[], 4);
        assert_eq!(m[0].pixels, vec![0, 1]);
        assert_eq!(m[1].pixels, vec![3]);
        for mask in &m {
            assert!((mask.weights.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        // A neighbour takes pixel 1 from the first ROI.
        let neighbour = [1u32];
        let m = cell_masks(&rois, &[&neighbour], 4);
        assert_eq!(m[0].pixels, vec![0]);
        assert_eq!(m[1].pixels, vec![3]);
    }

    #[test]
    fn batch_traces_are_weighted_means() {
        let masks = vec![normalised(vec![(0, 1.0), (1, 3.0)])];
        let frames = [2.0f32, 6.0, 0.0, 0.0, 4.0, 8.0];
        let t = batch_traces(&masks, &frames, 3);
        assert_eq!(t[0].len(), 2);
        assert!((t[0][0] - 5.0).abs() < 1e-6); // (2·1 + 6·3)/4
        assert!((t[0][1] - 3.0).abs() < 1e-6); // (0·1 + 4·3)/4
    }
}
