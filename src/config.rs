//! Configuration: the experiment manifest, the study file and the pipeline parameters.
//!
//! Each file is parsed by serde into a plain document type that mirrors its TOML
//! (unknown keys are errors, so a misspelt key never goes unnoticed), then validated
//! into the typed value the rest of cortexmap uses: paths resolved against the file's
//! folder, globs expanded, referenced CSV tables read, cross-field rules checked.
//! Every problem is an [`Error::Input`] that names the file and the key, session or
//! line at fault, because the user has to find and fix it from that one line.
//!
//! - [`load_experiment`] reads `experiment.toml` (CONTRACT.md, "Input: an experiment");
//!   [`write_manifest`] writes one from a [`ManifestDoc`] (the simulator's side).
//! - [`load_study`] reads `study.toml` (CONTRACT.md, "A study"); [`write_study`] writes one.
//! - [`load_params`] reads a parameter file such as `pipeline/default.toml`.

use crate::error::{Error, Result};
use crate::io::atomic::write_bytes;
use crate::io::csv::{self as csv_io, Position, StimulusEvent};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

// ---------------------------------------------------------------------------------
// Experiment manifest: the validated form
// ---------------------------------------------------------------------------------

/// A validated experiment: one field of view imaged in one or more sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    /// The manifest file, as given.
    pub manifest: PathBuf,
    /// The manifest's folder; relative paths in the manifest are relative to it.
    pub dir: PathBuf,
    pub name: String,
    /// Frames per second, overriding the TIFF metadata when set.
    pub fs: Option<f64>,
    /// Id of the session whose coordinates are the experiment's common frame.
    pub reference: String,
    /// Sessions sorted by day (stable: sessions on the same day keep manifest order).
    pub sessions: Vec<Session>,
    pub ablation: Option<Ablation>,
    /// Typed cell positions (reference coordinates), from the `cell_types` file.
    pub cell_types: Option<Vec<Position>>,
    /// Pixel size in micrometres, where known.
    pub um_per_pixel: Option<f64>,
    /// Imaging depth below the surface in micrometres, where known.
    pub depth_um: Option<f64>,
}

/// One imaging session (day) of an experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: String,
    pub day: i32,
    /// TIFF files, concatenated in this order into the session's movie.
    pub files: Vec<PathBuf>,
    /// Stimulus presentations; `None` for spontaneous activity.
    pub stimuli: Option<Stimuli>,
    /// Interleaved channels per frame in the TIFF pages (1 unless set).
    pub channels: usize,
    /// Channel (zero-based) holding the calcium signal.
    pub functional_channel: usize,
    /// Channel holding a structural marker, if any.
    pub structural_channel: Option<usize>,
}

/// A session's stimulus table and the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Stimuli {
    pub path: PathBuf,
    pub events: Vec<StimulusEvent>,
}

/// The ablation between two sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct Ablation {
    /// Cells were ablated after this day's imaging.
    pub after_day: i32,
    pub targets_path: PathBuf,
    /// Targeted positions in reference coordinates (may be empty).
    pub targets: Vec<Position>,
}

impl Experiment {
    /// The session with this id.
    pub fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.iter().find(|s| s.id == id)
    }

    /// The reference session.
    ///
    /// # Panics
    /// If `reference` names no session, which [`load_experiment`] rules out.
    pub fn reference_session(&self) -> &Session {
        self.session(&self.reference)
            .expect("the reference session was validated when the manifest was loaded")
    }

    /// Check that every stimulus onset of `session` falls within its movie of
    /// `n_frames` frames. Known only once the TIFFs are read, hence not part of
    /// [`load_experiment`]. The error names the stimuli file, line and trial.
    pub fn check_stimuli(&self, session: &Session, n_frames: u64) -> Result<()> {
        let Some(stimuli) = &session.stimuli else {
            return Ok(());
        };
        let late: Vec<&StimulusEvent> = stimuli
            .events
            .iter()
            .filter(|e| e.onset_frame >= n_frames)
            .collect();
        let Some(first) = late.first() else {
            return Ok(());
        };
        let place = match stimulus_line(&stimuli.path, first) {
            Some(line) => format!("line {line} (trial {})", first.trial),
            None => format!("trial {}", first.trial),
        };
        let mut msg = format!(
            "{place}: onset_frame {} is past the end of the movie ({n_frames} frames)",
            first.onset_frame
        );
        match late.len() - 1 {
            0 => {}
            1 => msg.push_str("; 1 more trial starts past the end"),
            more => msg.push_str(&format!("; {more} more trials start past the end")),
        }
        Err(Error::input(&stimuli.path, msg))
    }
}

/// The line of `event` in its stimuli file. Line numbers are not kept in
/// [`StimulusEvent`], so this rereads the (small) file, only on the error path; if the
/// file changed since it was loaded, the caller falls back to the trial number alone.
fn stimulus_line(path: &Path, event: &StimulusEvent) -> Option<u64> {
    csv_io::read_stimuli_lines(path)
        .ok()?
        .into_iter()
        .find(|(_, e)| e == event)
        .map(|(line, _)| line)
}

// ---------------------------------------------------------------------------------
// Experiment manifest: the document (what the TOML holds)
// ---------------------------------------------------------------------------------

/// `experiment.toml` as written: what [`load_experiment`] parses and
/// [`write_manifest`] writes. Paths are relative to the manifest's folder (or absolute).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestDoc {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<f64>,
    /// Required when there is more than one session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Default for every session; 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    /// Default for every session; 0 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functional_channel: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structural_channel: Option<usize>,
    /// Path of `cell_types.csv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell_types: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub um_per_pixel: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth_um: Option<f64>,
    /// The `[[session]]` tables; defaulted so that "no sessions" gets our own message.
    #[serde(rename = "session", default)]
    pub sessions: Vec<SessionDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ablation: Option<AblationDoc>,
}

/// One `[[session]]` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionDoc {
    pub id: String,
    pub day: i32,
    /// Globs or literal paths, each expanded and sorted, concatenated in list order.
    pub tiff: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stimuli: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functional_channel: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structural_channel: Option<usize>,
}

/// The `[ablation]` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AblationDoc {
    pub after_day: i32,
    /// Path of `ablation_targets.csv`.
    pub targets: String,
}

/// Read and validate an experiment manifest.
pub fn load_experiment(path: &Path) -> Result<Experiment> {
    let text = read_text(path, "experiment.toml")?;
    let doc: ManifestDoc = parse_toml(path, &text)?;
    ManifestCheck::new(path).build(doc)
}

/// [`load_experiment`] for a run that restarts after its movies were read (`run
/// --from track` or `--from analyze`): the TIFF files may be gone (raw data
/// archived elsewhere), so a `tiff` entry that matches nothing gives no files
/// instead of an error. Everything else is checked as usual.
pub fn load_experiment_without_movies(path: &Path) -> Result<Experiment> {
    let text = read_text(path, "experiment.toml")?;
    let doc: ManifestDoc = parse_toml(path, &text)?;
    let mut check = ManifestCheck::new(path);
    check.movies_required = false;
    check.build(doc)
}

/// Write a manifest atomically; [`load_experiment`] reads back what this writes.
pub fn write_manifest(path: &Path, doc: &ManifestDoc) -> Result<()> {
    let text = toml::to_string_pretty(doc).map_err(|e| Error::output(path, e))?;
    write_bytes(path, text.as_bytes())
}

/// Validation of one manifest: knows the file (for error messages) and its folder
/// (for resolving relative paths).
struct ManifestCheck<'a> {
    manifest: &'a Path,
    dir: PathBuf,
    /// Every `tiff` entry must match a file (false: see
    /// [`load_experiment_without_movies`]).
    movies_required: bool,
}

/// A session's effective channel layout, after per-session overrides.
struct ChannelLayout {
    channels: usize,
    functional: usize,
    structural: Option<usize>,
}

impl<'a> ManifestCheck<'a> {
    fn new(manifest: &'a Path) -> Self {
        ManifestCheck {
            manifest,
            dir: folder_of(manifest),
            movies_required: true,
        }
    }

