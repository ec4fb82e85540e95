//! The experiment's small CSV tables (see CONTRACT.md, "Input: an experiment").
//!
//! - `stimuli.csv`: `trial,onset_frame,stimulus`, one row per presentation;
//! - `ablation_targets.csv`: `x,y` and an optional `kind`;
//! - `cell_types.csv`: `x,y,kind`.
//!
//! Columns are found by name (case-insensitive, surrounding spaces ignored) so that
//! files exported from spreadsheets with reordered or extra columns still load. Every
//! problem is an [`Error::Input`] naming the file and, where there is one, the line
//! (line 1 is the header). Writers go through [`crate::io::atomic`], so a file is
//! either complete or absent.

use crate::error::{Error, Result};
use crate::io::atomic::write_bytes;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// One stimulus presentation: the row of `stimuli.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StimulusEvent {
    /// Trial number, unique within the session.
    pub trial: u32,
    /// Frame (zero-based, within the session movie) at which the sound starts.
    pub onset_frame: u64,
    /// Stimulus label; integers are fine as labels and are kept as text.
    pub stimulus: String,
}

/// The type of a cell, as given in `ablation_targets.csv` or `cell_types.csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CellKind {
    Excitatory,
    Inhibitory,
}

impl CellKind {
    /// The label used in the CSV files.
    pub fn as_str(self) -> &'static str {
        match self {
            CellKind::Excitatory => "excitatory",
            CellKind::Inhibitory => "inhibitory",
        }
    }

    /// Parse a label, ignoring case and surrounding spaces; `None` if unknown.
    pub fn parse(label: &str) -> Option<CellKind> {
        let label = label.trim();
        [CellKind::Excitatory, CellKind::Inhibitory]
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(label))
    }
}

impl fmt::Display for CellKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A position in pixels (reference-session coordinates), possibly with a cell type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    /// Column, zero-based, origin at the centre of the top-left pixel.
    pub x: f64,
    /// Row, zero-based.
    pub y: f64,
    /// Cell type, where the file gives one.
    pub kind: Option<CellKind>,
}

const STIMULI_HEADER: &str = "trial,onset_frame,stimulus";

/// Read `stimuli.csv`: at least one row, unique trial numbers.
pub fn read_stimuli(path: &Path) -> Result<Vec<StimulusEvent>> {
    Ok(read_stimuli_lines(path)?
        .into_iter()
        .map(|(_, event)| event)
        .collect())
}

/// Read `stimuli.csv`, keeping each event's line number so that later checks (onset
/// past the end of the movie) can point at the offending line.
pub(crate) fn read_stimuli_lines(path: &Path) -> Result<Vec<(u64, StimulusEvent)>> {
    let table = Table::open(path, STIMULI_HEADER)?;
    let trial_col = table.require("trial")?;
    let onset_col = table.require("onset_frame")?;
    let stimulus_col = table.require("stimulus")?;

    let mut events = Vec::new();
    // Trial numbers key the trials table, so a repeated one would silently merge two
    // presentations; remember where each was first seen to point at both lines.
    let mut first_line: HashMap<u32, u64> = HashMap::new();
    for row in table.rows()? {
        let trial: u32 = row.parse_field(trial_col, "trial", "a non-negative integer")?;
        let onset_frame: u64 =
            row.parse_field(onset_col, "onset_frame", "a non-negative integer")?;
        let stimulus = row.field(stimulus_col).to_string();
        if stimulus.is_empty() {
            return Err(row.error("stimulus is empty"));
        }
        if let Some(first) = first_line.insert(trial, row.line) {
            return Err(row.error(format!(
                "trial {trial} appears twice (first on line {first})"
            )));
        }
        events.push((
            row.line,
            StimulusEvent {
                trial,
                onset_frame,
                stimulus,
            },
        ));
    }
    if events.is_empty() {
        return Err(Error::input(
            path,
            "no stimulus rows after the header; a session without stimuli should \
             leave `stimuli` out of the manifest",
        ));
    }
    Ok(events)
}

