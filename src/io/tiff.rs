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
/// larger decoded size than `file size × this` has a corrupt header.
const MAX_COMPRESSION_RATIO: u64 = 4096;

/// Pages whose `ImageDescription` is read for ScanImage metadata: enough to see
/// the frame numbers repeat over two frames of up to four interleaved channels.
const SCANIMAGE_DESCRIPTION_PAGES: usize = 8;

/// Read buffer: large enough for an IFD and its strip tables in one read, small
/// enough that a seek (which discards it) wastes little. Pixel data bypass it.
const READ_BUFFER_BYTES: usize = 16 << 10;

/// Write buffer for [`TiffWriter`].
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Classic TIFF offsets are 32-bit; we switch to BigTIFF below 4 GiB to leave room
/// for what [`needs_bigtiff`] does not count exactly (tags, descriptions).
const CLASSIC_TIFF_LIMIT_BYTES: u128 = 3_900 * (1 << 20);

/// Generous per-page allowance for an IFD, its tag values and strip tables.
const PAGE_OVERHEAD_BYTES: u128 = 4 << 10;

/// Limits for tag values: ScanImage's `Software` header runs to tens of kB, strip
/// tables of tall images to a few hundred kB; 16 MiB is ample and still bounded.
const MAX_TAG_VALUE_BYTES: usize = 16 << 20;

/// The sample types cortexmap reads. Everything becomes `f32` on reading.
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
    let software = ascii_tag(&mut decoder, Tag::Software);
    let description = ascii_tag(&mut decoder, Tag::ImageDescription);
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
            descriptions.push(ascii_tag(&mut decoder, Tag::ImageDescription).unwrap_or_default());
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
pub(crate) struct PageShape {
    pub width: usize,
    pub height: usize,
    pub pixel_type: PixelType,
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
    let fail = |what: &str, msg: &str| page_error(path, page, what, msg);
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
        let end = offset.checked_add(count).unwrap_or(u64::MAX);
        if end > file_size {
            return Err(Error::input(
                path,
                format!(
                    "page {page}: {kind} {i} ends at byte {end} but the file has only {file_size} bytes (truncated file?)"
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
/// worth failing over: unreadable text counts as absent.
fn ascii_tag(dec: &mut Decoder<BufReader<File>>, tag: Tag) -> Option<String> {
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

/// Run a call into the `tiff` crate and turn both its errors and any panic into a
/// message: hostile bytes must never take the process down.
fn guarded<T>(
    f: impl FnOnce() -> std::result::Result<T, TiffError>,
) -> std::result::Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(describe_tiff_error(&e)),
        Err(payload) => Err(format!(
            "the TIFF decoder failed on this data ({})",
            panic_text(payload.as_ref())
        )),
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

fn page_error(path: &Path, page: usize, what: &str, msg: &str) -> Error {
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
        ascii_tag(&mut self.decoder, Tag::ImageDescription)
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
    fn note_failure<T>(&mut self, result: &std::result::Result<T, String>) {
        if let Err(msg) = result {
            if msg.starts_with("the TIFF decoder failed") {
                self.poisoned = true;
            }
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
        let rows_per_strip = (rows_per_strip as usize).clamp(1, self.info.height);
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