    /// An input error about the manifest.
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::input(self.manifest, msg)
    }

    /// A manifest path made usable from the current directory. A bare "." folder is
    /// left off so that messages read "d3/stimuli.csv", as the user wrote it.
    fn resolve(&self, rel: &str) -> PathBuf {
        resolve_in(&self.dir, rel)
    }

    /// A path as the user would recognise it: relative to the manifest's folder.
    fn show(&self, path: &Path) -> String {
        path.strip_prefix(&self.dir)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// Validate the document into an [`Experiment`]. Rules that need only the
    /// manifest come first, so a typo is reported before any missing file.
    fn build(&self, doc: ManifestDoc) -> Result<Experiment> {
        self.check_top_level(&doc)?;
        let reference = self.reference(&doc)?;
        if let Some(a) = &doc.ablation {
            self.check_ablation_day(a, &doc.sessions)?;
        }
        let mut sessions = Vec::with_capacity(doc.sessions.len());
        for s in &doc.sessions {
            sessions.push(self.session(&doc, s)?);
        }
        // Stable, so sessions imaged on the same day keep their manifest order.
        sessions.sort_by_key(|s| s.day);
        let ablation = match &doc.ablation {
            Some(a) => Some(self.ablation(a)?),
            None => None,
        };
        let cell_types = match &doc.cell_types {
            Some(rel) => Some(csv_io::read_cell_types(
                &self.existing_file("cell_types", rel)?,
            )?),
            None => None,
        };
        Ok(Experiment {
            manifest: self.manifest.to_path_buf(),
            dir: self.dir.clone(),
            name: doc.name,
            fs: doc.fs,
            reference,
            sessions,
            ablation,
            cell_types,
            um_per_pixel: doc.um_per_pixel,
            depth_um: doc.depth_um,
        })
    }

    /// Rules that involve only top-level keys, checked before touching any file.
    fn check_top_level(&self, doc: &ManifestDoc) -> Result<()> {
        if doc.name.trim().is_empty() {
            return Err(self.err("name is empty"));
        }
        if let Some(fs) = doc.fs {
            if !(fs.is_finite() && fs > 0.0) {
                return Err(self.err(format!(
                    "fs = {fs}: frames per second must be a positive number"
                )));
            }
        }
        if let Some(um) = doc.um_per_pixel {
            if !(um.is_finite() && um > 0.0) {
                return Err(self.err(format!(
                    "um_per_pixel = {um}: the pixel size must be a positive number"
                )));
            }
        }
        if let Some(depth) = doc.depth_um {
            if !(depth.is_finite() && depth >= 0.0) {
                return Err(self.err(format!(
                    "depth_um = {depth}: the imaging depth must be a number ≥ 0"
                )));
            }
        }
        if doc.sessions.is_empty() {
            return Err(self.err("no sessions: add at least one [[session]] table"));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, s) in doc.sessions.iter().enumerate() {
            if s.id.trim().is_empty() {
                return Err(self.err(format!("session {} (day {}): id is empty", i + 1, s.day)));
            }
            if let Some(first) = seen.insert(s.id.as_str(), i) {
                return Err(self.err(format!(
                    "session id '{}' is used twice (sessions {} and {})",
                    s.id,
                    first + 1,
                    i + 1
                )));
            }
        }
        Ok(())
    }

    /// Validate one `[[session]]` table: channels, TIFF files, stimuli.
    fn session(&self, doc: &ManifestDoc, s: &SessionDoc) -> Result<Session> {
        let layout = self.channel_layout(doc, s)?;
        let files = self.expand_tiffs(&s.id, &s.tiff)?;
        let stimuli = match &s.stimuli {
            Some(rel) => {
                let key = format!("session '{}': stimuli", s.id);
                let path = self.existing_file(&key, rel)?;
                let events = csv_io::read_stimuli(&path)?;
                Some(Stimuli { path, events })
            }
            None => None,
        };
        Ok(Session {
            id: s.id.clone(),
            day: s.day,
            files,
            stimuli,
            channels: layout.channels,
            functional_channel: layout.functional,
            structural_channel: layout.structural,
        })
    }

    /// The session's channel layout: its own keys, else the top-level ones, else
    /// one channel with the signal in channel 0.
    fn channel_layout(&self, doc: &ManifestDoc, s: &SessionDoc) -> Result<ChannelLayout> {
        let channels = s.channels.or(doc.channels).unwrap_or(1);
        let functional = s.functional_channel.or(doc.functional_channel).unwrap_or(0);
        let structural = s.structural_channel.or(doc.structural_channel);
        let id = &s.id;
        if channels == 0 {
            return Err(self.err(format!("session '{id}': channels = 0; must be at least 1")));
        }
        if functional >= channels {
            return Err(self.err(format!(
                "session '{id}': functional_channel = {functional} must be less than \
                 channels = {channels} (channels are numbered from 0)"
            )));
        }
        if let Some(st) = structural {
            if st >= channels {
                return Err(self.err(format!(
                    "session '{id}': structural_channel = {st} must be less than \
                     channels = {channels} (channels are numbered from 0)"
                )));
            }
            if st == functional {
                return Err(self.err(format!(
                    "session '{id}': structural_channel = {st} is the same channel as \
                     functional_channel"
                )));
            }
        }
        Ok(ChannelLayout {
            channels,
            functional,
            structural,
        })
    }

    /// Expand the `tiff` list: each entry's matches sorted, entries concatenated in
    /// list order. A file listed twice would put its frames in the movie twice.
    fn expand_tiffs(&self, id: &str, patterns: &[String]) -> Result<Vec<PathBuf>> {
        if patterns.is_empty() {
            return Err(self.err(format!(
                "session '{id}': tiff is empty; list the movie's files"
            )));
        }
        let mut files = Vec::new();
        let mut listed_by: HashMap<PathBuf, &str> = HashMap::new();
        for pattern in patterns {
            let matches = if is_glob(pattern) {
                self.glob_files(id, pattern)?
            } else {
                self.literal_tiff(id, pattern)?.into_iter().collect()
            };
            for file in matches {
                if let Some(earlier) = listed_by.insert(file.clone(), pattern) {
                    return Err(self.err(format!(
                        "session '{id}': tiff file '{}' is listed twice (by '{earlier}' and \
                         '{pattern}')",
                        self.show(&file)
                    )));
                }
                files.push(file);
            }
        }
        Ok(files)
    }

    /// The files a glob matches, sorted; at least one.
    fn glob_files(&self, id: &str, pattern: &str) -> Result<Vec<PathBuf>> {
        let full = self.glob_in_dir(id, pattern)?;
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            // Skip hidden files: macOS "._name.tif" companions and partial downloads
            // look like TIFFs to a bare `*` but are not.
            require_literal_leading_dot: true,
        };
        let entries = glob::glob_with(&full, options).map_err(|e| {
            self.err(format!(
                "session '{id}': tiff pattern '{pattern}' is not a valid glob: {}",
                e.msg
            ))
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| {
                self.err(format!(
                    "session '{id}': cannot read '{}' while expanding '{pattern}': {}",
                    self.show(e.path()),
                    e.error()
                ))
            })?;
            if path.is_file() {
                files.push(path);
            }
        }
        if files.is_empty() && self.movies_required {
            return Err(self.err(format!(
                "session '{id}': tiff pattern '{pattern}' matches no file"
            )));
        }
        files.sort();
        Ok(files)
    }

    /// The glob pattern anchored at the manifest's folder; the folder itself is
    /// escaped so that a '[' in a parent folder's name is not read as a pattern.
    fn glob_in_dir(&self, id: &str, pattern: &str) -> Result<String> {
        if Path::new(pattern).is_absolute() || self.dir == Path::new(".") {
            return Ok(pattern.to_string());
        }
        let dir = self.dir.to_str().ok_or_else(|| {
            self.err(format!(
                "session '{id}': the manifest's folder is not valid UTF-8, so tiff \
                 patterns cannot be expanded"
            ))
        })?;
        Ok(format!("{}/{pattern}", glob::Pattern::escape(dir)))
    }

    /// A `tiff` entry that names one file, which must exist; None when it is
    /// missing and movies are not required.
    fn literal_tiff(&self, id: &str, rel: &str) -> Result<Option<PathBuf>> {
        let path = self.resolve(rel);
        if !path.exists() {
            if !self.movies_required {
                return Ok(None);
            }
            return Err(self.err(format!("session '{id}': tiff file '{rel}' does not exist")));
        }
        if !path.is_file() {
            return Err(self.err(format!("session '{id}': tiff entry '{rel}' is not a file")));
        }
        Ok(Some(path))
    }

    /// A file named by a manifest key; `key` says where in the manifest, as in
    /// "session 'd2': stimuli", and `rel` is the value as written.
    fn existing_file(&self, key: &str, rel: &str) -> Result<PathBuf> {
        let path = self.resolve(rel);
        if !path.is_file() {
            let problem = if path.exists() {
                "is not a file"
            } else {
                "does not exist"
            };
            return Err(self.err(format!("{key} file '{rel}' {problem}")));
        }
        Ok(path)
    }

    /// The reference session: as named, or the only session when there is one.
    fn reference(&self, doc: &ManifestDoc) -> Result<String> {
        let sessions = &doc.sessions;
        let ids = || {
            sessions
                .iter()
                .map(|s| format!("'{}'", s.id))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match doc.reference.as_deref() {
            Some(id) if sessions.iter().any(|s| s.id == id) => Ok(id.to_string()),
            Some(id) => Err(self.err(format!(
                "reference = '{id}' is not a session of this experiment (sessions: {})",
                ids()
            ))),
            None if sessions.len() == 1 => Ok(sessions[0].id.clone()),
            None => Err(self.err(format!(
                "reference is missing: name the session whose coordinates are the \
                 common frame (one of {})",
                ids()
            ))),
        }
    }

    /// The ablation must fall between sessions: at least one imaged before it and
    /// one after, or there is nothing to compare.
    fn check_ablation_day(&self, a: &AblationDoc, sessions: &[SessionDoc]) -> Result<()> {
        // `sessions` is not empty (checked first).
        let first = sessions.iter().map(|s| s.day).min().unwrap_or(i32::MIN);
        let last = sessions.iter().map(|s| s.day).max().unwrap_or(i32::MAX);
        if a.after_day < first {
            return Err(self.err(format!(
                "ablation.after_day = {} is before the first session (day {first}): \
                 no session is imaged before the ablation",
                a.after_day
            )));
        }
        if a.after_day >= last {
            return Err(self.err(format!(
                "ablation.after_day = {} leaves no session after the ablation (the last \
                 session is day {last})",
                a.after_day
            )));
        }
        Ok(())
    }

    /// The ablation with its targets read.
    fn ablation(&self, a: &AblationDoc) -> Result<Ablation> {
        let targets_path = self.existing_file("ablation.targets", &a.targets)?;
        let targets = csv_io::read_targets(&targets_path)?;
        Ok(Ablation {
            after_day: a.after_day,
            targets_path,
            targets,
        })
    }
}

/// Whether a tiff entry is a glob rather than a literal path.
fn is_glob(entry: &str) -> bool {
    entry.contains(['*', '?', '['])
}

// ---------------------------------------------------------------------------------
// Study
// ---------------------------------------------------------------------------------

/// A validated study: many experiments from several mice and cohorts.
#[derive(Debug, Clone, PartialEq)]
pub struct Study {
    /// The study file, as given.
    pub path: PathBuf,
    pub name: String,
    pub experiments: Vec<StudyExperiment>,
}

/// One experiment (field of view) of a study.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyExperiment {
    /// The experiment's manifest (exists; not loaded here).
    pub manifest: PathBuf,
    /// The experiment's run folder; default: `run` beside the manifest.
    pub run: PathBuf,
    pub mouse: String,
    pub cohort: Cohort,
}

/// The experimental group of a mouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Cohort {
    Control,
    AblateResponsive,
    AblateSilent,
    AblateInhibitory,
}

impl Cohort {
    /// Every cohort, control first.
    pub const ALL: [Cohort; 4] = [
        Cohort::Control,
        Cohort::AblateResponsive,
        Cohort::AblateSilent,
        Cohort::AblateInhibitory,
    ];

    /// The label used in `study.toml` and the study tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Cohort::Control => "control",
            Cohort::AblateResponsive => "ablate-responsive",
            Cohort::AblateSilent => "ablate-silent",
            Cohort::AblateInhibitory => "ablate-inhibitory",
        }
    }
}

impl fmt::Display for Cohort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Cohort {
    type Err = String;

    /// Parse a label; the error lists the valid ones.
    fn from_str(label: &str) -> std::result::Result<Self, String> {
        Cohort::ALL
            .into_iter()
            .find(|c| c.as_str() == label)
            .ok_or_else(|| {
                let valid: Vec<&str> = Cohort::ALL.iter().map(|c| c.as_str()).collect();
                format!(
                    "unknown cohort '{label}'; expected one of: {}",
                    valid.join(", ")
                )
            })
    }
}

impl TryFrom<String> for Cohort {
    type Error = String;
    fn try_from(label: String) -> std::result::Result<Self, String> {
        label.parse()
    }
}

impl From<Cohort> for String {
    fn from(cohort: Cohort) -> String {
        cohort.as_str().to_string()
    }
}

/// `study.toml` as written. Paths are relative to the study file's folder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyDoc {
    pub name: String,
    /// The `[[experiment]]` tables; defaulted so that "no experiments" gets our message.
    #[serde(rename = "experiment", default)]
    pub experiments: Vec<StudyExperimentDoc>,
}

