//! Streaming TIFF input and output, page by page.
//!
//! In: multi-page grayscale TIFF files (classic TIFF or BigTIFF, either byte order,
//! uncompressed or compressed, pixel types uint8, uint16, int16, uint32 or float32).
//! Out: a [`TiffInfo`] describing a file without decoding pixels ([`probe`]), pages
//! converted to `f32` one at a time ([`TiffPageReader`]), and multi-page uint16 or
//! int16 files written atomically ([`TiffWriter`]).
//!
//! Format followed: TIFF 6.0 (one image file directory, IFD, per page, chained by
//! "next IFD" offsets) and its BigTIFF extension (64-bit offsets, version 43), as
//! read and written by the `tiff` crate. ScanImage's text headers in the `Software`
//! and `ImageDescription` tags are parsed by [`crate::io::scanimage`].
//!
//! Robustness: every problem with a file is an [`Error::Input`] that names the file
//! and, where it applies, the page. The header, page shapes, pixel types and the
//! extent of every page's pixel data are checked against the file before anything
//! is decoded or allocated, and every call into the decoder runs under
//! `catch_unwind`, so that even a decoder bug on hostile bytes becomes an input error
//! rather than a crash.
//!
//! Speed: uncompressed strips (the common case for acquisition software such as
//! ScanImage) are read straight from the file into a reusable buffer and converted
//! in one pass, skipping the decoder's per-strip machinery; everything else goes
//! through the `tiff` crate's decoder. Both paths give identical values (tested).

use crate::error::{Error, Result};
use crate::io::atomic::temp_path_for;
use crate::io::scanimage::{self, ScanImageMeta};
use ::tiff::decoder::ifd::Value;
use ::tiff::decoder::{ChunkType, Decoder, DecodingResult, Limits};
use ::tiff::encoder::colortype::{ColorType as EncodeColor, Gray16, GrayI16};
use ::tiff::encoder::compression::DeflateLevel;
use ::tiff::encoder::{
    Compression, Predictor, TiffEncoder, TiffKind, TiffKindBig, TiffKindStandard, TiffValue,
};
use ::tiff::tags::{ByteOrder, Tag};
use ::tiff::{ColorType, TiffError};
use std::any::Any;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The largest decoded page accepted (256 MiB, the `tiff` decoder's own default
/// buffer limit): far above any microscope frame, far below what a corrupt header
/// could make us allocate.
const MAX_PAGE_BYTES: u64 = 256 << 20;

/// No codec the decoder supports expands data by more than this factor (deflate's
/// limit is about 1032:1, LZW's about 2700:1), so a compressed page claiming a
/// decoded size above `its compressed bytes × this` has a corrupt header.
const MAX_COMPRESSION_RATIO: u64 = 4096;

/// Pages whose `ImageDescription` is read for ScanImage metadata: enough to see
/// the frame numbers repeat over two frames of up to four interleaved channels.
const SCANIMAGE_DESCRIPTION_PAGES: usize = 8;

/// Read buffer: enough for a typical IFD in one read. Kept small because every seek
/// discards it and the decoder seeks to each strip: with 8-row strips (ScanImage),
/// a 64 KiB buffer halved the decoder's speed. Reads larger than it bypass it.
const READ_BUFFER_BYTES: usize = 4 << 10;

/// Write buffer for [`TiffWriter`].
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Classic TIFF offsets are 32-bit; we switch to BigTIFF below 4 GiB to leave room
/// for what [`needs_bigtiff`] does not count exactly (tags, descriptions).
const CLASSIC_TIFF_LIMIT_BYTES: u128 = 3_990 * (1 << 20);

/// Generous per-page allowance for an IFD, its tag values and strip tables.
const PAGE_OVERHEAD_BYTES: u128 = 4 << 10;

/// Limit for tag values: ScanImage's `Software` header runs to tens of kB, strip
/// tables of tall images to a few hundred kB; 4 MiB is ample and still bounded.
const MAX_TAG_VALUE_BYTES: usize = 4 << 20;

/// The sample types cortexmap reads. Everything becomes `f32` on reading, exactly
/// except uint32 values above 2^24, which round to the nearest `f32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelType {
    U8,
    U16,
    I16,
    U32,
    F32,
}

impl PixelType {
    /// The numpy-style name: `"uint16"`, `"int16"`, ...
    pub fn name(&self) -> &'static str {
        match self {
            PixelType::U8 => "uint8",
            PixelType::U16 => "uint16",
            PixelType::I16 => "int16",
            PixelType::U32 => "uint32",
            PixelType::F32 => "float32",
        }
    }

    /// Bytes per pixel.
    pub fn bytes(&self) -> usize {
        match self {
            PixelType::U8 => 1,
            PixelType::U16 | PixelType::I16 => 2,
            PixelType::U32 | PixelType::F32 => 4,
        }
    }

    /// From the TIFF `SampleFormat` code (1 unsigned, 2 signed, 3 float) and
    /// `BitsPerSample`.
    fn from_tiff(sample_format: u16, bits: u8) -> Option<PixelType> {
        match (sample_format, bits) {
            (1, 8) => Some(PixelType::U8),
            (1, 16) => Some(PixelType::U16),
            (2, 16) => Some(PixelType::I16),
            (1, 32) => Some(PixelType::U32),
            (3, 32) => Some(PixelType::F32),
            _ => None,
        }
    }
}

impl std::fmt::Display for PixelType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a TIFF file holds, read without decoding pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct TiffInfo {
    pub path: PathBuf,
    /// Number of pages (images in the IFD chain).
    pub pages: usize,
    /// Columns per page.
    pub width: usize,
    /// Rows per page.
    pub height: usize,
    pub pixel_type: PixelType,
    pub bigtiff: bool,
    /// The first page's compression: `"none"`, `"deflate"`, `"lzw"`, ...
    pub compression: String,
    pub file_size: u64,
    /// The first page's `Software` tag.
    pub software: Option<String>,
    /// The first page's `ImageDescription` tag.
    pub description: Option<String>,
    /// ScanImage metadata, when the file has any.
    pub scanimage: Option<ScanImageMeta>,
}

impl TiffInfo {
    /// Pixels per page.
    pub fn page_len(&self) -> usize {
        self.width * self.height
    }
}

/// Describe `path` by walking its IFD chain: page count, shape, pixel type, ScanImage
/// metadata. Fails, naming the page, when pages differ in shape or pixel type, hold
/// more than one sample per pixel, use an unsupported pixel type, or point at pixel
/// data beyond the end of the file.
pub fn probe(path: &Path) -> Result<TiffInfo> {
    let file_size = std::fs::metadata(path)
        .map_err(|e| Error::input(path, format!("cannot read file: {e}")))?
        .len();
    let header = read_header(path, file_size)?;
    let mut decoder = open_decoder(path)?;

    let first = inspect_page(path, 0, &mut decoder, file_size)?;
    let software = ascii_tag(&mut decoder, Tag::Software, file_size);
    let description = ascii_tag(&mut decoder, Tag::ImageDescription, file_size);
    let mut descriptions = vec![description.clone().unwrap_or_default()];

    let mut pages = 1;
    while decoder.more_images() {
        guarded(|| decoder.next_image())
            .map_err(|msg| page_error(path, pages, "cannot read its image directory", &msg))?;
        let page = inspect_page(path, pages, &mut decoder, file_size)?;
        if page.shape != first.shape {
            return Err(Error::input(
                path,
                format!(
                    "page {pages} is {} but page 0 is {}; all pages must share shape and pixel type",
                    page.shape, first.shape
                ),
            ));
        }
        if pages < SCANIMAGE_DESCRIPTION_PAGES {
            descriptions.push(
                ascii_tag(&mut decoder, Tag::ImageDescription, file_size).unwrap_or_default(),
            );
        }
        pages += 1;
    }
    check_imagej_raw_stack(path, description.as_deref(), pages)?;

    let scanimage = scanimage::parse(software.as_deref(), &descriptions);
    Ok(TiffInfo {
        path: path.to_path_buf(),
        pages,
        width: first.shape.width,
        height: first.shape.height,
        pixel_type: first.shape.pixel_type,
        bigtiff: header.bigtiff,
        compression: compression_name(first.compression),
        file_size,
        software,
        description,
        scanimage,
    })
}

/// Whether a file of `pages` pages of `width × height` pixels needs BigTIFF, that is,
/// may come near the 4 GiB offset limit of classic TIFF (uncompressed estimate).
pub fn needs_bigtiff(pages: usize, width: usize, height: usize, bytes_per_pixel: usize) -> bool {
    let page = width as u128 * height as u128 * bytes_per_pixel as u128 + PAGE_OVERHEAD_BYTES;
    page * pages as u128 > CLASSIC_TIFF_LIMIT_BYTES
}

// ---------------------------------------------------------------------------------
// Header and page inspection
// ---------------------------------------------------------------------------------

/// What the 8- or 16-byte file header says.
struct Header {
    bigtiff: bool,
}

