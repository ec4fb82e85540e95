//! Motion correction: rigid and piecewise-rigid registration of a session.
//!
//! In: the session's raw frame store ([`crate::movie::store`]) and
//! [`MotionParams`]. Out: the registered frame store, per-frame rigid shifts in the
//! contract's convention (`corrected(x, y) = raw(x + shift_x, y + shift_y)`), block
//! shifts when nonrigid, the reference and mean images, and QC figures.
//!
//! Method, after Suite2p (Pachitariu et al. 2017) and NoRMCorre (Pnevmatikakis &
//! Giovannucci 2017): an optional bidirectional scan-phase correction estimated
//! once per session ([`bidi`]); an iteratively refined reference image
//! ([`reference`]); rigid phase correlation with a whitened, smoothed reference
//! and sub-pixel peak fitting ([`rigid`]); optional block-wise phase correlation
//! around the rigid solution with neighbour smoothing for weak blocks
//! ([`nonrigid`]); frames resampled once from the raw data with Lanczos-3
//! interpolation ([`interp`]). Frames are processed in parallel batches and
//! written in order, so results do not depend on the thread count and memory is
//! bounded by the batch.

pub mod bidi;
pub mod fft;
pub mod interp;
pub mod nonrigid;
pub mod reference;
pub mod rigid;

use crate::config::MotionParams;
use crate::error::{Error, Result};
use crate::movie::store::{FrameStore, FrameStoreWriter};
use crate::progress::Progress;
use nonrigid::{block_field_into, BlockAligner, BlockGrid, BlockShift};
use rayon::prelude::*;
use rigid::{Correlator, Estimate};

/// Rigid shift of `frame` relative to `reference` (both `w × h`), within
/// ±`max_shift` px: a one-off convenience around [`rigid::Correlator`].
pub fn phase_correlate(
    reference: &[f32],
    frame: &[f32],
    w: usize,
    h: usize,
    max_shift: usize,
) -> Estimate {
    let c = Correlator::new(
        reference,
        w,
        h,
        max_shift,
        1.15,
        (w.min(h) as f64 / 10.0).max(2.0),
    );
    let mut ws = c.workspace();
    c.estimate(frame, &mut ws)
}

/// One frame's registration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameMotion {
    pub shift_x: f32,
    pub shift_y: f32,
    /// Pearson correlation of the corrected frame with the reference (inner region).
    pub corr: f32,
    pub peak: f32,
    pub snr: f32,
    /// The rigid shift hit the search bound.
    pub clamped: bool,
    /// The frame has no variance (nothing to register).
    pub constant: bool,
}

/// Quality figures of a registered session.
#[derive(Debug, Clone, PartialEq)]
pub struct MotionQc {
    pub crispness_raw: f64,
    pub crispness_corrected: f64,
    pub mean_corr: f64,
    pub bidi_offset: f64,
    pub bidi_applied: bool,
    pub n_clamped: usize,
    pub n_constant: usize,
    pub max_abs_shift: f64,
    /// Pixels valid in every corrected frame: [x0, x1) × [y0, y1).
    pub valid: [usize; 4],
    pub clamped_values: u64,
}

/// Everything the motion stage produces for one session (besides the frames).
#[derive(Debug, Clone)]
pub struct SessionMotion {
    pub frames: Vec<FrameMotion>,
    /// Per frame, total displacement of every block (rigid + block residual).
    pub blocks: Option<(BlockGrid, Vec<Vec<BlockShift>>)>,
    pub reference: Vec<f32>,
    pub mean_raw: Vec<f32>,
    pub mean_corrected: Vec<f32>,
    pub qc: MotionQc,
    /// Wall time building the reference and registering the frames, s.
    pub reference_seconds: f64,
    pub register_seconds: f64,
}

/// Fixed per session: the reference's correlators and the options.
struct Registrar {
    w: usize,
    h: usize,
    rigid: Correlator,
    blocks: Option<BlockAligner>,
    bidi: Option<f64>,
    reference: Vec<f32>,
    reference_sums: RowPrefix,
}

/// Per-thread buffers.
struct Buffers {
    rigid: rigid::Workspace,
    blocks: Option<nonrigid::BlockWorkspace>,
    input: Vec<f32>,
    tmp: Vec<f32>,
    moved: Vec<f32>,
    /// The nonrigid per-pixel shift field (empty when rigid).
    dx: Vec<f32>,
    dy: Vec<f32>,
}