/// Write `stimuli.csv` atomically.
pub fn write_stimuli(path: &Path, events: &[StimulusEvent]) -> Result<()> {
    let rows = events.iter().map(|e| {
        vec![
            e.trial.to_string(),
            e.onset_frame.to_string(),
            e.stimulus.clone(),
        ]
    });
    write_table(path, &["trial", "onset_frame", "stimulus"], rows)
}

/// Read `ablation_targets.csv`: `x,y` and an optional `kind` (empty cells allowed).
/// A header-only file is valid and means no targets.
pub fn read_targets(path: &Path) -> Result<Vec<Position>> {
    read_positions(path, "x,y[,kind]", false)
}

/// Read `cell_types.csv`: `x,y,kind`, with a kind on every row.
pub fn read_cell_types(path: &Path) -> Result<Vec<Position>> {
    read_positions(path, "x,y,kind", true)
}

/// Write `ablation_targets.csv` atomically; the `kind` column is written only when
/// some target has a kind (targets without one get an empty cell).
pub fn write_targets(path: &Path, targets: &[Position]) -> Result<()> {
    if targets.iter().any(|t| t.kind.is_some()) {
        let rows = targets.iter().map(|t| {
            let kind = t.kind.map_or("", CellKind::as_str);
            vec![t.x.to_string(), t.y.to_string(), kind.to_string()]
        });
        write_table(path, &["x", "y", "kind"], rows)
    } else {
        let rows = targets
            .iter()
            .map(|t| vec![t.x.to_string(), t.y.to_string()]);
        write_table(path, &["x", "y"], rows)
    }
}

/// Write `cell_types.csv` atomically; every position must carry a kind.
pub fn write_cell_types(path: &Path, cells: &[Position]) -> Result<()> {
    let mut rows = Vec::with_capacity(cells.len());
    for (i, cell) in cells.iter().enumerate() {
        let kind = cell.kind.ok_or_else(|| {
            Error::internal(format!(
                "cell type {i} at ({}, {}) has no kind; cell_types.csv needs one per row",
                cell.x, cell.y
            ))
        })?;
        rows.push(vec![
            cell.x.to_string(),
            cell.y.to_string(),
            kind.as_str().to_string(),
        ]);
    }
    write_table(path, &["x", "y", "kind"], rows)
}

/// Shared reader for the two position tables.
fn read_positions(path: &Path, header: &str, kind_required: bool) -> Result<Vec<Position>> {
    let table = Table::open(path, header)?;
    let x_col = table.require("x")?;
    let y_col = table.require("y")?;
    let kind_col = if kind_required {
        Some(table.require("kind")?)
    } else {
        table.find("kind")
    };

    let mut positions = Vec::new();
    for row in table.rows()? {
        let x = row.coordinate(x_col, "x")?;
        let y = row.coordinate(y_col, "y")?;
        let kind = match kind_col {
            Some(col) => row.kind(col, kind_required)?,
            None => None,
        };
        positions.push(Position { x, y, kind });
    }
    Ok(positions)
}

/// A CSV file opened for reading, with its header parsed.
struct Table<'p> {
    path: &'p Path,
    reader: csv::Reader<std::fs::File>,
    /// Lower-cased column name → column index.
    columns: HashMap<String, usize>,
}

impl<'p> Table<'p> {
    /// Open `path` and read its header; `expected` is shown when the file is empty.
    fn open(path: &'p Path, expected: &str) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| open_error(path, &e))?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            // Spreadsheets and hand-edited files often pad cells with spaces.
            .trim(csv::Trim::All)
            .from_reader(file);
        let header = reader.headers().map_err(|e| csv_error(path, &e))?.clone();
        if header.iter().all(str::is_empty) {
            return Err(Error::input(
                path,
                format!("empty file; expected a header line '{expected}'"),
            ));
        }
        let mut columns = HashMap::new();
        for (i, name) in header.iter().enumerate() {
            if columns.insert(name.to_ascii_lowercase(), i).is_some() {
                return Err(Error::input(
                    path,
                    format!("line 1: column '{name}' appears twice in the header"),
                ));
            }
        }
        Ok(Table {
            path,
            reader,
            columns,
        })
    }

