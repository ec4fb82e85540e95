//! The binary frame store: a movie written once as raw little-endian pixels, so
//! later stages read frames straight from a memory map instead of decoding TIFF
//! again.
//!
//! In: frames as `f32` slices, handed to a [`FrameStoreWriter`] any number of whole
//! frames at a time. Out: a file that a [`FrameStore`] maps into memory and reads
//! back as `f32`, a frame, a slice of frames, or batches of shape
//! `(frames, height, width)`, from as many threads as wanted at once.
//!
//! # File layout (format version 1)
//!
//! All integers are little-endian. The file is a 64-byte header followed by the
//! frames:
//!
//! | bytes   | type     | content                                               |
//! |---------|----------|-------------------------------------------------------|
//! | 0..8    | 8 bytes  | magic, the ASCII bytes `CMXFRAME`                     |
//! | 8..12   | `u32`    | format version, `1`                                   |
//! | 12..16  | `u32`    | pixel type: `1` = int16, `2` = float32 (IEEE 754)     |
//! | 16..20  | `u32`    | frame height in pixels (rows), at least 1             |
//! | 20..24  | `u32`    | frame width in pixels (columns), at least 1           |
//! | 24..32  | `u64`    | number of frames `n`                                  |
//! | 32..64  | 32 bytes | zero padding (reserved)                               |
//! | 64..    | pixels   | `n` frames, each `height × width` pixels              |
//!
//! Frames follow each other with no gaps, frame 0 first; within a frame pixels are
//! row-major (all of row 0, then row 1, ...); each pixel is a little-endian `i16`
//! (2 bytes) or `f32` (4 bytes) according to the pixel type. The file's length is
//! exactly `64 + n · height · width · bytes_per_pixel`: nothing follows the last
//! frame. Frame `i` therefore starts at byte `64 + i · height · width ·
//! bytes_per_pixel`, which keeps every frame aligned to its pixel size.
//!
//! # Conversions
//!
//! An int16 store rounds each value to the nearest integer, halves away from zero
//! (`2.5 → 3`, `-2.5 → -3`), and clamps it to `-32768..=32767`; the writer counts
//! the values it clamped ([`WriteStats::clamped_values`]). A float32 store keeps
//! values bit for bit. Either kind refuses NaN and ±infinity. Reading converts
//! back to `f32`, exactly (every `i16` is an `f32`).
//!
//! # Publication and safety
//!
//! The writer fills a hidden temporary beside the destination
//! ([`temp_path_for`]) with the header's frame count left at 0, patches the count in
//! [`FrameStoreWriter::finish`], syncs, and renames the temporary over the
//! destination, so a store is either complete or absent; a writer dropped before
//! `finish` removes its temporary. cortexmap never modifies a published store in
//! place (rewriting one publishes a new file under the same name), and reading
//! through a memory map relies on that: an open [`FrameStore`] keeps seeing the file
//! it opened, while another program truncating a mapped store would make the
//! reader fault. The one exception is [`FrameStoreWriter::recycle`]: the motion
//! stage first renames a session's raw store out of its name, then writes the
//! corrected frames over it, each frame only after its raw frame was read
//! ([`FrameStoreWriter::write_indexed`] writes frames by index from many
//! threads). Stores come only from cortexmap, so values read back are not
//! checked for NaN again, and the header's padding is ignored when reading.
//!
//! # Speed
//!
//! Reading converts straight out of the map, one pass, in loops the compiler
//! vectorises. [`FrameStore::read_frames_into`] with a reused buffer is the fast
//! path; [`FrameStore::batches`] allocates a new array per batch, and memory the
//! process has not touched before costs page faults (large batches, tens of MB,
//! are slower per frame than a few MB).
//!
//! Suite2p keeps a similar headerless int16 binary of registered frames; this format
//! adds a header so a file describes itself and a truncated one is detected.

use crate::error::{Error, Result};
use crate::io::atomic::temp_path_for;
use memmap2::Mmap;
use ndarray::Array3;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The magic bytes that open every frame store.
pub const MAGIC: [u8; 8] = *b"CMXFRAME";
/// The format version this module writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes before the first frame.
pub const HEADER_LEN: usize = 64;

/// Byte offset of the frame count in the header (patched by `finish`).
const N_FRAMES_OFFSET: u64 = 24;
/// Values converted per block when writing (bounds the writer's scratch memory).
const WRITE_BLOCK: usize = 1 << 16;

/// How pixels are stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreDtype {
    /// Little-endian `i16`, rounded and clamped from `f32` (half the size).
    I16,
    /// Little-endian IEEE 754 `f32`, kept exactly.
    F32,
}

impl StoreDtype {
    /// Bytes per pixel.
    pub fn bytes(self) -> usize {
        match self {
            StoreDtype::I16 => 2,
            StoreDtype::F32 => 4,
        }
    }

    /// The pixel type's name, as messages print it: `int16` or `float32`.
    pub fn name(self) -> &'static str {
        match self {
            StoreDtype::I16 => "int16",
            StoreDtype::F32 => "float32",
        }
    }

    /// The header's code for this pixel type.
    fn code(self) -> u32 {
        match self {
            StoreDtype::I16 => 1,
            StoreDtype::F32 => 2,
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(StoreDtype::I16),
            2 => Some(StoreDtype::F32),
            _ => None,
        }
    }
}

/// What one [`FrameStoreWriter::write_frames`] call wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Frames written.
    pub frames: usize,
    /// Values outside `-32768..=32767` after rounding, stored as the nearest bound
    /// (always 0 for a float32 store).
    pub clamped_values: u64,
}

impl std::ops::AddAssign for WriteStats {
    fn add_assign(&mut self, other: WriteStats) {
        self.frames += other.frames;
        self.clamped_values += other.clamped_values;
    }
}

/// The 64-byte header for a store of `n_frames` frames.
fn encode_header(dtype: StoreDtype, height: u32, width: u32, n_frames: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&dtype.code().to_le_bytes());
    h[16..20].copy_from_slice(&height.to_le_bytes());
    h[20..24].copy_from_slice(&width.to_le_bytes());
    h[24..32].copy_from_slice(&n_frames.to_le_bytes());
    h
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

// ----- conversions (the hot loops) -----

/// `1.5 · 2^23`: adding it to an `f32` of magnitude below `2^22` rounds the value to
/// an integer (ties to even), which then sits in the sum's low mantissa bits.
const ROUNDING_MAGIC: f32 = 12_582_912.0;

/// Round half away from zero and clamp to `i16`, writing little-endian bytes to
/// `dst` (two per value); returns how many values were clamped. Values must be
/// finite (a NaN gives an unspecified value, never undefined behaviour), and at most
/// `u32::MAX` of them.
///
/// After clamping to `[-32769, 32768]`, `x + 1.5·2^23` is `x` rounded to the
/// nearest integer, ties to even, in the low bits of its representation; a tie that
/// went toward zero (`x - even == ±0.5` with the sign of `x`) then moves one step
/// away from zero. Every step is exact, so this equals `f32::round` for every
/// finite `f32` (the ignored test `rounding_matches_f32_round_exhaustively` checks
/// all 4 billion). Unlike `f32::round` (a libm call on baseline x86-64) or a
/// saturating `as i32` (scalar code), it is plain arithmetic and bit operations,
/// which the compiler vectorises.
fn f32_to_i16_le(src: &[f32], dst: &mut [u8]) -> u32 {
    f32_to_i16_le_checked(src, dst).0
}