impl Registrar {
    fn buffers(&self) -> Buffers {
        let n = self.w * self.h;
        Buffers {
            rigid: self.rigid.workspace(),
            blocks: self.blocks.as_ref().map(|b| b.workspace()),
            input: vec![0.0; n],
            // shift_image resamples through a ring of `interp::TAPS` rows.
            tmp: vec![0.0; interp::TAPS * self.w],
            moved: vec![0.0; n],
            dx: vec![0.0; if self.blocks.is_some() { n } else { 0 }],
            dy: vec![0.0; if self.blocks.is_some() { n } else { 0 }],
        }
    }

    /// Register one raw frame into `out`; returns its motion and block shifts.
    fn register(
        &self,
        raw: &[f32],
        b: &mut Buffers,
        out: &mut [f32],
    ) -> (FrameMotion, Option<Vec<BlockShift>>) {
        let (w, h) = (self.w, self.h);
        let frame: &[f32] = match self.bidi {
            Some(offset) => {
                bidi::correct(raw, w, h, offset, &mut b.input);
                &b.input
            }
            None => raw,
        };
        let e = self.rigid.estimate(frame, &mut b.rigid);
        let constant = e.peak == 0.0 && e.snr == 0.0;
        let mut block_out = None;
        match (&self.blocks, b.blocks.as_mut()) {
            (Some(aligner), Some(bw)) if !constant => {
                interp::shift_image(frame, w, h, e.x, e.y, &mut b.tmp, &mut b.moved);
                let mut shifts = aligner.estimate(&b.moved, bw);
                for s in shifts.iter_mut() {
                    s.x += e.x as f32;
                    s.y += e.y as f32;
                }
                let xs: Vec<f32> = shifts.iter().map(|s| s.x).collect();
                let ys: Vec<f32> = shifts.iter().map(|s| s.y).collect();
                block_field_into(&aligner.grid, &xs, w, h, &mut b.dx);
                block_field_into(&aligner.grid, &ys, w, h, &mut b.dy);
                interp::warp_image(frame, w, h, &b.dx, &b.dy, out);
                block_out = Some(shifts);
            }
            _ => interp::shift_image(frame, w, h, e.x, e.y, &mut b.tmp, out),
        }
        let margin = (e.x.abs().max(e.y.abs()).ceil() as usize + 2).min(w.min(h) / 4);
        let corr = inner_correlation(out, &self.reference, &self.reference_sums, w, h, margin);
        (
            FrameMotion {
                shift_x: e.x as f32,
                shift_y: e.y as f32,
                corr: corr as f32,
                peak: e.peak as f32,
                snr: e.snr.min(1e6) as f32,
                clamped: e.clamped,
                constant,
            },
            block_out,
        )
    }
}

/// Row-wise running sums of an image and of its squares, in f64, so that the sums
/// over any rectangle cost one subtraction per row.
struct RowPrefix {
    w: usize,
    /// Per row, `w + 1` running sums of the values, then of their squares.
    sums: Vec<f64>,
    squares: Vec<f64>,
}

impl RowPrefix {
    fn new(img: &[f32], w: usize) -> Self {
        let (mut sums, mut squares) = (Vec::new(), Vec::new());
        for row in img.chunks(w) {
            let (mut s, mut q) = (0.0f64, 0.0f64);
            sums.push(0.0);
            squares.push(0.0);
            for &v in row {
                s += v as f64;
                q += v as f64 * v as f64;
                sums.push(s);
                squares.push(q);
            }
        }
        RowPrefix { w, sums, squares }
    }

    /// Σ v and Σ v² over rows [y0, y1) and columns [x0, x1).
    fn rect(&self, x0: usize, x1: usize, y0: usize, y1: usize) -> (f64, f64) {
        let stride = self.w + 1;
        (y0..y1).fold((0.0, 0.0), |(s, q), y| {
            let r = y * stride;
            (
                s + self.sums[r + x1] - self.sums[r + x0],
                q + self.squares[r + x1] - self.squares[r + x0],
            )
        })
    }
}

