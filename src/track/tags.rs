//! Tags of tracked cells: ablation targets and their outcome, and cell types.
//!
//! A track is **targeted** when an ablation target (reference coordinates) is
//! assigned to it: targets and the tracks present before the ablation are paired
//! one to one (Hungarian) within a tolerance for targeting jitter. A targeted
//! track is **ablated** when it is absent from every session after the ablation
//! (`lost`), or present only without signal, i.e. found in the mean image alone
//! or with an SNR under `silent_snr` (`filled`: the dying cell kept its
//! fluorescence, as about 10 % of targets do). A targeted track still active
//! afterwards `survived`. Tracks that vanish without a target are not ablated.
//!
//! Cell types come from `cell_types.csv` positions, paired one to one with the
//! tracks within the same tolerance.

use super::cluster::{assign_pair, Candidate};
use crate::error::{Error, Result};
use crate::io::csv::Position;
use std::path::Path;

/// What the tagger needs to know about one track.
#[derive(Debug, Clone)]
pub struct TrackView {
    /// Position in reference coordinates.
    pub x: f64,
    pub y: f64,
    /// Per session (in the run's order): None when absent, else whether the ROI
    /// there shows signal.
    pub signal: Vec<Option<bool>>,
}

/// The outcome of a targeted track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Lost,
    Filled,
    Survived,
    /// No ROI was ever found at the target; the target list is the evidence that
    /// a cell was there and was ablated.
    Undetected,
    /// No session after the ablation to tell.
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Lost => "lost",
            Outcome::Filled => "filled",
            Outcome::Survived => "survived",
            Outcome::Undetected => "undetected",
            Outcome::Unknown => "unknown",
        }
    }

    pub fn ablated(self) -> bool {
        matches!(self, Outcome::Lost | Outcome::Filled | Outcome::Undetected)
    }
}

/// One track's tags.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tags {
    /// Index of the ablation target assigned to the track.
    pub target: Option<usize>,
    pub outcome: Option<Outcome>,
    /// The type of the `cell_types.csv` position assigned to the track.
    pub cell_type: Option<String>,
}

impl Tags {
    pub fn ablated(&self) -> bool {
        self.outcome.is_some_and(Outcome::ablated)
    }
}

/// Refuse targets outside the reference FOV (beyond the tolerance): they are
/// almost always in the wrong units or the wrong frame.
pub fn check_targets(
    targets: &[Position],
    file: &Path,
    width: usize,
    height: usize,
    tolerance: f64,
) -> Result<()> {
    for (i, t) in targets.iter().enumerate() {
        let inside = t.x >= -tolerance
            && t.y >= -tolerance
            && t.x <= width as f64 - 1.0 + tolerance
            && t.y <= height as f64 - 1.0 + tolerance;
        if !inside {
            return Err(Error::input(
                file,
                format!(
                    "target {} (data row {}) at x = {}, y = {} is outside the reference session's \
                     {width}×{height} px field of view; positions must be pixels in the reference \
                     session's motion-corrected frame",
                    i,
                    i + 1,
                    t.x,
                    t.y
                ),
            ));
        }
    }
    Ok(())
}

/// One-to-one pairs (position index, track index) within `tolerance`, closest first.
fn pair_positions(
    positions: &[Position],
    tracks: &[TrackView],
    eligible: impl Fn(&TrackView) -> bool,
    tolerance: f64,
) -> Vec<(usize, usize)> {
    let n = positions.len();
    let mut edges = Vec::new();
    for (i, p) in positions.iter().enumerate() {
        for (j, t) in tracks.iter().enumerate() {
            let d = (p.x - t.x).hypot(p.y - t.y);
            if d <= tolerance && eligible(t) {
                edges.push(Candidate {
                    a: i,
                    b: n + j,
                    p: 1.0 - d / (tolerance + 1e-9),
                });
            }
        }
    }
    let mut out: Vec<(usize, usize)> = assign_pair(&edges)
        .into_iter()
        .map(|e| (e.a, e.b - n))
        .collect();
    out.sort_unstable();
    out
}

/// Tag every track. `post[s]` says whether session s is after the ablation.
///
/// Targets are paired first with the tracks seen before the ablation; a target
/// left over is then paired with a track seen only afterwards and with signal
/// (the target survived, undetected before). Returns the tags and the targets
/// still left: no ROI was ever found there, and the caller adds them as cells
/// without ROIs, tagged [`Outcome::Undetected`] (or `Unknown` without a session
/// after the ablation).
pub fn tag_tracks(
    tracks: &[TrackView],
    post: &[bool],
    targets: &[Position],
    cell_types: &[Position],
    tolerance: f64,
) -> (Vec<Tags>, Vec<usize>) {
    let mut tags = vec![Tags::default(); tracks.len()];
    let seen_before = |t: &TrackView| t.signal.iter().zip(post).any(|(s, &p)| !p && s.is_some());
    let mut left: Vec<bool> = vec![true; targets.len()];
    for (target, track) in pair_positions(targets, tracks, seen_before, tolerance) {
        tags[track].target = Some(target);
        tags[track].outcome = Some(outcome(&tracks[track], post));
        left[target] = false;
    }
    let rest: Vec<usize> = (0..targets.len()).filter(|&i| left[i]).collect();
    let rest_pos: Vec<Position> = rest.iter().map(|&i| targets[i]).collect();
    let active_after_only = |t: &TrackView| {
        !seen_before(t)
            && t.signal
                .iter()
                .zip(post)
                .any(|(s, &p)| p && *s == Some(true))
    };
    for (k, track) in pair_positions(&rest_pos, tracks, active_after_only, tolerance) {
        tags[track].target = Some(rest[k]);
        tags[track].outcome = Some(Outcome::Survived);
        left[rest[k]] = false;
    }
    for (pos, track) in pair_positions(cell_types, tracks, |_| true, tolerance) {
        tags[track].cell_type = cell_types[pos].kind.map(|k| k.as_str().to_string());
    }
    for t in tags.iter_mut() {
        if let (None, Some(i)) = (&t.cell_type, t.target) {
            t.cell_type = targets[i].kind.map(|k| k.as_str().to_string());
        }
    }
    (tags, (0..targets.len()).filter(|&i| left[i]).collect())
}

