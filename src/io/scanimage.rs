//! ScanImage metadata from a TIFF's text tags.
//!
//! In: the first page's `Software` tag and the `ImageDescription` of the first few
//! pages, as strings. Out: a [`ScanImageMeta`] with the acquisition settings cortexmap
//! cares about (frame rate, channels, zoom, scan direction, frame size, data type) and
//! the channel interleave actually found in the file; `None` when nothing
//! ScanImage-like is there.
//!
//! Format followed: ScanImage writes its settings as MATLAB assignments, one
//! `key = value` per line, where values are MATLAB literals (`'5.7'`, `true`, `1`,
//! `[1;2]`, `[1 2]`, `2.5e+08`, `Inf`). The key prefix depends on the version:
//! - ScanImage 2016 and later (5.2+, 2019, 2022, ...): a static header of `SI.*` lines
//!   in the `Software` tag, and a per-frame header (`frameNumbers = 7`,
//!   `frameTimestamps_sec = ...`) in each page's `ImageDescription`;
//! - ScanImage 5.0/5.1: `scanimage.SI.*` lines in `ImageDescription`;
//! - ScanImage 4: `scanimage.SI4.*` lines in `ImageDescription`;
//! - ScanImage 3: `state.acq.*`, `state.software.*` lines (`key=value`, often
//!   separated by carriage returns) in `ImageDescription`.
//!
//! The saved-channel setting is not trustworthy on its own: a real ScanImage 5.7 file
//! says `SI.hChannels.channelSave = 1` yet stores two channels, pages alternating.
//! Consecutive pages of one frame share their `frameNumbers`, so the interleave is
//! detected from those, and [`ScanImageMeta::channels_in_file`] prefers it.

use std::collections::HashMap;

/// Acquisition settings read from ScanImage's TIFF headers. Every field is optional:
/// versions differ in what they record, and a missing or unparsable value is `None`
/// (or an empty list) rather than an error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanImageMeta {
    /// ScanImage version, e.g. `"5.7"`, `"2022.0"`, `"4.2"`, `"3.8"`.
    pub version: Option<String>,
    /// Frames per second of the scanner (`scanFrameRate`).
    pub frame_rate: Option<f64>,
    /// Channels the header says were saved, 1-based as ScanImage numbers them.
    pub channels_saved: Vec<u32>,
    /// Channels the header says were acquired, 1-based.
    pub channels_active: Vec<u32>,
    /// Zoom factor.
    pub zoom: Option<f64>,
    /// Bidirectional (resonant back-and-forth) line scanning.
    pub bidirectional: Option<bool>,
    /// Lines (rows) per frame.
    pub lines_per_frame: Option<u32>,
    /// Pixels (columns) per line.
    pub pixels_per_line: Option<u32>,
    /// Frames requested per slice for the whole acquisition (a file may hold fewer).
    pub frames_per_slice: Option<u64>,
    /// Sample type ScanImage recorded, e.g. `"int16"`.
    pub data_type: Option<String>,
    /// Pages per frame found in the file: how many consecutive pages share one
    /// `frameNumbers` value. `None` when the pages carry no frame numbers, or when
    /// fewer than two pages were examined, or their pattern is inconsistent.
    pub interleaved_channels: Option<usize>,
}

impl ScanImageMeta {
    /// How many channels are interleaved page by page in the file: the detected
    /// interleave when there is one (it describes the pages as they are), else the
    /// number of channels the header says were saved, else 1.
    pub fn channels_in_file(&self) -> usize {
        match self.interleaved_channels {
            Some(n) if n >= 1 => n,
            _ if !self.channels_saved.is_empty() => self.channels_saved.len(),
            _ => 1,
        }
    }
}