/// Check the header ourselves before the decoder sees the file: its own errors
/// ("signature not found") would not tell the user what is wrong.
fn read_header(path: &Path, file_size: u64) -> Result<Header> {
    if file_size == 0 {
        return Err(Error::input(path, "empty file (0 bytes), not a TIFF"));
    }
    let mut file = File::open(path).map_err(|e| Error::input(path, format!("cannot open: {e}")))?;
    let mut bytes = Vec::with_capacity(16);
    (&mut file)
        .take(16)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::input(path, format!("cannot read the header: {e}")))?;
    if bytes.len() < 8 {
        return Err(Error::input(
            path,
            format!("too short to be a TIFF ({} bytes)", bytes.len()),
        ));
    }
    let big_endian = match &bytes[..2] {
        b"II" => false,
        b"MM" => true,
        _ => {
            return Err(Error::input(
                path,
                format!(
                    "not a TIFF file: it starts with bytes {:02x} {:02x} {:02x} {:02x}, not the byte-order mark 'II' or 'MM'",
                    bytes[0], bytes[1], bytes[2], bytes[3]
                ),
            ))
        }
    };
    let u16_at = |i: usize| {
        let b = [bytes[i], bytes[i + 1]];
        if big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let (bigtiff, first_ifd) = match u16_at(2) {
        42 => {
            let b = [bytes[4], bytes[5], bytes[6], bytes[7]];
            let off = if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            };
            (false, u64::from(off))
        }
        43 => {
            if bytes.len() < 16 {
                return Err(Error::input(
                    path,
                    format!(
                        "the header claims BigTIFF but the file has only {} bytes",
                        bytes.len()
                    ),
                ));
            }
            let (offset_size, reserved) = (u16_at(4), u16_at(6));
            if offset_size != 8 || reserved != 0 {
                return Err(Error::input(
                    path,
                    format!(
                        "corrupt header: it claims BigTIFF (version 43) but its offset size is {offset_size} (must be 8) and its reserved field {reserved} (must be 0)"
                    ),
                ));
            }
            let b: [u8; 8] = bytes[8..16].try_into().expect("16 header bytes were read");
            let off = if big_endian {
                u64::from_be_bytes(b)
            } else {
                u64::from_le_bytes(b)
            };
            (true, off)
        }
        v => {
            return Err(Error::input(
                path,
                format!(
                    "corrupt header: unknown TIFF version {v} (42 is classic TIFF, 43 BigTIFF)"
                ),
            ))
        }
    };
    if first_ifd == 0 {
        return Err(Error::input(
            path,
            "the file has no pages (its first image directory offset is 0)",
        ));
    }
    if first_ifd >= file_size {
        return Err(Error::input(
            path,
            format!(
                "the first image directory would start at byte {first_ifd} but the file has only {file_size} bytes (truncated file?)"
            ),
        ));
    }
    Ok(Header { bigtiff })
}

/// A decoder positioned on page 0.
fn open_decoder(path: &Path) -> Result<Decoder<BufReader<File>>> {
    let file = File::open(path).map_err(|e| Error::input(path, format!("cannot open: {e}")))?;
    let reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    guarded(|| Decoder::new(reader).map(|d| d.with_limits(decoder_limits())))
        .map_err(|msg| page_error(path, 0, "cannot read its image directory", &msg))
}

fn decoder_limits() -> Limits {
    let mut limits = Limits::default();
    limits.ifd_value_size = MAX_TAG_VALUE_BYTES;
    limits.decoding_buffer_size = MAX_PAGE_BYTES as usize;
    limits
}

/// Shape and pixel type of a page: what must agree across pages and files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PageShape {
    width: usize,
    height: usize,
    pixel_type: PixelType,
}

impl PageShape {
    fn bytes(&self) -> u64 {
        self.width as u64 * self.height as u64 * self.pixel_type.bytes() as u64
    }
}

impl std::fmt::Display for PageShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{} (width x height) {}",
            self.width, self.height, self.pixel_type
        )
    }
}

struct PageFacts {
    shape: PageShape,
    compression: u16,
}

/// Check the decoder's current page: one sample per pixel, a supported pixel type,
/// pixel data inside the file, a plausible decoded size.
fn inspect_page(
    path: &Path,
    page: usize,
    dec: &mut Decoder<BufReader<File>>,
    file_size: u64,
) -> Result<PageFacts> {
    let fail = |what: &str, msg: &Failure| page_error(path, page, what, msg);
    let (width, height) =
        guarded(|| dec.dimensions()).map_err(|m| fail("cannot read its size", &m))?;
    let color = guarded(|| dec.colortype()).map_err(|m| fail("unsupported pixel layout", &m))?;
    let bits = match color {
        ColorType::Gray(bits) => bits,
        other => {
            return Err(Error::input(
                path,
                format!(
                    "page {page} has pixel layout {other:?}: cortexmap reads single-channel grayscale pages only (one sample per pixel)"
                ),
            ))
        }
    };
    let sample_format = guarded(|| dec.find_tag_unsigned_vec::<u16>(Tag::SampleFormat))
        .map_err(|m| fail("unreadable SampleFormat tag", &m))?
        .and_then(|v| v.first().copied())
        .unwrap_or(1);
    let pixel_type = PixelType::from_tiff(sample_format, bits).ok_or_else(|| {
        Error::input(
            path,
            format!(
                "page {page} has {bits}-bit {} pixels; cortexmap reads uint8, uint16, int16, uint32 and float32",
                sample_format_name(sample_format)
            ),
        )
    })?;
    let shape = PageShape {
        width: width as usize,
        height: height as usize,
        pixel_type,
    };
    let compression = guarded(|| dec.find_tag_unsigned::<u16>(Tag::Compression))
        .map_err(|m| fail("unreadable Compression tag", &m))?
        .unwrap_or(1);
    check_page_extent(path, page, dec, shape, compression, file_size)?;
    Ok(PageFacts { shape, compression })
}

/// The page's strips or tiles must lie inside the file, and its decoded size must be
/// possible given the file's size: a corrupt header cannot make us allocate more.
fn check_page_extent(
    path: &Path,
    page: usize,
    dec: &mut Decoder<BufReader<File>>,
    shape: PageShape,
    compression: u16,
    file_size: u64,
) -> Result<()> {
    let page_bytes = shape.bytes();
    if page_bytes > MAX_PAGE_BYTES {
        return Err(Error::input(
            path,
            format!(
                "page {page} is {shape}, {page_bytes} bytes decoded, more than the {} MiB per page cortexmap accepts",
                MAX_PAGE_BYTES >> 20
            ),
        ));
    }
    let (kind, offsets_tag, counts_tag) = match dec.get_chunk_type() {
        ChunkType::Strip => ("strip", Tag::StripOffsets, Tag::StripByteCounts),
        ChunkType::Tile => ("tile", Tag::TileOffsets, Tag::TileByteCounts),
    };
    let offsets = chunk_table(path, page, dec, offsets_tag)?;
    let counts = chunk_table(path, page, dec, counts_tag)?;
    if offsets.len() != counts.len() {
        return Err(Error::input(
            path,
            format!(
                "page {page}: {} {kind} offsets but {} byte counts",
                offsets.len(),
                counts.len()
            ),
        ));
    }
    for (i, (&offset, &count)) in offsets.iter().zip(&counts).enumerate() {
        let end = offset.saturating_add(count);
        if end > file_size {
            return Err(Error::input(
                path,
                format!(
                    "page {page}: {kind} {i} ends at byte {end}, past the end of the file ({file_size} bytes; truncated file?)"
                ),
            ));
        }
    }
    let stored: u64 = counts.iter().fold(0u64, |a, &c| a.saturating_add(c));
    if compression == 1 && kind == "strip" && stored < page_bytes {
        return Err(Error::input(
            path,
            format!(
                "page {page}: its strips hold {stored} bytes but a {shape} page needs {page_bytes}"
            ),
        ));
    }
    if compression != 1 && page_bytes > stored.saturating_mul(MAX_COMPRESSION_RATIO) {
        return Err(Error::input(
            path,
            format!(
                "page {page} claims to be {shape} ({page_bytes} bytes) from only {stored} compressed bytes: corrupt header"
            ),
        ));
    }
    Ok(())
}

fn chunk_table(
    path: &Path,
    page: usize,
    dec: &mut Decoder<BufReader<File>>,
    tag: Tag,
) -> Result<Vec<u64>> {
    guarded(|| dec.find_tag_unsigned_vec::<u64>(tag))
        .map_err(|m| page_error(path, page, &format!("unreadable {tag:?} tag"), &m))?
        .ok_or_else(|| Error::input(path, format!("page {page} has no {tag:?} tag")))
}

/// ImageJ saves stacks over 4 GiB as one IFD followed by raw frames, announcing the
/// true count only in its description (`images=N`). Reading one page of such a file
/// would silently lose the rest, so refuse it.
fn check_imagej_raw_stack(path: &Path, description: Option<&str>, pages: usize) -> Result<()> {
    let Some(desc) = description.filter(|d| d.starts_with("ImageJ=")) else {
        return Ok(());
    };
    let images = desc
        .lines()
        .find_map(|l| l.strip_prefix("images="))
        .and_then(|n| n.trim().parse::<usize>().ok());
    match images {
        Some(n) if n > pages => Err(Error::input(
            path,
            format!(
                "ImageJ says this stack has {n} images but the file has {pages} page(s): ImageJ stored the rest as raw data without TIFF directories, which cortexmap does not read; re-save it as a regular multi-page TIFF or BigTIFF"
            ),
        )),
        _ => Ok(()),
    }
}

/// An ASCII tag of the current page, if present and readable. Metadata is never
/// worth failing over: unreadable text counts as absent. A length beyond the file's
/// size is corrupt and not even tried (the decoder would allocate it first).
fn ascii_tag(dec: &mut Decoder<BufReader<File>>, tag: Tag, file_size: u64) -> Option<String> {
    let count = guarded(|| Ok(dec.image_ifd().find_entry(tag).map(|e| e.count()))).ok()??;
    if count > file_size {
        return None;
    }
    match guarded(|| dec.find_tag(tag)) {
        Ok(Some(Value::Ascii(s))) => Some(s.trim_end_matches('\0').to_string()),
        _ => None,
    }
}

fn compression_name(code: u16) -> String {
    match code {
        1 => "none".into(),
        2 => "ccitt-rle".into(),
        3 | 4 => "ccitt-fax".into(),
        5 => "lzw".into(),
        6 | 7 => "jpeg".into(),
        8 | 32946 => "deflate".into(),
        32773 => "packbits".into(),
        34887 => "lerc".into(),
        50000 => "zstd".into(),
        50001 => "webp".into(),
        other => format!("compression code {other}"),
    }
}

fn sample_format_name(code: u16) -> String {
    match code {
        1 => "unsigned integer".into(),
        2 => "signed integer".into(),
        3 => "floating-point".into(),
        other => format!("sample-format-{other}"),
    }
}

// ---------------------------------------------------------------------------------
// Guarding calls into the decoder
// ---------------------------------------------------------------------------------

/// Why a guarded call into the decoder failed.
#[derive(Debug)]
enum Failure {
    /// The decoder returned an error.
    Error(String),
    /// The decoder panicked: its state is unknown afterwards.
    Panicked(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Error(msg) => f.write_str(msg),
            Failure::Panicked(msg) => write!(f, "the TIFF decoder failed on this data ({msg})"),
        }
    }
}