/// One `[[experiment]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyExperimentDoc {
    pub manifest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    pub mouse: String,
    pub cohort: Cohort,
}

/// Read and validate a study file. The experiments' manifests must exist but are not
/// loaded: each is loaded, maybe on another machine, when that experiment runs.
pub fn load_study(path: &Path) -> Result<Study> {
    let text = read_text(path, "study.toml")?;
    let doc: StudyDoc = parse_toml(path, &text)?;
    if doc.name.trim().is_empty() {
        return Err(Error::input(path, "name is empty"));
    }
    if doc.experiments.is_empty() {
        return Err(Error::input(
            path,
            "no experiments: add at least one [[experiment]] table",
        ));
    }
    let dir = folder_of(path);
    let experiments = doc
        .experiments
        .into_iter()
        .enumerate()
        .map(|(i, e)| study_experiment(path, &dir, i + 1, e))
        .collect::<Result<Vec<_>>>()?;
    check_study_duplicates(path, &dir, &experiments)?;
    Ok(Study {
        path: path.to_path_buf(),
        name: doc.name,
        experiments,
    })
}

/// Validate the `n`th (from 1) `[[experiment]]` of the study file `study`.
fn study_experiment(
    study: &Path,
    dir: &Path,
    n: usize,
    e: StudyExperimentDoc,
) -> Result<StudyExperiment> {
    let manifest = resolve_in(dir, &e.manifest);
    if !manifest.is_file() {
        return Err(Error::input(
            study,
            format!("experiment {n}: manifest '{}' not found", e.manifest),
        ));
    }
    if e.mouse.trim().is_empty() {
        return Err(Error::input(
            study,
            format!("experiment {n} ('{}'): mouse is empty", e.manifest),
        ));
    }
    let run = match &e.run {
        Some(rel) => resolve_in(dir, rel),
        None => folder_of(&manifest).join("run"),
    };
    Ok(StudyExperiment {
        manifest,
        run,
        mouse: e.mouse,
        cohort: e.cohort,
    })
}

/// No manifest listed twice and no run folder shared, however the paths are spelt:
/// either would process one experiment twice or let two overwrite each other.
fn check_study_duplicates(study: &Path, dir: &Path, experiments: &[StudyExperiment]) -> Result<()> {
    let shown = |p: &Path| p.strip_prefix(dir).unwrap_or(p).display().to_string();
    let mut manifests: HashMap<PathBuf, usize> = HashMap::new();
    let mut runs: HashMap<PathBuf, usize> = HashMap::new();
    for (i, e) in experiments.iter().enumerate() {
        let n = i + 1;
        // The manifest exists, so canonical paths also see through symlinks.
        let key = std::fs::canonicalize(&e.manifest).unwrap_or_else(|_| normalize(&e.manifest));
        if let Some(first) = manifests.insert(key, n) {
            return Err(Error::input(
                study,
                format!(
                    "experiment {n}: manifest '{}' is already listed as experiment {first}",
                    shown(&e.manifest)
                ),
            ));
        }
        // The run folder may not exist yet: compare lexically.
        if let Some(first) = runs.insert(normalize(&e.run), n) {
            return Err(Error::input(
                study,
                format!(
                    "experiment {n} ('{}'): run folder '{}' is also experiment {first}'s",
                    shown(&e.manifest),
                    shown(&e.run)
                ),
            ));
        }
    }
    Ok(())
}

/// Write a study file atomically; [`load_study`] reads back what this writes.
pub fn write_study(path: &Path, doc: &StudyDoc) -> Result<()> {
    let text = toml::to_string_pretty(doc).map_err(|e| Error::output(path, e))?;
    write_bytes(path, text.as_bytes())
}

// ---------------------------------------------------------------------------------
// Pipeline parameters
// ---------------------------------------------------------------------------------

/// Parameters of every stage; a file sets only the keys it changes.
///
/// To add a stage's section: a struct like [`IngestParams`] with
/// `#[serde(default, deny_unknown_fields)]`, `Default` and a `validate`, a field here,
/// one line in [`Params::validate`], and the documented section in
/// `pipeline/default.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub ingest: IngestParams,
    pub motion: MotionParams,
    pub indicator: IndicatorParams,
    pub detect: DetectParams,
    pub extract: ExtractParams,
    pub track: TrackParams,
    pub analysis: AnalysisParams,
}

/// `[indicator]`: the calcium indicator's kinetics, used to bin the movie for
/// detection and to deconvolve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndicatorParams {
    /// Decay time constant of one spike's transient, s.
    pub tau_decay_s: f64,
    /// Rise time constant, s (used by AR(2) deconvolution only).
    pub tau_rise_s: f64,
}

impl Default for IndicatorParams {
    fn default() -> Self {
        IndicatorParams {
            tau_decay_s: 1.0,
            tau_rise_s: 0.1,
        }
    }
}

impl IndicatorParams {
    fn validate(&self) -> std::result::Result<(), String> {
        positive("tau_decay_s", self.tau_decay_s)?;
        positive("tau_rise_s", self.tau_rise_s)?;
        if self.tau_rise_s >= self.tau_decay_s {
            return Err(format!(
                "tau_rise_s = {} must be shorter than tau_decay_s = {}",
                self.tau_rise_s, self.tau_decay_s
            ));
        }
        Ok(())
    }
}

/// `[detect]`: ROI detection (see src/detect).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectParams {
    /// Expected soma diameter, px; 0 estimates it from the data.
    pub cell_diameter_px: f64,
    /// Most binned frames kept in memory; longer sessions use wider bins.
    pub max_binned_frames: usize,
    /// Window of the temporal high-pass (running mean removed), binned frames.
    pub highpass_bins: usize,
    /// S.d. of the spatial high-pass that removes neuropil, in cell diameters.
    pub neuropil_scale: f64,
    /// Level (noise s.d.) above which binned activity counts towards a seed.
    pub event_threshold_sd: f64,
    /// Seeds must exceed the activity map's median by this many robust s.d.
    pub seed_threshold: f64,
    /// Pixels join a footprint when their trace correlates with the seed's this well.
    pub footprint_corr: f64,
    /// Upper bound on ROIs per session.
    pub max_rois: usize,
    /// An active ROI's binned trace must peak this many noise s.d. above its median.
    pub min_event_sd: f64,
    /// Also find cells in the enhanced mean image (anatomy) that never fire.
    pub anatomy: bool,
    /// Anatomical candidates, bright or dark, must exceed their blob map's median by
    /// this many robust s.d.
    pub anatomy_threshold: f64,
    /// Whether anatomical cells are also sought as dark somata (see [`DarkSomata`]).
    pub dark_somata: DarkSomata,
    /// Dark somata must be round: the ratio of the Hessian's curvatures at most this.
    pub max_elongation: f64,
    /// `is_cell` needs at least this signal-to-noise ratio (active ROIs).
    pub min_snr: f64,
    /// `is_cell` needs a binned trace skewed above this (active ROIs).
    pub min_skewness: f64,
    /// `is_cell` needs at most this compactness (1 = a disc).
    pub max_compactness: f64,
    /// `is_cell` needs npix within these fractions of a disc of the cell diameter.
    pub min_size_fraction: f64,
    pub max_size_fraction: f64,
}

impl Default for DetectParams {
    fn default() -> Self {
        DetectParams {
            cell_diameter_px: 0.0,
            max_binned_frames: 400,
            highpass_bins: 30,
            neuropil_scale: 2.0,
            event_threshold_sd: 2.0,
            seed_threshold: 8.0,
            footprint_corr: 0.25,
            max_rois: 3000,
            min_event_sd: 6.0,
            anatomy: true,
            anatomy_threshold: 2.0,
            dark_somata: DarkSomata::Auto,
            max_elongation: 2.0,
            min_snr: 3.0,
            min_skewness: -0.25,
            max_compactness: 1.6,
            min_size_fraction: 0.15,
            max_size_fraction: 3.0,
        }
    }
}

impl DetectParams {
    fn validate(&self) -> std::result::Result<(), String> {
        if !(self.cell_diameter_px == 0.0
            || (self.cell_diameter_px >= 2.0 && self.cell_diameter_px <= 200.0))
        {
            return Err(format!(
                "cell_diameter_px = {}; must be 0 (estimate) or in [2, 200]",
                self.cell_diameter_px
            ));
        }
        if self.max_binned_frames < 10 {
            return Err("max_binned_frames must be at least 10".into());
        }
        if self.highpass_bins < 2 {
            return Err("highpass_bins must be at least 2".into());
        }
        positive("neuropil_scale", self.neuropil_scale)?;
        non_negative("event_threshold_sd", self.event_threshold_sd)?;
        positive("seed_threshold", self.seed_threshold)?;
        if !(self.footprint_corr > 0.0 && self.footprint_corr < 1.0) {
            return Err(format!(
                "footprint_corr = {}; must be in (0, 1)",
                self.footprint_corr
            ));
        }
        positive("anatomy_threshold", self.anatomy_threshold)?;
        if !(self.max_elongation >= 1.0) {
            return Err(format!(
                "max_elongation = {}; must be at least 1",
                self.max_elongation
            ));
        }
        non_negative("min_event_sd", self.min_event_sd)?;
        non_negative("min_snr", self.min_snr)?;
        if !self.min_skewness.is_finite() {
            return Err(format!(
                "min_skewness = {}; must be a number",
                self.min_skewness
            ));
        }
        if !(self.max_compactness >= 1.0) {
            return Err(format!(
                "max_compactness = {}; must be at least 1",
                self.max_compactness
            ));
        }
        positive("min_size_fraction", self.min_size_fraction)?;
        if !(self.max_size_fraction > self.min_size_fraction) {
            return Err(format!(
                "max_size_fraction = {}; must exceed min_size_fraction",
                self.max_size_fraction
            ));
        }
        Ok(())
    }
}

/// When the anatomical search also looks for dark somata, cells darker than the
/// neuropil around them (an indicator kept out of the nucleus, or a soma that holds
/// less of it than the dense neuropil).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DarkSomata {
    /// When enough of the session's active cells are darker at their centre than
    /// around it (see `detect::anatomy::DARK_FIELD_FRACTION`).
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

/// Running baseline used for ΔF/F.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaselineMethod {
    /// Gaussian smoothing, running minimum, running maximum (Suite2p).
    Maximin,
    /// A low running percentile.
    Percentile,
}