/// [`f32_to_i16_le`], also saying whether every value was finite (checked in the
/// same pass, so a caller need not scan the values first).
fn f32_to_i16_le_checked(src: &[f32], dst: &mut [u8]) -> (u32, bool) {
    crate::simd::wide(|| {
        debug_assert_eq!(dst.len(), src.len() * 2);
        let magic_bits = ROUNDING_MAGIC.to_bits() as i32;
        let mut clamped = 0u32;
        let mut finite = true;
        for (v, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
            finite &= v.is_finite();
            let x = v.clamp(-32769.0, 32768.0);
            let y = x + ROUNDING_MAGIC;
            let even = y.to_bits() as i32 - magic_bits;
            let diff = x - (y - ROUNDING_MAGIC);
            let up = (diff == 0.5) & (x > 0.0);
            let down = (diff == -0.5) & (x < 0.0);
            let rounded = even + i32::from(up) - i32::from(down);
            let c = rounded.clamp(i32::from(i16::MIN), i32::from(i16::MAX));
            clamped += u32::from(c != rounded);
            d.copy_from_slice(&(c as i16).to_le_bytes());
        }
        (clamped, finite)
    })
}

fn f32_to_f32_le(src: &[f32], dst: &mut [u8]) {
    debug_assert_eq!(dst.len(), src.len() * 4);
    for (v, d) in src.iter().zip(dst.chunks_exact_mut(4)) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

fn i16_le_to_f32(src: &[u8], dst: &mut [f32]) {
    crate::simd::wide(|| {
        debug_assert_eq!(src.len(), dst.len() * 2);
        for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
            *d = f32::from(i16::from_le_bytes([s[0], s[1]]));
        }
    })
}

fn f32_le_to_f32(src: &[u8], dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len() * 4);
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    }
}

/// The index of the first NaN or infinite value, if any.
fn first_non_finite(values: &[f32]) -> Option<usize> {
    // A branch-free scan per block (vectorised), then a search only in a bad block.
    const BLOCK: usize = 4096;
    for (b, block) in values.chunks(BLOCK).enumerate() {
        let all_finite = block.iter().fold(true, |ok, v| ok & v.is_finite());
        if !all_finite {
            let i = block.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Some(b * BLOCK + i);
        }
    }
    None
}

/// Converts frames to a store's on-disk values, apart from its writer: workers
/// encode frames while they are still in cache and write them by index
/// ([`FrameStoreWriter::write_indexed`]).
#[derive(Debug, Clone)]
pub struct FrameEncoder {
    /// The store's destination, for messages.
    dest: PathBuf,
    height: usize,
    width: usize,
    dtype: StoreDtype,
}

impl FrameEncoder {
    /// Pixels per frame.
    pub fn frame_len(&self) -> usize {
        self.height * self.width
    }

    /// Bytes per encoded frame.
    pub fn frame_bytes(&self) -> usize {
        self.frame_len() * self.dtype.bytes()
    }

    /// Encode `values`, which start `offset` pixels into frame `frame` and lie
    /// within it (a row, say), into `out`; returns how many were clamped.
    /// Non-finite values are internal errors naming the frame, row and column.
    pub fn encode_at(
        &self,
        frame: usize,
        offset: usize,
        values: &[f32],
        out: &mut [u8],
    ) -> Result<u64> {
        if offset + values.len() > self.frame_len()
            || out.len() != values.len() * self.dtype.bytes()
        {
            return Err(Error::internal(format!(
                "frame store {}: {} values at pixel {offset} ({} bytes of room) do not fit a \
                 {}x{} frame",
                self.dest.display(),
                values.len(),
                out.len(),
                self.height,
                self.width
            )));
        }
        // Convert first and look for the bad value only when there is one: the
        // int16 conversion checks finiteness in its own pass.
        let (clamped, finite) = match self.dtype {
            StoreDtype::I16 => {
                let (c, finite) = f32_to_i16_le_checked(values, out);
                (u64::from(c), finite)
            }
            StoreDtype::F32 => {
                f32_to_f32_le(values, out);
                (0, first_non_finite(values).is_none())
            }
        };
        if finite {
            return Ok(clamped);
        }
        match first_non_finite(values) {
            Some(i) => Err(self.non_finite(frame, offset + i, values[i])),
            None => Ok(clamped),
        }
    }

    /// Refuse a partial frame or a non-finite value, naming where it is.
    fn check(&self, first: usize, frames: &[f32]) -> Result<()> {
        let frame_len = self.frame_len();
        if !frames.len().is_multiple_of(frame_len) {
            return Err(Error::internal(format!(
                "frame store {}: {} values are not a whole number of {}x{} frames",
                self.dest.display(),
                frames.len(),
                self.height,
                self.width
            )));
        }
        match first_non_finite(frames) {
            Some(i) => Err(self.non_finite(first + i / frame_len, i % frame_len, frames[i])),
            None => Ok(()),
        }
    }

    /// The error for a non-finite `value` at `pixel` of frame `frame`.
    fn non_finite(&self, frame: usize, pixel: usize, value: f32) -> Error {
        Error::internal(format!(
            "frame store {}: frame {frame} (row {}, column {}) is {value}, not a finite value",
            self.dest.display(),
            pixel / self.width,
            pixel % self.width,
        ))
    }

    /// Convert checked values; returns how many were clamped.
    fn convert(&self, values: &[f32], out: &mut [u8]) -> u64 {
        match self.dtype {
            StoreDtype::I16 => u64::from(f32_to_i16_le(values, out)),
            StoreDtype::F32 => {
                f32_to_f32_le(values, out);
                0
            }
        }
    }
}

/// The frames of one [`FrameStoreWriter::write_indexed`] call, written by index
/// from any thread.
#[derive(Debug)]
pub struct IndexedFrames<'a> {
    file: &'a File,
    dest: &'a Path,
    /// Where the call's first frame starts in the file.
    first_byte: u64,
    frame_bytes: usize,
    written: Vec<std::sync::atomic::AtomicBool>,
    failed: std::sync::atomic::AtomicBool,
}

impl IndexedFrames<'_> {
    /// Write the call's frame `index` (0 = the first of the call) from `bytes`, one
    /// encoded frame. An index out of range, written before, or bytes that are not
    /// one frame are internal errors; an I/O failure is an output error.
    pub fn write(&self, index: usize, bytes: &[u8]) -> Result<()> {
        use std::sync::atomic::Ordering;
        if bytes.len() != self.frame_bytes {
            return Err(Error::internal(format!(
                "frame store {}: {} bytes are not one {}-byte frame",
                self.dest.display(),
                bytes.len(),
                self.frame_bytes
            )));
        }
        let Some(flag) = self.written.get(index) else {
            return Err(Error::internal(format!(
                "frame store {}: frame {index} is past the {} frames being written",
                self.dest.display(),
                self.written.len()
            )));
        };
        if flag.swap(true, Ordering::SeqCst) {
            return Err(Error::internal(format!(
                "frame store {}: frame {index} written twice",
                self.dest.display()
            )));
        }
        let at = self.first_byte + (index * self.frame_bytes) as u64;
        write_all_at(self.file, bytes, at).map_err(|e| {
            self.failed.store(true, Ordering::SeqCst);
            Error::output(self.dest, e)
        })
    }
}

#[cfg(unix)]
fn write_all_at(file: &File, bytes: &[u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, at)
}

#[cfg(windows)]
fn write_all_at(file: &File, mut bytes: &[u8], mut at: u64) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, bytes, at)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
        at += n as u64;
    }
    Ok(())
}