/// Pearson correlation of two images over the region `margin` px inside the
/// border; `b_sums` are `b`'s running sums (the reference's, fixed per session).
fn inner_correlation(
    a: &[f32],
    b: &[f32],
    b_sums: &RowPrefix,
    w: usize,
    h: usize,
    margin: usize,
) -> f64 {
    crate::simd::wide(|| {
        let (x0, x1) = (margin, w.saturating_sub(margin));
        let (y0, y1) = (margin, h.saturating_sub(margin));
        if x1 <= x0 || y1 <= y0 {
            return f64::NAN;
        }
        // Σu, Σu² and Σu·b with u = a shifted by one of its samples (keeping the f32
        // lane sums small next to the variance), in eight f32 lanes per row so they
        // vectorise, rows added in f64. The reference's own sums come from `b_sums`.
        let ca = a[y0 * w + x0];
        let (mut su, mut suu, mut sub) = (0.0f64, 0.0, 0.0);
        const LANES: usize = 8;
        for y in y0..y1 {
            let (ra, rb) = (&a[y * w + x0..y * w + x1], &b[y * w + x0..y * w + x1]);
            let (mut lu, mut luu, mut lub) = ([0.0f32; LANES], [0.0f32; LANES], [0.0f32; LANES]);
            let mut add = |pa: &[f32], pb: &[f32]| {
                for k in 0..LANES {
                    let u = pa[k] - ca;
                    lu[k] += u;
                    luu[k] += u * u;
                    lub[k] += u * pb[k];
                }
            };
            let (ca_it, cb_it) = (ra.chunks_exact(LANES), rb.chunks_exact(LANES));
            let (ta, tb) = (ca_it.remainder(), cb_it.remainder());
            for (pa, pb) in ca_it.zip(cb_it) {
                add(pa, pb);
            }
            // The tail, padded with values that add nothing (u = 0).
            let (mut pa, mut pb) = ([ca; LANES], [0.0f32; LANES]);
            pa[..ta.len()].copy_from_slice(ta);
            pb[..tb.len()].copy_from_slice(tb);
            add(&pa, &pb);
            let total = |l: &[f32; LANES]| l.iter().map(|&v| v as f64).sum::<f64>();
            su += total(&lu);
            suu += total(&luu);
            sub += total(&lub);
        }
        let (sb, sbb) = b_sums.rect(x0, x1, y0, y1);
        let n = ((x1 - x0) * (y1 - y0)) as f64;
        if n < 2.0 {
            return f64::NAN;
        }
        let cov = sub - su * sb / n;
        let va = suu - su * su / n;
        let vb = sbb - sb * sb / n;
        if va <= 0.0 || vb <= 0.0 {
            return f64::NAN;
        }
        cov / (va * vb).sqrt()
    })
}

/// Crispness of an image: the Frobenius norm of its gradient (central
/// differences), as CaImAn's motion-correction metrics define it.
pub fn crispness(img: &[f32], w: usize, h: usize) -> f64 {
    let mut acc = 0.0f64;
    for y in 0..h {
        for x in 0..w {
            let gx = match x {
                0 => img[y * w + 1] - img[y * w],
                _ if x == w - 1 => img[y * w + x] - img[y * w + x - 1],
                _ => 0.5 * (img[y * w + x + 1] - img[y * w + x - 1]),
            } as f64;
            let gy = match y {
                0 => img[w + x] - img[x],
                _ if y == h - 1 => img[y * w + x] - img[(y - 1) * w + x],
                _ => 0.5 * (img[(y + 1) * w + x] - img[(y - 1) * w + x]),
            } as f64;
            acc += gx * gx + gy * gy;
        }
    }
    acc.sqrt()
}

/// Frames sampled evenly for the reference.
fn sample_frames(store: &FrameStore, count: usize) -> Result<Vec<Vec<f32>>> {
    let n = store.n_frames();
    let count = count.min(n);
    (0..count)
        .map(|i| store.frame(((i as f64 + 0.5) * n as f64 / count as f64) as usize))
        .collect()
}

