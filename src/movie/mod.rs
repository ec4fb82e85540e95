//! A session's movie: TIFF files concatenated in order, read in bounded batches.
//!
//! In: a [`MovieSpec`] (the session's TIFF files in acquisition order, how many
//! channels are interleaved page by page, and which one to read). Out: a
//! [`MovieInfo`] from [`probe_movie`] (frame count, frame shape, pixel type, frames
//! per file, ScanImage metadata), and the frames themselves as `f32` arrays of shape
//! `(frames, height, width)` from a [`MovieReader`], one batch at a time, so memory
//! is bounded by the batch size whatever the movie's length.
//!
//! Layout followed: ScanImage's interleave, where the pages of one frame follow each
//! other channel by channel (page `f * channels + c` is frame `f` of channel `c`,
//! counted within each file). Frames are numbered from 0 across the whole movie, in
//! file order. Pages of other channels are walked past without being decoded.

use crate::error::{Error, Result};
use crate::io::scanimage::ScanImageMeta;
use crate::io::tiff::{probe, PixelType, TiffInfo, TiffPageReader};
use ndarray::Array3;
use std::path::PathBuf;

/// Which files make up a movie and which channel to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovieSpec {
    /// TIFF files in acquisition order.
    pub files: Vec<PathBuf>,
    /// Channels interleaved page by page in every file (1 for plain stacks).
    pub channels: usize,
    /// The channel to read, from 0.
    pub channel: usize,
}

impl MovieSpec {
    /// A single-channel movie from `files`.
    pub fn new(files: Vec<PathBuf>) -> Self {
        MovieSpec {
            files,
            channels: 1,
            channel: 0,
        }
    }
}

/// What a movie holds, from its files' headers.
#[derive(Debug, Clone, PartialEq)]
pub struct MovieInfo {
    /// Frames of the selected channel, over all files.
    pub n_frames: usize,
    pub height: usize,
    pub width: usize,
    pub pixel_type: PixelType,
    /// Each file with its number of frames of the selected channel.
    pub files: Vec<(PathBuf, usize)>,
    /// The first file's ScanImage metadata.
    pub scanimage: Option<ScanImageMeta>,
}

impl MovieInfo {
    /// Pixels per frame.
    pub fn frame_len(&self) -> usize {
        self.height * self.width
    }
}

/// Consecutive frames of a movie.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameBatch {
    /// Movie-wide index of `frames[0]`.
    pub first_frame: usize,
    /// Shape `(n, height, width)`.
    pub frames: Array3<f32>,
}

/// Probe every file of the movie and check that they fit together.
pub fn probe_movie(spec: &MovieSpec) -> Result<MovieInfo> {
    probe_files(spec).map(|(info, _)| info)
}

/// Probe the files, returning their descriptions too so a reader need not walk
/// their IFD chains a second time.
fn probe_files(spec: &MovieSpec) -> Result<(MovieInfo, Vec<TiffInfo>)> {
    check_spec(spec)?;
    let mut tiffs: Vec<TiffInfo> = Vec::with_capacity(spec.files.len());
    let mut files = Vec::with_capacity(spec.files.len());
    for path in &spec.files {
        let tiff = probe(path)?;
        if let Some(first) = tiffs.first() {
            check_same_frames(first, &tiff)?;
        }
        check_channels(spec, &tiff)?;
        files.push((path.clone(), tiff.pages / spec.channels));
        tiffs.push(tiff);
    }
    let n_frames = files.iter().map(|(_, n)| n).sum();
    let first = &tiffs[0];
    if n_frames == 0 {
        return Err(Error::input(&first.path, "the movie has no frames"));
    }
    let info = MovieInfo {
        n_frames,
        height: first.height,
        width: first.width,
        pixel_type: first.pixel_type,
        files,
        scanimage: first.scanimage.clone(),
    };
    Ok((info, tiffs))
}

fn check_spec(spec: &MovieSpec) -> Result<()> {
    if spec.files.is_empty() {
        return Err(Error::usage("the movie lists no TIFF files"));
    }
    if spec.channels == 0 {
        return Err(Error::usage(
            "a movie needs at least one channel (channels = 0)",
        ));
    }
    if spec.channel >= spec.channels {
        return Err(Error::usage(format!(
            "channel {} does not exist: the movie has {} interleaved channel(s), numbered from 0",
            spec.channel, spec.channels
        )));
    }
    Ok(())
}

/// Every file's frames must match the first file's in shape and pixel type.
fn check_same_frames(first: &TiffInfo, tiff: &TiffInfo) -> Result<()> {
    let shape =
        |t: &TiffInfo| format!("{}x{} (width x height) {}", t.width, t.height, t.pixel_type);
    if shape(tiff) != shape(first) {
        return Err(Error::input(
            &tiff.path,
            format!(
                "its frames are {} but earlier files of this movie ({}) have {}",
                shape(tiff),
                first.path.display(),
                shape(first)
            ),
        ));
    }
    Ok(())
}