// ----- writing -----

/// Writes a frame store; see the [module documentation](self) for the layout.
///
/// Nothing appears at the destination until [`finish`](Self::finish) succeeds;
/// dropping the writer before that removes its temporary.
#[derive(Debug)]
pub struct FrameStoreWriter {
    dest: PathBuf,
    tmp: PathBuf,
    /// `None` once `finish` has taken it.
    writer: Option<BufWriter<File>>,
    height: usize,
    width: usize,
    dtype: StoreDtype,
    frames_written: usize,
    /// Set after a failed write: the file's content is then unknown.
    failed: bool,
    /// Set once the temporary has been renamed over the destination.
    published: bool,
    /// Bytes of one block of converted values.
    scratch: Vec<u8>,
}

impl FrameStoreWriter {
    /// Start a store of `height × width` frames at `path` (its folder must exist).
    ///
    /// An empty frame shape, or one that does not fit the header's `u32` fields, is
    /// an internal error (the shape comes from the movie, never from the user).
    pub fn create(path: &Path, height: usize, width: usize, dtype: StoreDtype) -> Result<Self> {
        Self::start(path, height, width, dtype, |tmp| File::create(tmp))
    }

    /// Start a store at `path` in the file of the store at `source`, which is
    /// renamed to the destination's temporary at once (so it no longer exists under
    /// its own name) and overwritten from its first frame on; the file is cut to
    /// the frames written when the writer finishes.
    ///
    /// The motion stage writes each session's corrected frames over its raw store
    /// this way: the raw store is deleted afterwards anyway, the run needs half the
    /// disk space, and the corrected frames go into page-cache pages the raw frames
    /// already occupy instead of fresh ones. The caller must read every frame of
    /// `source` it needs (through a [`FrameStore`] opened before this call) before
    /// writing the frame at the same index; a writer dropped before `finish`
    /// removes the file, raw frames included.
    pub fn recycle(
        source: &Path,
        path: &Path,
        height: usize,
        width: usize,
        dtype: StoreDtype,
    ) -> Result<Self> {
        Self::start(path, height, width, dtype, |tmp| {
            std::fs::rename(source, tmp).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot take over {} as {}: {e}",
                        source.display(),
                        tmp.display()
                    ),
                )
            })?;
            std::fs::OpenOptions::new().write(true).open(tmp)
        })
    }

    fn start(
        path: &Path,
        height: usize,
        width: usize,
        dtype: StoreDtype,
        open: impl FnOnce(&Path) -> std::io::Result<File>,
    ) -> Result<Self> {
        let shape_error = |what: &str| {
            Error::internal(format!(
                "frame store {}: cannot store frames of {height}x{width} (height x width) \
                 pixels: {what}",
                path.display()
            ))
        };
        let (h32, w32) = match (u32::try_from(height), u32::try_from(width)) {
            (Ok(0), _) | (_, Ok(0)) => return Err(shape_error("no pixels")),
            (Ok(h), Ok(w)) => (h, w),
            _ => return Err(shape_error("a side exceeds the header's u32")),
        };
        let frame_bytes = height
            .checked_mul(width)
            .and_then(|n| n.checked_mul(dtype.bytes()));
        if frame_bytes.is_none() {
            return Err(shape_error("a frame exceeds the address space"));
        }
        let dest = path.to_path_buf();
        let tmp = temp_path_for(&dest);
        let file = open(&tmp).map_err(|e| Error::output(&dest, e))?;
        let mut writer = FrameStoreWriter {
            dest,
            tmp,
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
            height,
            width,
            dtype,
            frames_written: 0,
            failed: false,
            published: false,
            scratch: Vec::new(),
        };
        // The frame count stays 0 until `finish` patches it.
        let header = encode_header(dtype, h32, w32, 0);
        writer.write_bytes_at_end(&header)?;
        Ok(writer)
    }

    /// Append whole frames: `frames.len()` must be a multiple of `height × width`.
    ///
    /// Non-finite values, or a length that is not a whole number of frames, are
    /// internal errors, and then nothing of this call is written. An I/O failure is
    /// an output error, after which the writer refuses further writes.
    pub fn write_frames(&mut self, frames: &[f32]) -> Result<WriteStats> {
        self.check_writable()?;
        let encoder = self.encoder();
        encoder.check(self.frames_written, frames)?;
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut clamped = 0u64;
        let mut result = Ok(());
        for block in frames.chunks(WRITE_BLOCK) {
            scratch.resize(block.len() * self.dtype.bytes(), 0);
            clamped += encoder.convert(block, &mut scratch);
            result = self.write_bytes_at_end(&scratch);
            if result.is_err() {
                break;
            }
        }
        self.scratch = scratch;
        result?;
        let n = frames.len() / encoder.frame_len();
        self.frames_written += n;
        Ok(WriteStats {
            frames: n,
            clamped_values: clamped,
        })
    }

    /// The conversion this store's frames go through, to run on other threads
    /// before [`write_indexed`](Self::write_indexed).
    pub fn encoder(&self) -> FrameEncoder {
        FrameEncoder {
            dest: self.dest.clone(),
            height: self.height,
            width: self.width,
            dtype: self.dtype,
        }
    }

    /// Write the next `n` frames by index, from many threads at once: `fill`
    /// gets an [`IndexedFrames`] whose [`write`](IndexedFrames::write) puts one
    /// frame, encoded by this writer's [`encoder`](Self::encoder), at its place.
    /// Every one of the `n` frames must be written exactly once before `fill`
    /// returns, or this is an internal error; an I/O failure is an output error.
    /// After any error (`fill`'s own included) the writer refuses further writes.
    ///
    /// Workers that encode a frame while it is in cache and write it at once
    /// save the round trip through a batch buffer and a writer thread.
    pub fn write_indexed<R>(
        &mut self,
        n: usize,
        fill: impl FnOnce(&IndexedFrames) -> Result<R>,
    ) -> Result<R> {
        self.check_writable()?;
        let frame_bytes = self.encoder().frame_bytes();
        let first_byte = (HEADER_LEN + self.frames_written * frame_bytes) as u64;
        let dest = self.dest.clone();
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::internal("frame store writer used after finish"))?;
        // Positional writes bypass the buffer: empty it first.
        if let Err(e) = writer.flush() {
            self.failed = true;
            return Err(Error::output(&dest, e));
        }
        let frames = IndexedFrames {
            file: writer.get_ref(),
            dest: &dest,
            first_byte,
            frame_bytes,
            written: (0..n)
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            failed: std::sync::atomic::AtomicBool::new(false),
        };
        let result = fill(&frames);
        let failed = frames.failed.load(std::sync::atomic::Ordering::SeqCst);
        let missing = frames
            .written
            .iter()
            .position(|w| !w.load(std::sync::atomic::Ordering::SeqCst));
        drop(frames);
        // After any failure, frames past the last complete one may hold anything.
        if failed || result.is_err() || missing.is_some() {
            self.failed = true;
        }
        let value = result?;
        if failed {
            // `fill` went on after a failed write.
            return Err(Error::internal(format!(
                "frame store {}: a frame written by index failed, and the call went on",
                dest.display()
            )));
        }
        if let Some(i) = missing {
            return Err(Error::internal(format!(
                "frame store {}: frame {} of {n} written by index was never written",
                dest.display(),
                self.frames_written + i
            )));
        }
        self.frames_written += n;
        // Later appends go after the frames just written.
        let end = first_byte + (n * frame_bytes) as u64;
        if let Err(e) = writer.seek(SeekFrom::Start(end)) {
            self.failed = true;
            return Err(Error::output(&dest, e));
        }
        Ok(value)
    }

    fn check_writable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::internal(format!(
                "frame store {}: written to after a failed write",
                self.dest.display()
            )));
        }
        Ok(())
    }

    /// Frames written so far.
    pub fn frames_written(&self) -> usize {
        self.frames_written
    }

    /// Patch the frame count into the header, sync, and rename the temporary over
    /// the destination. Returns the destination.
    pub fn finish(mut self) -> Result<PathBuf> {
        if self.failed {
            return Err(Error::internal(format!(
                "frame store {}: finished after a failed write",
                self.dest.display()
            )));
        }
        let writer = self
            .writer
            .take()
            .ok_or_else(|| Error::internal("frame store writer finished twice"))?;
        let dest = self.dest.clone();
        let mut file = writer
            .into_inner()
            .map_err(|e| Error::output(&dest, e.error()))?;
        let n = self.frames_written as u64;
        // A recycled file may be longer than the frames written over it.
        let len = HEADER_LEN as u64 + n * (self.height * self.width * self.dtype.bytes()) as u64;
        file.set_len(len)
            .and_then(|_| file.seek(SeekFrom::Start(N_FRAMES_OFFSET)))
            .and_then(|_| file.write_all(&n.to_le_bytes()))
            .and_then(|_| file.sync_all())
            .map_err(|e| Error::output(&dest, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &dest).map_err(|e| Error::output(&dest, e))?;
        self.published = true;
        Ok(dest)
    }

    fn write_bytes_at_end(&mut self, bytes: &[u8]) -> Result<()> {
        let dest = &self.dest;
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::internal("frame store writer used after finish"))?;
        writer.write_all(bytes).map_err(|e| {
            self.failed = true;
            Error::output(dest, e)
        })
    }
}