/// Run a call into the `tiff` crate and turn both its errors and any panic into a
/// [`Failure`]: hostile bytes must never take the process down.
fn guarded<T>(
    f: impl FnOnce() -> std::result::Result<T, TiffError>,
) -> std::result::Result<T, Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::Error(describe_tiff_error(&e))),
        Err(payload) => Err(Failure::Panicked(panic_text(payload.as_ref()))),
    }
}

fn describe_tiff_error(e: &TiffError) -> String {
    match e {
        TiffError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
            "unexpected end of file (truncated file?)".into()
        }
        other => other.to_string(),
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".into()
    }
}

fn page_error(path: &Path, page: usize, what: &str, msg: impl std::fmt::Display) -> Error {
    Error::input(path, format!("page {page}: {what}: {msg}"))
}

// ---------------------------------------------------------------------------------
// Reading pages
// ---------------------------------------------------------------------------------

/// Reads a TIFF's pages in order, converting each to `f32`, one page in memory.
///
/// The decoder is advanced lazily: [`TiffPageReader::skip_page`] only moves a
/// counter, and the IFDs in between are walked (not decoded) on the next read.
pub struct TiffPageReader {
    info: TiffInfo,
    decoder: Decoder<BufReader<File>>,
    big_endian: bool,
    /// Page whose IFD the decoder has loaded.
    decoder_page: usize,
    /// Page the next `read_page_into` returns.
    next_page: usize,
    /// Reused buffers: raw strip bytes (fast path) and decoder output.
    raw: Vec<u8>,
    decoded: DecodingResult,
    fast_path: bool,
    /// Set when the decoder panicked: its state is unknown, so refuse to go on.
    poisoned: bool,
}

impl TiffPageReader {
    /// Probe `path` and position a reader on its first page.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_probed(probe(path)?)
    }

    /// Open a file already described by [`probe`], skipping a second IFD walk. If the
    /// file changed since, reading fails with an input error (never a panic).
    pub fn open_probed(info: TiffInfo) -> Result<Self> {
        let decoder = open_decoder(&info.path)?;
        let big_endian = decoder.byte_order() == ByteOrder::BigEndian;
        Ok(TiffPageReader {
            info,
            decoder,
            big_endian,
            decoder_page: 0,
            next_page: 0,
            raw: Vec::new(),
            decoded: DecodingResult::U8(Vec::new()),
            fast_path: true,
            poisoned: false,
        })
    }

    pub fn info(&self) -> &TiffInfo {
        &self.info
    }

    /// Index of the page the next read returns (equals `info().pages` at the end).
    pub fn position(&self) -> usize {
        self.next_page
    }

    /// Enable or disable direct reading of uncompressed strips (on by default).
    /// Off, every page goes through the `tiff` decoder; useful to compare the paths.
    pub fn set_fast_path(&mut self, enabled: bool) {
        self.fast_path = enabled;
    }

    /// Decode the next page into `out` (`width * height` values, row-major).
    /// Returns `Ok(false)` after the last page. Non-finite values in a float32 file
    /// are an input error naming the page and pixel.
    pub fn read_page_into(&mut self, out: &mut [f32]) -> Result<bool> {
        if self.next_page >= self.info.pages {
            return Ok(false);
        }
        if out.len() != self.info.page_len() {
            return Err(Error::internal(format!(
                "read_page_into needs a buffer of {} values, got {}",
                self.info.page_len(),
                out.len()
            )));
        }
        let page = self.next_page;
        self.load_page(page)?;
        self.check_current_shape(page)?;
        let read_raw = match self.fast_path {
            true => self.raw_runs(page)?,
            false => None,
        };
        match read_raw {
            Some(runs) => self.read_raw(page, &runs, out)?,
            None => self.decode(page, out)?,
        }
        if self.info.pixel_type == PixelType::F32 {
            check_finite(&self.info.path, page, self.info.width, out)?;
        }
        self.next_page += 1;
        Ok(true)
    }

    /// Advance past the next page without decoding it. Returns `Ok(false)` after the
    /// last page.
    pub fn skip_page(&mut self) -> Result<bool> {
        if self.next_page >= self.info.pages {
            return Ok(false);
        }
        self.next_page += 1;
        Ok(true)
    }

    /// The `ImageDescription` of the page the next read returns (ScanImage puts its
    /// per-frame header there), or `None` if absent, unreadable or at the end.
    pub fn page_description(&mut self) -> Option<String> {
        if self.next_page >= self.info.pages || self.load_page(self.next_page).is_err() {
            return None;
        }
        ascii_tag(
            &mut self.decoder,
            Tag::ImageDescription,
            self.info.file_size,
        )
    }

    /// Walk the IFD chain up to `page` (only forward: readers never go back).
    fn load_page(&mut self, page: usize) -> Result<()> {
        if self.poisoned {
            return Err(Error::input(
                &self.info.path,
                format!("page {page}: cannot continue after an earlier decoder failure"),
            ));
        }
        while self.decoder_page < page {
            let next = self.decoder_page + 1;
            if !self.decoder.more_images() {
                return Err(Error::input(
                    &self.info.path,
                    format!("page {next}: missing; the file has fewer pages than when it was probed ({})", self.info.pages),
                ));
            }
            let dec = &mut self.decoder;
            let result = guarded(|| dec.next_image());
            self.note_failure(&result);
            result.map_err(|m| {
                page_error(&self.info.path, next, "cannot read its image directory", &m)
            })?;
            self.decoder_page = next;
        }
        Ok(())
    }

    /// A decoder that panicked may be in any state: poison the reader.
    fn note_failure<T>(&mut self, result: &std::result::Result<T, Failure>) {
        if let Err(Failure::Panicked(_)) = result {
            self.poisoned = true;
        }
    }

    /// A file changed since it was probed must not be read with the old shape.
    fn check_current_shape(&mut self, page: usize) -> Result<()> {
        let dec = &mut self.decoder;
        let dims = guarded(|| dec.dimensions());
        self.note_failure(&dims);
        let (w, h) =
            dims.map_err(|m| page_error(&self.info.path, page, "cannot read its size", &m))?;
        if (w as usize, h as usize) != (self.info.width, self.info.height) {
            return Err(Error::input(
                &self.info.path,
                format!(
                    "page {page} is {w}x{h} but the file was probed as {}x{} (width x height); did it change?",
                    self.info.width, self.info.height
                ),
            ));
        }
        Ok(())
    }

    /// The byte ranges holding the current page's pixels in row order, if it can be
    /// read directly: uncompressed, no predictor, one sample per pixel, min-is-black,
    /// stored in strips each holding at least its rows. `None` means "use the
    /// decoder", which handles (or properly rejects) everything else.
    fn raw_runs(&mut self, page: usize) -> Result<Option<Vec<(u64, usize)>>> {
        let dec = &mut self.decoder;
        let plan = guarded(|| raw_strip_plan(dec));
        self.note_failure(&plan);
        let Ok(Some(strips)) = plan else {
            return Ok(None);
        };
        let row_bytes = self.info.width * self.info.pixel_type.bytes();
        let (rows_per_strip, offsets, counts) = strips;
        let rows_per_strip = (rows_per_strip as usize).min(self.info.height).max(1);
        let n_strips = self.info.height.div_ceil(rows_per_strip);
        if offsets.len() != n_strips || counts.len() != n_strips {
            return Ok(None);
        }
        let mut runs: Vec<(u64, usize)> = Vec::new();
        for (s, (&offset, &count)) in offsets.iter().zip(&counts).enumerate() {
            let rows = rows_per_strip.min(self.info.height - s * rows_per_strip);
            let need = rows * row_bytes;
            if count < need as u64 {
                return Ok(None);
            }
            if offset.saturating_add(need as u64) > self.info.file_size {
                return Err(Error::input(
                    &self.info.path,
                    format!(
                        "page {page}: strip {s} ends past the end of the file ({} bytes; truncated file?)",
                        self.info.file_size
                    ),
                ));
            }
            // Strips stored back to back are read in one call.
            match runs.last_mut() {
                Some((start, len)) if *start + *len as u64 == offset => *len += need,
                _ => runs.push((offset, need)),
            }
        }
        Ok(Some(runs))
    }

    fn read_raw(&mut self, page: usize, runs: &[(u64, usize)], out: &mut [f32]) -> Result<()> {
        let page_bytes = self.info.page_len() * self.info.pixel_type.bytes();
        self.raw.resize(page_bytes, 0);
        let reader = self.decoder.inner();
        let mut pos = 0;
        for &(offset, len) in runs {
            let buf = &mut self.raw[pos..pos + len];
            reader
                .seek(SeekFrom::Start(offset))
                .and_then(|_| reader.read_exact(buf))
                .map_err(|e| {
                    let why = match e.kind() {
                        io::ErrorKind::UnexpectedEof => {
                            "unexpected end of file (truncated file?)".to_string()
                        }
                        _ => e.to_string(),
                    };
                    page_error(
                        &self.info.path,
                        page,
                        &format!("cannot read pixel data at byte {offset}"),
                        &why,
                    )
                })?;
            pos += len;
        }
        convert_raw(&self.raw, self.info.pixel_type, self.big_endian, out);
        Ok(())
    }

    fn decode(&mut self, page: usize, out: &mut [f32]) -> Result<()> {
        let (dec, buf) = (&mut self.decoder, &mut self.decoded);
        let result = guarded(|| dec.read_image_to_buffer(buf).map(|_| ()));
        self.note_failure(&result);
        result.map_err(|m| page_error(&self.info.path, page, "cannot decode pixel data", &m))?;
        let n = out.len();
        let copied = match &self.decoded {
            DecodingResult::U8(v) => copy_into(v.get(..n), out, |x| x as f32),
            DecodingResult::U16(v) => copy_into(v.get(..n), out, |x| x as f32),
            DecodingResult::I16(v) => copy_into(v.get(..n), out, |x| x as f32),
            DecodingResult::U32(v) => copy_into(v.get(..n), out, |x| x as f32),
            DecodingResult::F32(v) => copy_into(v.get(..n), out, |x| x),
            _ => false,
        };
        if !copied {
            return Err(Error::input(
                &self.info.path,
                format!(
                    "page {page}: the decoder returned data of another type or size than a {}x{} {} page",
                    self.info.width, self.info.height, self.info.pixel_type
                ),
            ));
        }
        Ok(())
    }
}

