//! Benchmarks that are commands, not tests (`cortexmap bench ...`).
//!
//! `tiff-read`: decode a TIFF page by page into f32 frames and compare with reading
//! the same bytes raw (what `cat` does), after one warm-up pass so both read from
//! the page cache. `simulate`: throughput of the simulator (frames rendered and
//! written per second), reported by [`crate::simulate::simulate`] itself.

use crate::analysis::stats::median;
use crate::error::{Error, Result};
use crate::io::tiff::{probe, TiffPageReader};
use std::io::Read;
use std::path::Path;
use std::time::Instant;

/// Result of the TIFF read benchmark (best of `repeats`).
#[derive(Debug, Clone)]
pub struct TiffReadBench {
    pub bytes: u64,
    pub pages: usize,
    pub raw_seconds: f64,
    pub tiff_seconds: f64,
}

impl TiffReadBench {
    pub fn raw_mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.raw_seconds
    }
    pub fn tiff_mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.tiff_seconds
    }
    pub fn pages_per_s(&self) -> f64 {
        self.pages as f64 / self.tiff_seconds
    }
}

fn raw_read(path: &Path) -> Result<u64> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::input(path, e.to_string()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::input(path, e.to_string()))?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

fn decode_all(path: &Path) -> Result<usize> {
    let mut r = TiffPageReader::open(path)?;
    let mut frame = vec![0f32; r.info().page_len()];
    let mut pages = 0;
    while r.read_page_into(&mut frame)? {
        pages += 1;
    }
    Ok(pages)
}

/// Time decoding `path` against raw reading, best of `repeats` runs each.
pub fn tiff_read(path: &Path, repeats: usize) -> Result<TiffReadBench> {
    let info = probe(path)?;
    raw_read(path)?; // warm the page cache
    let (mut raw_best, mut tiff_best) = (f64::INFINITY, f64::INFINITY);
    let mut pages = 0;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        raw_read(path)?;
        raw_best = raw_best.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        pages = decode_all(path)?;
        tiff_best = tiff_best.min(t.elapsed().as_secs_f64());
    }
    Ok(TiffReadBench {
        bytes: info.file_size,
        pages,
        raw_seconds: raw_best,
        tiff_seconds: tiff_best,
    })
}

/// Result of the motion benchmark.
#[derive(Debug, Clone)]
pub struct MotionBench {
    pub size: usize,
    pub frames: usize,
    /// One forward + inverse `size × size` real FFT on one core, ms.
    pub fft_pair_ms: f64,
    /// FFT pairs per second with every thread transforming at once: the bound
    /// the registration is compared with, as both cores share caches, memory and
    /// clock speed when busy.
    pub fft_pairs_per_s_all_threads: f64,
    /// Rigid registration throughput (all threads), frames/s, reference included.
    pub rigid_fps: f64,
    /// The same without building the reference (steady state), frames/s.
    pub rigid_register_fps: f64,
    /// Seconds spent building the reference.
    pub reference_seconds: f64,
    /// Rigid + piecewise-rigid throughput without the reference, frames/s (when
    /// asked for).
    pub nonrigid_fps: Option<f64>,
    /// Seconds spent building the nonrigid run's reference (its rigid rounds and
    /// its nonrigid ones).
    pub nonrigid_reference_seconds: Option<f64>,
    pub threads: usize,
    /// Peak resident memory of the process, MB (VmHWM).
    pub peak_rss_mb: Option<f64>,
}

/// Peak resident set size of this process, MB, where /proc tells it.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Time one forward + inverse FFT pair of a `size²` image on one core: the
/// per-block times of `blocks` blocks of repetitions, ms per pair.
fn fft_pair_ms(size: usize, blocks: usize) -> Vec<f64> {
    use crate::motion::fft::Fft2;
    let fft = Fft2::new(size, size);
    let mut s = fft.scratch();
    let img: Vec<f32> = (0..size * size).map(|i| (i % 97) as f32).collect();
    let mut spec = vec![rustfft::num_complex::Complex32::new(0.0, 0.0); fft.spectrum_len()];
    let mut out = vec![0.0f32; size * size];
    let reps = (400_000_000 / (size * size * 20)).clamp(10, 400);
    for _ in 0..3 {
        fft.forward(&img, &mut spec, &mut s);
        fft.inverse(&mut spec, &mut out, &mut s);
    }
    (0..blocks)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                fft.forward(&img, &mut spec, &mut s);
                fft.inverse(&mut spec, &mut out, &mut s);
            }
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        })
        .collect()
}

/// FFT pairs per second with every rayon thread running its own loop of
/// `size²` pairs at once (`rayon::broadcast`: one loop on each thread, buffers
/// allocated before the clocks start, all loops released together), in each of
/// `blocks` timed blocks: all pairs over the slowest loop.
fn fft_pairs_per_s_all_threads(size: usize, blocks: usize) -> Vec<f64> {
    use crate::motion::fft::Fft2;
    let fft = Fft2::new(size, size);
    let threads = rayon::current_num_threads();
    let reps = (400_000_000 / (size * size * 20)).clamp(10, 400);
    let img: Vec<f32> = (0..size * size).map(|i| (i % 97) as f32).collect();
    let start = std::sync::Barrier::new(threads);
    (0..blocks)
        .map(|_| {
            let seconds: Vec<f64> = rayon::broadcast(|_| {
                let mut s = fft.scratch();
                let mut spec =
                    vec![rustfft::num_complex::Complex32::new(0.0, 0.0); fft.spectrum_len()];
                let mut out = vec![0.0f32; size * size];
                start.wait();
                let t = Instant::now();
                for _ in 0..reps {
                    fft.forward(&img, &mut spec, &mut s);
                    fft.inverse(&mut spec, &mut out, &mut s);
                }
                t.elapsed().as_secs_f64()
            });
            let slowest = seconds.into_iter().fold(0.0, f64::max);
            (threads * reps) as f64 / slowest
        })
        .collect()
}