impl Drop for FrameStoreWriter {
    fn drop(&mut self) {
        if !self.published {
            // Close the file first (dropping a BufWriter flushes it; errors ignored).
            drop(self.writer.take());
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

// ----- reading -----

/// A frame store opened for reading, memory-mapped.
///
/// Reads take `&self` and copy out of the shared map, so one store serves many
/// threads at once (it is `Send + Sync`).
#[derive(Debug)]
pub struct FrameStore {
    path: PathBuf,
    map: Mmap,
    height: usize,
    width: usize,
    dtype: StoreDtype,
    n_frames: usize,
}

impl FrameStore {
    /// Open and validate the store at `path`: magic, version, pixel type, frame
    /// shape, and a file length of exactly `64 + n · height · width · bytes`. Every
    /// problem is an input error naming the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut file =
            File::open(path).map_err(|e| Error::input(path, format!("cannot open: {e}")))?;
        let len = file
            .metadata()
            .map_err(|e| Error::input(path, format!("cannot read: {e}")))?
            .len();
        if len < HEADER_LEN as u64 {
            let what = if len == 0 {
                "empty file".to_string()
            } else {
                format!("{len} bytes")
            };
            return Err(Error::input(
                path,
                format!(
                    "not a frame store: truncated: a header is {HEADER_LEN} bytes, found {what}"
                ),
            ));
        }
        let mut header = [0u8; HEADER_LEN];
        file.read_exact(&mut header)
            .map_err(|e| Error::input(path, format!("cannot read the header: {e}")))?;
        let (dtype, height, width, n_frames) = parse_header(path, &header)?;
        // Both the frame size and the whole file must fit in memory addresses (even
        // when there are no frames, since reads compute with the frame size).
        let expected = u64::from(height)
            .checked_mul(u64::from(width))
            .and_then(|px| px.checked_mul(dtype.bytes() as u64))
            .filter(|&b| usize::try_from(b).is_ok())
            .and_then(|frame_bytes| n_frames.checked_mul(frame_bytes))
            .and_then(|b| b.checked_add(HEADER_LEN as u64))
            .filter(|&b| usize::try_from(b).is_ok())
            .ok_or_else(|| {
                Error::input(
                    path,
                    format!(
                        "corrupt header: {n_frames} frames of {height}x{width} {} pixels \
                         are too large to address",
                        dtype.name()
                    ),
                )
            })?;
        if len != expected {
            let problem = if len < expected {
                "truncated"
            } else {
                "longer than its header says"
            };
            return Err(Error::input(
                path,
                format!(
                    "{problem}: expected {expected} bytes, found {len} (the header \
                     announces {n_frames} frames of {height}x{width} {} pixels)",
                    dtype.name()
                ),
            ));
        }
        // SAFETY: the map is read-only and stores are never modified in place (they
        // are published by renaming a new file over the old one; see the module
        // documentation), so the mapped bytes do not change under us; the one
        // writer that recycles a mapped file (`FrameStoreWriter::recycle`, in the
        // motion stage) overwrites only frames its reader has already copied out. The length is
        // checked against the header again below, on the map itself.
        let map = unsafe { Mmap::map(&file) }
            .map_err(|e| Error::input(path, format!("cannot map into memory: {e}")))?;
        if map.len() as u64 != expected || map[..HEADER_LEN] != header {
            return Err(Error::input(path, "changed while being opened"));
        }
        Ok(FrameStore {
            path: path.to_path_buf(),
            map,
            height: height as usize,
            width: width as usize,
            dtype,
            n_frames: n_frames as usize,
        })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Frames in the store.
    pub fn n_frames(&self) -> usize {
        self.n_frames
    }

    /// Frame height (rows).
    pub fn height(&self) -> usize {
        self.height
    }

    /// Frame width (columns).
    pub fn width(&self) -> usize {
        self.width
    }

    /// Pixel type on disk.
    pub fn dtype(&self) -> StoreDtype {
        self.dtype
    }

    /// Pixels per frame (`height × width`).
    pub fn frame_len(&self) -> usize {
        self.height * self.width
    }

    /// Convert frames `start..` into `out`, as many as fit whole and remain:
    /// `min(out.len() / frame_len, n_frames - start)`. Returns that count; values of
    /// `out` past those frames are left alone. A `start` past the end is an internal
    /// error (`start == n_frames` reads nothing).
    pub fn read_frames_into(&self, start: usize, out: &mut [f32]) -> Result<usize> {
        if start > self.n_frames {
            return Err(Error::internal(format!(
                "frame store {}: reading from frame {start}, but it holds {} frames",
                self.path.display(),
                self.n_frames
            )));
        }
        let frame_len = self.frame_len();
        let n = (out.len() / frame_len).min(self.n_frames - start);
        let frame_bytes = frame_len * self.dtype.bytes();
        let from = HEADER_LEN + start * frame_bytes;
        let src = &self.map[from..from + n * frame_bytes];
        let dst = &mut out[..n * frame_len];
        match self.dtype {
            StoreDtype::I16 => i16_le_to_f32(src, dst),
            StoreDtype::F32 => f32_le_to_f32(src, dst),
        }
        self.release(from, n * frame_bytes);
        Ok(n)
    }

    /// Drop the pages just copied out of this process's resident set, so that
    /// streaming through a long movie keeps memory flat (file-backed mapped pages
    /// count as resident until the kernel reclaims them).
    fn release(&self, offset: usize, len: usize) {
        if len == 0 {
            return;
        }
        // SAFETY: the map is a read-only, shared mapping of a file whose mapped
        // bytes do not change while this reader may still read them (see `open`);
        // MADV_DONTNEED only discards the page-table entries,
        // and any later access (from any thread) faults the unchanged file pages in
        // again. No reference into the map outlives the copy above.
        #[cfg(unix)]
        let _ = unsafe {
            self.map
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
        };
    }

    /// Frame `i` as `height × width` values, row-major. An index past the end is an
    /// internal error.
    pub fn frame(&self, i: usize) -> Result<Vec<f32>> {
        if i >= self.n_frames {
            return Err(Error::internal(format!(
                "frame store {}: frame {i} requested, but it holds {} frames",
                self.path.display(),
                self.n_frames
            )));
        }
        let mut out = vec![0f32; self.frame_len()];
        self.read_frames_into(i, &mut out)?;
        Ok(out)
    }

    /// All frames in order, `batch` at a time (the last batch may be shorter), each
    /// with the index of its first frame and shape `(frames, height, width)`. A
    /// `batch` of 0 yields a single usage error.
    ///
    /// Every batch is a new allocation; a loop that can reuse one buffer reads
    /// faster with [`read_frames_into`](Self::read_frames_into).
    pub fn batches(&self, batch: usize) -> impl Iterator<Item = Result<(usize, Array3<f32>)>> + '_ {
        let mut next = 0usize;
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            if batch == 0 {
                done = true;
                return Some(Err(Error::usage("the batch size must be at least 1 frame")));
            }
            if next >= self.n_frames {
                done = true;
                return None;
            }
            let first = next;
            let n = batch.min(self.n_frames - first);
            let mut data = vec![0f32; n * self.frame_len()];
            let item = self.read_frames_into(first, &mut data).and_then(|_| {
                Array3::from_shape_vec((n, self.height, self.width), data)
                    .map_err(|e| Error::internal(format!("frame store batch shape: {e}")))
            });
            next += n;
            done = item.is_err();
            Some(item.map(|frames| (first, frames)))
        })
    }
}