/// Rows per strip and the strip tables of the decoder's current page, if its layout
/// allows reading the bytes directly (see [`TiffPageReader::raw_runs`]).
type StripPlan = (u32, Vec<u64>, Vec<u64>);

fn raw_strip_plan(
    dec: &mut Decoder<BufReader<File>>,
) -> std::result::Result<Option<StripPlan>, TiffError> {
    if dec.get_chunk_type() != ChunkType::Strip {
        return Ok(None);
    }
    let tag_or = |dec: &mut Decoder<BufReader<File>>, tag: Tag, default: u32| {
        dec.find_tag_unsigned::<u32>(tag)
            .map(|v| v.unwrap_or(default))
    };
    let compression = tag_or(dec, Tag::Compression, 1)?;
    let predictor = tag_or(dec, Tag::Predictor, 1)?;
    let fill_order = tag_or(dec, Tag::FillOrder, 1)?;
    let samples = tag_or(dec, Tag::SamplesPerPixel, 1)?;
    let photometric = tag_or(dec, Tag::PhotometricInterpretation, u32::MAX)?;
    // Min-is-white pixels are inverted by the decoder; leave them to it.
    if (compression, predictor, fill_order, samples, photometric) != (1, 1, 1, 1, 1) {
        return Ok(None);
    }
    let rows_per_strip = tag_or(dec, Tag::RowsPerStrip, u32::MAX)?;
    let offsets = dec.find_tag_unsigned_vec::<u64>(Tag::StripOffsets)?;
    let counts = dec.find_tag_unsigned_vec::<u64>(Tag::StripByteCounts)?;
    Ok(match (offsets, counts) {
        (Some(o), Some(c)) => Some((rows_per_strip, o, c)),
        _ => None,
    })
}

fn copy_into<T: Copy>(src: Option<&[T]>, out: &mut [f32], convert: impl Fn(T) -> f32) -> bool {
    let Some(src) = src else { return false };
    for (o, &v) in out.iter_mut().zip(src) {
        *o = convert(v);
    }
    true
}

/// Convert raw sample bytes in the file's byte order to `f32`.
fn convert_raw(bytes: &[u8], pixel_type: PixelType, big_endian: bool, out: &mut [f32]) {
    fn each<const N: usize>(bytes: &[u8], out: &mut [f32], f: impl Fn([u8; N]) -> f32) {
        for (o, c) in out.iter_mut().zip(bytes.chunks_exact(N)) {
            *o = f(c.try_into().expect("chunks_exact yields N bytes"));
        }
    }
    match (pixel_type, big_endian) {
        (PixelType::U8, _) => each::<1>(bytes, out, |b| b[0] as f32),
        (PixelType::U16, false) => each::<2>(bytes, out, |b| u16::from_le_bytes(b) as f32),
        (PixelType::U16, true) => each::<2>(bytes, out, |b| u16::from_be_bytes(b) as f32),
        (PixelType::I16, false) => each::<2>(bytes, out, |b| i16::from_le_bytes(b) as f32),
        (PixelType::I16, true) => each::<2>(bytes, out, |b| i16::from_be_bytes(b) as f32),
        (PixelType::U32, false) => each::<4>(bytes, out, |b| u32::from_le_bytes(b) as f32),
        (PixelType::U32, true) => each::<4>(bytes, out, |b| u32::from_be_bytes(b) as f32),
        (PixelType::F32, false) => each::<4>(bytes, out, f32::from_le_bytes),
        (PixelType::F32, true) => each::<4>(bytes, out, f32::from_be_bytes),
    }
}

/// NaN or infinite pixels would poison every mean and correlation downstream.
fn check_finite(path: &Path, page: usize, width: usize, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::input(
            path,
            format!(
                "page {page}: pixel (row {}, column {}) is {}; cortexmap needs finite pixel values",
                i / width,
                i % width,
                values[i]
            ),
        )),
    }
}

// ---------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------

/// Options for [`TiffWriter::create`].
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Pages the caller expects to write; used to choose BigTIFF automatically.
    pub expected_pages: usize,
    /// `Some(true)` forces BigTIFF, `Some(false)` classic TIFF; `None` chooses
    /// BigTIFF when the file may exceed about 3.9 GiB (see [`needs_bigtiff`]).
    pub bigtiff: Option<bool>,
    /// Deflate compression with a horizontal predictor (smaller, slower).
    pub deflate: bool,
    /// `Software` tag of the first page.
    pub software: Option<String>,
    /// `ImageDescription` tag of the first page.
    pub description: Option<String>,
}

/// Writes a multi-page uint16 or int16 TIFF atomically: pages go to a temporary file
/// beside the destination, which [`TiffWriter::finish`] renames into place; a writer
/// dropped before `finish` removes its temporary and leaves nothing behind.
pub struct TiffWriter {
    dest: PathBuf,
    tmp: PathBuf,
    width: u32,
    height: u32,
    pixel_type: PixelType,
    software: Option<String>,
    description: Option<String>,
    bigtiff: bool,
    encoder: Option<Encoder>,
    sink: Option<SharedSink>,
    pages_written: usize,
    committed: bool,
}

enum Encoder {
    Classic(TiffEncoder<SharedSink, TiffKindStandard>),
    Big(TiffEncoder<SharedSink, TiffKindBig>),
}

/// The encoder owns its writer and never gives it back; sharing the buffered file
/// lets `finish` flush it with error checking and sync it before the rename.
#[derive(Clone)]
struct SharedSink(Arc<Mutex<BufWriter<File>>>);

impl SharedSink {
    fn with<R>(&self, f: impl FnOnce(&mut BufWriter<File>) -> io::Result<R>) -> io::Result<R> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| io::Error::other("TIFF output poisoned by an earlier panic"))?;
        f(&mut guard)
    }
}

impl Write for SharedSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.with(|w| w.write(buf))
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.with(|w| w.write_all(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.with(|w| w.flush())
    }
}

impl Seek for SharedSink {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.with(|w| w.seek(pos))
    }
}

impl TiffWriter {
    /// Start writing `path` (its folder must exist). `pixel_type` must be
    /// [`PixelType::U16`] or [`PixelType::I16`].
    pub fn create(
        path: &Path,
        width: usize,
        height: usize,
        pixel_type: PixelType,
        opts: WriteOptions,
    ) -> Result<Self> {
        if !matches!(pixel_type, PixelType::U16 | PixelType::I16) {
            return Err(Error::usage(format!(
                "TiffWriter writes uint16 or int16 pages, not {pixel_type}"
            )));
        }
        let (Ok(w), Ok(h)) = (u32::try_from(width), u32::try_from(height)) else {
            return Err(Error::usage(format!(
                "page size {width}x{height} is too large for TIFF"
            )));
        };
        if w == 0 || h == 0 {
            return Err(Error::usage(format!("page size {width}x{height} is empty")));
        }
        for (tag, text) in [
            ("Software", &opts.software),
            ("ImageDescription", &opts.description),
        ] {
            if let Some(t) = text {
                if !t.is_ascii() || t.contains('\0') {
                    return Err(Error::usage(format!(
                        "the {tag} tag must be ASCII without NUL characters"
                    )));
                }
            }
        }
        let bigtiff = opts.bigtiff.unwrap_or_else(|| {
            needs_bigtiff(opts.expected_pages, width, height, pixel_type.bytes())
        });

        let tmp = temp_path_for(path);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::output(path, e))?;
        let sink = SharedSink(Arc::new(Mutex::new(BufWriter::with_capacity(
            WRITE_BUFFER_BYTES,
            file,
        ))));
        let mut writer = TiffWriter {
            dest: path.to_path_buf(),
            tmp,
            width: w,
            height: h,
            pixel_type,
            software: opts.software,
            description: opts.description,
            bigtiff,
            encoder: None,
            sink: Some(sink.clone()),
            pages_written: 0,
            committed: false,
        };
        // From here on, an error drops `writer`, which removes the temporary.
        let encoder = if bigtiff {
            TiffEncoder::new_big(sink).map(|e| Encoder::Big(configure(e, opts.deflate)))
        } else {
            TiffEncoder::new(sink).map(|e| Encoder::Classic(configure(e, opts.deflate)))
        };
        writer.encoder = Some(encoder.map_err(|e| writer.write_error(e))?);
        Ok(writer)
    }

    /// Pages written so far.
    pub fn pages_written(&self) -> usize {
        self.pages_written
    }

    /// Whether the file is being written as BigTIFF.
    pub fn is_bigtiff(&self) -> bool {
        self.bigtiff
    }

    /// Append a uint16 page (`width * height` values, row-major).
    pub fn write_page_u16(&mut self, data: &[u16]) -> Result<()> {
        self.check_page(PixelType::U16, data.len())?;
        let (w, h, sw, desc) = self.page_tags();
        let result = match self.encoder.as_mut() {
            Some(Encoder::Classic(e)) => {
                write_page::<Gray16, _>(e, w, h, data, sw.as_deref(), desc.as_deref())
            }
            Some(Encoder::Big(e)) => {
                write_page::<Gray16, _>(e, w, h, data, sw.as_deref(), desc.as_deref())
            }
            None => return Err(Error::internal("TiffWriter used after an encoder failure")),
        };
        self.page_done(result)
    }

    /// Append an int16 page (`width * height` values, row-major).
    pub fn write_page_i16(&mut self, data: &[i16]) -> Result<()> {
        self.check_page(PixelType::I16, data.len())?;
        let (w, h, sw, desc) = self.page_tags();
        let result = match self.encoder.as_mut() {
            Some(Encoder::Classic(e)) => {
                write_page::<GrayI16, _>(e, w, h, data, sw.as_deref(), desc.as_deref())
            }
            Some(Encoder::Big(e)) => {
                write_page::<GrayI16, _>(e, w, h, data, sw.as_deref(), desc.as_deref())
            }
            None => return Err(Error::internal("TiffWriter used after an encoder failure")),
        };
        self.page_done(result)
    }

    /// Flush, sync and rename the file into place. At least one page is required.
    pub fn finish(mut self) -> Result<()> {
        if self.pages_written == 0 {
            return Err(Error::usage(format!(
                "no pages were written to {}; a TIFF needs at least one",
                self.dest.display()
            )));
        }
        // The encoder holds the other handle on the shared file: drop it first.
        self.encoder = None;
        let sink = self
            .sink
            .take()
            .ok_or_else(|| Error::internal("TiffWriter finished twice"))?;
        let buffered = Arc::try_unwrap(sink.0)
            .map_err(|_| Error::internal("TIFF output still shared at finish"))?
            .into_inner()
            .map_err(|_| Error::internal("TIFF output poisoned by an earlier panic"))?;
        let file = buffered
            .into_inner()
            .map_err(|e| Error::output(&self.dest, e.error()))?;
        file.sync_all().map_err(|e| Error::output(&self.dest, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| Error::output(&self.dest, e))?;
        self.committed = true;
        Ok(())
    }

    fn check_page(&self, pixel_type: PixelType, len: usize) -> Result<()> {
        if pixel_type != self.pixel_type {
            return Err(Error::usage(format!(
                "cannot write a {pixel_type} page to {}, which holds {} pages",
                self.dest.display(),
                self.pixel_type
            )));
        }
        let expected = self.width as usize * self.height as usize;
        if len != expected {
            return Err(Error::usage(format!(
                "a {}x{} page needs {expected} values, got {len}",
                self.width, self.height
            )));
        }
        Ok(())
    }

    /// Size and the tags that go on this page (text tags on the first page only).
    fn page_tags(&self) -> (u32, u32, Option<String>, Option<String>) {
        let first = self.pages_written == 0;
        let pick = |t: &Option<String>| if first { t.clone() } else { None };
        (
            self.width,
            self.height,
            pick(&self.software),
            pick(&self.description),
        )
    }

    fn page_done(&mut self, result: ::tiff::TiffResult<()>) -> Result<()> {
        match result {
            Ok(()) => {
                self.pages_written += 1;
                Ok(())
            }
            Err(e) => {
                // A half-written page leaves the encoder unusable.
                self.encoder = None;
                Err(self.write_error(e))
            }
        }
    }

    fn write_error(&self, e: TiffError) -> Error {
        match e {
            TiffError::IntSizeError if !self.bigtiff => Error::output(
                &self.dest,
                "the file grew past the 4 GiB limit of classic TIFF; write it as BigTIFF (WriteOptions::bigtiff or expected_pages)",
            ),
            other => Error::output(&self.dest, other),
        }
    }
}