/// Refuse sessions too short for a reference or frames too small to register.
pub fn check_registrable(
    session: &str,
    n: usize,
    w: usize,
    h: usize,
    params: &MotionParams,
) -> Result<()> {
    if n < params.min_frames {
        return Err(Error::usage(format!(
            "session '{session}' has {n} frames; building a reference needs at least {} (motion.min_frames)",
            params.min_frames
        )));
    }
    if w < 16 || h < 16 {
        return Err(Error::usage(format!(
            "session '{session}': frames of {w}x{h} are too small to register (at least 16x16)"
        )));
    }
    Ok(())
}

/// Register one session from `input` into `output`.
pub fn register_session(
    session: &str,
    input: &FrameStore,
    output: &mut FrameStoreWriter,
    params: &MotionParams,
    progress: &dyn Progress,
) -> Result<SessionMotion> {
    let (w, h, n) = (input.width(), input.height(), input.n_frames());
    check_registrable(session, n, w, h, params)?;
    let max_shift = ((w.min(h) as f64 * params.max_shift_fraction).round() as usize).max(1);
    let taper_px = (w.min(h) as f64 * 0.05)
        .max(max_shift as f64 * 0.5)
        .clamp(2.0, 40.0);
    let started = std::time::Instant::now();
    let mut sample = sample_frames(input, params.reference_frames)?;
    let sample_mean = mean_image(&sample, w * h);
    let bidi_offset = bidi::estimate(&sample_mean, w, h, 8.min(w / 4));
    // Offsets under a quarter pixel are within the estimate's noise: leave them.
    let bidi = (params.bidirectional && bidi_offset.abs() >= 0.25).then_some(bidi_offset);
    if let Some(offset) = bidi {
        for f in sample.iter_mut() {
            let raw = f.clone();
            bidi::correct(&raw, w, h, offset, f);
        }
    }
    let seed = reference::seed_reference(&sample, w, h);
    let reference = reference::refine_reference(
        &sample,
        w,
        h,
        seed,
        params.reference_iterations,
        max_shift,
        params.smooth_sigma_px,
        taper_px,
    );
    drop(sample);
    let registrar = Registrar {
        w,
        h,
        rigid: Correlator::new(
            &reference,
            w,
            h,
            max_shift,
            params.smooth_sigma_px,
            taper_px,
        ),
        blocks: params.nonrigid.then(|| {
            BlockAligner::new(
                &reference,
                w,
                h,
                params.block_size,
                params.max_shift_nonrigid_px.round().max(1.0) as usize,
                params.smooth_sigma_px,
                params.snr_threshold,
            )
        }),
        bidi,
        reference_sums: RowPrefix::new(&reference, w),
        reference: reference.clone(),
    };
    let reference_seconds = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    progress.start(&format!("motion {session}"), n as u64);
    let mut frames = Vec::with_capacity(n);
    let mut block_rows: Vec<Vec<BlockShift>> = Vec::new();
    let mut sum_raw = vec![0.0f64; w * h];
    let mut sum_cor = vec![0.0f64; w * h];
    let mut clamped_values = 0u64;
    let batch = params.batch_frames.max(1);
    let px = w * h;
    let mut raw = vec![0.0f32; batch * px];
    let pool: Vec<std::sync::Mutex<Option<Buffers>>> = (0..2 * rayon::current_num_threads())
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    // The store is written on its own thread while the next batch registers; at
    // most three corrected batches exist at once (one registering, one queued,
    // one being written), so memory stays bounded by the batch.
    let (to_writer, from_main) = std::sync::mpsc::sync_channel::<(Vec<f32>, usize)>(1);
    let (recycle, recycled) = std::sync::mpsc::channel::<Vec<f32>>();
    std::thread::scope(|scope| -> Result<()> {
        let writer = scope.spawn(move || -> Result<u64> {
            let mut clamped = 0u64;
            for (buf, len) in from_main {
                clamped += output.write_frames(&buf[..len])?.clamped_values;
                let _ = recycle.send(buf);
            }
            Ok(clamped)
        });
        let mut start = 0;
        while start < n {
            let got = input.read_frames_into(start, &mut raw)?;
            let mut corrected = recycled
                .try_recv()
                .unwrap_or_else(|_| vec![0.0f32; batch * px]);
            // Two jobs per thread and batch (some balance); each job takes a slot
            // of the pool, so the buffers (several MB at 512²) are allocated once
            // per session, not once per job.
            let per_job = got.div_ceil(pool.len()).max(1);
            let results: Vec<(FrameMotion, Option<Vec<BlockShift>>)> = raw[..got * px]
                .par_chunks(per_job * px)
                .zip(corrected[..got * px].par_chunks_mut(per_job * px))
                .zip(pool.par_iter())
                .map(|((raws, outs), slot)| {
                    let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
                    let b = guard.get_or_insert_with(|| registrar.buffers());
                    raws.chunks(px)
                        .zip(outs.chunks_mut(px))
                        .map(|(r, out)| registrar.register(r, b, out))
                        .collect::<Vec<_>>()
                })
                .flatten_iter()
                .collect();
            accumulate(&mut sum_raw, &raw[..got * px], px);
            accumulate(&mut sum_cor, &corrected[..got * px], px);
            if to_writer.send((corrected, got * px)).is_err() {
                break; // the writer failed; its error is reported below
            }
            for (m, b) in results {
                if let Some(aligner) = &registrar.blocks {
                    // Every frame gets a row of blocks, so rows stay aligned with
                    // frames; a frame without block estimates (constant) gets its
                    // rigid shift.
                    block_rows.push(b.unwrap_or_else(|| {
                        vec![
                            BlockShift {
                                x: m.shift_x,
                                y: m.shift_y,
                                snr: 0.0,
                            };
                            aligner.grid.n_blocks()
                        ]
                    }));
                }
                frames.push(m);
            }
            progress.advance(got as u64);
            start += got;
        }
        drop(to_writer);
        clamped_values = writer
            .join()
            .map_err(|_| Error::internal("the frame-store writer thread panicked"))??;
        Ok(())
    })?;
    if frames.len() != n {
        return Err(Error::internal(format!(
            "session '{session}': registered {} of {n} frames",
            frames.len()
        )));
    }
    progress.finish();
    let mean_raw: Vec<f32> = sum_raw.iter().map(|v| (v / n as f64) as f32).collect();
    let mean_corrected: Vec<f32> = sum_cor.iter().map(|v| (v / n as f64) as f32).collect();
    let field_edges = registrar.blocks.as_ref().map(|b| {
        block_rows.iter().fold([0.0f32; 4], |acc, row| {
            let xs: Vec<f32> = row.iter().map(|s| s.x).collect();
            let ys: Vec<f32> = row.iter().map(|s| s.y).collect();
            let e = nonrigid::edge_extremes(&b.grid, &xs, &ys, w, h);
            [
                acc[0].min(e[0]),
                acc[1].max(e[1]),
                acc[2].min(e[2]),
                acc[3].max(e[3]),
            ]
        })
    });
    let qc = session_qc(
        &frames,
        field_edges,
        &mean_raw,
        &mean_corrected,
        w,
        h,
        bidi_offset,
        bidi.is_some(),
        clamped_values,
    );
    Ok(SessionMotion {
        blocks: registrar
            .blocks
            .as_ref()
            .map(|b| (b.grid.clone(), block_rows)),
        frames,
        reference,
        mean_raw,
        mean_corrected,
        qc,
        reference_seconds,
        register_seconds: started.elapsed().as_secs_f64(),
    })
}

