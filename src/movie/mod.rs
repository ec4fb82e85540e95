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

pub mod store;

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
    if !tiff.pages.is_multiple_of(spec.channels) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::assert_input_error;
    use crate::io::tiff::{TiffWriter, WriteOptions};
    use ::tiff::encoder::colortype::{Gray32Float, GrayI16};
    use ::tiff::encoder::TiffEncoder;
    use ::tiff::tags::Tag;
    use std::fs::File;
    use std::path::Path;

    const W: usize = 5;
    const H: usize = 3;

    /// A uint16 file whose page `p` is filled with `value(p)`, plus one marker pixel
    /// (row 2, column 4) so that a transposed read would show.
    fn write_pages(path: &Path, pages: usize, value: impl Fn(usize) -> u16) {
        let mut wr =
            TiffWriter::create(path, W, H, PixelType::U16, WriteOptions::default()).unwrap();
        for p in 0..pages {
            let mut data = vec![value(p); W * H];
            data[2 * W + 4] = 60000;
            wr.write_page_u16(&data).unwrap();
        }
        wr.finish().unwrap();
    }

    fn read_all(spec: &MovieSpec, batch: usize) -> (Vec<usize>, Vec<f32>) {
        let mut reader = MovieReader::open(spec).unwrap();
        let mut firsts = Vec::new();
        let mut values = Vec::new();
        while let Some(b) = reader.read_batch(batch).unwrap() {
            assert_eq!(b.frames.dim().1, H);
            assert_eq!(b.frames.dim().2, W);
            assert!(b.frames.dim().0 <= batch);
            assert_eq!(b.first_frame, reader.position() - b.frames.dim().0);
            firsts.push(b.first_frame);
            for frame in b.frames.outer_iter() {
                assert_eq!(frame[[2, 4]], 60000.0, "marker pixel at row 2, column 4");
                values.push(frame[[0, 0]]);
            }
        }
        assert!(
            reader.read_batch(batch).unwrap().is_none(),
            "stays at the end"
        );
        (firsts, values)
    }

    #[test]
    fn files_concatenate_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = [2usize, 3, 1];
        let mut files = Vec::new();
        let mut offset = 0;
        for (i, &n) in sizes.iter().enumerate() {
            let path = dir.path().join(format!("part{i}.tif"));
            write_pages(&path, n, |p| (offset + p) as u16 * 10);
            offset += n;
            files.push(path);
        }
        let spec = MovieSpec::new(files.clone());
        let info = probe_movie(&spec).unwrap();
        assert_eq!(info.n_frames, 6);
        assert_eq!(
            (info.height, info.width, info.pixel_type),
            (H, W, PixelType::U16)
        );
        assert_eq!(info.frame_len(), W * H);
        let per_file: Vec<usize> = info.files.iter().map(|(_, n)| *n).collect();
        assert_eq!(per_file, sizes);
        assert_eq!(info.files[1].0, files[1]);

        let want: Vec<f32> = (0..6).map(|f| f as f32 * 10.0).collect();
        for (batch, firsts) in [
            (1, vec![0, 1, 2, 3, 4, 5]),
            (2, vec![0, 2, 4]),
            (4, vec![0, 4]),
            (100, vec![0]),
        ] {
            let (got_firsts, values) = read_all(&spec, batch);
            assert_eq!(got_firsts, firsts, "batch {batch}");
            assert_eq!(values, want, "batch {batch}");
        }
    }

    #[test]
    fn interleaved_channels_are_separated() {
        let dir = tempfile::tempdir().unwrap();
        // Two files of 3 and 2 frames, 2 channels: page value = 1000 * channel + frame.
        let a = dir.path().join("a.tif");
        let b = dir.path().join("b.tif");
        write_pages(&a, 6, |p| (1000 * (p % 2) + p / 2) as u16);
        write_pages(&b, 4, |p| (1000 * (p % 2) + 3 + p / 2) as u16);
        for channel in 0..2 {
            let spec = MovieSpec {
                files: vec![a.clone(), b.clone()],
                channels: 2,
                channel,
            };
            let info = probe_movie(&spec).unwrap();
            assert_eq!(info.n_frames, 5);
            assert_eq!(
                info.files.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
                [3, 2]
            );
            for batch in [1, 2, 5] {
                let (_, values) = read_all(&spec, batch);
                let want: Vec<f32> = (0..5).map(|f| (1000 * channel + f) as f32).collect();
                assert_eq!(values, want, "channel {channel}, batch {batch}");
            }
        }
    }

    #[test]
    fn mismatched_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.tif");
        write_pages(&a, 2, |p| p as u16);
        // Another shape.
        let b = dir.path().join("b.tif");
        let mut wr = TiffWriter::create(&b, 4, 4, PixelType::U16, WriteOptions::default()).unwrap();
        wr.write_page_u16(&[0; 16]).unwrap();
        wr.finish().unwrap();
        let spec = MovieSpec::new(vec![a.clone(), b.clone()]);
        assert_input_error(
            probe_movie(&spec),
            &b,
            "4x4 (width x height) uint16 but earlier files",
        );
        // Another pixel type.
        let c = dir.path().join("c.tif");
        let mut wr = TiffWriter::create(&c, W, H, PixelType::I16, WriteOptions::default()).unwrap();
        wr.write_page_i16(&[-1; W * H]).unwrap();
        wr.finish().unwrap();
        let spec = MovieSpec::new(vec![a.clone(), c.clone()]);
        assert_input_error(probe_movie(&spec), &c, "int16");
        assert!(MovieReader::open(&spec).is_err());
    }

    #[test]
    fn bad_channel_settings() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.tif");
        let b = dir.path().join("b.tif");
        write_pages(&a, 4, |p| p as u16);
        write_pages(&b, 3, |p| p as u16);
        let spec = MovieSpec {
            files: vec![a.clone(), b.clone()],
            channels: 2,
            channel: 0,
        };
        assert_input_error(
            probe_movie(&spec),
            &b,
            "3 pages do not split into frames of 2",
        );
        let spec = MovieSpec {
            files: vec![a.clone()],
            channels: 2,
            channel: 2,
        };
        assert!(matches!(probe_movie(&spec), Err(Error::Usage(_))));
        let spec = MovieSpec {
            files: vec![a.clone()],
            channels: 0,
            channel: 0,
        };
        assert!(matches!(probe_movie(&spec), Err(Error::Usage(_))));
        assert!(matches!(
            probe_movie(&MovieSpec::new(vec![])),
            Err(Error::Usage(_))
        ));
        let mut reader = MovieReader::open(&MovieSpec::new(vec![a.clone()])).unwrap();
        assert!(matches!(reader.read_batch(0), Err(Error::Usage(_))));
    }

    #[test]
    fn missing_and_corrupt_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.tif");
        write_pages(&a, 2, |p| p as u16);
        let missing = dir.path().join("missing.tif");
        assert_input_error(
            probe_movie(&MovieSpec::new(vec![a.clone(), missing.clone()])),
            &missing,
            "cannot read",
        );
        let junk = dir.path().join("junk.tif");
        std::fs::write(&junk, b"not a tiff at all").unwrap();
        assert_input_error(
            MovieReader::open(&MovieSpec::new(vec![junk.clone()])).map(|_| ()),
            &junk,
            "not a TIFF",
        );
    }

    #[test]
    fn scanimage_interleave_must_match_the_channel_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("si.tif");
        {
            let mut enc = TiffEncoder::new(File::create(&path).unwrap()).unwrap();
            for page in 0..4u32 {
                let mut img = enc.new_image::<GrayI16>(W as u32, H as u32).unwrap();
                let desc = format!("frameNumbers = {}\n", page / 2 + 1);
                img.encoder()
                    .write_tag(Tag::ImageDescription, desc.as_str())
                    .unwrap();
                img.write_data(&[page as i16 - 2; W * H]).unwrap();
            }
        }
        let one = MovieSpec::new(vec![path.clone()]);
        assert_input_error(probe_movie(&one), &path, "2 interleaved channel(s)");
        let two = MovieSpec {
            files: vec![path.clone()],
            channels: 2,
            channel: 1,
        };
        let info = probe_movie(&two).unwrap();
        assert_eq!(info.n_frames, 2);
        assert_eq!(
            info.scanimage.as_ref().unwrap().interleaved_channels,
            Some(2)
        );
        let mut reader = MovieReader::open(&two).unwrap();
        let batch = reader.read_batch(10).unwrap().unwrap();
        let firsts: Vec<f32> = batch.frames.outer_iter().map(|f| f[[0, 0]]).collect();
        assert_eq!(firsts, [-1.0, 1.0]);
    }

    #[test]
    fn nan_in_a_float_movie_names_file_and_page() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.tif");
        let bad = dir.path().join("bad.tif");
        for (path, poison) in [(&good, false), (&bad, true)] {
            let mut enc = TiffEncoder::new(File::create(path).unwrap()).unwrap();
            for page in 0..3 {
                let mut data = vec![page as f32 + 0.5; W * H];
                if poison && page == 2 {
                    data[7] = f32::NAN;
                }
                enc.write_image::<Gray32Float>(W as u32, H as u32, &data)
                    .unwrap();
            }
        }
        let spec = MovieSpec::new(vec![good.clone(), bad.clone()]);
        let info = probe_movie(&spec).unwrap();
        assert_eq!(info.pixel_type, PixelType::F32);
        let mut reader = MovieReader::open(&spec).unwrap();
        let first = reader.read_batch(4).unwrap().unwrap();
        assert_eq!(first.frames[[3, 0, 0]], 0.5);
        assert_input_error(
            reader.read_batch(4),
            &bad,
            "page 2: pixel (row 1, column 2) is NaN",
        );
    }

    #[test]
    fn reader_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<MovieReader>();
        assert_send::<FrameBatch>();
    }

    // ----- real data -----

    fn real_data_dir() -> Option<PathBuf> {
        let dir = std::env::var_os("CORTEXMAP_REAL_DATA")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/real"))
            });
        if dir.is_dir() {
            Some(dir)
        } else {
            eprintln!(
                "real data folder {} not found; skipping real-data test",
                dir.display()
            );
            None
        }
    }

    fn mean_std(values: impl Iterator<Item = f32>) -> (f64, f64) {
        let v: Vec<f64> = values.map(f64::from).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
        (mean, var.sqrt())
    }

    #[test]
    fn real_scanimage_channels() {
        let Some(dir) = real_data_dir() else { return };
        let path = dir.join("scanimage57_2ch/scanimage57_resonant_2ch_3frames_512.tif");
        let mut stats = Vec::new();
        for channel in 0..2 {
            let spec = MovieSpec {
                files: vec![path.clone()],
                channels: 2,
                channel,
            };
            let mut reader = MovieReader::open(&spec).unwrap();
            assert_eq!(reader.info().n_frames, 3);
            assert_eq!(reader.info().pixel_type, PixelType::I16);
            let si = reader.info().scanimage.clone().unwrap();
            assert_eq!(si.version.as_deref(), Some("5.7"));
            let batch = reader.read_batch(2).unwrap().unwrap();
            let rest = reader.read_batch(2).unwrap().unwrap();
            assert_eq!(
                (batch.frames.dim().0, rest.frames.dim().0, rest.first_frame),
                (2, 1, 2)
            );
            assert!(reader.read_batch(2).unwrap().is_none());
            stats.push(mean_std(
                batch.frames.iter().chain(rest.frames.iter()).copied(),
            ));
        }
        let (mean0, _) = stats[0];
        let (_, std1) = stats[1];
        eprintln!("ScanImage 5.7 file: channel 0 mean {mean0:.1}, channel 1 std {std1:.2}");
        assert!((mean0 + 527.0).abs() < 5.0, "channel 0 mean {mean0}");
        assert!((std1 - 6.0).abs() < 1.0, "channel 1 std {std1}");
        // Read as one channel, the file is refused: its pages are interleaved.
        assert!(probe_movie(&MovieSpec::new(vec![path])).is_err());
    }

    #[test]
    fn real_neurofinder_in_batches() {
        let Some(dir) = real_data_dir() else { return };
        let path = dir.join("neurofinder_crop192/movie_600x192x192_u16.tif");
        let spec = MovieSpec::new(vec![path]);
        let mut reader = MovieReader::open(&spec).unwrap();
        assert_eq!(reader.info().n_frames, 600);
        let mut n = 0;
        let mut max = 0f32;
        while let Some(batch) = reader.read_batch(128).unwrap() {
            assert_eq!(batch.first_frame, n);
            assert_eq!(batch.frames.dim().1, 192);
            n += batch.frames.dim().0;
            max = batch.frames.iter().copied().fold(max, f32::max);
        }
        assert_eq!((n, max), (600, 3810.0));
    }
}