    /// The index of an optional column.
    fn find(&self, name: &str) -> Option<usize> {
        self.columns.get(name).copied()
    }

    /// The index of a required column.
    fn require(&self, name: &str) -> Result<usize> {
        self.find(name)
            .ok_or_else(|| Error::input(self.path, format!("missing column '{name}'")))
    }

    /// All data rows, with their line numbers.
    fn rows(mut self) -> Result<Vec<Row<'p>>> {
        let path = self.path;
        let mut rows = Vec::new();
        for record in self.reader.records() {
            let record = record.map_err(|e| csv_error(path, &e))?;
            let line = record.position().map_or(0, |p| p.line());
            rows.push(Row { path, line, record });
        }
        Ok(rows)
    }
}

/// One data row of a [`Table`].
struct Row<'p> {
    path: &'p Path,
    line: u64,
    record: csv::StringRecord,
}

impl Row<'_> {
    /// An input error about this row.
    fn error(&self, msg: impl fmt::Display) -> Error {
        Error::input(self.path, format!("line {}: {msg}", self.line))
    }

    /// The (trimmed) text of a column; the reader enforces equal row lengths, so
    /// every column index from the header is present.
    fn field(&self, col: usize) -> &str {
        self.record.get(col).unwrap_or("")
    }

    /// Parse a column with `FromStr`, describing the expected form on failure.
    fn parse_field<T: std::str::FromStr>(
        &self,
        col: usize,
        name: &str,
        expected: &str,
    ) -> Result<T> {
        let text = self.field(col);
        text.parse()
            .map_err(|_| self.error(format!("{name} '{text}' is not {expected}")))
    }

    /// A pixel coordinate: a finite number.
    fn coordinate(&self, col: usize, name: &str) -> Result<f64> {
        let value: f64 = self.parse_field(col, name, "a number")?;
        // "nan" and "inf" parse as f64 but cannot be a position.
        if !value.is_finite() {
            return Err(self.error(format!(
                "{name} '{}' is not a finite number",
                self.field(col)
            )));
        }
        Ok(value)
    }

    /// A cell kind; an empty cell is `None` unless the kind is required.
    fn kind(&self, col: usize, required: bool) -> Result<Option<CellKind>> {
        let text = self.field(col);
        if text.is_empty() {
            return if required {
                Err(self.error("kind is empty; expected 'excitatory' or 'inhibitory'"))
            } else {
                Ok(None)
            };
        }
        CellKind::parse(text)
            .map(Some)
            .ok_or_else(|| self.error(format!("kind '{text}' is not 'excitatory' or 'inhibitory'")))
    }
}

/// The error for a file that cannot be opened.
fn open_error(path: &Path, err: &std::io::Error) -> Error {
    match err.kind() {
        std::io::ErrorKind::NotFound => Error::input(path, "file not found"),
        _ => Error::input(path, format!("cannot read: {err}")),
    }
}

/// Translate the csv crate's errors into line-numbered input errors.
fn csv_error(path: &Path, err: &csv::Error) -> Error {
    let line = err.position().map(|p| p.line());
    let msg = match err.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields, but the header has {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8 text".to_string(),
        csv::ErrorKind::Io(e) => format!("cannot read: {e}"),
        _ => err.to_string(),
    };
    match line {
        Some(line) => Error::input(path, format!("line {line}: {msg}")),
        None => Error::input(path, msg),
    }
}