/// The file's pages must split evenly into frames of `channels` pages, and agree
/// with the interleave ScanImage's frame numbers show: reading interleaved pages as
/// one channel would silently mix two signals.
fn check_channels(spec: &MovieSpec, tiff: &TiffInfo) -> Result<()> {
    if tiff.pages % spec.channels != 0 {
        return Err(Error::input(
            &tiff.path,
            format!(
                "{} pages do not split into frames of {} interleaved channels",
                tiff.pages, spec.channels
            ),
        ));
    }
    let detected = tiff.scanimage.as_ref().and_then(|m| m.interleaved_channels);
    match detected {
        Some(n) if n != spec.channels => Err(Error::input(
            &tiff.path,
            format!(
                "its ScanImage frame numbers show {n} interleaved channel(s) (consecutive pages of one frame share frameNumbers) but the movie is set up with {} channel(s)",
                spec.channels
            ),
        )),
        _ => Ok(()),
    }
}

/// Reads a movie's frames in order, in batches.
pub struct MovieReader {
    spec: MovieSpec,
    info: MovieInfo,
    tiffs: Vec<TiffInfo>,
    /// Index of the file `reader` reads (or will open next).
    file_index: usize,
    reader: Option<TiffPageReader>,
    /// Frames of the selected channel left in the current file.
    frames_left_in_file: usize,
    next_frame: usize,
}

impl MovieReader {
    /// Probe the movie's files and position the reader on frame 0.
    pub fn open(spec: &MovieSpec) -> Result<Self> {
        let (info, tiffs) = probe_files(spec)?;
        Ok(MovieReader {
            spec: spec.clone(),
            info,
            tiffs,
            file_index: 0,
            reader: None,
            frames_left_in_file: 0,
            next_frame: 0,
        })
    }

    pub fn info(&self) -> &MovieInfo {
        &self.info
    }

    /// Index of the frame the next batch starts with.
    pub fn position(&self) -> usize {
        self.next_frame
    }

    /// The next up to `max_frames` frames, or `None` at the end of the movie.
    pub fn read_batch(&mut self, max_frames: usize) -> Result<Option<FrameBatch>> {
        if max_frames == 0 {
            return Err(Error::usage("a batch must hold at least one frame"));
        }
        let n = max_frames.min(self.info.n_frames - self.next_frame);
        if n == 0 {
            return Ok(None);
        }
        let frame_len = self.info.frame_len();
        let mut data = vec![0f32; n * frame_len];
        for frame in data.chunks_exact_mut(frame_len) {
            self.read_frame(frame)?;
        }
        let frames = Array3::from_shape_vec((n, self.info.height, self.info.width), data)
            .map_err(|e| Error::internal(format!("frame batch shape: {e}")))?;
        let batch = FrameBatch {
            first_frame: self.next_frame,
            frames,
        };
        self.next_frame += n;
        Ok(Some(batch))
    }

    /// Read the next frame of the selected channel: skip the pages of the channels
    /// before it, decode its page, skip the channels after it.
    fn read_frame(&mut self, out: &mut [f32]) -> Result<()> {
        let (channel, channels) = (self.spec.channel, self.spec.channels);
        let reader = self.current_reader()?;
        for _ in 0..channel {
            let skipped = reader.skip_page()?;
            expect_page(reader, skipped)?;
        }
        let read = reader.read_page_into(out)?;
        expect_page(reader, read)?;
        for _ in channel + 1..channels {
            let skipped = reader.skip_page()?;
            expect_page(reader, skipped)?;
        }
        self.frames_left_in_file -= 1;
        if self.frames_left_in_file == 0 {
            // Close the file now rather than holding one handle per file.
            self.reader = None;
            self.file_index += 1;
        }
        Ok(())
    }

    /// The reader of the file holding the next frame, opening it if needed.
    fn current_reader(&mut self) -> Result<&mut TiffPageReader> {
        if self.reader.is_none() {
            // Files with no frames of this channel cannot occur (probe rejects empty
            // files and uneven page counts), but skip them rather than assume.
            while self
                .info
                .files
                .get(self.file_index)
                .is_some_and(|(_, n)| *n == 0)
            {
                self.file_index += 1;
            }
            let tiff = self
                .tiffs
                .get(self.file_index)
                .cloned()
                .ok_or_else(|| Error::internal("movie reader ran past its last file"))?;
            self.frames_left_in_file = self.info.files[self.file_index].1;
            self.reader = Some(TiffPageReader::open_probed(tiff)?);
        }
        self.reader
            .as_mut()
            .ok_or_else(|| Error::internal("movie reader has no open file"))
    }
}

/// A page the probe counted must still be there.
fn expect_page(reader: &TiffPageReader, present: bool) -> Result<()> {
    if present {
        Ok(())
    } else {
        Err(Error::input(
            &reader.info().path,
            format!(
                "page {}: missing; the file has fewer pages than when it was probed ({})",
                reader.position(),
                reader.info().pages
            ),
        ))
    }
}