/// `[extract]`: fluorescence, neuropil, ΔF/F and deconvolution (see src/extract).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractParams {
    /// α in F − α·Fneu; 0 switches neuropil correction off.
    pub neuropil_coefficient: f64,
    /// Gap between a cell and its neuropil annulus, px.
    pub neuropil_gap_px: f64,
    /// The annulus grows until it holds this many pixels.
    pub neuropil_min_pixels: usize,
    pub baseline: BaselineMethod,
    /// Window of the running baseline, s.
    pub baseline_window_s: f64,
    /// Gaussian smoothing before maximin, s.
    pub baseline_sigma_s: f64,
    /// Percentile of the running-percentile baseline.
    pub baseline_percentile: f64,
    /// F0 is floored at this fraction of its median, so ΔF/F never divides by ~0.
    pub dff_floor_fraction: f64,
    /// Add deconvolved activity (OASIS) as the `spikes` column.
    pub deconvolve: bool,
    /// Order of the autoregressive calcium model: 1 or 2.
    pub ar_order: usize,
    /// Estimate the AR coefficients per cell instead of taking them from [indicator].
    pub estimate_ar: bool,
    /// Smallest deconvolved event, in noise s.d.
    pub spike_min_sd: f64,
    /// Frames read together.
    pub batch_frames: usize,
}

impl Default for ExtractParams {
    fn default() -> Self {
        ExtractParams {
            neuropil_coefficient: 0.7,
            neuropil_gap_px: 2.0,
            neuropil_min_pixels: 350,
            baseline: BaselineMethod::Maximin,
            baseline_window_s: 60.0,
            baseline_sigma_s: 0.5,
            baseline_percentile: 8.0,
            dff_floor_fraction: 0.1,
            deconvolve: true,
            ar_order: 1,
            estimate_ar: false,
            spike_min_sd: 0.5,
            batch_frames: 64,
        }
    }
}

impl ExtractParams {
    fn validate(&self) -> std::result::Result<(), String> {
        if !(self.neuropil_coefficient >= 0.0 && self.neuropil_coefficient <= 2.0) {
            return Err(format!(
                "neuropil_coefficient = {}; must be in [0, 2]",
                self.neuropil_coefficient
            ));
        }
        non_negative("neuropil_gap_px", self.neuropil_gap_px)?;
        if self.neuropil_min_pixels == 0 {
            return Err("neuropil_min_pixels must be at least 1".into());
        }
        positive("baseline_window_s", self.baseline_window_s)?;
        non_negative("baseline_sigma_s", self.baseline_sigma_s)?;
        if !(self.baseline_percentile >= 0.0 && self.baseline_percentile <= 100.0) {
            return Err(format!(
                "baseline_percentile = {}; must be in [0, 100]",
                self.baseline_percentile
            ));
        }
        if !(self.dff_floor_fraction > 0.0 && self.dff_floor_fraction <= 1.0) {
            return Err(format!(
                "dff_floor_fraction = {}; must be in (0, 1]",
                self.dff_floor_fraction
            ));
        }
        if !(self.ar_order == 1 || self.ar_order == 2) {
            return Err(format!("ar_order = {}; must be 1 or 2", self.ar_order));
        }
        non_negative("spike_min_sd", self.spike_min_sd)?;
        if self.batch_frames == 0 {
            return Err("batch_frames = 0; must be at least 1".into());
        }
        Ok(())
    }
}

fn positive(name: &str, v: f64) -> std::result::Result<(), String> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(format!("{name} = {v}; must be a positive number"))
    }
}

fn non_negative(name: &str, v: f64) -> std::result::Result<(), String> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(format!("{name} = {v}; must be zero or positive"))
    }
}

/// `[track]`: cross-session alignment, cell matching and tags (see src/track).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackParams {
    /// Largest rotation between sessions searched, degrees.
    pub max_rotation_deg: f64,
    /// Largest translation between sessions searched, px.
    pub max_shift_px: f64,
    /// Fit an affine map (rotation, scale, shear, translation) to the cell
    /// centroids; false keeps rotation + translation.
    pub affine: bool,
    /// Add a smooth nonrigid field (kernel regression of the centroid residuals)
    /// after the affine map, kept only where it predicts held-out cells better.
    pub nonrigid: bool,
    /// Kernel width of the nonrigid field, px; 0 = a sixth of the larger side.
    pub nonrigid_sigma_px: f64,
    /// Largest centroid distance of a candidate pair, px; 0 = `gate_diameters`
    /// times the median ROI diameter.
    pub max_distance_px: f64,
    /// The automatic gate, in median ROI diameters.
    pub gate_diameters: f64,
    /// Smallest P(same cell) of a link, and of a track's mean linkage.
    pub p_same_threshold: f64,
    /// Track only ROIs with `is_cell` (else every ROI).
    pub cells_only: bool,
    /// Largest distance between an ablation target (or a cell_types position) and
    /// its cell, px; 0 = half the median ROI diameter.
    pub target_tolerance_px: f64,
    /// A post-ablation ROI below this SNR (or found in the mean image only) counts
    /// as a cell without signal.
    pub silent_snr: f64,
    /// Extract a tracked cell's trace in the sessions where it was not found, from
    /// its footprint transferred there (src/track/transfer.rs).
    pub transfer: bool,
    /// Transfer only cells found in at least this many sessions.
    pub transfer_min_sessions: usize,
}

impl Default for TrackParams {
    fn default() -> Self {
        TrackParams {
            max_rotation_deg: 5.0,
            max_shift_px: 60.0,
            affine: true,
            nonrigid: false,
            nonrigid_sigma_px: 0.0,
            max_distance_px: 0.0,
            gate_diameters: 1.0,
            p_same_threshold: 0.5,
            cells_only: true,
            target_tolerance_px: 0.0,
            silent_snr: 3.0,
            transfer: true,
            transfer_min_sessions: 2,
        }
    }
}

impl TrackParams {
    fn validate(&self) -> std::result::Result<(), String> {
        if !(self.max_rotation_deg >= 0.0 && self.max_rotation_deg <= 45.0) {
            return Err(format!(
                "max_rotation_deg = {}; must be in [0, 45]",
                self.max_rotation_deg
            ));
        }
        positive("max_shift_px", self.max_shift_px)?;
        non_negative("nonrigid_sigma_px", self.nonrigid_sigma_px)?;
        non_negative("max_distance_px", self.max_distance_px)?;
        positive("gate_diameters", self.gate_diameters)?;
        if !(self.p_same_threshold > 0.0 && self.p_same_threshold < 1.0) {
            return Err(format!(
                "p_same_threshold = {}; must be in (0, 1)",
                self.p_same_threshold
            ));
        }
        non_negative("target_tolerance_px", self.target_tolerance_px)?;
        non_negative("silent_snr", self.silent_snr)?;
        if self.transfer_min_sessions == 0 {
            return Err("transfer_min_sessions = 0; must be at least 1".into());
        }
        Ok(())
    }
}

/// The test of responsiveness (SCIENCE.md §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseTest {
    /// One-sided Wilcoxon signed-rank.
    Wilcoxon,
    /// One-sided paired t-test.
    Ttest,
    /// Max-statistic test against circular shifts of the trace.
    Shuffle,
}

/// `[analysis]`: trial responses, responsiveness, single-neuron measures and maps
/// (see src/analysis and docs/analysis.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalysisParams {
    /// Pre-stimulus baseline window, s.
    pub baseline_window_s: f64,
    /// Response window from the onset, s.
    pub response_window_s: f64,
    pub test: ResponseTest,
    /// Benjamini–Hochberg level over a cell's stimuli (for "shuffle": the
    /// family-wise level of the max-statistic test).
    pub fdr_q: f64,
    /// Circular shifts of the "shuffle" test.
    pub shuffles: usize,
    /// A responsive stimulus also needs a mean response above this (ΔF/F).
    pub min_amplitude: f64,
    /// Rank of the tuning width in a sorted curve of 34 stimuli (scaled for others).
    pub width_rank: usize,
    /// Exclude the high- and low-category cells of SCIENCE.md §1.7 from the maps.
    pub exclude_categories: bool,
    /// A pair of cells counts as highly co-tuned above this signal correlation.
    pub high_sc_threshold: f64,
    /// A ROI enters the analysis only when its median neuropil-corrected F is at
    /// least this fraction of its median raw F (else its ΔF/F has no baseline).
    pub min_f0_fraction: f64,
    /// A trace enters the analysis only when its ΔF/F noise is at most this many
    /// times the median noise of the session's traces; 0 = no limit.
    pub max_noise_ratio: f64,
    /// Distance bins of the spatial analysis (SCIENCE.md §5.4), µm: from
    /// `spatial_min_um` to `spatial_max_um` in steps of `spatial_bin_um`.
    pub spatial_min_um: f64,
    pub spatial_max_um: f64,
    pub spatial_bin_um: f64,
    /// Without ablation targets (a sham control), the spatial analysis measures
    /// distances to this many high-category cells (the most responsive in the
    /// groups' reference session); 0 = none.
    pub spatial_sites_without_targets: usize,
}

impl Default for AnalysisParams {
    fn default() -> Self {
        AnalysisParams {
            baseline_window_s: 0.5,
            response_window_s: 0.5,
            test: ResponseTest::Shuffle,
            fdr_q: 0.05,
            shuffles: 1000,
            min_amplitude: 0.0,
            width_rank: 15,
            exclude_categories: true,
            high_sc_threshold: 0.5,
            min_f0_fraction: 0.1,
            max_noise_ratio: 5.0,
            spatial_min_um: 15.0,
            spatial_max_um: 350.0,
            spatial_bin_um: 25.0,
            spatial_sites_without_targets: 6,
        }
    }
}

impl AnalysisParams {
    fn validate(&self) -> std::result::Result<(), String> {
        positive("baseline_window_s", self.baseline_window_s)?;
        positive("response_window_s", self.response_window_s)?;
        if !(self.fdr_q > 0.0 && self.fdr_q < 1.0) {
            return Err(format!("fdr_q = {}; must be in (0, 1)", self.fdr_q));
        }
        if self.test == ResponseTest::Shuffle && self.shuffles < 20 {
            return Err(format!(
                "shuffles = {}; the shuffle test needs at least 20",
                self.shuffles
            ));
        }
        if !self.min_amplitude.is_finite() {
            return Err(format!(
                "min_amplitude = {}; must be a number",
                self.min_amplitude
            ));
        }
        if !(self.high_sc_threshold > -1.0 && self.high_sc_threshold < 1.0) {
            return Err(format!(
                "high_sc_threshold = {}; must be in (-1, 1)",
                self.high_sc_threshold
            ));
        }
        non_negative("max_noise_ratio", self.max_noise_ratio)?;
        if !(self.min_f0_fraction >= 0.0 && self.min_f0_fraction < 1.0) {
            return Err(format!(
                "min_f0_fraction = {}; must be in [0, 1)",
                self.min_f0_fraction
            ));
        }
        if !(1..=34).contains(&self.width_rank) {
            return Err(format!(
                "width_rank = {}; must be in 1..=34",
                self.width_rank
            ));
        }
        non_negative("spatial_min_um", self.spatial_min_um)?;
        positive("spatial_bin_um", self.spatial_bin_um)?;
        if !(self.spatial_max_um > self.spatial_min_um && self.spatial_max_um.is_finite()) {
            return Err(format!(
                "spatial_max_um = {}; must be a finite number above spatial_min_um ({})",
                self.spatial_max_um, self.spatial_min_um
            ));
        }
        // Only the bin count is left to check: at most MAX_BINS.
        crate::analysis::spatial::DistanceBins::from(self)
            .check()
            .map_err(|e| format!("spatial_bin_um = {}: {e}", self.spatial_bin_um))?;
        Ok(())
    }
}