/// Write a header and rows as CSV, atomically.
fn write_table<I>(path: &Path, header: &[&str], rows: I) -> Result<()>
where
    I: IntoIterator<Item = Vec<String>>,
{
    let mut writer = csv::Writer::from_writer(Vec::new());
    let to_output = |e: csv::Error| Error::output(path, e);
    writer.write_record(header).map_err(to_output)?;
    for row in rows {
        writer.write_record(&row).map_err(to_output)?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| Error::output(path, e.error()))?;
    write_bytes(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Write `text` to `name` in a fresh temporary folder.
    fn file_with(text: &str, name: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    /// The message of an input error about `path`.
    fn input_msg(err: Error, path: &Path) -> String {
        match err {
            Error::Input { path: p, msg } => {
                assert_eq!(p, path, "error names the file");
                msg
            }
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    fn stimuli_error(text: &str) -> String {
        let (_dir, path) = file_with(text, "stimuli.csv");
        input_msg(read_stimuli(&path).unwrap_err(), &path)
    }

    #[test]
    fn stimuli_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stimuli.csv");
        let events = vec![
            StimulusEvent {
                trial: 1,
                onset_frame: 10,
                stimulus: "4000".into(),
            },
            StimulusEvent {
                trial: 2,
                onset_frame: 50,
                stimulus: "tone, loud".into(),
            },
        ];
        write_stimuli(&path, &events).unwrap();
        assert_eq!(read_stimuli(&path).unwrap(), events);
    }

    #[test]
    fn stimuli_columns_by_name_with_extras_and_spaces() {
        let (_dir, path) = file_with(
            "Stimulus, note, onset_frame, trial\nA, x, 5, 1\r\nB, y, 9, 2\n",
            "stimuli.csv",
        );
        let events = read_stimuli(&path).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].stimulus, "B");
        assert_eq!(events[1].onset_frame, 9);
        assert_eq!(events[1].trial, 2);
    }

    #[test]
    fn stimuli_bad_onset_names_line() {
        let msg = stimuli_error("trial,onset_frame,stimulus\n1,0,a\n2,abc,b\n");
        assert_eq!(
            msg,
            "line 3: onset_frame 'abc' is not a non-negative integer"
        );
        let msg = stimuli_error("trial,onset_frame,stimulus\n1,-4,a\n");
        assert!(msg.contains("line 2: onset_frame '-4'"), "{msg}");
    }

    #[test]
    fn stimuli_bad_trial_names_line() {
        let msg = stimuli_error("trial,onset_frame,stimulus\n1.5,0,a\n");
        assert_eq!(msg, "line 2: trial '1.5' is not a non-negative integer");
    }

    #[test]
    fn stimuli_missing_column() {
        let msg = stimuli_error("trial,onset_frame\n1,0\n");
        assert_eq!(msg, "missing column 'stimulus'");
    }

    #[test]
    fn stimuli_duplicate_trial() {
        let msg = stimuli_error("trial,onset_frame,stimulus\n1,0,a\n2,5,b\n1,9,c\n");
        assert_eq!(msg, "line 4: trial 1 appears twice (first on line 2)");
    }

    #[test]
    fn stimuli_empty_file_and_header_only() {
        assert!(stimuli_error("").contains("empty file"));
        assert!(stimuli_error("trial,onset_frame,stimulus\n").contains("no stimulus rows"));
    }

    #[test]
    fn stimuli_empty_label_and_ragged_row() {
        let msg = stimuli_error("trial,onset_frame,stimulus\n1,0,\n");
        assert_eq!(msg, "line 2: stimulus is empty");
        let msg = stimuli_error("trial,onset_frame,stimulus\n1,0,a\n2,5\n");
        assert_eq!(msg, "line 3: 2 fields, but the header has 3");
    }

    #[test]
    fn stimuli_duplicate_header_column() {
        let msg = stimuli_error("trial,onset_frame,stimulus,trial\n1,0,a,1\n");
        assert!(msg.contains("column 'trial' appears twice"), "{msg}");
    }

    #[test]
    fn missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.csv");
        assert_eq!(
            input_msg(read_stimuli(&path).unwrap_err(), &path),
            "file not found"
        );
        assert_eq!(
            input_msg(read_targets(&path).unwrap_err(), &path),
            "file not found"
        );
    }

    #[test]
    fn targets_header_only_is_empty() {
        let (_dir, path) = file_with("x,y\n", "targets.csv");
        assert!(read_targets(&path).unwrap().is_empty());
    }

    #[test]
    fn targets_with_optional_kind() {
        let (_dir, path) = file_with("x,y,kind\n1.5,2,Inhibitory\n3,4,\n", "t.csv");
        let t = read_targets(&path).unwrap();
        assert_eq!(t[0].kind, Some(CellKind::Inhibitory));
        assert_eq!(t[1].kind, None);
        assert_eq!((t[0].x, t[0].y), (1.5, 2.0));
    }

    #[test]
    fn targets_round_trip_with_and_without_kind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        let plain = vec![Position {
            x: 0.1,
            y: 12.0,
            kind: None,
        }];
        write_targets(&path, &plain).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x,y\n0.1,12\n");
        assert_eq!(read_targets(&path).unwrap(), plain);

        let typed = vec![
            Position {
                x: 1.0,
                y: 2.0,
                kind: Some(CellKind::Excitatory),
            },
            Position {
                x: 3.25,
                y: 4.0,
                kind: None,
            },
        ];
        write_targets(&path, &typed).unwrap();
        assert_eq!(read_targets(&path).unwrap(), typed);
        write_targets(&path, &[]).unwrap();
        assert!(read_targets(&path).unwrap().is_empty());
    }

    #[test]
    fn targets_bad_coordinates_name_line() {
        let (_dir, path) = file_with("x,y\n1,2\n3,nan\n", "t.csv");
        let msg = input_msg(read_targets(&path).unwrap_err(), &path);
        assert_eq!(msg, "line 3: y 'nan' is not a finite number");
        let (_dir, path) = file_with("x,y\nfive,2\n", "t.csv");
        let msg = input_msg(read_targets(&path).unwrap_err(), &path);
        assert_eq!(msg, "line 2: x 'five' is not a number");
    }

    #[test]
    fn targets_bad_kind_and_missing_y() {
        let (_dir, path) = file_with("x,y,kind\n1,2,pyramidal\n", "t.csv");
        let msg = input_msg(read_targets(&path).unwrap_err(), &path);
        assert_eq!(
            msg,
            "line 2: kind 'pyramidal' is not 'excitatory' or 'inhibitory'"
        );
        let (_dir, path) = file_with("x,kind\n1,excitatory\n", "t.csv");
        let msg = input_msg(read_targets(&path).unwrap_err(), &path);
        assert_eq!(msg, "missing column 'y'");
    }

    #[test]
    fn cell_types_round_trip_and_kind_required() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cell_types.csv");
        let cells = vec![
            Position {
                x: 5.0,
                y: 6.5,
                kind: Some(CellKind::Inhibitory),
            },
            Position {
                x: 7.0,
                y: 8.0,
                kind: Some(CellKind::Excitatory),
            },
        ];
        write_cell_types(&path, &cells).unwrap();
        assert_eq!(read_cell_types(&path).unwrap(), cells);

        let (_d, path) = file_with("x,y\n1,2\n", "cell_types.csv");
        let msg = input_msg(read_cell_types(&path).unwrap_err(), &path);
        assert_eq!(msg, "missing column 'kind'");
        let (_d, path) = file_with("x,y,kind\n1,2,\n", "cell_types.csv");
        let msg = input_msg(read_cell_types(&path).unwrap_err(), &path);
        assert!(msg.starts_with("line 2: kind is empty"), "{msg}");
    }

    #[test]
    fn write_cell_types_needs_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cell_types.csv");
        let err = write_cell_types(
            &path,
            &[Position {
                x: 1.0,
                y: 2.0,
                kind: None,
            }],
        )
        .unwrap_err();
        assert!(matches!(err, Error::Internal(_)));
        assert!(!path.exists());
    }

    #[test]
    fn cell_kind_labels() {
        assert_eq!(CellKind::parse(" EXCITATORY "), Some(CellKind::Excitatory));
        assert_eq!(CellKind::parse("inhibitory"), Some(CellKind::Inhibitory));
        assert_eq!(CellKind::parse("other"), None);
        assert_eq!(CellKind::Inhibitory.to_string(), "inhibitory");
    }
}