/// Add every frame of `frames` (frame length `px`) into `acc`, in parallel over
/// pixel ranges (the order of additions per pixel is fixed, so the result does
/// not depend on the thread count).
fn accumulate(acc: &mut [f64], frames: &[f32], px: usize) {
    const CHUNK: usize = 8192;
    acc.par_chunks_mut(CHUNK).enumerate().for_each(|(c, a)| {
        let (start, len) = (c * CHUNK, a.len());
        crate::simd::wide(|| {
            for frame in frames.chunks_exact(px) {
                for (x, v) in a.iter_mut().zip(&frame[start..start + len]) {
                    *x += *v as f64;
                }
            }
        })
    });
}

fn mean_image(frames: &[Vec<f32>], len: usize) -> Vec<f32> {
    let mut acc = vec![0.0f64; len];
    for f in frames {
        for (a, v) in acc.iter_mut().zip(f) {
            *a += *v as f64;
        }
    }
    acc.iter()
        .map(|v| (v / frames.len().max(1) as f64) as f32)
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn session_qc(
    frames: &[FrameMotion],
    field_edges: Option<[f32; 4]>,
    mean_raw: &[f32],
    mean_corrected: &[f32],
    w: usize,
    h: usize,
    bidi_offset: f64,
    bidi_applied: bool,
    clamped_values: u64,
) -> MotionQc {
    let max = |f: &dyn Fn(&FrameMotion) -> f32| frames.iter().map(f).fold(0.0f32, f32::max) as f64;
    let min = |f: &dyn Fn(&FrameMotion) -> f32| frames.iter().map(f).fold(0.0f32, f32::min) as f64;
    // corrected(x) = raw(x + s): a frame with s > 0 lacks data on its right edge.
    // With blocks, s is the per-pixel field, whose edge values can reach further
    // than the rigid shifts (`field_edges`: least x shift on the left edge, largest
    // on the right, least y shift on top, largest at the bottom, over all frames).
    let [left, right, top, bottom] = field_edges.map(|e| e.map(f64::from)).unwrap_or([
        min(&|m| m.shift_x),
        max(&|m| m.shift_x),
        min(&|m| m.shift_y),
        max(&|m| m.shift_y),
    ]);
    let valid = [
        (-left.min(0.0)).ceil().min(w as f64) as usize,
        (w as f64 - right.max(0.0).ceil()).max(0.0) as usize,
        (-top.min(0.0)).ceil().min(h as f64) as usize,
        (h as f64 - bottom.max(0.0).ceil()).max(0.0) as usize,
    ];
    let corrs: Vec<f64> = frames
        .iter()
        .map(|m| m.corr as f64)
        .filter(|c| c.is_finite())
        .collect();
    MotionQc {
        crispness_raw: crispness(mean_raw, w, h),
        crispness_corrected: crispness(mean_corrected, w, h),
        mean_corr: corrs.iter().sum::<f64>() / corrs.len().max(1) as f64,
        bidi_offset,
        bidi_applied,
        n_clamped: frames.iter().filter(|m| m.clamped).count(),
        n_constant: frames.iter().filter(|m| m.constant).count(),
        max_abs_shift: max(&|m| m.shift_x.abs().max(m.shift_y.abs())),
        valid,
        clamped_values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pearson r over the inner region, plainly in f64.
    fn plain_correlation(a: &[f32], b: &[f32], w: usize, h: usize, margin: usize) -> f64 {
        let pairs: Vec<(f64, f64)> = (margin..h - margin)
            .flat_map(|y| (margin..w - margin).map(move |x| y * w + x))
            .map(|i| (a[i] as f64, b[i] as f64))
            .collect();
        let n = pairs.len() as f64;
        let (ma, mb) = (
            pairs.iter().map(|p| p.0).sum::<f64>() / n,
            pairs.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let cov: f64 = pairs.iter().map(|p| (p.0 - ma) * (p.1 - mb)).sum();
        let va: f64 = pairs.iter().map(|p| (p.0 - ma).powi(2)).sum();
        let vb: f64 = pairs.iter().map(|p| (p.1 - mb).powi(2)).sum();
        cov / (va * vb).sqrt()
    }

    #[test]
    fn inner_correlation_matches_a_plain_pearson_on_bright_images() {
        // Bright values with a small spread: the case where sums of squares in
        // f32 would lose the variance without the shift.
        let (w, h) = (61, 37);
        let a: Vec<f32> = (0..w * h)
            .map(|i| 3000.0 + ((i * 37) % 101) as f32 * 0.7)
            .collect();
        let b: Vec<f32> = a
            .iter()
            .enumerate()
            .map(|(i, v)| 0.5 * v + ((i * 13) % 29) as f32)
            .collect();
        for margin in [0, 3, 10] {
            let r = inner_correlation(&a, &b, &RowPrefix::new(&b, w), w, h, margin);
            let p = plain_correlation(&a, &b, w, h, margin);
            assert!((r - p).abs() < 1e-5, "margin {margin}: {r} vs {p}");
        }
        let b_sums = RowPrefix::new(&b, w);
        assert!(inner_correlation(&a, &b, &b_sums, w, h, 40).is_nan());
        let flat = vec![7.0f32; w * h];
        assert!(inner_correlation(&flat, &b, &b_sums, w, h, 2).is_nan());
    }
}