/// `[ingest]`: reading TIFF files into frames.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestParams {
    /// Frames decoded and handed on together.
    pub batch_frames: usize,
    /// Keep the raw frame store after motion correction (else it is removed).
    pub keep_raw: bool,
}

impl Default for IngestParams {
    fn default() -> Self {
        IngestParams {
            batch_frames: 64,
            keep_raw: false,
        }
    }
}

/// `[motion]`: rigid and piecewise-rigid registration (see src/motion).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MotionParams {
    /// Add piecewise-rigid (block) registration after the rigid step.
    pub nonrigid: bool,
    /// Largest rigid shift searched, as a fraction of the smaller frame side.
    pub max_shift_fraction: f64,
    /// Gaussian low-pass of the phase correlation, px.
    pub smooth_sigma_px: f64,
    /// Frames sampled evenly over the session to build the reference.
    pub reference_frames: usize,
    /// Register-and-average rounds refining the reference.
    pub reference_iterations: usize,
    /// With `nonrigid`: rounds of nonrigid register-and-average after the rigid
    /// ones, re-centring the reference on the sample's mean deformation.
    pub nonrigid_reference_iterations: usize,
    /// Fewest frames a session must have to build a reference.
    pub min_frames: usize,
    /// Side of a nonrigid block, px.
    pub block_size: usize,
    /// Largest block shift relative to the rigid shift, px.
    pub max_shift_nonrigid_px: f64,
    /// Blocks whose peak-to-sidelobe ratio is below this borrow their neighbours'.
    pub snr_threshold: f64,
    /// Correct a bidirectional scan-phase offset (estimated once per session).
    pub bidirectional: bool,
    /// Frames registered in parallel and written together.
    pub batch_frames: usize,
}

impl Default for MotionParams {
    fn default() -> Self {
        MotionParams {
            nonrigid: false,
            max_shift_fraction: 0.1,
            smooth_sigma_px: 1.15,
            reference_frames: 300,
            reference_iterations: 8,
            nonrigid_reference_iterations: 1,
            min_frames: 20,
            block_size: 64,
            max_shift_nonrigid_px: 5.0,
            snr_threshold: 1.2,
            bidirectional: false,
            batch_frames: 64,
        }
    }
}

impl MotionParams {
    fn validate(&self) -> std::result::Result<(), String> {
        let positive = |name: &str, v: f64| -> std::result::Result<(), String> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("{name} = {v}; must be a positive number"))
            }
        };
        if !(self.max_shift_fraction > 0.0 && self.max_shift_fraction <= 0.5) {
            return Err(format!(
                "max_shift_fraction = {}; must be in (0, 0.5]",
                self.max_shift_fraction
            ));
        }
        positive("smooth_sigma_px", self.smooth_sigma_px)?;
        positive("max_shift_nonrigid_px", self.max_shift_nonrigid_px)?;
        positive("snr_threshold", self.snr_threshold)?;
        if self.reference_frames < 2 {
            return Err("reference_frames must be at least 2".into());
        }
        if self.min_frames < 2 {
            return Err("min_frames must be at least 2".into());
        }
        if self.block_size < 16 {
            return Err(format!(
                "block_size = {}; must be at least 16",
                self.block_size
            ));
        }
        if self.batch_frames == 0 {
            return Err("batch_frames = 0; must be at least 1".into());
        }
        Ok(())
    }
}

impl IngestParams {
    /// The first invalid key, as "key ...", relative to the section.
    fn validate(&self) -> std::result::Result<(), String> {
        if self.batch_frames == 0 {
            return Err("batch_frames = 0; must be at least 1".into());
        }
        Ok(())
    }
}

impl Params {
    /// The first invalid value, described as "section.key ...".
    pub fn validate(&self) -> std::result::Result<(), String> {
        in_section("ingest", self.ingest.validate())?;
        in_section("motion", self.motion.validate())?;
        in_section("indicator", self.indicator.validate())?;
        in_section("detect", self.detect.validate())?;
        in_section("extract", self.extract.validate())?;
        in_section("track", self.track.validate())?;
        in_section("analysis", self.analysis.validate())?;
        Ok(())
    }
}

/// Prefix a section's problem with the section name, giving the full key.
fn in_section(
    section: &str,
    check: std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    check.map_err(|problem| format!("{section}.{problem}"))
}

/// Read and validate a parameter file; `None` gives the defaults.
pub fn load_params(path: Option<&Path>) -> Result<Params> {
    let Some(path) = path else {
        return Ok(Params::default());
    };
    let text = read_text(path, "default.toml")?;
    let params: Params = parse_toml(path, &text)?;
    params.validate().map_err(|msg| Error::input(path, msg))?;
    Ok(params)
}

// ---------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------

/// The folder of a file; "." for a bare file name, so the result is always usable.
fn folder_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `rel` relative to `dir` (absolute paths stay as they are); a "." folder is left off.
fn resolve_in(dir: &Path, rel: &str) -> PathBuf {
    if dir == Path::new(".") {
        PathBuf::from(rel)
    } else {
        dir.join(rel)
    }
}

/// Remove "." and resolve ".." lexically, to compare paths that may not exist yet.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Read a whole text file, with messages for the usual mistakes. `usual_name` is the
/// file's conventional name, suggested when a folder is given instead.
fn read_text(path: &Path, usual_name: &str) -> Result<String> {
    if path.is_dir() {
        let inside = path.join(usual_name);
        let hint = if inside.is_file() {
            format!(" (did you mean '{}'?)", inside.display())
        } else {
            String::new()
        };
        return Err(Error::input(path, format!("is a folder, not a file{hint}")));
    }
    std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::input(path, "file not found"),
        std::io::ErrorKind::InvalidData => Error::input(path, "not valid UTF-8 text"),
        _ => Error::input(path, format!("cannot read: {e}")),
    })
}

/// Parse TOML into `T`; errors name the file, line and key.
fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| Error::input(path, describe_toml_error(&e, text)))
}

/// toml's error on one line: "line L, column C: message (in `the line`)". toml's own
/// rendering spans several lines, and a reason must fit on one.
fn describe_toml_error(err: &toml::de::Error, text: &str) -> String {
    let message = one_line(err.message());
    let Some(span) = err.span() else {
        // Without a position toml names the key itself ("... in `a.b`").
        return one_line(&err.to_string());
    };
    let mut start = span.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let content = text[line_start..].lines().next().unwrap_or("").trim();
    if content.is_empty() {
        format!("line {line}, column {column}: {message}")
    } else {
        format!("line {line}, column {column}: {message} (in `{content}`)")
    }
}