/// The tags of a cell that exists only as an ablation target.
pub fn target_only_tags(target: usize, kind: Option<String>, any_post: bool) -> Tags {
    Tags {
        target: Some(target),
        outcome: Some(if any_post {
            Outcome::Undetected
        } else {
            Outcome::Unknown
        }),
        cell_type: kind,
    }
}

fn outcome(track: &TrackView, post: &[bool]) -> Outcome {
    let after: Vec<Option<bool>> = track
        .signal
        .iter()
        .zip(post)
        .filter(|(_, &p)| p)
        .map(|(s, _)| *s)
        .collect();
    if after.is_empty() {
        Outcome::Unknown
    } else if after.iter().all(Option::is_none) {
        Outcome::Lost
    } else if after.iter().flatten().any(|&signal| signal) {
        Outcome::Survived
    } else {
        Outcome::Filled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::csv::CellKind;

    fn pos(x: f64, y: f64) -> Position {
        Position { x, y, kind: None }
    }

    fn track(x: f64, y: f64, signal: &[Option<bool>]) -> TrackView {
        TrackView {
            x,
            y,
            signal: signal.to_vec(),
        }
    }

    #[test]
    fn outcomes_follow_presence_and_signal_after_the_ablation() {
        let post = [false, false, true, true];
        let tracks = vec![
            track(10.0, 10.0, &[Some(true), Some(true), None, None]),
            track(30.0, 10.0, &[Some(true), Some(true), Some(false), None]),
            track(50.0, 10.0, &[Some(true), None, Some(true), Some(true)]),
            // Vanishes without a target: not ablated.
            track(70.0, 10.0, &[Some(true), Some(true), None, None]),
            // Appears only after the ablation: cannot be a target.
            track(90.0, 10.0, &[None, None, Some(true), Some(true)]),
        ];
        let targets = [
            pos(11.0, 9.0),
            pos(30.5, 10.0),
            pos(49.0, 11.0),
            pos(90.0, 10.0),
        ];
        let (tags, left) = tag_tracks(&tracks, &post, &targets, &[], 4.0);
        // The target at (90, 10) finds the cell that is active only afterwards.
        assert!(left.is_empty());
        let outcomes: Vec<Option<Outcome>> = tags.iter().map(|t| t.outcome).collect();
        assert_eq!(
            outcomes,
            vec![
                Some(Outcome::Lost),
                Some(Outcome::Filled),
                Some(Outcome::Survived),
                None,
                Some(Outcome::Survived)
            ]
        );
        assert!(tags[0].ablated() && tags[1].ablated() && !tags[2].ablated());
        assert_eq!(tags[1].target, Some(1));
    }

    #[test]
    fn a_target_goes_to_one_cell_only() {
        let post = [false, true];
        let tracks = vec![
            track(10.0, 10.0, &[Some(true), None]),
            track(14.0, 10.0, &[Some(true), None]),
        ];
        let (tags, left) = tag_tracks(
            &tracks,
            &post,
            &[pos(11.0, 10.0), pos(60.0, 60.0)],
            &[],
            6.0,
        );
        assert_eq!(tags[0].target, Some(0));
        assert_eq!(tags[1].target, None);
        // Nothing was ever found at the second target.
        assert_eq!(left, vec![1]);
        assert!(target_only_tags(1, None, true).ablated());
        assert!(!target_only_tags(1, None, false).ablated());
        let types = [Position {
            x: 14.2,
            y: 10.0,
            kind: Some(CellKind::Inhibitory),
        }];
        let (tags, _) = tag_tracks(&tracks, &post, &[], &types, 6.0);
        assert_eq!(tags[1].cell_type.as_deref(), Some("inhibitory"));
        assert_eq!(tags[0].cell_type, None);
    }

    #[test]
    fn targets_outside_the_fov_are_refused() {
        let err = check_targets(
            &[pos(5.0, 5.0), pos(700.0, 5.0)],
            Path::new("t.csv"),
            512,
            512,
            3.0,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("t.csv") && err.contains("target 1"), "{err}");
        assert!(check_targets(&[pos(-2.0, 5.0)], Path::new("t.csv"), 512, 512, 3.0).is_ok());
    }
}