/// Parse ScanImage metadata from the first page's `Software` tag and the
/// `ImageDescription`s of the first pages, in page order (use an empty string for a
/// page without one, so that positions stay aligned). Returns `None` when neither
/// holds ScanImage keys nor per-frame `frameNumbers`.
pub fn parse(software: Option<&str>, descriptions: &[String]) -> Option<ScanImageMeta> {
    let header = Header::collect(software, descriptions);
    let frame_numbers: Vec<Option<u64>> = descriptions
        .iter()
        .map(|d| frame_number(d.as_str()))
        .collect();
    let has_frame_numbers = frame_numbers.iter().any(Option::is_some);
    if !header.is_scanimage && !has_frame_numbers {
        return None;
    }
    Some(ScanImageMeta {
        version: header.version(),
        frame_rate: header
            .first(&[
                "hRoiManager.scanFrameRate",
                "scanFrameRate",
                "state.acq.frameRate",
            ])
            .and_then(parse_number),
        channels_saved: header.channel_list(
            &["hChannels.channelSave", "channelsSave", "channelSave"],
            "state.acq.savingChannel",
            "state.acq.numberOfChannelsSave",
        ),
        channels_active: header.channel_list(
            &["hChannels.channelsActive", "channelsActive"],
            "state.acq.acquiringChannel",
            "state.acq.numberOfChannelsAcquire",
        ),
        zoom: header
            .first(&[
                "hRoiManager.scanZoomFactor",
                "scanZoomFactor",
                "state.acq.zoomFactor",
            ])
            .and_then(parse_number),
        bidirectional: header
            .first(&[
                "hScan2D.bidirectional",
                "bidirectionalScan",
                "state.acq.bidirectionalScan",
            ])
            .and_then(parse_bool),
        lines_per_frame: header
            .first(&[
                "hRoiManager.linesPerFrame",
                "scanLinesPerFrame",
                "state.acq.linesPerFrame",
            ])
            .and_then(parse_count)
            .and_then(|n| u32::try_from(n).ok()),
        pixels_per_line: header
            .first(&[
                "hRoiManager.pixelsPerLine",
                "scanPixelsPerLine",
                "state.acq.pixelsPerLine",
            ])
            .and_then(parse_count)
            .and_then(|n| u32::try_from(n).ok()),
        frames_per_slice: header
            .first(&[
                "hStackManager.framesPerSlice",
                "acqNumFrames",
                "state.acq.numberOfFrames",
            ])
            .and_then(parse_count),
        data_type: header
            .first(&["hScan2D.channelsDataType"])
            .map(|v| unquote(v).to_string()),
        interleaved_channels: detect_interleave(&frame_numbers),
    })
}

/// Key prefixes of the ScanImage versions. Keys are stored without them, so that one
/// lookup list serves versions that only differ in prefix (`SI.` vs `scanimage.SI.`).
/// Longest first: `scanimage.SI4.` must not be read as `scanimage.SI` + `4.`.
const STRIPPED_PREFIXES: [&str; 4] = ["scanimage.SI4.", "scanimage.SI.", "SI4.", "SI."];

/// ScanImage 3 keys keep their `state.` prefix: their names would collide otherwise.
const KEPT_PREFIX: &str = "state.";

/// All `key = value` assignments found, first occurrence winning: the `Software` tag
/// (read first) is the authoritative static header, and descriptions repeat it.
struct Header {
    values: HashMap<String, String>,
    is_scanimage: bool,
}

impl Header {
    fn collect(software: Option<&str>, descriptions: &[String]) -> Header {
        let mut header = Header {
            values: HashMap::new(),
            is_scanimage: false,
        };
        let texts = software
            .into_iter()
            .chain(descriptions.iter().map(String::as_str));
        for text in texts {
            for (key, value) in assignments(text) {
                header.insert(key, value);
            }
        }
        header
    }

    fn insert(&mut self, key: &str, value: &str) {
        let normalized = if let Some(rest) = STRIPPED_PREFIXES
            .iter()
            .find_map(|prefix| key.strip_prefix(prefix))
        {
            self.is_scanimage = true;
            rest
        } else {
            if key.starts_with(KEPT_PREFIX) {
                self.is_scanimage |=
                    key.starts_with("state.acq.") || key.starts_with("state.software.");
            }
            key
        };
        self.values
            .entry(normalized.to_string())
            .or_insert_with(|| value.to_string());
    }

    /// The value of the first of `keys` present.
    fn first(&self, keys: &[&str]) -> Option<&str> {
        keys.iter()
            .find_map(|k| self.values.get(*k))
            .map(String::as_str)
    }