/// Join a multi-line message into one line.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::csv::{write_cell_types, write_stimuli, write_targets, CellKind};

    /// A temporary experiment folder with small fake files.
    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        /// Two sessions' TIFFs and stimuli, ablation targets and cell types.
        fn standard() -> Self {
            let fx = Fixture::new();
            for f in ["d1/a.tif", "d1/b.tif", "d2/a.tif", "d3/a.tif"] {
                fx.touch(f);
            }
            fx.stimuli("d1/stimuli.csv", 3);
            fx.stimuli("d2/stimuli.csv", 3);
            let target = Position {
                x: 10.0,
                y: 20.5,
                kind: Some(CellKind::Excitatory),
            };
            write_targets(&fx.path("targets.csv"), &[target]).unwrap();
            write_cell_types(&fx.path("cell_types.csv"), &[target]).unwrap();
            fx
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        /// A fake TIFF: config only checks that it exists.
        fn touch(&self, rel: &str) {
            self.write(rel, "II*\0");
        }

        fn write(&self, rel: &str, text: &str) {
            let path = self.path(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }

        /// `n` trials numbered from 1, onsets every 100 frames.
        fn stimuli(&self, rel: &str, n: u32) {
            let events: Vec<StimulusEvent> = (1..=n)
                .map(|trial| StimulusEvent {
                    trial,
                    onset_frame: u64::from(trial) * 100,
                    stimulus: format!("s{}", trial % 2),
                })
                .collect();
            std::fs::create_dir_all(self.path(rel).parent().unwrap()).unwrap();
            write_stimuli(&self.path(rel), &events).unwrap();
        }

        fn manifest(&self, text: &str) -> PathBuf {
            self.write("experiment.toml", text);
            self.path("experiment.toml")
        }

        fn load(&self, text: &str) -> Experiment {
            load_experiment(&self.manifest(text)).unwrap()
        }

        /// The message of the input error loading `text` gives; it must name the
        /// manifest.
        fn manifest_error(&self, text: &str) -> String {
            let path = self.manifest(text);
            input_msg(load_experiment(&path).unwrap_err(), &path)
        }
    }

    /// The message of an input error, checking that it names `path`.
    fn input_msg(err: Error, path: &Path) -> String {
        match err {
            Error::Input { path: p, msg } => {
                assert_eq!(p, path, "the error names the wrong file: {msg}");
                msg
            }
            other => panic!("expected an input error, got {other:?}"),
        }
    }

    const BASE: &str = r#"
name = "fov1"
fs = 30.0
reference = "d1"

[[session]]
id = "d1"
day = 1
tiff = ["d1/*.tif"]
stimuli = "d1/stimuli.csv"

[[session]]
id = "d2"
day = 2
tiff = ["d2/*.tif"]
stimuli = "d2/stimuli.csv"
"#;

    /// `text` with `from` replaced by `to`; `from` must occur.
    fn edit(text: &str, from: &str, to: &str) -> String {
        assert!(text.contains(from), "'{from}' not in the manifest");
        text.replacen(from, to, 1)
    }

    fn full_doc() -> ManifestDoc {
        ManifestDoc {
            name: "fov1".into(),
            fs: Some(30.0),
            reference: Some("d1".into()),
            channels: Some(2),
            functional_channel: Some(0),
            structural_channel: Some(1),
            cell_types: Some("cell_types.csv".into()),
            um_per_pixel: Some(1.2),
            depth_um: Some(250.0),
            sessions: vec![
                SessionDoc {
                    id: "d1".into(),
                    day: 1,
                    tiff: vec!["d1/*.tif".into()],
                    stimuli: Some("d1/stimuli.csv".into()),
                    ..SessionDoc::default()
                },
                SessionDoc {
                    id: "d2".into(),
                    day: 2,
                    tiff: vec!["d2/a.tif".into()],
                    ..SessionDoc::default()
                },
                SessionDoc {
                    id: "d3".into(),
                    day: 3,
                    tiff: vec!["d3/*.tif".into()],
                    stimuli: None,
                    channels: Some(3),
                    functional_channel: Some(2),
                    structural_channel: Some(0),
                },
            ],
            ablation: Some(AblationDoc {
                after_day: 1,
                targets: "targets.csv".into(),
            }),
        }
    }

    #[test]
    fn manifest_doc_round_trip() {
        let fx = Fixture::standard();
        let path = fx.path("experiment.toml");
        let doc = full_doc();
        write_manifest(&path, &doc).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(toml::from_str::<ManifestDoc>(&text).unwrap(), doc);

        let exp = load_experiment(&path).unwrap();
        assert_eq!(exp.manifest, path);
        assert_eq!(exp.dir, fx.dir.path());
        assert_eq!(exp.name, "fov1");
        assert_eq!(exp.fs, Some(30.0));
        assert_eq!(exp.um_per_pixel, Some(1.2));
        assert_eq!(exp.depth_um, Some(250.0));
        assert_eq!(exp.reference_session().id, "d1");
        let ids: Vec<&str> = exp.sessions.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["d1", "d2", "d3"]);

        let d1 = exp.session("d1").unwrap();
        assert_eq!(d1.files, [fx.path("d1/a.tif"), fx.path("d1/b.tif")]);
        let stimuli = d1.stimuli.as_ref().unwrap();
        assert_eq!(stimuli.path, fx.path("d1/stimuli.csv"));
        assert_eq!(stimuli.events.len(), 3);
        assert_eq!(
            (d1.channels, d1.functional_channel, d1.structural_channel),
            (2, 0, Some(1))
        );

        // Sessions inherit the top-level channel keys; their own keys override them.
        let d2 = exp.session("d2").unwrap();
        assert!(d2.stimuli.is_none());
        assert_eq!(
            (d2.channels, d2.functional_channel, d2.structural_channel),
            (2, 0, Some(1))
        );
        let d3 = exp.session("d3").unwrap();
        assert_eq!(
            (d3.channels, d3.functional_channel, d3.structural_channel),
            (3, 2, Some(0))
        );

        let ablation = exp.ablation.as_ref().unwrap();
        assert_eq!(ablation.after_day, 1);
        assert_eq!(ablation.targets_path, fx.path("targets.csv"));
        assert_eq!(ablation.targets.len(), 1);
        assert_eq!(ablation.targets[0].kind, Some(CellKind::Excitatory));
        assert_eq!(exp.cell_types.as_ref().unwrap()[0].y, 20.5);
        assert!(exp.session("d9").is_none());
    }

    #[test]
    fn minimal_doc_writes_no_optional_keys() {
        let fx = Fixture::standard();
        let path = fx.path("experiment.toml");
        let doc = ManifestDoc {
            name: "solo".into(),
            sessions: vec![SessionDoc {
                id: "d1".into(),
                day: 0,
                tiff: vec!["d1/a.tif".into()],
                ..SessionDoc::default()
            }],
            ..ManifestDoc::default()
        };
        write_manifest(&path, &doc).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        for key in [
            "fs",
            "reference",
            "channels",
            "stimuli",
            "ablation",
            "cell_types",
        ] {
            assert!(!text.contains(key), "{key} written although None:\n{text}");
        }
        let exp = load_experiment(&path).unwrap();
        assert_eq!(exp.reference, "d1");
    }

    #[test]
    fn contract_example_parses() {
        let fx = Fixture::new();
        for f in ["d-2/x.tif", "d-1/x.tif", "d1/x.tif"] {
            fx.touch(f);
        }
        for s in ["d-2", "d-1", "d1"] {
            fx.stimuli(&format!("{s}/stimuli.csv"), 2);
        }
        fx.write("ablation_targets.csv", "x,y\n");
        let exp = fx.load(
            r#"
name = "fov1"
fs = 30.0                 # frames per second; overrides what the TIFF metadata says
reference = "d-1"         # session whose coordinates are the experiment's common frame

[[session]]
id = "d-2"
day = -2
tiff = ["d-2/*.tif"]      # globs, sorted, concatenated in order into one movie
stimuli = "d-2/stimuli.csv"

[[session]]
id = "d-1"
day = -1
tiff = ["d-1/*.tif"]
stimuli = "d-1/stimuli.csv"

[[session]]
id = "d1"
day = 1
tiff = ["d1/*.tif"]
stimuli = "d1/stimuli.csv"

[ablation]                # optional
after_day = -1            # cells were ablated after this day's imaging
targets = "ablation_targets.csv"
"#,
        );
        assert_eq!(exp.reference_session().day, -1);
        assert!(exp.ablation.unwrap().targets.is_empty());
        assert_eq!(exp.sessions[0].channels, 1);
        assert_eq!(exp.sessions[0].functional_channel, 0);
    }

    #[test]
    fn one_session_without_stimuli_or_ablation_is_valid() {
        let fx = Fixture::standard();
        let exp =
            fx.load("name = \"solo\"\n[[session]]\nid = \"d1\"\nday = 3\ntiff = [\"d1/a.tif\"]\n");
        assert_eq!(exp.sessions.len(), 1);
        assert_eq!(exp.reference, "d1", "the only session is the reference");
        assert!(exp.sessions[0].stimuli.is_none());
        assert!(exp.ablation.is_none() && exp.cell_types.is_none() && exp.fs.is_none());
    }

    #[test]
    fn integer_fs_is_accepted() {
        let fx = Fixture::standard();
        let exp = fx.load(&edit(BASE, "fs = 30.0", "fs = 30"));
        assert_eq!(exp.fs, Some(30.0));
    }

    #[test]
    fn globs_sorted_within_and_concatenated_in_list_order() {
        let fx = Fixture::standard();
        for f in [
            "late/b.tif",
            "late/a.tif",
            "late/c.tif",
            "late/._a.tif",
            "early/z.tif",
            "early/y.tif",
        ] {
            fx.touch(f);
        }
        std::fs::create_dir_all(fx.path("late/sub.tif")).unwrap(); // a folder: skipped
        let exp = fx.load(&edit(
            BASE,
            r#"tiff = ["d1/*.tif"]"#,
            r#"tiff = ["late/*.tif", "early/*.tif", "d1/b.tif"]"#,
        ));
        let files = &exp.session("d1").unwrap().files;
        let names: Vec<String> = files
            .iter()
            .map(|f| f.strip_prefix(fx.dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "late/a.tif",
                "late/b.tif",
                "late/c.tif",
                "early/y.tif",
                "early/z.tif",
                "d1/b.tif"
            ]
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_manifest_folder() {
        // The manifest lives in a subfolder and the current directory is elsewhere,
        // so only resolution against the manifest's folder finds the files.
        let fx = Fixture::new();
        fx.touch("mouse1/fov1/d1/a.tif");
        fx.touch("shared/elsewhere.tif");
        fx.stimuli("mouse1/fov1/d1/stimuli.csv", 2);
        fx.write(
            "mouse1/fov1/experiment.toml",
            "name = \"f\"\n[[session]]\nid = \"d1\"\nday = 1\n\
             tiff = [\"d1/*.tif\", \"../../shared/elsewhere.tif\"]\n\
             stimuli = \"d1/stimuli.csv\"\n",
        );
        let exp = load_experiment(&fx.path("mouse1/fov1/experiment.toml")).unwrap();
        let dir = fx.path("mouse1/fov1");
        assert_eq!(exp.dir, dir);
        let s = &exp.sessions[0];
        assert_eq!(
            s.files,
            [dir.join("d1/a.tif"), dir.join("../../shared/elsewhere.tif")]
        );
        assert_eq!(s.stimuli.as_ref().unwrap().path, dir.join("d1/stimuli.csv"));
    }

    #[test]
    fn bare_manifest_name_keeps_paths_as_written() {
        // A manifest given as "experiment.toml" has folder "."; resolved paths are
        // left as written ("d1/stimuli.csv", not "./d1/stimuli.csv") for messages.
        let fx = Fixture::standard();
        let check = ManifestCheck::new(Path::new("experiment.toml"));
        assert_eq!(check.dir, Path::new("."));
        assert_eq!(check.resolve("d3/stimuli.csv"), Path::new("d3/stimuli.csv"));
        let manifest = fx.path("experiment.toml");
        let nested = ManifestCheck::new(&manifest);
        assert_eq!(nested.resolve("d1/a.tif"), fx.path("d1/a.tif"));
    }

    #[test]
    fn absolute_tiff_paths_and_globs_are_kept() {
        let fx = Fixture::standard();
        let abs_glob = format!("{}/d1/*.tif", fx.dir.path().display());
        let exp = fx.load(&edit(
            BASE,
            r#"tiff = ["d1/*.tif"]"#,
            &format!("tiff = [\"{abs_glob}\"]"),
        ));
        assert_eq!(
            exp.session("d1").unwrap().files,
            [fx.path("d1/a.tif"), fx.path("d1/b.tif")]
        );
    }

    #[test]
    fn same_day_allowed_and_sorted_stably() {
        let fx = Fixture::standard();
        let text = r#"
name = "f"
reference = "b"
[[session]]
id = "c"
day = 5
tiff = ["d3/a.tif"]
[[session]]
id = "a"
day = 2
tiff = ["d1/a.tif"]
[[session]]
id = "b"
day = 2
tiff = ["d2/a.tif"]
"#;
        let exp = fx.load(text);
        let ids: Vec<&str> = exp.sessions.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[test]
    fn manifest_not_found() {
        let fx = Fixture::new();
        let path = fx.path("nope.toml");
        assert_eq!(
            input_msg(load_experiment(&path).unwrap_err(), &path),
            "file not found"
        );
    }

    #[test]
    fn manifest_is_a_folder() {
        let fx = Fixture::standard();
        fx.manifest(BASE);
        let msg = input_msg(load_experiment(fx.dir.path()).unwrap_err(), fx.dir.path());
        assert!(
            msg.contains("is a folder") && msg.contains("experiment.toml"),
            "{msg}"
        );
    }

    #[test]
    fn manifest_not_utf8() {
        let fx = Fixture::new();
        let path = fx.path("experiment.toml");
        std::fs::write(&path, b"name = \"\xff\"").unwrap();
        let msg = input_msg(load_experiment(&path).unwrap_err(), &path);
        assert_eq!(msg, "not valid UTF-8 text");
    }

    #[test]
    fn toml_syntax_error_names_line() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error(&edit(BASE, "day = 2", "day = = 2"));
        assert!(msg.starts_with("line 14, column"), "{msg}");
        assert!(msg.contains("day = = 2"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }

    #[test]
    fn non_numeric_fs_names_key_and_line() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error(&edit(BASE, "fs = 30.0", "fs = \"thirty\""));
        assert!(msg.starts_with("line 3, column"), "{msg}");
        assert!(msg.contains("invalid type: string \"thirty\""), "{msg}");
        assert!(msg.contains("`fs = \"thirty\"`"), "{msg}");
    }

    #[test]
    fn non_integer_day_names_key_and_line() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error(&edit(BASE, "day = 2", "day = 2.5"));
        assert!(msg.starts_with("line 14,"), "{msg}");
        assert!(msg.contains("day = 2.5"), "{msg}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error(&edit(BASE, "fs = 30.0", "fs = 30.0\nframe_rate = 30"));
        assert!(
            msg.contains("unknown field `frame_rate`") && msg.starts_with("line 4,"),
            "{msg}"
        );
        let msg = fx.manifest_error(&edit(
            BASE,
            r#"tiff = ["d2/*.tif"]"#,
            r#"tiffs = ["d2/*.tif"]"#,
        ));
        assert!(
            msg.contains("unknown field `tiffs`") && msg.starts_with("line 15,"),
            "{msg}"
        );
        let msg = fx.manifest_error(&format!(
            "{BASE}[ablation]\nafter_day = 1\ntargets = \"targets.csv\"\nwhen = 3\n"
        ));
        assert!(msg.contains("unknown field `when`"), "{msg}");
    }

    #[test]
    fn missing_required_key() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error(&edit(BASE, "day = 2\n", ""));
        assert!(msg.contains("missing field `day`"), "{msg}");
        let msg = fx.manifest_error(&edit(BASE, "name = \"fov1\"\n", ""));
        assert!(msg.contains("missing field `name`"), "{msg}");
    }

    #[test]
    fn no_sessions() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error("name = \"f\"\nreference = \"d1\"\n");
        assert!(msg.starts_with("no sessions"), "{msg}");
    }

    #[test]
    fn duplicate_session_id() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error(&edit(BASE, "id = \"d2\"", "id = \"d1\""));
        assert_eq!(msg, "session id 'd1' is used twice (sessions 1 and 2)");
    }

    #[test]
    fn empty_session_id() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error(&edit(BASE, "id = \"d2\"", "id = \"  \""));
        assert_eq!(msg, "session 2 (day 2): id is empty");
    }

    #[test]
    fn empty_name() {
        let fx = Fixture::standard();
        assert_eq!(
            fx.manifest_error(&edit(BASE, "name = \"fov1\"", "name = \"\"")),
            "name is empty"
        );
    }

    #[test]
    fn unknown_reference_session() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error(&edit(BASE, "reference = \"d1\"", "reference = \"d9\""));
        assert_eq!(
            msg,
            "reference = 'd9' is not a session of this experiment (sessions: 'd1', 'd2')"
        );
    }

    #[test]
    fn manifest_mistakes_reported_before_missing_files() {
        // No files at all: the typo in `reference` is still what the user hears first.
        let fx = Fixture::new();
        let msg = fx.manifest_error(&edit(BASE, "reference = \"d1\"", "reference = \"D1\""));
        assert!(msg.starts_with("reference = 'D1'"), "{msg}");
    }

    #[test]
    fn missing_reference_with_several_sessions() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error(&edit(BASE, "reference = \"d1\"\n", ""));
        assert!(
            msg.starts_with("reference is missing") && msg.contains("'d1', 'd2'"),
            "{msg}"
        );
    }

    #[test]
    fn tiff_glob_matching_nothing() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error(&edit(BASE, "d2/*.tif", "d4/*.tif"));
        assert_eq!(msg, "session 'd2': tiff pattern 'd4/*.tif' matches no file");
        // Hidden files do not count as matches.
        fx.touch("d5/._a.tif");
        let msg = fx.manifest_error(&edit(BASE, "d2/*.tif", "d5/*.tif"));
        assert_eq!(msg, "session 'd2': tiff pattern 'd5/*.tif' matches no file");
    }

    #[test]
    fn a_restart_without_movies_accepts_missing_tiffs_but_not_bad_entries() {
        let fx = Fixture::standard();
        // Missing files, by glob or by name: accepted without movies.
        for missing in ["d4/*.tif", "d2/gone.tif"] {
            let path = fx.manifest(&edit(BASE, "d2/*.tif", missing));
            assert!(load_experiment(&path).is_err());
            let exp = load_experiment_without_movies(&path).unwrap();
            assert!(exp.session("d2").unwrap().files.is_empty());
            assert_eq!(exp.session("d1").unwrap().files.len(), 2);
        }
        // A folder named as a file, or a broken pattern, is still an error.
        let path = fx.manifest(&edit(BASE, "d2/*.tif", "d2"));
        let msg = input_msg(load_experiment_without_movies(&path).unwrap_err(), &path);
        assert!(msg.contains("is not a file"), "{msg}");
        let path = fx.manifest(&edit(BASE, "d2/*.tif", "d2/[.tif"));
        assert!(load_experiment_without_movies(&path).is_err());
    }

    #[test]
    fn literal_tiff_missing() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error(&edit(BASE, "d2/*.tif", "d2/movie.tif"));
        assert_eq!(msg, "session 'd2': tiff file 'd2/movie.tif' does not exist");
        let msg = fx.manifest_error(&edit(BASE, "d2/*.tif", "d2"));
        assert_eq!(msg, "session 'd2': tiff entry 'd2' is not a file");
    }

    #[test]
    fn invalid_glob_and_empty_tiff_list() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error(&edit(BASE, "d2/*.tif", "d2/[*.tif"));
        assert!(
            msg.starts_with("session 'd2': tiff pattern 'd2/[*.tif' is not a valid glob"),
            "{msg}"
        );
        let msg = fx.manifest_error(&edit(BASE, r#"tiff = ["d2/*.tif"]"#, "tiff = []"));
        assert!(msg.starts_with("session 'd2': tiff is empty"), "{msg}");
    }

    #[test]
    fn tiff_file_listed_twice() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error(&edit(
            BASE,
            r#"["d1/*.tif"]"#,
            r#"["d1/*.tif", "d1/b.tif"]"#,
        ));
        assert_eq!(
            msg,
            "session 'd1': tiff file 'd1/b.tif' is listed twice (by 'd1/*.tif' and 'd1/b.tif')"
        );
    }

    #[test]
    fn stimuli_file_missing() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error(&edit(BASE, "d2/stimuli.csv", "d2/stim.csv"));
        assert_eq!(
            msg,
            "session 'd2': stimuli file 'd2/stim.csv' does not exist"
        );
    }

    #[test]
    fn stimuli_file_malformed_names_the_csv() {
        let fx = Fixture::standard();
        fx.write(
            "d2/stimuli.csv",
            "trial,onset_frame,stimulus\n1,0,a\n2,1.5,b\n",
        );
        let path = fx.manifest(BASE);
        let csv = fx.path("d2/stimuli.csv");
        let msg = input_msg(load_experiment(&path).unwrap_err(), &csv);
        assert_eq!(
            msg,
            "line 3: onset_frame '1.5' is not a non-negative integer"
        );
    }

    const ABLATION: &str = "[ablation]\nafter_day = 1\ntargets = \"targets.csv\"\n";

    #[test]
    fn targets_file_missing_or_malformed() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error(&format!(
            "{BASE}{}",
            ABLATION.replace("targets.csv", "t.csv")
        ));
        assert_eq!(msg, "ablation.targets file 't.csv' does not exist");

        fx.write("targets.csv", "x,y\n1,inf\n");
        let path = fx.manifest(&format!("{BASE}{ABLATION}"));
        let msg = input_msg(load_experiment(&path).unwrap_err(), &fx.path("targets.csv"));
        assert_eq!(msg, "line 2: y 'inf' is not a finite number");
    }

    #[test]
    fn cell_types_file_missing_or_malformed() {
        let fx = Fixture::standard();
        let text = edit(BASE, "fs = 30.0", "fs = 30.0\ncell_types = \"types.csv\"");
        assert_eq!(
            fx.manifest_error(&text),
            "cell_types file 'types.csv' does not exist"
        );

        fx.write("types.csv", "x,y,kind\n1,2,excitatory\n3,4,glia\n");
        let path = fx.manifest(&text);
        let msg = input_msg(load_experiment(&path).unwrap_err(), &fx.path("types.csv"));
        assert_eq!(
            msg,
            "line 3: kind 'glia' is not 'excitatory' or 'inhibitory'"
        );
    }

    #[test]
    fn fs_must_be_positive_and_finite() {
        let fx = Fixture::standard();
        for bad in ["0.0", "-30", "nan", "inf"] {
            let msg = fx.manifest_error(&edit(BASE, "fs = 30.0", &format!("fs = {bad}")));
            assert!(
                msg.starts_with("fs = ") && msg.contains("must be a positive number"),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn pixel_size_and_depth_checked() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error(&edit(BASE, "fs = 30.0", "um_per_pixel = 0"));
        assert!(msg.starts_with("um_per_pixel = 0"), "{msg}");
        let msg = fx.manifest_error(&edit(BASE, "fs = 30.0", "depth_um = -5"));
        assert!(msg.starts_with("depth_um = -5"), "{msg}");
    }

    #[test]
    fn functional_channel_must_be_below_channels() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error(&edit(BASE, "fs = 30.0", "functional_channel = 1"));
        assert_eq!(
            msg,
            "session 'd1': functional_channel = 1 must be less than channels = 1 \
             (channels are numbered from 0)"
        );
        // A per-session override is checked against that session's channel count.
        let text = edit(BASE, "fs = 30.0", "channels = 2\nfunctional_channel = 1");
        let msg = fx.manifest_error(&edit(&text, "day = 2", "day = 2\nchannels = 1"));
        assert!(
            msg.starts_with("session 'd2': functional_channel = 1"),
            "{msg}"
        );
        let msg = fx.manifest_error(&edit(BASE, "fs = 30.0", "channels = 0"));
        assert_eq!(msg, "session 'd1': channels = 0; must be at least 1");
    }

    #[test]
    fn structural_channel_checked() {
        let fx = Fixture::standard();
        let text = edit(BASE, "fs = 30.0", "channels = 2\nstructural_channel = 0");
        assert_eq!(
            fx.manifest_error(&text),
            "session 'd1': structural_channel = 0 is the same channel as functional_channel"
        );
        let text = edit(BASE, "fs = 30.0", "channels = 2\nstructural_channel = 2");
        assert!(fx
            .manifest_error(&text)
            .contains("structural_channel = 2 must be less than channels = 2"));
    }

    #[test]
    fn ablation_before_first_session() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error(&format!(
            "{BASE}{}",
            ABLATION.replace("after_day = 1", "after_day = 0")
        ));
        assert_eq!(
            msg,
            "ablation.after_day = 0 is before the first session (day 1): no session is \
             imaged before the ablation"
        );
    }

    #[test]
    fn ablation_with_no_session_after() {
        let fx = Fixture::standard();
        let msg = fx.manifest_error(&format!(
            "{BASE}{}",
            ABLATION.replace("after_day = 1", "after_day = 2")
        ));
        assert_eq!(
            msg,
            "ablation.after_day = 2 leaves no session after the ablation (the last session is day 2)"
        );
    }

    #[test]
    fn check_stimuli_past_the_end() {
        let fx = Fixture::standard();
        // Trials 1..=11 on lines 2..=12; trial 11 starts at frame 1100, and the
        // movie is cut to 1000 frames.
        fx.stimuli("d1/stimuli.csv", 11);
        let exp = fx.load(BASE);
        let d1 = exp.session("d1").unwrap();
        exp.check_stimuli(d1, 1101).unwrap();
        let msg = input_msg(
            exp.check_stimuli(d1, 1100).unwrap_err(),
            &fx.path("d1/stimuli.csv"),
        );
        assert_eq!(
            msg,
            "line 12 (trial 11): onset_frame 1100 is past the end of the movie (1100 frames)"
        );
        let msg = input_msg(
            exp.check_stimuli(d1, 950).unwrap_err(),
            &fx.path("d1/stimuli.csv"),
        );
        assert_eq!(
            msg,
            "line 11 (trial 10): onset_frame 1000 is past the end of the movie (950 frames); \
             1 more trial starts past the end"
        );
    }

    #[test]
    fn check_stimuli_without_stimuli_is_ok() {
        let fx = Fixture::standard();
        let exp = fx.load(&edit(BASE, "stimuli = \"d2/stimuli.csv\"\n", ""));
        exp.check_stimuli(exp.session("d2").unwrap(), 0).unwrap();
    }

    // ----- study -----

    /// A study folder with two experiment manifests (their content is not read).
    fn study_fixture() -> Fixture {
        let fx = Fixture::new();
        fx.write("mouse1/fov1/experiment.toml", "");
        fx.write("mouse2/fov1/experiment.toml", "");
        fx
    }

    const STUDY: &str = r#"