impl Drop for TiffWriter {
    fn drop(&mut self) {
        if !self.committed {
            self.encoder = None;
            self.sink = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn configure<K: TiffKind>(
    encoder: TiffEncoder<SharedSink, K>,
    deflate: bool,
) -> TiffEncoder<SharedSink, K> {
    if deflate {
        // The horizontal predictor makes smooth images compress much better.
        encoder
            .with_compression(Compression::Deflate(DeflateLevel::Fast))
            .with_predictor(Predictor::Horizontal)
    } else {
        encoder
    }
}

fn write_page<C: EncodeColor, K: TiffKind>(
    encoder: &mut TiffEncoder<SharedSink, K>,
    width: u32,
    height: u32,
    data: &[C::Inner],
    software: Option<&str>,
    description: Option<&str>,
) -> ::tiff::TiffResult<()>
where
    [C::Inner]: TiffValue,
{
    let mut image = encoder.new_image::<C>(width, height)?;
    if let Some(s) = software {
        image.encoder().write_tag(Tag::Software, s)?;
    }
    if let Some(d) = description {
        image.encoder().write_tag(Tag::ImageDescription, d)?;
    }
    image.write_data(data)
}

/// The first page of a TIFF as f32: (width, height, pixels row-major). For the
/// single-page images a run writes (`images/`).
pub fn read_image_f32(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    let mut r = TiffPageReader::open(path)?;
    let (width, height) = (r.info().width, r.info().height);
    let mut data = vec![0f32; width * height];
    if !r.read_page_into(&mut data)? {
        return Err(Error::input(path, "the image file has no page"));
    }
    Ok((width, height, data))
}

/// Write one float32 image (a reference or mean image, for viewing) atomically.
pub fn write_image_f32(
    path: &Path,
    width: usize,
    height: usize,
    data: &[f32],
    description: &str,
) -> Result<()> {
    if data.len() != width * height {
        return Err(Error::internal(format!(
            "{}: image has {} values, expected {width}x{height}",
            path.display(),
            data.len()
        )));
    }
    let mut file = crate::io::atomic::AtomicFile::create(path)?;
    {
        let mut enc =
            ::tiff::encoder::TiffEncoder::new(file.writer()).map_err(|e| Error::output(path, e))?;
        let mut img = enc
            .new_image::<::tiff::encoder::colortype::Gray32Float>(width as u32, height as u32)
            .map_err(|e| Error::output(path, e))?;
        img.encoder()
            .write_tag(Tag::ImageDescription, description)
            .map_err(|e| Error::output(path, e))?;
        img.write_data(data).map_err(|e| Error::output(path, e))?;
    }
    file.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::assert_input_error;
    use ::tiff::encoder::colortype::{Gray32Float, Gray64Float, RGB8};
    use std::panic::catch_unwind;

    // ----- helpers -----

    fn write_u16(path: &Path, w: usize, h: usize, pages: &[Vec<u16>], opts: WriteOptions) {
        let mut wr = TiffWriter::create(path, w, h, PixelType::U16, opts).unwrap();
        for p in pages {
            wr.write_page_u16(p).unwrap();
        }
        wr.finish().unwrap();
    }

    fn read_all(path: &Path, fast: bool) -> Vec<Vec<f32>> {
        let mut r = TiffPageReader::open(path).unwrap();
        r.set_fast_path(fast);
        let mut out = vec![0f32; r.info().page_len()];
        let mut pages = Vec::new();
        while r.read_page_into(&mut out).unwrap() {
            pages.push(out.clone());
        }
        assert!(!r.read_page_into(&mut out).unwrap(), "stays at the end");
        pages
    }

    /// Read every page, returning the first error; asserts that nothing panics.
    fn try_read_everything(path: &Path) -> Result<usize> {
        let result = catch_unwind(|| -> Result<usize> {
            let mut r = TiffPageReader::open(path)?;
            let mut out = vec![0f32; r.info().page_len()];
            let mut n = 0;
            while r.read_page_into(&mut out)? {
                n += 1;
            }
            Ok(n)
        });
        result.expect("reading a TIFF must never panic")
    }

    fn pattern_u16(w: usize, h: usize, page: usize) -> Vec<u16> {
        (0..w * h)
            .map(|i| ((i * 7919 + page * 104729) % 65536) as u16)
            .collect()
    }

    fn as_f32<T: Copy + Into<f32>>(v: &[T]) -> Vec<f32> {
        v.iter().map(|&x| x.into()).collect()
    }

    /// A minimal classic-TIFF builder, so tests control byte order, strip layout and
    /// individual tag values (the `tiff` encoder writes native order only).
    struct RawPage {
        width: u32,
        height: u32,
        bits: u16,
        sample_format: u16,
        rows_per_strip: u32,
        /// Pixel bytes, already in the file's byte order.
        data: Vec<u8>,
        /// (tag, value) pairs replacing or adding scalar tags.
        overrides: Vec<(u16, u32)>,
    }

    impl RawPage {
        fn u16(width: u32, height: u32, values: &[u16], big_endian: bool) -> RawPage {
            let data = values
                .iter()
                .flat_map(|v| {
                    if big_endian {
                        v.to_be_bytes()
                    } else {
                        v.to_le_bytes()
                    }
                })
                .collect();
            RawPage {
                width,
                height,
                bits: 16,
                sample_format: 1,
                rows_per_strip: height,
                data,
                overrides: vec![],
            }
        }
    }

    fn put16(f: &mut Vec<u8>, v: u16, be: bool) {
        f.extend(if be { v.to_be_bytes() } else { v.to_le_bytes() });
    }
    fn put32(f: &mut Vec<u8>, v: u32, be: bool) {
        f.extend(if be { v.to_be_bytes() } else { v.to_le_bytes() });
    }

    fn build_classic(be: bool, pages: &[RawPage]) -> Vec<u8> {
        const SHORT: u16 = 3;
        const LONG: u16 = 4;
        let mut f = Vec::new();
        f.extend(if be { b"MM" } else { b"II" });
        put16(&mut f, 42, be);
        let mut next_ptr_at = f.len();
        put32(&mut f, 0, be);
        for p in pages {
            let row_bytes = (p.width * u32::from(p.bits) / 8) as usize;
            let rps = p.rows_per_strip.max(1) as usize;
            let n_strips = (p.height as usize).div_ceil(rps);
            let data_start = f.len();
            f.extend(&p.data);
            let mut offsets = Vec::new();
            let mut counts = Vec::new();
            for s in 0..n_strips {
                let start = (s * rps * row_bytes).min(p.data.len());
                let end = ((s + 1) * rps).min(p.height as usize) * row_bytes;
                offsets.push((data_start + start) as u32);
                counts.push((end.min(p.data.len()) - start) as u32);
            }
            // Strip tables of several entries live outside the IFD.
            let table = |f: &mut Vec<u8>, v: &[u32]| -> u32 {
                if v.len() == 1 {
                    return v[0];
                }
                let at = f.len() as u32;
                for &x in v {
                    put32(f, x, be);
                }
                at
            };
            let off_field = table(&mut f, &offsets);
            let cnt_field = table(&mut f, &counts);
            let n = n_strips as u32;
            let mut entries: Vec<(u16, u16, u32, u32)> = vec![
                (256, LONG, 1, p.width),
                (257, LONG, 1, p.height),
                (258, SHORT, 1, u32::from(p.bits)),
                (259, SHORT, 1, 1),
                (262, SHORT, 1, 1),
                (273, LONG, n, off_field),
                (277, SHORT, 1, 1),
                (278, LONG, 1, p.rows_per_strip),
                (279, LONG, n, cnt_field),
                (339, SHORT, 1, u32::from(p.sample_format)),
            ];
            for &(tag, value) in &p.overrides {
                match entries.iter_mut().find(|e| e.0 == tag) {
                    Some(e) => e.3 = value,
                    None => entries.push((tag, LONG, 1, value)),
                }
            }
            entries.sort_by_key(|e| e.0);
            if f.len() % 2 == 1 {
                f.push(0);
            }
            let ifd_at = f.len() as u32;
            let patch = if be {
                ifd_at.to_be_bytes()
            } else {
                ifd_at.to_le_bytes()
            };
            f[next_ptr_at..next_ptr_at + 4].copy_from_slice(&patch);
            put16(&mut f, entries.len() as u16, be);
            for (tag, ty, count, value) in entries {
                put16(&mut f, tag, be);
                put16(&mut f, ty, be);
                put32(&mut f, count, be);
                if ty == SHORT && count == 1 {
                    put16(&mut f, value as u16, be);
                    put16(&mut f, 0, be);
                } else {
                    put32(&mut f, value, be);
                }
            }
            next_ptr_at = f.len();
            put32(&mut f, 0, be);
        }
        f
    }

    fn lcg_bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 33) as u8
            })
            .collect()
    }

    // ----- basics -----

    #[test]
    fn pixel_type_names_and_sizes() {
        let all = [
            PixelType::U8,
            PixelType::U16,
            PixelType::I16,
            PixelType::U32,
            PixelType::F32,
        ];
        let names: Vec<_> = all.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["uint8", "uint16", "int16", "uint32", "float32"]);
        let bytes: Vec<_> = all.iter().map(|p| p.bytes()).collect();
        assert_eq!(bytes, [1, 2, 2, 4, 4]);
        assert_eq!(PixelType::I16.to_string(), "int16");
    }

    #[test]
    fn bigtiff_threshold() {
        assert!(!needs_bigtiff(0, 512, 512, 2));
        assert!(!needs_bigtiff(1000, 512, 512, 2)); // 0.5 GB
        assert!(!needs_bigtiff(7000, 512, 512, 2)); // 3.4 GiB
        assert!(needs_bigtiff(8000, 512, 512, 2)); // 3.9+ GiB
        assert!(needs_bigtiff(54000, 512, 512, 2)); // a long ScanImage session
        assert!(needs_bigtiff(1, 100_000, 100_000, 4));
        assert!(!needs_bigtiff(usize::MAX, 0, 0, 2) || needs_bigtiff(usize::MAX, 0, 0, 2));
    }

    // ----- round trips -----

    #[test]
    fn uint16_round_trip_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u16.tif");
        let (w, h) = (11, 7); // not square: a transposition would show
        let mut pages: Vec<Vec<u16>> = (0..5).map(|p| pattern_u16(w, h, p)).collect();
        pages[0][0] = 0;
        pages[0][1] = u16::MAX;
        let opts = WriteOptions {
            expected_pages: 5,
            software: Some("cortexmap test".into()),
            description: Some("hello\nworld".into()),
            ..Default::default()
        };
        write_u16(&path, w, h, &pages, opts);

        let info = probe(&path).unwrap();
        assert_eq!((info.pages, info.width, info.height), (5, w, h));
        assert_eq!(info.pixel_type, PixelType::U16);
        assert!(!info.bigtiff);
        assert_eq!(info.compression, "none");
        assert_eq!(info.software.as_deref(), Some("cortexmap test"));
        assert_eq!(info.description.as_deref(), Some("hello\nworld"));
        assert_eq!(info.scanimage, None);
        assert_eq!(info.file_size, std::fs::metadata(&path).unwrap().len());

        let want: Vec<Vec<f32>> = pages.iter().map(|p| as_f32(p)).collect();
        assert_eq!(read_all(&path, true), want);
        assert_eq!(read_all(&path, false), want);
    }

    #[test]
    fn int16_round_trip_with_negatives_and_deflate() {
        let dir = tempfile::tempdir().unwrap();
        for deflate in [false, true] {
            let path = dir.path().join(format!("i16-{deflate}.tif"));
            let (w, h) = (9, 4);
            let pages: Vec<Vec<i16>> = (0..3)
                .map(|p| {
                    (0..w * h)
                        .map(|i| (i as i32 * 1000 - 17000 + p * 3) as i16)
                        .collect()
                })
                .collect();
            let mut extremes = pages.clone();
            extremes[1][0] = i16::MIN;
            extremes[1][1] = -1;
            extremes[1][2] = i16::MAX;
            let opts = WriteOptions {
                deflate,
                ..Default::default()
            };
            let mut wr = TiffWriter::create(&path, w, h, PixelType::I16, opts).unwrap();
            for p in &extremes {
                wr.write_page_i16(p).unwrap();
            }
            assert_eq!(wr.pages_written(), 3);
            wr.finish().unwrap();

            let info = probe(&path).unwrap();
            assert_eq!(info.pixel_type, PixelType::I16);
            assert_eq!(info.compression, if deflate { "deflate" } else { "none" });
            let want: Vec<Vec<f32>> = extremes.iter().map(|p| as_f32(p)).collect();
            assert_eq!(read_all(&path, true), want);
            assert_eq!(read_all(&path, false), want);
        }
    }

    #[test]
    fn forced_bigtiff_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.tif");
        let pages: Vec<Vec<u16>> = (0..4).map(|p| pattern_u16(16, 5, p)).collect();
        let opts = WriteOptions {
            bigtiff: Some(true),
            description: Some("big".into()),
            ..Default::default()
        };
        write_u16(&path, 16, 5, &pages, opts);
        let head = std::fs::read(&path).unwrap();
        assert_eq!(
            &head[2..4],
            &43u16.to_le_bytes(),
            "BigTIFF version in the header"
        );
        let info = probe(&path).unwrap();
        assert!(info.bigtiff);
        assert_eq!(info.pages, 4);
        assert_eq!(info.description.as_deref(), Some("big"));
        let want: Vec<Vec<f32>> = pages.iter().map(|p| as_f32(p)).collect();
        assert_eq!(read_all(&path, true), want);
        assert_eq!(read_all(&path, false), want);
    }

    #[test]
    fn automatic_bigtiff_choice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auto.tif");
        let small =
            TiffWriter::create(&path, 4, 4, PixelType::U16, WriteOptions::default()).unwrap();
        assert!(!small.is_bigtiff());
        drop(small);
        let opts = WriteOptions {
            expected_pages: 54_000,
            ..Default::default()
        };
        let large = TiffWriter::create(&path, 512, 512, PixelType::I16, opts).unwrap();
        assert!(large.is_bigtiff());
    }

    #[test]
    fn skip_and_descriptions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("skip.tif");
        let pages: Vec<Vec<u16>> = (0..4).map(|p| vec![p as u16; 6]).collect();
        let opts = WriteOptions {
            description: Some("first".into()),
            ..Default::default()
        };
        write_u16(&path, 3, 2, &pages, opts);
        let mut r = TiffPageReader::open(&path).unwrap();
        let mut out = vec![0f32; 6];
        assert_eq!(r.page_description().as_deref(), Some("first"));
        assert!(r.skip_page().unwrap());
        assert_eq!(r.page_description(), None);
        assert!(r.read_page_into(&mut out).unwrap());
        assert_eq!(out, vec![1.0; 6]);
        assert!(r.skip_page().unwrap());
        assert!(r.read_page_into(&mut out).unwrap());
        assert_eq!(out, vec![3.0; 6]);
        assert_eq!(r.position(), 4);
        assert!(!r.skip_page().unwrap());
        assert!(!r.read_page_into(&mut out).unwrap());
        assert_eq!(r.page_description(), None);
    }

    #[test]
    fn wrong_buffer_size_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buf.tif");
        write_u16(&path, 3, 2, &[vec![1; 6]], WriteOptions::default());
        let mut r = TiffPageReader::open(&path).unwrap();
        assert!(r.read_page_into(&mut [0f32; 5]).is_err());
    }

    #[test]
    fn big_endian_and_multi_strip_layouts_read_identically_on_both_paths() {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (5u32, 7u32);
        let values: Vec<u16> = (0..w * h).map(|i| (i * 1201 % 65536) as u16).collect();
        for be in [false, true] {
            for rps in [1, 2, 3, 7, 100] {
                let path = dir.path().join(format!("raw-{be}-{rps}.tif"));
                let mut page = RawPage::u16(w, h, &values, be);
                page.rows_per_strip = rps;
                let second = RawPage::u16(
                    w,
                    h,
                    &values.iter().map(|v| v ^ 0xff).collect::<Vec<_>>(),
                    be,
                );
                std::fs::write(&path, build_classic(be, &[page, second])).unwrap();
                let fast = read_all(&path, true);
                assert_eq!(fast, read_all(&path, false), "be={be} rps={rps}");
                assert_eq!(fast[0], as_f32(&values));
            }
        }
    }

    #[test]
    fn other_pixel_types_read_on_both_paths() {
        let dir = tempfile::tempdir().unwrap();
        // uint8, uint32 and float32 via the hand-built writer, big-endian included.
        for be in [false, true] {
            let u8_page = RawPage {
                width: 3,
                height: 2,
                bits: 8,
                sample_format: 1,
                rows_per_strip: 1,
                data: vec![0, 1, 2, 253, 254, 255],
                overrides: vec![],
            };
            let u32_vals = [0u32, 1, 70000, 16_777_216, 3, 9];
            let u32_page = RawPage {
                width: 3,
                height: 2,
                bits: 32,
                sample_format: 1,
                rows_per_strip: 2,
                data: u32_vals
                    .iter()
                    .flat_map(|v| if be { v.to_be_bytes() } else { v.to_le_bytes() })
                    .collect(),
                overrides: vec![],
            };
            let f_vals = [-1.5f32, 0.0, 2.25, 1e6, -3e-3, 7.0];
            let f_page = RawPage {
                width: 3,
                height: 2,
                bits: 32,
                sample_format: 3,
                rows_per_strip: 1,
                data: f_vals
                    .iter()
                    .flat_map(|v| if be { v.to_be_bytes() } else { v.to_le_bytes() })
                    .collect(),
                overrides: vec![],
            };
            let cases: [(RawPage, PixelType, Vec<f32>); 3] = [
                (u8_page, PixelType::U8, vec![0., 1., 2., 253., 254., 255.]),
                (
                    u32_page,
                    PixelType::U32,
                    u32_vals.iter().map(|&v| v as f32).collect(),
                ),
                (f_page, PixelType::F32, f_vals.to_vec()),
            ];
            for (i, (page, ty, want)) in cases.into_iter().enumerate() {
                let path = dir.path().join(format!("t{i}-{be}.tif"));
                std::fs::write(&path, build_classic(be, &[page])).unwrap();
                assert_eq!(probe(&path).unwrap().pixel_type, ty);
                assert_eq!(read_all(&path, true), vec![want.clone()], "{ty} be={be}");
                assert_eq!(read_all(&path, false), vec![want], "{ty} be={be} decoder");
            }
        }
    }

    #[test]
    fn readers_and_writers_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<TiffPageReader>();
        assert_send::<TiffWriter>();
        assert_send::<TiffInfo>();
    }

    // ----- the writer's contract -----

    #[test]
    fn writer_rejects_bad_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.tif");
        for ty in [PixelType::U8, PixelType::U32, PixelType::F32] {
            assert!(matches!(
                TiffWriter::create(&path, 4, 4, ty, WriteOptions::default()),
                Err(Error::Usage(_))
            ));
        }
        assert!(TiffWriter::create(&path, 0, 4, PixelType::U16, WriteOptions::default()).is_err());
        let bad_text = WriteOptions {
            description: Some("µm".into()),
            ..Default::default()
        };
        assert!(TiffWriter::create(&path, 4, 4, PixelType::U16, bad_text).is_err());

        let mut wr =
            TiffWriter::create(&path, 4, 4, PixelType::U16, WriteOptions::default()).unwrap();
        assert!(wr.write_page_i16(&[0; 16]).is_err(), "wrong pixel type");
        assert!(wr.write_page_u16(&[0; 15]).is_err(), "wrong length");
        assert!(matches!(wr.finish(), Err(Error::Usage(_))), "no pages");
        assert!(!path.exists());
        let missing_dir = dir.path().join("nope").join("x.tif");
        assert!(matches!(
            TiffWriter::create(&missing_dir, 4, 4, PixelType::U16, WriteOptions::default()),
            Err(Error::Output { .. })
        ));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no temporaries left"
        );
    }

    #[test]
    fn dropping_a_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dropped.tif");
        {
            let mut wr =
                TiffWriter::create(&path, 4, 4, PixelType::U16, WriteOptions::default()).unwrap();
            wr.write_page_u16(&[7; 16]).unwrap();
            assert!(temp_path_for(&path).exists(), "written to a temporary");
            assert!(!path.exists(), "not visible before finish");
        }
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    // ----- bad input: errors, never panics -----

    #[test]
    fn empty_short_and_non_tiff_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.tif");
        std::fs::write(&path, b"").unwrap();
        assert_input_error(probe(&path), &path, "empty");
        std::fs::write(&path, b"II*\0").unwrap();
        assert_input_error(probe(&path), &path, "too short");
        std::fs::write(&path, b"PK\x03\x04 this is a zip file").unwrap();
        assert_input_error(probe(&path), &path, "not a TIFF");
        std::fs::write(&path, b"II\x2a\x00\x00\x00\x00\x00rest").unwrap();
        assert_input_error(probe(&path), &path, "no pages");
        std::fs::write(&path, b"II\x2a\x00\xff\xff\x00\x00rest").unwrap();
        assert_input_error(probe(&path), &path, "truncated");
        std::fs::write(&path, b"II\x2c\x00\x08\x00\x00\x00rest").unwrap();
        assert_input_error(probe(&path), &path, "version 44");
        let missing = dir.path().join("missing.tif");
        assert_input_error(probe(&missing), &missing, "cannot read");
    }

    #[test]
    fn header_claiming_bigtiff_falsely() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake-big.tif");
        write_u16(
            &path,
            4,
            3,
            &[vec![1; 12], vec![2; 12]],
            WriteOptions::default(),
        );
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[2] = 43; // classic header bytes now read as a BigTIFF header
        std::fs::write(&path, &bytes).unwrap();
        assert_input_error(probe(&path), &path, "BigTIFF");
    }

    #[test]
    fn truncated_files() {
        let dir = tempfile::tempdir().unwrap();
        let full = dir.path().join("full.tif");
        let pages: Vec<Vec<u16>> = (0..3).map(|p| pattern_u16(8, 6, p)).collect();
        let opts = WriteOptions {
            description: Some("d".into()),
            ..Default::default()
        };
        write_u16(&full, 8, 6, &pages, opts);
        let bytes = std::fs::read(&full).unwrap();
        let n = bytes.len();
        let path = dir.path().join("cut.tif");
        let mut cuts: Vec<usize> = vec![
            0,
            1,
            4,
            7,
            8,
            9,
            15,
            50,
            96,
            104,
            n / 3,
            n / 2,
            2 * n / 3,
            n - 20,
            n - 4,
            n - 1,
        ];
        cuts.extend((0..n).step_by(13));
        for cut in cuts {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let r = try_read_everything(&path);
            assert!(
                r.is_err(),
                "a file cut at {cut} of {n} bytes must be rejected"
            );
            match r {
                Err(Error::Input { path: p, .. }) => assert_eq!(p, path),
                other => panic!("expected an input error, got {other:?}"),
            }
        }
    }

    #[test]
    fn file_truncated_after_probing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shrinks.tif");
        let pages: Vec<Vec<u16>> = (0..4).map(|p| pattern_u16(32, 32, p)).collect();
        write_u16(&path, 32, 32, &pages, WriteOptions::default());
        for fast in [true, false] {
            let bytes = std::fs::read(&path).unwrap();
            let info = probe(&path).unwrap();
            let mut r = TiffPageReader::open_probed(info).unwrap();
            r.set_fast_path(fast);
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            let mut out = vec![0f32; 32 * 32];
            let result = catch_unwind(AssertUnwindSafe(|| {
                let mut n = 0;
                while r.read_page_into(&mut out)? {
                    n += 1;
                }
                Ok::<usize, Error>(n)
            }))
            .expect("no panic");
            assert!(
                matches!(result, Err(Error::Input { .. })),
                "fast={fast}: {result:?}"
            );
            std::fs::write(&path, &bytes).unwrap();
        }
    }

    #[test]
    fn random_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("random.tif");
        for seed in 0..200 {
            let mut bytes = lcg_bytes(seed, 64 + (seed as usize * 37) % 4000);
            if seed % 2 == 0 {
                // Valid signature, garbage after it: exercises the decoder itself.
                bytes[..4].copy_from_slice(if seed % 4 == 0 { b"II*\0" } else { b"MM\0*" });
                bytes[4..8].copy_from_slice(&8u32.to_le_bytes());
            }
            std::fs::write(&path, &bytes).unwrap();
            assert!(try_read_everything(&path).is_err(), "seed {seed}");
        }
    }

    #[test]
    fn every_single_byte_corruption_of_a_small_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.tif");
        let pages: Vec<Vec<u16>> = (0..3).map(|p| pattern_u16(6, 4, p)).collect();
        let opts = WriteOptions {
            description: Some("frameNumbers = 1".into()),
            ..Default::default()
        };
        write_u16(&good, 6, 4, &pages, opts);
        let bytes = std::fs::read(&good).unwrap();
        let path = dir.path().join("flipped.tif");
        for i in 0..bytes.len() {
            for v in [0x00, 0xff, bytes[i] ^ 0x80] {
                let mut b = bytes.clone();
                b[i] = v;
                std::fs::write(&path, &b).unwrap();
                // Either outcome is fine (a flipped pixel is still a valid file);
                // a panic, or an error of another kind, is not.
                if let Err(e) = try_read_everything(&path) {
                    assert!(matches!(e, Error::Input { .. }), "byte {i} = {v:#x}: {e:?}");
                }
            }
        }
    }

    #[test]
    fn garbage_tags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tags.tif");
        let values: Vec<u16> = (0..12).collect();
        let cases: [(Vec<(u16, u32)>, &str); 8] = [
            (vec![(256, 0)], "page 0"),                       // zero width
            (vec![(256, 100_000), (257, 100_000)], "page 0"), // huge, data far too small
            (vec![(258, 0)], "page 0"),                       // zero bits per sample
            (vec![(258, 12)], "12-bit"),                      // unsupported depth
            (vec![(259, 12345)], "page 0"),                   // unknown compression
            (vec![(273, 1 << 30)], "past the end"),           // strip offset beyond the file
            (vec![(279, 1 << 30)], "past the end"),           // strip byte count beyond the file
            (vec![(339, 3)], "16-bit floating-point"),        // float16: unsupported
        ];
        for (overrides, needle) in cases {
            let mut page = RawPage::u16(4, 3, &values, false);
            page.overrides = overrides.clone();
            std::fs::write(&path, build_classic(false, &[page])).unwrap();
            let r = try_read_everything(&path);
            assert_input_error(r, &path, needle);
        }
    }

    #[test]
    fn pages_that_disagree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mixed.tif");
        let a = RawPage::u16(4, 3, &[1; 12], false);
        let b = RawPage::u16(4, 3, &[2; 12], false);
        let c = RawPage::u16(3, 4, &[3; 12], false);
        std::fs::write(&path, build_classic(false, &[a, b, c])).unwrap();
        assert_input_error(probe(&path), &path, "page 2 is 3x4");

        let a = RawPage::u16(4, 3, &[1; 12], false);
        let mut b = RawPage::u16(4, 3, &[2; 12], false);
        b.sample_format = 2;
        std::fs::write(&path, build_classic(false, &[a, b])).unwrap();
        assert_input_error(probe(&path), &path, "page 1 is 4x3 (width x height) int16");
    }

    #[test]
    fn rgb_and_unsupported_types_via_encoder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rgb.tif");
        {
            let mut enc = TiffEncoder::new(File::create(&path).unwrap()).unwrap();
            enc.write_image::<RGB8>(2, 2, &[0u8; 12]).unwrap();
        }
        assert_input_error(probe(&path), &path, "single-channel");
        {
            let mut enc = TiffEncoder::new(File::create(&path).unwrap()).unwrap();
            enc.write_image::<Gray64Float>(2, 2, &[0f64; 4]).unwrap();
        }
        assert_input_error(probe(&path), &path, "64-bit floating-point");
    }

    #[test]
    fn float32_nan_and_infinity_are_input_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("float.tif");
        {
            let mut enc = TiffEncoder::new(File::create(&path).unwrap()).unwrap();
            enc.write_image::<Gray32Float>(3, 2, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
                .unwrap();
            enc.write_image::<Gray32Float>(3, 2, &[1.0, 2.0, 3.0, 4.0, f32::NAN, 6.0])
                .unwrap();
            enc.write_image::<Gray32Float>(3, 2, &[f32::INFINITY; 6])
                .unwrap();
        }
        assert_eq!(probe(&path).unwrap().pixel_type, PixelType::F32);
        for fast in [true, false] {
            let mut r = TiffPageReader::open(&path).unwrap();
            r.set_fast_path(fast);
            let mut out = vec![0f32; 6];
            assert!(r.read_page_into(&mut out).unwrap());
            assert_eq!(out, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
            let err = r.read_page_into(&mut out).unwrap_err();
            assert_input_error::<()>(Err(err), &path, "page 1: pixel (row 1, column 1) is NaN");
        }
        // Skipping the bad page is fine; the infinite one is not.
        let mut r = TiffPageReader::open(&path).unwrap();
        let mut out = vec![0f32; 6];
        r.skip_page().unwrap();
        r.skip_page().unwrap();
        assert_input_error(
            r.read_page_into(&mut out),
            &path,
            "page 2: pixel (row 0, column 0) is inf",
        );
    }

    #[test]
    fn imagej_raw_stacks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imagej.tif");
        let opts = WriteOptions {
            description: Some("ImageJ=1.53t\nimages=5000\nframes=5000\n".into()),
            ..Default::default()
        };
        write_u16(&path, 4, 4, &[vec![0; 16]], opts);
        assert_input_error(probe(&path), &path, "images");
        let opts = WriteOptions {
            description: Some("ImageJ=1.53t\nimages=2\n".into()),
            ..Default::default()
        };
        write_u16(&path, 4, 4, &[vec![0; 16], vec![1; 16]], opts);
        assert_eq!(probe(&path).unwrap().pages, 2);
    }

    #[test]
    fn scanimage_metadata_from_per_page_descriptions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("si.tif");
        {
            let mut enc = TiffEncoder::new(File::create(&path).unwrap()).unwrap();
            for page in 0..6u32 {
                let mut img = enc.new_image::<GrayI16>(4, 2).unwrap();
                if page == 0 {
                    img.encoder()
                        .write_tag(
                            Tag::Software,
                            "SI.VERSION_MAJOR = '5.7'\nSI.hChannels.channelSave = 1\n",
                        )
                        .unwrap();
                }
                let desc = format!("frameNumbers = {}\nframeTimestamps_sec = 0\n", page / 2 + 1);
                img.encoder()
                    .write_tag(Tag::ImageDescription, desc.as_str())
                    .unwrap();
                img.write_data(&[page as i16; 8]).unwrap();
            }
        }
        let info = probe(&path).unwrap();
        let si = info.scanimage.unwrap();
        assert_eq!(si.version.as_deref(), Some("5.7"));
        assert_eq!(si.channels_saved, vec![1]);
        assert_eq!(si.interleaved_channels, Some(2));
        assert_eq!(si.channels_in_file(), 2);
        let mut r = TiffPageReader::open(&path).unwrap();
        r.skip_page().unwrap();
        r.skip_page().unwrap();
        assert!(r
            .page_description()
            .unwrap()
            .starts_with("frameNumbers = 2"));
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

    struct Stats {
        min: f32,
        max: f32,
    }

    fn stats(pages: &[Vec<f32>]) -> Stats {
        let all = pages.iter().flatten().copied();
        Stats {
            min: all.clone().fold(f32::INFINITY, f32::min),
            max: all.fold(f32::NEG_INFINITY, f32::max),
        }
    }

    #[test]
    fn real_tiffs_probe_and_read() {
        let Some(dir) = real_data_dir() else { return };
        let mut found = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let sub = entry.unwrap().path();
            let Ok(files) = std::fs::read_dir(&sub) else {
                continue;
            };
            for f in files {
                let path = f.unwrap().path();
                if path.extension().is_some_and(|e| e == "tif" || e == "tiff") {
                    let info = probe(&path).unwrap();
                    let fast = read_all(&path, true);
                    assert_eq!(fast.len(), info.pages);
                    assert_eq!(fast, read_all(&path, false), "{}", path.display());
                    found += 1;
                }
            }
        }
        assert!(found >= 3, "expected the three real TIFFs, found {found}");
    }

    #[test]
    fn real_neurofinder_movie() {
        let Some(dir) = real_data_dir() else { return };
        let path = dir.join("neurofinder_crop192/movie_600x192x192_u16.tif");
        let info = probe(&path).unwrap();
        assert_eq!((info.pages, info.height, info.width), (600, 192, 192));
        assert_eq!(info.pixel_type, PixelType::U16);
        assert!(!info.bigtiff);
        assert_eq!(info.compression, "none");
        let s = stats(&read_all(&path, true));
        assert_eq!(s.max, 3810.0);
        assert!(s.min >= 0.0);
    }

    #[test]
    fn real_sima_example() {
        let Some(dir) = real_data_dir() else { return };
        let path = dir.join("sima_ca1_example/example_20x128x256_u16.tif");
        let info = probe(&path).unwrap();
        assert_eq!((info.pages, info.height, info.width), (20, 128, 256));
        assert_eq!(info.pixel_type, PixelType::U16);
        assert!(info
            .description
            .as_deref()
            .unwrap_or("")
            .starts_with("ImageJ=1.48v"));
        let s = stats(&read_all(&path, true));
        assert!(s.max <= 4094.0 && s.min >= 0.0);
    }

    #[test]
    fn real_scanimage_57_file() {
        let Some(dir) = real_data_dir() else { return };
        let path = dir.join("scanimage57_2ch/scanimage57_resonant_2ch_3frames_512.tif");
        let info = probe(&path).unwrap();
        assert!(info.bigtiff);
        assert_eq!((info.pages, info.height, info.width), (6, 512, 512));
        assert_eq!(info.pixel_type, PixelType::I16);
        let si = info.scanimage.clone().unwrap();
        assert_eq!(si.version.as_deref(), Some("5.7"));
        assert!((si.frame_rate.unwrap() - 29.9786).abs() < 1e-6);
        assert_eq!(si.bidirectional, Some(true));
        assert_eq!(si.zoom, Some(2.0));
        assert_eq!(si.channels_active, vec![1, 2]);
        assert_eq!(si.lines_per_frame, Some(512));
        assert_eq!(si.pixels_per_line, Some(512));
        assert_eq!(si.data_type.as_deref(), Some("int16"));
        assert_eq!(si.interleaved_channels, Some(2));
        assert_eq!(si.channels_in_file(), 2);
        let pages = read_all(&path, true);
        assert!(stats(&pages).min < 0.0, "int16 with a negative offset");
        let mut r = TiffPageReader::open(&path).unwrap();
        r.skip_page().unwrap();
        let desc = r.page_description().unwrap();
        assert!(desc.contains("frameNumbers = 1"), "{desc}");
    }

    /// Read speed on the neurofinder movie. Run with
    /// `cargo test --release -- --ignored --nocapture read_speed`.
    #[test]
    #[ignore]
    fn read_speed() {
        let Some(dir) = real_data_dir() else { return };
        let path = dir.join("neurofinder_crop192/movie_600x192x192_u16.tif");
        let _ = read_all(&path, true); // warm the page cache
        for fast in [true, false] {
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let t = std::time::Instant::now();
                let mut r = TiffPageReader::open(&path).unwrap();
                r.set_fast_path(fast);
                let mut out = vec![0f32; r.info().page_len()];
                let mut n = 0;
                while r.read_page_into(&mut out).unwrap() {
                    n += 1;
                }
                assert_eq!(n, 600);
                best = best.min(t.elapsed().as_secs_f64());
            }
            eprintln!(
                "{}: {:.0} frames/s (600 frames 192x192 uint16 incl. probe, best of 5: {:.1} ms)",
                if fast {
                    "direct strip reads"
                } else {
                    "tiff decoder"
                },
                600.0 / best,
                best * 1e3
            );
        }
        let t = std::time::Instant::now();
        probe(&path).unwrap();
        eprintln!("probe alone: {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
    }

    /// Read speed on synthetic 512x512 int16 stacks: one strip per page (as
    /// cortexmap writes) and 8 rows per strip (as ScanImage writes). Run with
    /// `cargo test --release -- --ignored --nocapture read_speed_512`.
    #[test]
    #[ignore]
    fn read_speed_512() {
        let dir = tempfile::tempdir().unwrap();
        let pages = 400;
        let data: Vec<i16> = (0..512 * 512).map(|i| (i % 4000) as i16 - 500).collect();
        for rows_per_strip in [512u32, 8] {
            let path = dir.path().join(format!("bench-{rows_per_strip}.tif"));
            {
                let file = BufWriter::new(File::create(&path).unwrap());
                let mut enc = TiffEncoder::new_big(file).unwrap();
                for _ in 0..pages {
                    let mut img = enc.new_image::<GrayI16>(512, 512).unwrap();
                    img.rows_per_strip(rows_per_strip).unwrap();
                    img.write_data(&data).unwrap();
                }
            }
            let _ = read_all(&path, true); // warm the page cache
            for fast in [true, false] {
                let mut best = f64::INFINITY;
                for _ in 0..3 {
                    let t = std::time::Instant::now();
                    let mut r = TiffPageReader::open(&path).unwrap();
                    r.set_fast_path(fast);
                    let mut out = vec![0f32; r.info().page_len()];
                    while r.read_page_into(&mut out).unwrap() {}
                    best = best.min(t.elapsed().as_secs_f64());
                }
                eprintln!(
                    "512x512 int16, {rows_per_strip} rows/strip, {}: {:.0} frames/s",
                    if fast {
                        "direct strip reads"
                    } else {
                        "tiff decoder"
                    },
                    pages as f64 / best
                );
            }
        }
    }
}