/// A synthetic int16 movie: a soma-textured image at independent uniform shifts
/// (±3 px), with
/// noise; 64 distinct frames cycled, so generation is cheap and every frame
/// still needs full registration.
fn synthetic_store(path: &Path, size: usize, frames: usize) -> Result<()> {
    use crate::motion::interp::shift_image;
    use crate::movie::store::{FrameStoreWriter, StoreDtype};
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let n_blobs = size * size / 150;
    let blobs: Vec<(f64, f64, f64)> = (0..n_blobs)
        .map(|_| {
            (
                rng.random_range(0.0..size as f64),
                rng.random_range(0.0..size as f64),
                rng.random_range(50.0..300.0),
            )
        })
        .collect();
    let mut base = vec![200.0f32; size * size];
    for &(cx, cy, a) in &blobs {
        let (x0, x1) = (
            (cx - 12.0).max(0.0) as usize,
            ((cx + 12.0) as usize).min(size - 1),
        );
        let (y0, y1) = (
            (cy - 12.0).max(0.0) as usize,
            ((cy + 12.0) as usize).min(size - 1),
        );
        for y in y0..=y1 {
            for x in x0..=x1 {
                let d2 = (x as f64 - cx).powi(2) + (y as f64 - cy).powi(2);
                base[y * size + x] += (a * (-d2 / 18.0).exp()) as f32;
            }
        }
    }
    let mut tmp = vec![0.0f32; size * size];
    let distinct: Vec<Vec<f32>> = (0..64)
        .map(|_| {
            let (dx, dy) = (rng.random_range(-3.0..3.0), rng.random_range(-3.0..3.0));
            let mut f = vec![0.0f32; size * size];
            shift_image(&base, size, size, dx, dy, &mut tmp, &mut f);
            for v in f.iter_mut() {
                *v += rng.random_range(-40.0f32..40.0);
            }
            f
        })
        .collect();
    let mut w = FrameStoreWriter::create(path, size, size, StoreDtype::I16)?;
    for i in 0..frames {
        w.write_frames(&distinct[i % distinct.len()])?;
    }
    w.finish()?;
    Ok(())
}

/// Register a synthetic `size²` int16 movie of `frames` frames (rigid, and
/// rigid + piecewise-rigid when `nonrigid`), next to the FFT bound.
pub fn motion(size: usize, frames: usize, nonrigid: bool, dir: &Path) -> Result<MotionBench> {
    use crate::config::MotionParams;
    use crate::movie::store::{FrameStore, FrameStoreWriter};
    use crate::progress::NoProgress;
    std::fs::create_dir_all(dir).map_err(|e| Error::output(dir, e))?;
    let raw = dir.join("bench.raw");
    // The machine's speed drifts (shared host, background writeback): time the FFT
    // pair in blocks before and after the registrations and take the median.
    let mut fft_blocks = fft_pair_ms(size, 5);
    let mut fft_rates = fft_pairs_per_s_all_threads(size, 3);
    // As in `cortexmap run`, the corrected frames go over the raw store's file, so
    // each registration starts from a freshly written raw store.
    let run = |nr: bool| -> Result<(f64, f64, f64)> {
        let params = MotionParams {
            nonrigid: nr,
            ..MotionParams::default()
        };
        synthetic_store(&raw, size, frames)?;
        let input = FrameStore::open(&raw)?;
        let out = dir.join("bench.bin");
        let mut w = FrameStoreWriter::recycle(&raw, &out, size, size, input.dtype())?;
        let t = Instant::now();
        let m = crate::motion::register_session("bench", &input, &mut w, &params, &NoProgress)?;
        w.finish()?;
        let fps = frames as f64 / t.elapsed().as_secs_f64();
        drop(input);
        std::fs::remove_file(&out).map_err(|e| Error::output(&out, e))?;
        Ok((fps, frames as f64 / m.register_seconds, m.reference_seconds))
    };
    let (rigid_fps, rigid_register_fps, reference_seconds) = run(false)?;
    let nonrigid_run = nonrigid.then(|| run(true)).transpose()?;
    fft_blocks.extend(fft_pair_ms(size, 5));
    fft_rates.extend(fft_pairs_per_s_all_threads(size, 3));
    let fft_pair_ms = median(fft_blocks);
    let fft_pairs_per_s_all_threads = median(fft_rates);
    Ok(MotionBench {
        size,
        frames,
        fft_pair_ms,
        fft_pairs_per_s_all_threads,
        rigid_fps,
        rigid_register_fps,
        reference_seconds,
        nonrigid_fps: nonrigid_run.map(|r| r.1),
        nonrigid_reference_seconds: nonrigid_run.map(|r| r.2),
        threads: rayon::current_num_threads(),
        peak_rss_mb: peak_rss_mb(),
    })
}