name = "ablation-study"
[[experiment]]
manifest = "mouse1/fov1/experiment.toml"
run = "runs/m1"
mouse = "mouse1"
cohort = "ablate-responsive"

[[experiment]]
manifest = "mouse2/fov1/experiment.toml"
mouse = "mouse2"
cohort = "control"
"#;

    fn study_error(fx: &Fixture, text: &str) -> String {
        fx.write("study.toml", text);
        let path = fx.path("study.toml");
        input_msg(load_study(&path).unwrap_err(), &path)
    }

    #[test]
    fn study_parses_with_default_run_folder() {
        let fx = study_fixture();
        fx.write("study.toml", STUDY);
        let study = load_study(&fx.path("study.toml")).unwrap();
        assert_eq!(study.name, "ablation-study");
        assert_eq!(study.path, fx.path("study.toml"));
        let [a, b] = &study.experiments[..] else {
            panic!("two experiments expected")
        };
        assert_eq!(a.manifest, fx.path("mouse1/fov1/experiment.toml"));
        assert_eq!(a.run, fx.path("runs/m1"));
        assert_eq!(a.cohort, Cohort::AblateResponsive);
        assert_eq!(
            b.run,
            fx.path("mouse2/fov1/run"),
            "default: `run` beside the manifest"
        );
        assert_eq!((b.mouse.as_str(), b.cohort), ("mouse2", Cohort::Control));
    }

    #[test]
    fn study_doc_round_trip() {
        let fx = study_fixture();
        let doc = StudyDoc {
            name: "s".into(),
            experiments: vec![
                StudyExperimentDoc {
                    manifest: "mouse1/fov1/experiment.toml".into(),
                    run: None,
                    mouse: "mouse1".into(),
                    cohort: Cohort::AblateSilent,
                },
                StudyExperimentDoc {
                    manifest: "mouse2/fov1/experiment.toml".into(),
                    run: Some("elsewhere".into()),
                    mouse: "mouse2".into(),
                    cohort: Cohort::AblateInhibitory,
                },
            ],
        };
        let path = fx.path("study.toml");
        write_study(&path, &doc).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("cohort = \"ablate-silent\""), "{text}");
        assert_eq!(toml::from_str::<StudyDoc>(&text).unwrap(), doc);
        let study = load_study(&path).unwrap();
        assert_eq!(study.experiments[1].run, fx.path("elsewhere"));
        assert_eq!(study.experiments[1].cohort, Cohort::AblateInhibitory);
    }

    #[test]
    fn study_unknown_cohort_lists_valid_ones() {
        let fx = study_fixture();
        let msg = study_error(&fx, &edit(STUDY, "\"control\"", "\"sham\""));
        assert!(msg.starts_with("line 12,"), "{msg}");
        assert!(
            msg.contains("unknown cohort 'sham'; expected one of: control, ablate-responsive, ablate-silent, ablate-inhibitory"),
            "{msg}"
        );
    }

    #[test]
    fn study_missing_manifest() {
        let fx = study_fixture();
        let msg = study_error(&fx, &edit(STUDY, "mouse2/fov1/", "mouse3/fov1/"));
        assert_eq!(
            msg,
            "experiment 2: manifest 'mouse3/fov1/experiment.toml' not found"
        );
    }

    #[test]
    fn study_manifest_listed_twice() {
        let fx = study_fixture();
        let text = edit(
            STUDY,
            "mouse2/fov1/experiment.toml",
            "./mouse1/fov1/experiment.toml",
        );
        let msg = study_error(&fx, &text);
        assert_eq!(msg, "experiment 2: manifest 'mouse1/fov1/experiment.toml' is already listed as experiment 1");
    }

    #[test]
    fn study_run_folder_shared() {
        let fx = study_fixture();
        let text = edit(STUDY, "runs/m1", "mouse2/fov1/run");
        let msg = study_error(&fx, &text);
        assert!(
            msg.starts_with("experiment 2 ('mouse2/fov1/experiment.toml'): run folder"),
            "{msg}"
        );
        assert!(msg.ends_with("is also experiment 1's"), "{msg}");
    }

    #[test]
    fn study_without_experiments_or_with_bad_keys() {
        let fx = study_fixture();
        assert!(study_error(&fx, "name = \"s\"\n").starts_with("no experiments"));
        let msg = study_error(&fx, &edit(STUDY, "mouse = \"mouse2\"", "mice = \"mouse2\""));
        assert!(msg.contains("unknown field `mice`"), "{msg}");
        let msg = study_error(&fx, &edit(STUDY, "mouse = \"mouse2\"", "mouse = \"\""));
        assert_eq!(
            msg,
            "experiment 2 ('mouse2/fov1/experiment.toml'): mouse is empty"
        );
        let path = fx.path("none.toml");
        assert_eq!(
            input_msg(load_study(&path).unwrap_err(), &path),
            "file not found"
        );
    }

    #[test]
    fn cohort_labels() {
        for c in Cohort::ALL {
            assert_eq!(c.as_str().parse::<Cohort>(), Ok(c));
            assert_eq!(c.to_string(), c.as_str());
        }
        assert!("Control"
            .parse::<Cohort>()
            .unwrap_err()
            .contains("ablate-inhibitory"));
    }

    // ----- parameters -----

    #[test]
    fn default_params_file_matches_defaults() {
        let text = include_str!("../pipeline/default.toml");
        let parsed: Params = toml::from_str(text).unwrap();
        assert_eq!(parsed, Params::default());
    }

    #[test]
    fn default_params_file_documents_every_key() {
        // Each `key = value` line must follow a comment saying what it means.
        let text = include_str!("../pipeline/default.toml");
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains('=') && !line.starts_with('#') {
                assert!(
                    i > 0 && lines[i - 1].starts_with('#'),
                    "undocumented key: {line}"
                );
            }
        }
    }

    #[test]
    fn params_defaults_and_overrides() {
        assert_eq!(load_params(None).unwrap().ingest.batch_frames, 64);
        let fx = Fixture::new();
        fx.write("p.toml", "[ingest]\nbatch_frames = 32\n");
        let p = load_params(Some(&fx.path("p.toml"))).unwrap();
        assert_eq!(p.ingest.batch_frames, 32);
        fx.write("empty.toml", "");
        assert_eq!(
            load_params(Some(&fx.path("empty.toml"))).unwrap(),
            Params::default()
        );
        fx.write("section.toml", "[ingest]\n");
        assert_eq!(
            load_params(Some(&fx.path("section.toml"))).unwrap(),
            Params::default()
        );
    }

    #[test]
    fn params_bad_values() {
        let fx = Fixture::new();
        let error = |text: &str| {
            fx.write("p.toml", text);
            let path = fx.path("p.toml");
            input_msg(load_params(Some(&path)).unwrap_err(), &path)
        };
        assert_eq!(
            error("[ingest]\nbatch_frames = 0\n"),
            "ingest.batch_frames = 0; must be at least 1"
        );
        let msg = error("[ingest]\nbatch_frames = -1\n");
        assert!(
            msg.starts_with("line 2,") && msg.contains("batch_frames = -1"),
            "{msg}"
        );
        let msg = error("[ingest]\nbatch_frames = \"many\"\n");
        assert!(
            msg.starts_with("line 2,") && msg.contains("invalid type"),
            "{msg}"
        );
        let msg = error("[detect]\ndark_somata = \"sometimes\"\n");
        assert!(
            msg.starts_with("line 2,") && msg.contains("unknown variant `sometimes`"),
            "{msg}"
        );
        assert_eq!(
            error("[detect]\nmax_elongation = 0.5\n"),
            "detect.max_elongation = 0.5; must be at least 1"
        );
        assert_eq!(
            error("[detect]\nmin_skewness = nan\n"),
            "detect.min_skewness = NaN; must be a number"
        );
        let on = |text: &str| {
            fx.write("ok.toml", text);
            load_params(Some(&fx.path("ok.toml")))
                .unwrap()
                .detect
                .dark_somata
        };
        assert_eq!(on("[detect]\ndark_somata = \"on\"\n"), DarkSomata::On);
        assert_eq!(on("[detect]\ndark_somata = \"off\"\n"), DarkSomata::Off);
        let msg = error("[ingest]\nbatch = 3\n");
        assert!(msg.contains("unknown field `batch`"), "{msg}");
        let msg = error("[ingestion]\n");
        assert!(msg.contains("unknown field `ingestion`"), "{msg}");
        let path = fx.path("missing.toml");
        assert_eq!(
            input_msg(load_params(Some(&path)).unwrap_err(), &path),
            "file not found"
        );
    }
}