    /// `VERSION_MAJOR` is `'5.7'` in ScanImage 5 but `2022` (minor apart) in the
    /// yearly releases; ScanImage 4 has `versionMajor`, ScanImage 3
    /// `state.software.version`.
    fn version(&self) -> Option<String> {
        if let Some(major) = self.first(&["VERSION_MAJOR", "versionMajor"]) {
            let major = unquote(major);
            if major.is_empty() {
                return None;
            }
            let minor = self
                .first(&["VERSION_MINOR", "versionMinor"])
                .map(unquote)
                .filter(|m| !m.is_empty());
            return Some(match minor {
                Some(minor) if !major.contains('.') => format!("{major}.{minor}"),
                _ => major.to_string(),
            });
        }
        self.first(&["state.software.version"])
            .map(|v| unquote(v).to_string())
            .filter(|v| !v.is_empty())
    }

    /// A channel list: a MATLAB list under one of `list_keys` (ScanImage 4+), else
    /// ScanImage 3's per-channel flags `<flag_prefix>1..4`, else its channel count.
    fn channel_list(&self, list_keys: &[&str], flag_prefix: &str, count_key: &str) -> Vec<u32> {
        if let Some(list) = self.first(list_keys).and_then(parse_uint_list) {
            return list;
        }
        let flagged: Vec<u32> = (1..=4u32)
            .filter(|c| {
                self.values
                    .get(&format!("{flag_prefix}{c}"))
                    .and_then(|v| parse_bool(v))
                    .unwrap_or(false)
            })
            .collect();
        if !flagged.is_empty() {
            return flagged;
        }
        match self.first(&[count_key]).and_then(parse_count) {
            Some(n) if n <= 64 => (1..=n as u32).collect(),
            _ => Vec::new(),
        }
    }
}

/// The `key = value` lines of a header. Lines end in `\n`, `\r\n` or (ScanImage 3)
/// a lone `\r`; lines without `=` or with an empty key are skipped.
fn assignments(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.split(['\n', '\r']).filter_map(|line| {
        let (key, value) = line.split_once('=')?;
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return None;
        }
        Some((key, value.trim()))
    })
}

/// The `frameNumbers` value of one page's description.
fn frame_number(description: &str) -> Option<u64> {
    assignments(description)
        .find(|(key, _)| *key == "frameNumbers")
        .and_then(|(_, value)| parse_count(value))
}

/// Pages per frame: the length of the leading run of pages sharing the first page's
/// frame number, accepted only when the next run (as far as pages were examined)
/// has the same length and a different number. Needs at least two numbered pages.
fn detect_interleave(frame_numbers: &[Option<u64>]) -> Option<usize> {
    let numbers: Vec<u64> = frame_numbers.iter().map_while(|n| *n).collect();
    if numbers.len() < 2 {
        return None;
    }
    let run = numbers.iter().take_while(|&&n| n == numbers[0]).count();
    let mut rest = numbers[run..].chunks(run);
    if let Some(next) = rest.next() {
        let consistent = next[0] != numbers[0] && next.iter().all(|&n| n == next[0]);
        // A shorter final chunk is fine: the examined pages may end mid-frame.
        let full_run = next.len() == run || rest.next().is_none();
        if !consistent || !full_run {
            return None;
        }
    }
    Some(run)
}