/// Check the header's fields: pixel type, height, width, frame count.
fn parse_header(path: &Path, h: &[u8; HEADER_LEN]) -> Result<(StoreDtype, u32, u32, u64)> {
    if h[0..8] != MAGIC {
        return Err(Error::input(
            path,
            format!(
                "not a frame store: the file starts with {:?}, not the magic \"CMXFRAME\"",
                String::from_utf8_lossy(&h[0..8])
            ),
        ));
    }
    let version = u32_at(h, 8);
    if version != FORMAT_VERSION {
        return Err(Error::input(
            path,
            format!(
                "frame store format version {version} is not supported (this cortexmap reads version {FORMAT_VERSION})"
            ),
        ));
    }
    let code = u32_at(h, 12);
    let dtype = StoreDtype::from_code(code).ok_or_else(|| {
        Error::input(
            path,
            format!("unknown pixel type code {code} (1 = int16, 2 = float32)"),
        )
    })?;
    let (height, width) = (u32_at(h, 16), u32_at(h, 20));
    if height == 0 || width == 0 {
        return Err(Error::input(
            path,
            format!("corrupt header: frames of {height}x{width} (height x width) pixels"),
        ));
    }
    Ok((dtype, height, width, u64_at(h, 24)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::assert_input_error;
    use std::time::Instant;

    fn assert_internal<T: std::fmt::Debug>(r: Result<T>, needle: &str) {
        match r {
            Err(Error::Internal(msg)) => assert!(
                msg.contains(needle),
                "message {msg:?} should mention {needle:?}"
            ),
            other => panic!("expected an internal error mentioning {needle:?}, got {other:?}"),
        }
    }

    /// Distinct integer-valued pixels covering the whole int16 range.
    fn movie(n: usize, h: usize, w: usize) -> Vec<f32> {
        (0..n * h * w)
            .map(|i| ((i as i64 * 7919) % 65536 - 32768) as f32)
            .collect()
    }

    fn write_store(
        path: &Path,
        data: &[f32],
        h: usize,
        w: usize,
        dtype: StoreDtype,
        pieces: &[usize],
    ) {
        let mut wr = FrameStoreWriter::create(path, h, w, dtype).unwrap();
        let mut at = 0;
        let mut k = 0;
        while at < data.len() {
            let frames = pieces[k % pieces.len()];
            k += 1;
            let end = (at + frames * h * w).min(data.len());
            let stats = wr.write_frames(&data[at..end]).unwrap();
            assert_eq!(stats.frames, (end - at) / (h * w));
            assert_eq!(stats.clamped_values, 0);
            at = end;
        }
        assert_eq!(wr.frames_written(), data.len() / (h * w));
        assert_eq!(wr.finish().unwrap(), path);
    }

    fn check_round_trip(dtype: StoreDtype, data: Vec<f32>) {
        let (n, h, w) = (13, 5, 7);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("movie.cmx");
        write_store(&path, &data, h, w, dtype, &[1, 3, 9]);
        let store = FrameStore::open(&path).unwrap();
        assert_eq!(
            (
                store.n_frames(),
                store.height(),
                store.width(),
                store.dtype()
            ),
            (n, h, w, dtype)
        );
        assert_eq!(store.frame_len(), h * w);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len() as usize,
            HEADER_LEN + n * h * w * dtype.bytes()
        );
        for batch in [1, 2, 4, 5, 13, 20] {
            let mut seen = Vec::new();
            let mut expect_first = 0;
            for item in store.batches(batch) {
                let (first, frames) = item.unwrap();
                assert_eq!(first, expect_first);
                let k = frames.dim().0;
                assert_eq!(frames.dim(), (batch.min(n - first), h, w));
                seen.extend(frames.iter().copied());
                expect_first += k;
            }
            assert_eq!(expect_first, n);
            let same = seen
                .iter()
                .zip(&data)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same && seen.len() == data.len(), "batch {batch}");
        }
        for i in [0, 6, 12] {
            assert_eq!(store.frame(i).unwrap(), data[i * h * w..(i + 1) * h * w]);
        }
        // Partial room: 2 whole frames fit, the tail is left alone.
        let mut out = vec![-1.0f32; 2 * h * w + 3];
        assert_eq!(store.read_frames_into(11, &mut out).unwrap(), 2);
        assert_eq!(out[..2 * h * w], data[11 * h * w..]);
        assert!(out[2 * h * w..].iter().all(|&v| v == -1.0));
        assert_eq!(store.read_frames_into(12, &mut out).unwrap(), 1);
        assert_eq!(store.read_frames_into(13, &mut out).unwrap(), 0);
        assert_eq!(store.read_frames_into(0, &mut out[..h * w - 1]).unwrap(), 0);
        assert_internal(store.read_frames_into(14, &mut out), "holds 13 frames");
        assert_internal(store.frame(13), "frame 13 requested");
    }

    #[test]
    fn round_trip_int16() {
        let mut data = movie(13, 5, 7);
        data[0] = -32768.0;
        data[1] = 32767.0;
        data[2] = 0.0;
        check_round_trip(StoreDtype::I16, data);
    }

    #[test]
    fn round_trip_float32_is_bit_exact() {
        let mut data: Vec<f32> = movie(13, 5, 7)
            .iter()
            .enumerate()
            .map(|(i, v)| v * 1.37e-3 + (i as f32).sqrt() * 1e5)
            .collect();
        data[..6].copy_from_slice(&[-0.0, f32::MIN_POSITIVE, 1e-42, f32::MAX, f32::MIN, 0.1]);
        check_round_trip(StoreDtype::F32, data);
    }

    #[test]
    fn a_recycled_store_replaces_its_source_frame_by_frame() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dest) = (dir.path().join("s.raw"), dir.path().join("s.bin"));
        let (n, h, w) = (6, 3, 4);
        let data = movie(n, h, w);
        write_store(&src, &data, h, w, StoreDtype::I16, &[n]);
        let input = FrameStore::open(&src).unwrap();
        let mut out = FrameStoreWriter::recycle(&src, &dest, h, w, StoreDtype::I16).unwrap();
        assert!(!src.exists() && !dest.exists());
        // Read a frame, write a changed one over it, as the motion stage does.
        let mut frame = vec![0.0f32; h * w];
        for i in 0..n - 1 {
            input.read_frames_into(i, &mut frame).unwrap();
            frame.iter_mut().for_each(|v| *v = (*v * 0.5).round());
            out.write_frames(&frame).unwrap();
        }
        out.finish().unwrap();
        drop(input);
        // One frame fewer than the source: the file is cut to the frames written.
        let got = FrameStore::open(&dest).unwrap();
        assert_eq!(got.n_frames(), n - 1);
        for i in 0..n - 1 {
            let want: Vec<f32> = data[i * h * w..(i + 1) * h * w]
                .iter()
                .map(|v| (v * 0.5).round())
                .collect();
            assert_eq!(got.frame(i).unwrap(), want);
        }
        assert!(!src.exists());

        // Dropped before `finish`: nothing is left, the source included.
        write_store(&src, &data, h, w, StoreDtype::I16, &[n]);
        let other = dir.path().join("t.bin");
        drop(FrameStoreWriter::recycle(&src, &other, h, w, StoreDtype::I16).unwrap());
        assert!(!src.exists() && !other.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn frames_written_by_index_from_two_threads_land_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dest) = (dir.path().join("s.raw"), dir.path().join("s.bin"));
        let (n, h, w) = (7, 3, 4);
        let data = movie(n, h, w);
        write_store(&src, &data, h, w, StoreDtype::I16, &[n]);
        let input = FrameStore::open(&src).unwrap();
        let mut out = FrameStoreWriter::recycle(&src, &dest, h, w, StoreDtype::I16).unwrap();
        out.write_frames(&data[..h * w]).unwrap();
        let encoder = out.encoder();
        // Frames 1..6 by index, odd and even ones on two threads, each read just
        // before it is written over, as the motion stage does; frame 6 appended.
        let clamped = out
            .write_indexed(5, |store| {
                let worker = |parity: usize| -> Result<u64> {
                    let (mut frame, mut bytes) = (vec![0.0f32; h * w], vec![0u8; h * w * 2]);
                    let mut clamped = 0;
                    for k in (0..5).filter(|k| k % 2 == parity) {
                        input.read_frames_into(1 + k, &mut frame).unwrap();
                        frame.iter_mut().for_each(|v| *v = -*v * 1000.0);
                        for (y, row) in frame.chunks(w).enumerate() {
                            let at = &mut bytes[y * w * 2..(y + 1) * w * 2];
                            clamped += encoder.encode_at(1 + k, y * w, row, at)?;
                        }
                        store.write(k, &bytes)?;
                    }
                    Ok(clamped)
                };
                std::thread::scope(|s| {
                    let odd = s.spawn(|| worker(1));
                    Ok(worker(0)? + odd.join().unwrap()?)
                })
            })
            .unwrap();
        assert!(clamped > 0);
        assert_eq!(out.frames_written(), 6);
        out.write_frames(&data[6 * h * w..]).unwrap();
        out.finish().unwrap();
        drop(input);
        let got = FrameStore::open(&dest).unwrap();
        assert_eq!(got.n_frames(), n);
        assert_eq!(got.frame(0).unwrap(), data[..h * w]);
        for i in 1..6 {
            let want: Vec<f32> = data[i * h * w..(i + 1) * h * w]
                .iter()
                .map(|v| (-v * 1000.0).clamp(-32768.0, 32767.0))
                .collect();
            assert_eq!(got.frame(i).unwrap(), want, "frame {i}");
        }
        assert_eq!(got.frame(6).unwrap(), data[6 * h * w..]);
    }

    #[test]
    fn indexed_writes_refuse_gaps_repeats_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.cmx");
        let mut out = FrameStoreWriter::create(&path, 2, 3, StoreDtype::I16).unwrap();
        let encoder = out.encoder();
        let mut bytes = vec![0u8; encoder.frame_bytes()];
        let err = encoder.encode_at(4, 3, &[1.0, f32::NAN, 2.0], &mut bytes[6..]);
        assert_internal(err, "frame 4 (row 1, column 1)");
        assert_internal(
            encoder.encode_at(0, 4, &[1.0; 3], &mut bytes[6..]),
            "do not fit",
        );
        assert_internal(
            out.write_indexed(2, |store| {
                store.write(0, &bytes)?;
                store.write(0, &bytes)
            }),
            "frame 0 written twice",
        );
        // After a refused call the writer is unusable, and nothing is published.
        assert!(out.write_frames(&[0.0; 6]).is_err());
        drop(out);
        let mut out = FrameStoreWriter::create(&path, 2, 3, StoreDtype::I16).unwrap();
        assert_internal(
            out.write_indexed(2, |store| store.write(1, &bytes)),
            "frame 0 of 2 written by index was never written",
        );
        let mut out = FrameStoreWriter::create(&path, 2, 3, StoreDtype::I16).unwrap();
        assert_internal(
            out.write_indexed(1, |store| store.write(1, &bytes)),
            "past the 1 frames",
        );
        let mut out = FrameStoreWriter::create(&path, 2, 3, StoreDtype::I16).unwrap();
        assert_internal(
            out.write_indexed(1, |store| store.write(0, &bytes[1..])),
            "not one 12-byte frame",
        );
        drop(out);
        assert!(!path.exists());
    }

    #[test]
    fn header_layout_is_as_documented() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.cmx");
        let data: Vec<f32> = (0..6).map(|v| v as f32 - 2.0).collect();
        write_store(&path, &data, 1, 3, StoreDtype::I16, &[2]);
        let bytes = std::fs::read(&path).unwrap();
        let mut expect = Vec::new();
        expect.extend_from_slice(b"CMXFRAME");
        expect.extend_from_slice(&[1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0]);
        expect.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
        expect.extend_from_slice(&[0; 32]);
        for v in [-2i16, -1, 0, 1, 2, 3] {
            expect.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(bytes, expect);

        let path = dir.path().join("f.cmx");
        write_store(&path, &[1.5], 1, 1, StoreDtype::F32, &[1]);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 68);
        assert_eq!(u32_at(&bytes, 12), 2);
        assert_eq!(bytes[64..], 1.5f32.to_le_bytes());
    }

    #[test]
    fn rounding_half_away_from_zero_and_clamping_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.cmx");
        #[rustfmt::skip]
        let cases: [(f32, i16); 20] = [
            (0.5, 1), (-0.5, -1), (1.5, 2), (2.5, 3), (-2.5, -3), (0.499_999_97, 0),
            (-0.499_999_97, 0), (1.4999999, 1), (-0.0, 0), (1e-30, 0), (7.0, 7),
            (32767.4, 32767), (-32768.4, -32768), (-32768.5, -32768), (32767.5, 32767),
            (32768.0, 32767), (-32769.0, -32768), (1e9, 32767), (-3.4e38, -32768), (40000.6, 32767),
        ];
        // The largest f32 below one half.
        assert_eq!(0.499_999_97f32, f32::from_bits(0.5f32.to_bits() - 1));
        let values: Vec<f32> = cases.iter().map(|c| c.0).collect();
        let mut wr = FrameStoreWriter::create(&path, 2, 10, StoreDtype::I16).unwrap();
        let stats = wr.write_frames(&values).unwrap();
        // -32768.5 rounds to -32769 and 32767.5 to 32768: both clamped, like the
        // last five.
        assert_eq!(
            stats,
            WriteStats {
                frames: 1,
                clamped_values: 7
            }
        );
        wr.finish().unwrap();
        let got = FrameStore::open(&path).unwrap().frame(0).unwrap();
        for ((v, want), g) in cases.iter().zip(&got) {
            assert_eq!(*g, f32::from(*want), "{v} stored as {g}, expected {want}");
        }
        // A float32 store clamps nothing.
        let path = dir.path().join("f.cmx");
        let mut wr = FrameStoreWriter::create(&path, 2, 10, StoreDtype::F32).unwrap();
        assert_eq!(wr.write_frames(&values).unwrap().clamped_values, 0);
        let mut total = WriteStats::default();
        total += wr.write_frames(&values).unwrap();
        total += wr.write_frames(&values).unwrap();
        assert_eq!(
            total,
            WriteStats {
                frames: 2,
                clamped_values: 0
            }
        );
        wr.finish().unwrap();
    }

    #[test]
    fn rounding_matches_f32_round_on_a_sweep() {
        // Every 997th f32 bit pattern below 40000 in magnitude, plus neighbours of
        // halves near the int16 bounds.
        let mut values: Vec<f32> = (0..u32::MAX / 997)
            .map(|k| f32::from_bits(k * 997))
            .filter(|v| v.is_finite() && v.abs() < 40000.0)
            .collect();
        for base in [0.5f32, 1.5, 32766.5, 32767.5, -32767.5, -32768.5] {
            let mut v = base;
            for _ in 0..4 {
                v = f32::from_bits(v.to_bits() - 1);
            }
            for _ in 0..8 {
                values.push(v);
                values.push(-v);
                v = f32::from_bits(v.to_bits() + 1);
            }
        }
        check_rounding(&values);
    }

    fn check_rounding(values: &[f32]) {
        let mut bytes = vec![0u8; values.len() * 2];
        let clamped = u64::from(f32_to_i16_le(values, &mut bytes));
        let mut want_clamped = 0;
        for (v, b) in values.iter().zip(bytes.chunks_exact(2)) {
            let r = v.round();
            let want = r.clamp(-32768.0, 32767.0);
            want_clamped += u64::from(want != r);
            let got = i16::from_le_bytes([b[0], b[1]]);
            assert_eq!(f32::from(got), want, "{v:e} ({:#x})", v.to_bits());
        }
        assert_eq!(clamped, want_clamped);
    }

    /// Keeps the two slow ignored tests from running at once, so the throughput
    /// test measures one busy core, not two competing ones.
    static SLOW: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Every finite f32, against `f32::round` (about 40 s in release).
    #[test]
    #[ignore]
    fn rounding_matches_f32_round_exhaustively() {
        let _one_at_a_time = SLOW.lock().unwrap_or_else(|e| e.into_inner());
        let block = 1u64 << 24;
        let mut values = Vec::with_capacity(block as usize);
        for start in (0..1u64 << 32).step_by(block as usize) {
            values.clear();
            values.extend(
                (start..start + block)
                    .map(|b| f32::from_bits(b as u32))
                    .filter(|v| v.is_finite()),
            );
            check_rounding(&values);
        }
    }

    #[test]
    fn non_finite_values_and_partial_frames_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for dtype in [StoreDtype::I16, StoreDtype::F32] {
            let path = dir.path().join(format!("{}.cmx", dtype.name()));
            let mut wr = FrameStoreWriter::create(&path, 2, 3, dtype).unwrap();
            wr.write_frames(&[1.0; 6]).unwrap();
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut frames = vec![2.0f32; 12];
                frames[10] = bad;
                assert_internal(wr.write_frames(&frames), "frame 2 (row 1, column 1)");
                assert_eq!(wr.frames_written(), 1);
            }
            assert_internal(
                wr.write_frames(&[0.0; 7]),
                "7 values are not a whole number",
            );
            assert_eq!(wr.write_frames(&[]).unwrap(), WriteStats::default());
            wr.write_frames(&[3.0; 6]).unwrap();
            wr.finish().unwrap();
            let store = FrameStore::open(&path).unwrap();
            assert_eq!(store.n_frames(), 2);
            assert_eq!(store.frame(1).unwrap(), [3.0; 6]);
        }
        for (h, w) in [(0, 4), (4, 0), (1 << 33, 1)] {
            assert_internal(
                FrameStoreWriter::create(&dir.path().join("z"), h, w, StoreDtype::I16),
                "cannot store frames",
            );
        }
        // Refused writers left nothing behind but the two stores.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn bad_headers_and_lengths_are_input_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.cmx");
        write_store(&good, &movie(3, 2, 2), 2, 2, StoreDtype::I16, &[3]);
        let original = std::fs::read(&good).unwrap();
        assert_eq!(original.len(), 64 + 24);
        let bad = dir.path().join("bad.cmx");
        let check = |bytes: &[u8], needle: &str| {
            std::fs::write(&bad, bytes).unwrap();
            assert_input_error(FrameStore::open(&bad), &bad, needle);
        };
        let patched = |at: usize, field: &[u8]| {
            let mut b = original.clone();
            b[at..at + field.len()].copy_from_slice(field);
            b
        };
        check(&patched(0, b"CMXFRAMF"), "magic");
        check(&patched(0, b"II*\0"), "not a frame store");
        check(
            &patched(8, &2u32.to_le_bytes()),
            "version 2 is not supported",
        );
        check(&patched(8, &0u32.to_le_bytes()), "version 0");
        check(
            &patched(12, &3u32.to_le_bytes()),
            "unknown pixel type code 3",
        );
        check(
            &patched(12, &0u32.to_le_bytes()),
            "unknown pixel type code 0",
        );
        check(&patched(16, &0u32.to_le_bytes()), "0x2");
        check(&patched(20, &0u32.to_le_bytes()), "2x0");
        check(
            &original[..original.len() - 1],
            "truncated: expected 88 bytes, found 87",
        );
        check(&original[..64], "truncated: expected 88 bytes, found 64");
        check(
            &patched(24, &4u64.to_le_bytes()),
            "truncated: expected 96 bytes, found 88",
        );
        check(
            &patched(12, &2u32.to_le_bytes()),
            "truncated: expected 112 bytes",
        );
        let mut longer = original.clone();
        longer.push(0);
        check(
            &longer,
            "longer than its header says: expected 88 bytes, found 89",
        );
        check(
            &patched(24, &2u64.to_le_bytes()),
            "longer than its header says",
        );
        check(
            &patched(24, &u64::MAX.to_le_bytes()),
            "too large to address",
        );
        check(&patched(16, &u32::MAX.to_le_bytes()), "truncated");
        let mut huge = patched(16, &[0xff; 8]);
        huge[12] = 2;
        check(&huge, "too large to address");
        huge[24..32].copy_from_slice(&0u64.to_le_bytes());
        check(&huge[..64], "too large to address");
        check(&[], "truncated: a header is 64 bytes, found empty file");
        check(&original[..10], "found 10 bytes");
        let missing = dir.path().join("missing.cmx");
        assert_input_error(FrameStore::open(&missing), &missing, "cannot open");
        assert_input_error(FrameStore::open(dir.path()), dir.path(), "");
        // The good file still opens.
        assert_eq!(FrameStore::open(&good).unwrap().n_frames(), 3);
    }

    #[test]
    fn an_empty_store_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.cmx");
        FrameStoreWriter::create(&path, 3, 4, StoreDtype::F32)
            .unwrap()
            .finish()
            .unwrap();
        let store = FrameStore::open(&path).unwrap();
        assert_eq!((store.n_frames(), store.frame_len()), (0, 12));
        assert_eq!(store.batches(4).count(), 0);
        assert!(matches!(
            store.batches(0).collect::<Vec<_>>().as_slice(),
            [Err(Error::Usage(_))]
        ));
    }

    #[test]
    fn concurrent_reads_from_two_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<FrameStore>();
        fn assert_send<T: Send>() {}
        assert_send::<FrameStoreWriter>();
        let (n, h, w) = (31, 16, 9);
        let data = movie(n, h, w);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.cmx");
        write_store(&path, &data, h, w, StoreDtype::I16, &[4]);
        let store = FrameStore::open(&path).unwrap();
        let fl = h * w;
        std::thread::scope(|s| {
            for t in 0..2 {
                let (store, data) = (&store, &data);
                s.spawn(move || {
                    for round in 0..20 {
                        for k in 0..n {
                            // The threads walk the frames in opposite orders.
                            let i = if t == 0 { k } else { n - 1 - k };
                            let i = (i + round) % n;
                            assert_eq!(store.frame(i).unwrap(), data[i * fl..(i + 1) * fl]);
                        }
                    }
                });
            }
        });
    }

    #[test]
    fn dropped_writer_leaves_nothing_and_finish_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.cmx");
        {
            let mut wr = FrameStoreWriter::create(&path, 4, 4, StoreDtype::I16).unwrap();
            wr.write_frames(&[1.0; 32]).unwrap();
            assert!(temp_path_for(&path).exists());
            // dropped without finish
        }
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        // An existing store stays readable, unchanged, while a new one replaces it.
        write_store(&path, &[5.0; 16], 4, 4, StoreDtype::I16, &[1]);
        let old = FrameStore::open(&path).unwrap();
        let mut wr = FrameStoreWriter::create(&path, 4, 4, StoreDtype::I16).unwrap();
        wr.write_frames(&[6.0; 48]).unwrap();
        assert_eq!(FrameStore::open(&path).unwrap().n_frames(), 1);
        wr.finish().unwrap();
        assert_eq!(old.frame(0).unwrap(), [5.0; 16]);
        let new = FrameStore::open(&path).unwrap();
        assert_eq!((new.n_frames(), new.frame(2).unwrap()), (3, vec![6.0; 16]));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        // A writer whose folder does not exist fails as an output error.
        let nowhere = dir.path().join("no/such/folder/x.cmx");
        assert!(matches!(
            FrameStoreWriter::create(&nowhere, 1, 1, StoreDtype::I16),
            Err(Error::Output { .. })
        ));
    }

    /// Throughput of the int16 → f32 read path on a 512×512×200 store (≈105 MB).
    /// Run with `cargo test --release -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput_int16_read() {
        let _one_at_a_time = SLOW.lock().unwrap_or_else(|e| e.into_inner());
        let (n, h, w) = (200, 512, 512);
        let fl = h * w;
        let data: Vec<f32> = (0..n * fl)
            .map(|i| ((i * 2654435761) % 60000) as f32 - 30000.3)
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.cmx");
        let t = Instant::now();
        let mut wr = FrameStoreWriter::create(&path, h, w, StoreDtype::I16).unwrap();
        for chunk in data.chunks(16 * fl) {
            wr.write_frames(chunk).unwrap();
        }
        let write_s = t.elapsed().as_secs_f64();
        wr.finish().unwrap();
        let finish_s = t.elapsed().as_secs_f64() - write_s;
        let int16_bytes = (n * fl * 2) as f64;
        eprintln!(
            "write_frames (f32 -> int16 into the page cache): {:.2} GB/s of int16 \
             ({:.0} frames/s); finish (fsync + rename): {:.3} s",
            int16_bytes / write_s / 1e9,
            n as f64 / write_s,
            finish_s
        );

        // Reading every frame once into a reused buffer, as a stage does. A fresh
        // map pays for mapping the pages (the file itself is in the page cache);
        // later passes over the same map do not. Best of several, to see past
        // other load on the machine.
        let read_all = |store: &FrameStore, out: &mut [f32]| {
            let t = Instant::now();
            let mut start = 0;
            while start < n {
                start += store.read_frames_into(start, out).unwrap();
            }
            t.elapsed().as_secs_f64()
        };
        for frames in [1, 16] {
            let mut out = vec![1f32; frames * fl]; // touched: no page faults on it below
            let mut fresh = f64::INFINITY;
            for _ in 0..3 {
                fresh = fresh.min(read_all(&FrameStore::open(&path).unwrap(), &mut out));
            }
            let store = FrameStore::open(&path).unwrap();
            let warm = (0..6)
                .map(|_| read_all(&store, &mut out))
                .fold(f64::INFINITY, f64::min);
            eprintln!(
                "read int16 -> f32, {frames}-frame buffer: freshly opened store {:.2} GB/s \
                 of int16 ({:.0} frames/s); same map again {:.2} GB/s ({:.0} frames/s)",
                int16_bytes / fresh / 1e9,
                n as f64 / fresh,
                int16_bytes / warm / 1e9,
                n as f64 / warm
            );
        }
        let store = FrameStore::open(&path).unwrap();
        // The conversion loop alone, out of an in-memory buffer that fits in cache.
        let src = &store.map[HEADER_LEN..HEADER_LEN + 2 * fl];
        let mut one = vec![0f32; fl];
        let t = Instant::now();
        let reps = 400;
        for _ in 0..reps {
            i16_le_to_f32(std::hint::black_box(src), &mut one);
            std::hint::black_box(&mut one);
        }
        let s = t.elapsed().as_secs_f64();
        eprintln!(
            "conversion loop alone (one 512x512 frame, cached): {:.2} GB/s of int16",
            (reps * fl * 2) as f64 / s / 1e9
        );
        let frame = &data[..fl];
        let mut bytes = vec![0u8; 2 * fl];
        let t = Instant::now();
        for _ in 0..reps {
            first_non_finite(std::hint::black_box(frame));
            f32_to_i16_le(std::hint::black_box(frame), &mut bytes);
            std::hint::black_box(&mut bytes);
        }
        let s = t.elapsed().as_secs_f64();
        eprintln!(
            "write conversion alone (finite check + f32 -> int16, one frame, cached): {:.2} GB/s of int16",
            (reps * fl * 2) as f64 / s / 1e9
        );
        for batch in [8, 16, 32] {
            let t = Instant::now();
            let mut total = 0;
            for item in store.batches(batch) {
                total += item.unwrap().1.dim().0;
            }
            let s = t.elapsed().as_secs_f64();
            assert_eq!(total, n);
            eprintln!(
                "batches({batch}) (a new Array3 each): {:.2} GB/s of int16",
                int16_bytes / s / 1e9
            );
        }
        // Spot check.
        let f = store.frame(123).unwrap();
        for (a, b) in f.iter().zip(&data[123 * fl..]).step_by(997) {
            assert_eq!(*a, b.round().clamp(-32768.0, 32767.0));
        }
    }
}
