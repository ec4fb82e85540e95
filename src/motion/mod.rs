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
//! interpolation ([`interp`]). Frames are processed in parallel batches of jobs
//! of a fixed number of frames: each job reads a frame, registers it, and adds
//! each corrected row to its sums and encodes it as the row is made (the rigid
//! path never holds the corrected frame in f32), then writes the encoded frame
//! in its place. Results do not depend on the thread count (jobs start at
//! multiples of their size and their partial sums are added in job order) and
//! memory is bounded by the batch.

pub mod bidi;
pub mod fft;
pub mod interp;
pub mod nonrigid;
pub mod reference;
pub mod rigid;

use crate::config::MotionParams;
use crate::error::{Error, Result};
use crate::movie::store::{FrameEncoder, FrameStore, FrameStoreWriter, IndexedFrames};
use crate::progress::Progress;
use nonrigid::{BlockAligner, BlockGrid, BlockShift};
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

/// The registrar's buffers for one job at a time (a slot of the pool).
struct Buffers {
    rigid: rigid::Workspace,
    blocks: Option<nonrigid::BlockWorkspace>,
    input: Vec<f32>,
    tmp: Vec<f32>,
    /// One corrected row, on its way to the caller.
    row: Vec<f32>,
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
            row: vec![0.0; self.w],
            moved: vec![0.0; if self.blocks.is_some() { n } else { 0 }],
            dx: vec![0.0; if self.blocks.is_some() { n } else { 0 }],
            dy: vec![0.0; if self.blocks.is_some() { n } else { 0 }],
        }
    }

    /// Register one raw frame, handing each corrected row to `sink(y, row)` in
    /// order; returns its motion and block shifts.
    fn register(
        &self,
        raw: &[f32],
        b: &mut Buffers,
        mut sink: impl FnMut(usize, &[f32]),
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
        let constant = e.is_constant();
        let margin = (e.x.abs().max(e.y.abs()).ceil() as usize + 2).min(w.min(h) / 4);
        let mut qc = InnerCorrelation::new(w, h, margin);
        let mut each_row = |y: usize, row: &[f32]| {
            qc.add_row(y, row, &self.reference[y * w..(y + 1) * w]);
            sink(y, row);
        };
        let mut block_out = None;
        match (&self.blocks, b.blocks.as_mut()) {
            (Some(aligner), Some(bw)) if !constant => {
                interp::shift_image(frame, w, h, e.x, e.y, &mut b.tmp, &mut b.moved);
                let mut shifts = aligner.estimate(&b.moved, bw);
                for s in shifts.iter_mut() {
                    s.x += e.x as f32;
                    s.y += e.y as f32;
                }
                aligner.plan.field_into(|k| shifts[k].x, &mut b.dx);
                aligner.plan.field_into(|k| shifts[k].y, &mut b.dy);
                // The block estimates are done with `moved`: it takes the warp.
                interp::warp_image(frame, w, h, &b.dx, &b.dy, &mut b.moved);
                crate::simd::wide(|| {
                    for (y, row) in b.moved.chunks_exact(w).enumerate() {
                        each_row(y, row);
                    }
                });
                block_out = Some(shifts);
            }
            _ => interp::shift_rows(frame, w, h, e.x, e.y, &mut b.tmp, &mut b.row, each_row),
        }
        let corr = qc.finish(&self.reference_sums);
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
#[cfg(test)]
fn inner_correlation(
    a: &[f32],
    b: &[f32],
    b_sums: &RowPrefix,
    w: usize,
    h: usize,
    margin: usize,
) -> f64 {
    let mut qc = InnerCorrelation::new(w, h, margin);
    for (y, (ra, rb)) in a.chunks_exact(w).zip(b.chunks_exact(w)).enumerate() {
        qc.add_row(y, ra, rb);
    }
    qc.finish(b_sums)
}

/// The Pearson correlation of a frame with the reference over the region
/// `margin` px inside the border, accumulated row by row as the corrected rows
/// are made.
///
/// Σu, Σu² and Σu·b with u = a shifted by its first sample in the region
/// (keeping the f32 lane sums small next to the variance), in eight f32 lanes
/// per row so they vectorise, rows added in f64. The reference's own sums come
/// from its [`RowPrefix`].
struct InnerCorrelation {
    x0: usize,
    x1: usize,
    y0: usize,
    y1: usize,
    ca: f32,
    su: f64,
    suu: f64,
    sub: f64,
}

impl InnerCorrelation {
    fn new(w: usize, h: usize, margin: usize) -> Self {
        InnerCorrelation {
            x0: margin,
            x1: w.saturating_sub(margin),
            y0: margin,
            y1: h.saturating_sub(margin),
            ca: 0.0,
            su: 0.0,
            suu: 0.0,
            sub: 0.0,
        }
    }

    /// Add row `y` of the frame (`a`) and of the reference (`b`); rows must come
    /// in order.
    #[inline(always)]
    fn add_row(&mut self, y: usize, a: &[f32], b: &[f32]) {
        let (x0, x1) = (self.x0, self.x1);
        if y < self.y0 || y >= self.y1 || x1 <= x0 {
            return;
        }
        if y == self.y0 {
            self.ca = a[x0];
        }
        let ca = self.ca;
        const LANES: usize = 8;
        let (ra, rb) = (&a[x0..x1], &b[x0..x1]);
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
        self.su += total(&lu);
        self.suu += total(&luu);
        self.sub += total(&lub);
    }

    /// The correlation, given the reference's running sums (NaN for an empty
    /// region or one without variance).
    fn finish(&self, b_sums: &RowPrefix) -> f64 {
        let (x0, x1, y0, y1) = (self.x0, self.x1, self.y0, self.y1);
        if x1 <= x0 || y1 <= y0 {
            return f64::NAN;
        }
        let (sb, sbb) = b_sums.rect(x0, x1, y0, y1);
        let n = ((x1 - x0) * (y1 - y0)) as f64;
        if n < 2.0 {
            return f64::NAN;
        }
        let (su, suu, sub) = (self.su, self.suu, self.sub);
        let cov = sub - su * sb / n;
        let va = suu - su * su / n;
        let vb = sbb - sb * sb / n;
        if va <= 0.0 || vb <= 0.0 {
            return f64::NAN;
        }
        cov / (va * vb).sqrt()
    }
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
    let block_max_shift = params.max_shift_nonrigid_px.round().max(1.0) as usize;
    let block_aligner = |reference: &[f32]| {
        BlockAligner::new(
            reference,
            w,
            h,
            params.block_size,
            block_max_shift,
            params.smooth_sigma_px,
            params.snr_threshold,
        )
    };
    let rigid_correlator = |reference: &[f32]| {
        Correlator::new(reference, w, h, max_shift, params.smooth_sigma_px, taper_px)
    };
    let reference = if params.nonrigid {
        reference::refine_reference_nonrigid(
            &sample,
            w,
            h,
            reference,
            params.nonrigid_reference_iterations,
            |r| (rigid_correlator(r), block_aligner(r)),
        )
    } else {
        reference
    };
    drop(sample);
    let registrar = Registrar {
        w,
        h,
        rigid: rigid_correlator(&reference),
        blocks: params.nonrigid.then(|| block_aligner(&reference)),
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
    // Whole jobs, and at least two per thread: job boundaries then fall on
    // multiples of `JOB_FRAMES` whatever the batch, so the mean images do not
    // depend on the thread count even though the batch grows with it.
    let batch = params
        .batch_frames
        .max(1)
        .next_multiple_of(JOB_FRAMES)
        .max(2 * JOB_FRAMES * rayon::current_num_threads());
    let px = w * h;
    let pool: Vec<std::sync::Mutex<Option<Slot>>> = (0..2 * rayon::current_num_threads())
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    let encoder = output.encoder();
    // The output may be the raw store's own file, recycled: frame i must land
    // exactly where raw frame i was, so the shapes and pixel types must agree
    // and nothing may have been written yet.
    if output.frames_written() != 0
        || encoder.frame_bytes() != input.frame_len() * input.dtype().bytes()
    {
        return Err(Error::internal(format!(
            "session '{session}': the corrected store must start empty with the raw store's \
             frame size ({} frames written, {} bytes per frame against {})",
            output.frames_written(),
            encoder.frame_bytes(),
            input.frame_len() * input.dtype().bytes()
        )));
    }
    let mut job_sums: Vec<JobSums> = (0..batch.div_ceil(JOB_FRAMES))
        .map(|_| JobSums::new(px))
        .collect();
    output.write_indexed(n, |store| -> Result<()> {
        let mut start = 0;
        while start < n {
            let got = batch.min(n - start);
            let jobs = got.div_ceil(JOB_FRAMES);
            // Each job reads, registers, sums, encodes and writes its own frames, so
            // every frame is read, shifted, added to the mean images and converted
            // for the store while it is in cache, and no thread waits on a serial
            // step.
            let results: Vec<JobResult> = job_sums[..jobs]
                .par_iter_mut()
                .enumerate()
                .map(|(j, sums)| {
                    let mut guard = take_slot(&pool, j);
                    let slot = guard.get_or_insert_with(|| Slot {
                        buffers: registrar.buffers(),
                        raw: vec![0.0; px],
                        encoded: vec![0; encoder.frame_bytes()],
                    });
                    let first = start + j * JOB_FRAMES;
                    let count = JOB_FRAMES.min(start + got - first);
                    let job = Job {
                        registrar: &registrar,
                        input,
                        encoder: &encoder,
                        store,
                    };
                    job.run(first, count, slot, sums)
                })
                .collect::<Result<_>>()?;
            add_job_sums(&mut sum_raw, &mut sum_cor, &job_sums[..jobs]);
            clamped_values += results.iter().map(|r| r.clamped_values).sum::<u64>();
            for (m, b) in results.into_iter().flat_map(|r| r.frames) {
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
            let e = b.plan.edge_extremes(|k| row[k].x, |k| row[k].y);
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

/// Frames per parallel job. Fixed, not derived from the thread count, so that the
/// jobs' partial sums, and with them the mean images, are the same on any number
/// of threads.
const JOB_FRAMES: usize = 8;

/// One job's partial sums of its raw and corrected frames, in f32: at most
/// `JOB_FRAMES` terms each (exact for integer raw values), added into the
/// session's f64 sums in job order.
struct JobSums {
    raw: Vec<f32>,
    cor: Vec<f32>,
}

impl JobSums {
    fn new(px: usize) -> Self {
        JobSums {
            raw: vec![0.0; px],
            cor: vec![0.0; px],
        }
    }
}

/// One job's buffers, taken from the pool: the registrar's, one raw frame and
/// one encoded corrected frame.
struct Slot {
    buffers: Buffers,
    raw: Vec<f32>,
    encoded: Vec<u8>,
}

/// What one job returns: its frames' motion (and block shifts), and how many
/// values the store's conversion clamped.
struct JobResult {
    frames: Vec<(FrameMotion, Option<Vec<BlockShift>>)>,
    clamped_values: u64,
}

/// A free slot of the pool; at most one job per thread runs at once and the pool
/// holds two slots per thread, so one is always free (job `j`'s own as a last
/// resort).
fn take_slot(
    pool: &[std::sync::Mutex<Option<Slot>>],
    j: usize,
) -> std::sync::MutexGuard<'_, Option<Slot>> {
    pool.iter()
        .find_map(|m| m.try_lock().ok())
        .unwrap_or_else(|| {
            pool[j % pool.len()]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        })
}

/// What every job shares: the registrar, the raw store it reads, and the
/// corrected store it writes.
struct Job<'a> {
    registrar: &'a Registrar,
    input: &'a FrameStore,
    encoder: &'a FrameEncoder,
    store: &'a IndexedFrames<'a>,
}

impl Job<'_> {
    /// Register frames `first..first + count`: read each from the raw store,
    /// register it, add raw and corrected frame into `sums`, encode the
    /// corrected rows as they are made and write the frame to the store.
    fn run(
        &self,
        first: usize,
        count: usize,
        slot: &mut Slot,
        sums: &mut JobSums,
    ) -> Result<JobResult> {
        let (w, h) = (self.registrar.w, self.registrar.h);
        let row_bytes = self.encoder.frame_bytes() / h;
        let mut clamped_values = 0;
        let Slot {
            buffers,
            raw,
            encoded,
        } = slot;
        let frames = (first..first + count)
            .map(|i| {
                self.input.read_frames_into(i, raw)?;
                // The job's first frame starts its sums (no zeroing pass).
                let first_frame = i == first;
                accumulate(&mut sums.raw, raw, first_frame);
                let mut failed = None;
                let result = self.registrar.register(raw, buffers, |y, row| {
                    accumulate(&mut sums.cor[y * w..(y + 1) * w], row, first_frame);
                    let bytes = &mut encoded[y * row_bytes..(y + 1) * row_bytes];
                    match self.encoder.encode_at(i, y * w, row, bytes) {
                        Ok(c) => clamped_values += c,
                        Err(e) => {
                            failed.get_or_insert(e);
                        }
                    }
                });
                if let Some(e) = failed {
                    return Err(e);
                }
                self.store.write(i, encoded)?;
                Ok(result)
            })
            .collect::<Result<_>>()?;
        Ok(JobResult {
            frames,
            clamped_values,
        })
    }
}

/// Add `values` into `acc`, or copy them when `start` (the first term).
#[inline(always)]
fn accumulate(acc: &mut [f32], values: &[f32], start: bool) {
    if start {
        acc.copy_from_slice(values);
        return;
    }
    crate::simd::wide(|| {
        for (a, v) in acc.iter_mut().zip(values) {
            *a += *v;
        }
    })
}

/// Add the jobs' partial sums into the session's, in parallel over pixel ranges
/// and in job order per pixel (so the result does not depend on the thread count).
fn add_job_sums(sum_raw: &mut [f64], sum_cor: &mut [f64], jobs: &[JobSums]) {
    const CHUNK: usize = 8192;
    sum_raw
        .par_chunks_mut(CHUNK)
        .zip(sum_cor.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(c, (raw, cor))| {
            let (start, len) = (c * CHUNK, raw.len());
            crate::simd::wide(|| {
                for job in jobs {
                    for (x, v) in raw.iter_mut().zip(&job.raw[start..start + len]) {
                        *x += *v as f64;
                    }
                    for (x, v) in cor.iter_mut().zip(&job.cor[start..start + len]) {
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