/// Strip one pair of surrounding MATLAB quotes.
fn unquote(value: &str) -> &str {
    let v = value.trim();
    for q in ['\'', '"'] {
        if let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

/// A finite number: `29.9786`, `2`, `1.2e+08`, `'5.7'`. `Inf` and `NaN` are `None`:
/// no setting read here is meaningful when infinite.
fn parse_number(value: &str) -> Option<f64> {
    unquote(value).parse::<f64>().ok().filter(|x| x.is_finite())
}

/// A non-negative whole number (`54000`, `512`); `Inf` (unlimited frames) is `None`.
fn parse_count(value: &str) -> Option<u64> {
    let x = parse_number(value)?;
    (x >= 0.0 && x.fract() == 0.0 && x <= u64::MAX as f64).then_some(x as u64)
}

/// A MATLAB logical: `true`/`false` or `1`/`0`.
fn parse_bool(value: &str) -> Option<bool> {
    match unquote(value).to_ascii_lowercase().as_str() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// A MATLAB vector of whole numbers: `[1;2]`, `[1 2]`, `[1,2]`, `{1 2}`, a bare
/// `1`, or `[]` (empty). `None` when any element is not a whole number.
fn parse_uint_list(value: &str) -> Option<Vec<u32>> {
    let v = value.trim();
    let inner = v
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .or_else(|| v.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .unwrap_or(v);
    inner
        .split(|c: char| c == ';' || c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| parse_count(s).and_then(|n| u32::try_from(n).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages(numbers: &[u64]) -> Vec<String> {
        numbers
            .iter()
            .map(|n| format!("frameNumbers = {n}\nframeTimestamps_sec = 0.0\n"))
            .collect()
    }

    /// Lines as they appear in the real ScanImage 5.7 file's Software tag.
    const SI57_SOFTWARE: &str = "SI.LINE_FORMAT_VERSION = 1\n\
        SI.TIFF_FORMAT_VERSION = 4\n\
        SI.VERSION_MAJOR = '5.7'\n\
        SI.VERSION_MINOR = '0'\n\
        SI.hChannels.channelSave = 1\n\
        SI.hChannels.channelsActive = [1;2]\n\
        SI.hRoiManager.linesPerFrame = 512\n\
        SI.hRoiManager.pixelsPerLine = 512\n\
        SI.hRoiManager.scanFrameRate = 29.9786\n\
        SI.hRoiManager.scanZoomFactor = 2\n\
        SI.hScan2D.bidirectional = true\n\
        SI.hScan2D.channelsDataType = 'int16'\n\
        SI.hScan2D.sampleRate = 1.2e+08\n\
        SI.hStackManager.framesPerSlice = 54000\n";

    #[test]
    fn scanimage_5_7_software_and_frame_headers() {
        let meta = parse(Some(SI57_SOFTWARE), &pages(&[1, 1, 2, 2, 3, 3])).unwrap();
        assert_eq!(meta.version.as_deref(), Some("5.7"));
        assert!((meta.frame_rate.unwrap() - 29.9786).abs() < 1e-9);
        assert_eq!(meta.channels_saved, vec![1]);
        assert_eq!(meta.channels_active, vec![1, 2]);
        assert_eq!(meta.zoom, Some(2.0));
        assert_eq!(meta.bidirectional, Some(true));
        assert_eq!(meta.lines_per_frame, Some(512));
        assert_eq!(meta.pixels_per_line, Some(512));
        assert_eq!(meta.frames_per_slice, Some(54000));
        assert_eq!(meta.data_type.as_deref(), Some("int16"));
        assert_eq!(meta.interleaved_channels, Some(2));
        // The header claims one saved channel; the pages say two. Pages win.
        assert_eq!(meta.channels_in_file(), 2);
    }

    #[test]
    fn yearly_release_versions_join_major_and_minor() {
        let sw = "SI.VERSION_MAJOR = 2022\nSI.VERSION_MINOR = 1\n\
                  SI.hChannels.channelSave = [1 2]\nSI.hScan2D.bidirectional = false\n\
                  SI.hStackManager.framesPerSlice = Inf\n";
        let meta = parse(Some(sw), &[]).unwrap();
        assert_eq!(meta.version.as_deref(), Some("2022.1"));
        assert_eq!(meta.channels_saved, vec![1, 2]);
        assert_eq!(meta.bidirectional, Some(false));
        assert_eq!(meta.frames_per_slice, None);
        assert_eq!(meta.interleaved_channels, None);
        assert_eq!(meta.channels_in_file(), 2);
    }

    #[test]
    fn scanimage_5_1_prefix_in_description() {
        let desc = "frameNumbers = 1\r\n\
                    scanimage.SI.VERSION_MAJOR = '5.1'\r\n\
                    scanimage.SI.hRoiManager.scanFrameRate = 15.1\r\n\
                    scanimage.SI.hChannels.channelSave = [1;2]\r\n\
                    scanimage.SI.hRoiManager.scanZoomFactor = 1.5\r\n"
            .to_string();
        let third = desc.replace("frameNumbers = 1", "frameNumbers = 2");
        let meta = parse(None, &[desc.clone(), desc, third]).unwrap();
        assert_eq!(meta.version.as_deref(), Some("5.1"));
        assert_eq!(meta.frame_rate, Some(15.1));
        assert_eq!(meta.zoom, Some(1.5));
        assert_eq!(meta.channels_saved, vec![1, 2]);
        assert_eq!(meta.interleaved_channels, Some(2));
    }

    #[test]
    fn scanimage_4_keys() {
        let desc = "scanimage.SI4.versionMajor = 4.2\n\
                    scanimage.SI4.scanFrameRate = 7.8125\n\
                    scanimage.SI4.channelsSave = [1;2]\n\
                    scanimage.SI4.scanZoomFactor = 3\n\
                    scanimage.SI4.scanLinesPerFrame = 256\n\
                    scanimage.SI4.scanPixelsPerLine = 512\n\
                    scanimage.SI4.acqNumFrames = 1000\n\
                    scanimage.SI4.bidirectionalScan = 0\n"
            .to_string();
        let meta = parse(None, &[desc]).unwrap();
        assert_eq!(meta.version.as_deref(), Some("4.2"));
        assert_eq!(meta.frame_rate, Some(7.8125));
        assert_eq!(meta.channels_saved, vec![1, 2]);
        assert_eq!(meta.zoom, Some(3.0));
        assert_eq!(meta.lines_per_frame, Some(256));
        assert_eq!(meta.pixels_per_line, Some(512));
        assert_eq!(meta.frames_per_slice, Some(1000));
        assert_eq!(meta.bidirectional, Some(false));
        assert_eq!(meta.interleaved_channels, None);
        assert_eq!(meta.channels_in_file(), 2);
    }

    #[test]
    fn scanimage_3_state_keys_with_carriage_returns() {
        let desc = "state.configName='Behavior_2channel'\rstate.software.version=3.8\r\
                    state.acq.numberOfFrames=1220\rstate.acq.linesPerFrame=256\r\
                    state.acq.pixelsPerLine=256\rstate.acq.frameRate=3.90625\r\
                    state.acq.zoomFactor=2\rstate.acq.bidirectionalScan=1\r\
                    state.acq.acquiringChannel1=1\rstate.acq.acquiringChannel2=1\r\
                    state.acq.savingChannel1=1\rstate.acq.savingChannel2=0\r\
                    state.acq.numberOfChannelsSave=1\r"
            .to_string();
        let meta = parse(None, &[desc]).unwrap();
        assert_eq!(meta.version.as_deref(), Some("3.8"));
        assert_eq!(meta.frame_rate, Some(3.90625));
        assert_eq!(meta.zoom, Some(2.0));
        assert_eq!(meta.bidirectional, Some(true));
        assert_eq!(meta.lines_per_frame, Some(256));
        assert_eq!(meta.pixels_per_line, Some(256));
        assert_eq!(meta.frames_per_slice, Some(1220));
        assert_eq!(meta.channels_saved, vec![1]);
        assert_eq!(meta.channels_active, vec![1, 2]);
        assert_eq!(meta.channels_in_file(), 1);
    }

    #[test]
    fn scanimage_3_channel_count_without_flags() {
        let desc = "state.acq.numberOfChannelsSave=2\r".to_string();
        let meta = parse(None, &[desc]).unwrap();
        assert_eq!(meta.channels_saved, vec![1, 2]);
    }

    #[test]
    fn non_scanimage_text_is_none() {
        let imagej = "ImageJ=1.48v\nimages=20\nmin=0.0\nmax=4094.0\n".to_string();
        assert_eq!(parse(Some("tifffile.py"), &[imagej]), None);
        assert_eq!(parse(None, &[]), None);
        assert_eq!(parse(Some(""), &[String::new()]), None);
        // Unrelated `state.` keys are not ScanImage 3.
        assert_eq!(parse(None, &["state.running=1".to_string()]), None);
    }

    #[test]
    fn frame_numbers_alone_are_enough() {
        let meta = parse(None, &pages(&[5, 6, 7])).unwrap();
        assert_eq!(meta.interleaved_channels, Some(1));
        assert_eq!(meta.channels_in_file(), 1);
    }

    #[test]
    fn interleave_detection() {
        let detect = |n: &[u64]| detect_interleave(&n.iter().map(|&x| Some(x)).collect::<Vec<_>>());
        assert_eq!(detect(&[1, 1, 2, 2, 3, 3]), Some(2));
        assert_eq!(detect(&[1, 1, 1, 2, 2, 2, 3, 3]), Some(3));
        assert_eq!(detect(&[1, 2, 3, 4]), Some(1));
        assert_eq!(
            detect(&[1, 1, 2]),
            Some(2),
            "examined pages may end mid-frame"
        );
        assert_eq!(detect(&[1, 1]), Some(2), "a one-frame file");
        assert_eq!(detect(&[1]), None);
        assert_eq!(detect(&[]), None);
        assert_eq!(detect(&[1, 1, 2, 3, 3]), None, "inconsistent runs");
        assert_eq!(detect_interleave(&[None, Some(1), Some(1)]), None);
        // Numbers after a page without one are not used.
        assert_eq!(
            detect_interleave(&[Some(1), Some(2), None, Some(3)]),
            Some(1)
        );
    }

    #[test]
    fn matlab_values() {
        assert_eq!(parse_number("'5.7'"), Some(5.7));
        assert_eq!(parse_number("1.2e+08"), Some(1.2e8));
        assert_eq!(parse_number("Inf"), None);
        assert_eq!(parse_number("NaN"), None);
        assert_eq!(parse_number("[1 2]"), None);
        assert_eq!(parse_bool("true"), Some(true));
        assert_eq!(parse_bool("false"), Some(false));
        assert_eq!(parse_bool("1"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
        assert_eq!(parse_uint_list("[1;2]"), Some(vec![1, 2]));
        assert_eq!(parse_uint_list("[1 2 4]"), Some(vec![1, 2, 4]));
        assert_eq!(parse_uint_list("[1,3]"), Some(vec![1, 3]));
        assert_eq!(parse_uint_list("{1 2}"), Some(vec![1, 2]));
        assert_eq!(parse_uint_list("1"), Some(vec![1]));
        assert_eq!(parse_uint_list("[]"), Some(vec![]));
        assert_eq!(parse_uint_list("[1 x]"), None);
        assert_eq!(parse_uint_list("[1.5]"), None);
        assert_eq!(parse_count("54000"), Some(54000));
        assert_eq!(parse_count("-1"), None);
        assert_eq!(unquote("'int16'"), "int16");
        assert_eq!(unquote("\"a\""), "a");
        assert_eq!(unquote("'"), "'");
    }

    #[test]
    fn software_tag_wins_over_descriptions() {
        let sw = "SI.hRoiManager.scanFrameRate = 30\n";
        let desc = "frameNumbers = 1\nSI.hRoiManager.scanFrameRate = 15\n".to_string();
        let meta = parse(Some(sw), &[desc]).unwrap();
        assert_eq!(meta.frame_rate, Some(30.0));
    }

    #[test]
    fn channels_in_file_fallbacks() {
        let mut meta = ScanImageMeta::default();
        assert_eq!(meta.channels_in_file(), 1);
        meta.channels_saved = vec![1, 2, 3];
        assert_eq!(meta.channels_in_file(), 3);
        meta.interleaved_channels = Some(1);
        assert_eq!(meta.channels_in_file(), 1);
    }

    #[test]
    fn garbage_lines_do_not_panic() {
        let junk = "=\n==\n = 3\nkey with space = 1\nSI.\nSI.x =\n\u{0}\u{ffff}=?\n'\n".to_string();
        let meta = parse(Some(&junk), &[junk.clone(), "frameNumbers = -3".into()]);
        assert!(meta.is_some());
    }
}
