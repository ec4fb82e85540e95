//! Spatial extent of the ablation's effect (SCIENCE.md §5.4, the paper's ED Fig. 7c).
//!
//! In: spared neurons with a 3-D position (µm), their group (A or B) and their
//! best response amplitude per session; the *sites*: the positions of the ablated
//! neurons (in an experiment without targets, the high-category stand-ins).
//! Out: per session, group and distance bin, the mean over every (neuron, site)
//! pair in the bin of the neuron's normalised best amplitude, with its s.e.m.
//! across neurons.
//!
//! Normalisation: a neuron's best amplitude divided by the mean best amplitude of
//! its group over the baseline sessions (all spared neurons of that group in the
//! FOV, or in the mouse at the study level). The group's mean rather than the
//! neuron's own baseline keeps group B (silent before the ablation, best
//! amplitude near zero then) finite.

use crate::error::Result;
use crate::io::table::{Column, Table};
use std::collections::BTreeMap;
use std::path::Path;

/// Distance bins `[min, min + width), …`, the last one ending at `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistanceBins {
    pub min_um: f64,
    pub max_um: f64,
    pub width_um: f64,
}

impl DistanceBins {
    /// The most bins a table may have: far more than any distance profile needs,
    /// few enough that a mistyped width cannot exhaust memory.
    pub const MAX_BINS: usize = 10_000;

    /// How many bins; 0 when the range or width is unusable. A span within
    /// rounding of a whole number of widths has exactly that many (no sliver bin).
    pub fn len(&self) -> usize {
        let span = self.max_um - self.min_um;
        if !(span > 0.0 && self.width_um > 0.0 && span.is_finite()) {
            return 0;
        }
        let q = span / self.width_um;
        if !(q <= Self::MAX_BINS as f64) {
            return Self::MAX_BINS + 1;
        }
        let whole = q.round();
        let n = if (q - whole).abs() <= 1e-9 * whole.max(1.0) {
            whole
        } else {
            q.ceil()
        };
        (n as usize).max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Why these bins cannot be used, if they cannot.
    pub fn check(&self) -> std::result::Result<(), String> {
        let n = self.len();
        if !(self.min_um >= 0.0) || n == 0 {
            return Err(format!(
                "distance bins {}–{} µm by {} µm: need 0 ≤ min < max and a positive width",
                self.min_um, self.max_um, self.width_um
            ));
        }
        if n > Self::MAX_BINS {
            return Err(format!(
                "distance bins {}–{} µm by {} µm: more than {} bins; use a wider bin",
                self.min_um,
                self.max_um,
                self.width_um,
                Self::MAX_BINS
            ));
        }
        Ok(())
    }

    /// The bins' (start, end) in µm; the last ends at the maximum exactly.
    pub fn edges(&self) -> Vec<(f64, f64)> {
        let n = self.len().min(Self::MAX_BINS);
        (0..n)
            .map(|k| {
                let start = self.min_um + k as f64 * self.width_um;
                let end = if k + 1 == n {
                    self.max_um
                } else {
                    self.min_um + (k + 1) as f64 * self.width_um
                };
                (start, end)
            })
            .collect()
    }

    /// The bin holding distance `d`, if any (for one lookup; [`accumulate`]
    /// computes the edges once).
    pub fn bin_of(&self, d: f64) -> Option<usize> {
        locate(&self.edges(), d)
    }
}

/// The bin of `edges` holding `d`: the last one starting at or below it, so a
/// distance on a printed edge falls in the bin that starts there.
fn locate(edges: &[(f64, f64)], d: f64) -> Option<usize> {
    let last = edges.last()?;
    if !(d >= edges[0].0 && d < last.1) {
        return None;
    }
    Some(edges.partition_point(|e| e.0 <= d) - 1)
}

impl From<&crate::config::AnalysisParams> for DistanceBins {
    fn from(a: &crate::config::AnalysisParams) -> Self {
        DistanceBins {
            min_um: a.spatial_min_um,
            max_um: a.spatial_max_um,
            width_um: a.spatial_bin_um,
        }
    }
}

impl Default for DistanceBins {
    /// SCIENCE.md §5.4: 15–350 µm in 25 µm steps.
    fn default() -> Self {
        Self::from(&crate::config::AnalysisParams::default())
    }
}

/// Cells' positions in µm, read from a cells.parquet.
#[derive(Debug, Clone, PartialEq)]
pub struct Positions {
    /// By cell number: x, y and z (a missing `z_um` reads as 0).
    pub by_cell: BTreeMap<u32, [f64; 3]>,
    /// Every position had a `z_um` (the manifest's `depth_um`).
    pub depth_known: bool,
}

/// Each cell's position from `x_um`, `y_um`, `z_um` of a cells.parquet (its
/// first row with one). None when the table has no such columns (a run made
/// before them) or no cell has a position (no `um_per_pixel`).
pub fn cell_positions(cells: &Table, path: &Path) -> Result<Option<Positions>> {
    if cells.column("x_um").is_none() {
        return Ok(None);
    }
    let (id, x, y, z) = (
        cells.u32s(path, "cell")?,
        cells.opt_f32s(path, "x_um")?,
        cells.opt_f32s(path, "y_um")?,
        cells.opt_f32s(path, "z_um")?,
    );
    let mut out = Positions {
        by_cell: BTreeMap::new(),
        depth_known: true,
    };
    for r in 0..id.len() {
        let (Some(x), Some(y)) = (x[r], y[r]) else {
            continue;
        };
        if let std::collections::btree_map::Entry::Vacant(e) = out.by_cell.entry(id[r]) {
            out.depth_known &= z[r].is_some();
            e.insert([x as f64, y as f64, z[r].unwrap_or(0.0) as f64]);
        }
    }
    Ok((!out.by_cell.is_empty()).then_some(out))
}

/// The two groups of SCIENCE.md §3.6 the analysis splits by.
pub const GROUPS: [&str; 2] = ["A", "B"];

/// A spared neuron of group A (index 0) or B (1).
#[derive(Debug, Clone, PartialEq)]
pub struct Neuron {
    /// x, y, z in µm.
    pub position: [f64; 3],
    pub group: usize,
    /// Best response per session (NaN where not analysed); already normalised
    /// (see [`normalise_by_group`]) before [`accumulate`].
    pub values: Vec<f64>,
}

/// Divide each neuron's values by its group's mean over the baseline sessions
/// (finite values only). A group whose baseline mean is not positive gets NaN:
/// a ratio to it means nothing.
pub fn normalise_by_group(neurons: &mut [Neuron], baseline: &[bool]) {
    for g in 0..GROUPS.len() {
        let (sum, n) = neurons
            .iter()
            .filter(|x| x.group == g)
            .flat_map(|x| x.values.iter().zip(baseline))
            .filter(|(v, &b)| b && v.is_finite())
            .fold((0.0, 0usize), |(s, n), (v, _)| (s + v, n + 1));
        let base = if n > 0 { sum / n as f64 } else { f64::NAN };
        for x in neurons.iter_mut().filter(|x| x.group == g) {
            for v in &mut x.values {
                *v = if base > 0.0 { *v / base } else { f64::NAN };
            }
        }
    }
}

fn distance(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(p, q)| (p - q) * (p - q))
        .sum::<f64>()
        .sqrt()
}

/// One neuron's share of a bin: its value and how many sites lie in the bin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Share {
    pub value: f64,
    pub pairs: usize,
}

/// Per session, group and bin: the neurons' shares. Built per FOV (or mouse) and
/// merged over mice by [`Contributions::extend`].
#[derive(Debug, Clone, PartialEq)]
pub struct Contributions {
    pub n_sessions: usize,
    pub n_bins: usize,
    shares: Vec<Vec<Share>>,
}

impl Contributions {
    pub fn new(n_sessions: usize, n_bins: usize) -> Self {
        Contributions {
            n_sessions,
            n_bins,
            shares: vec![Vec::new(); n_sessions * GROUPS.len() * n_bins],
        }
    }

    fn index(&self, session: usize, group: usize, bin: usize) -> usize {
        (session * GROUPS.len() + group) * self.n_bins + bin
    }

    /// The shares of one session, group and bin.
    pub fn shares(&self, session: usize, group: usize, bin: usize) -> &[Share] {
        &self.shares[self.index(session, group, bin)]
    }

    /// Add another FOV's or mouse's shares (same sessions and bins).
    pub fn extend(&mut self, other: Contributions) {
        assert_eq!(self.n_sessions, other.n_sessions);
        self.extend_at(0, other);
    }

    /// Add `other`'s shares as sessions `first..first + other.n_sessions` of
    /// these (same bins): how a study stacks its cohorts' days in one table.
    pub fn extend_at(&mut self, first: usize, other: Contributions) {
        assert!(self.n_bins == other.n_bins && first + other.n_sessions <= self.n_sessions);
        let offset = first * GROUPS.len() * self.n_bins;
        for (k, theirs) in other.shares.into_iter().enumerate() {
            self.shares[offset + k].extend(theirs);
        }
    }
}

/// Every (neuron, site) pair with its distance in a bin contributes the
/// neuron's value in each session where it is finite.
pub fn accumulate(
    neurons: &[Neuron],
    sites: &[[f64; 3]],
    bins: &DistanceBins,
    n_sessions: usize,
) -> Contributions {
    let edges = bins.edges();
    let n_bins = edges.len();
    let mut out = Contributions::new(n_sessions, n_bins);
    for x in neurons {
        let mut per_bin = vec![0usize; n_bins];
        for site in sites {
            if let Some(b) = locate(&edges, distance(&x.position, site)) {
                per_bin[b] += 1;
            }
        }
        for (b, &pairs) in per_bin.iter().enumerate().filter(|(_, &p)| p > 0) {
            for (s, &value) in x.values.iter().enumerate().take(n_sessions) {
                if value.is_finite() {
                    let i = out.index(s, x.group, b);
                    out.shares[i].push(Share { value, pairs });
                }
            }
        }
    }
    out
}

/// A bin's summary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BinSummary {
    pub n_pairs: usize,
    pub n_neurons: usize,
    /// Mean over pairs (each neuron weighted by its pairs in the bin).
    pub mean: f64,
    /// Standard error across neurons: the pair-weighted s.d. of the neurons'
    /// values (with n/(n − 1)) over √n; NaN with fewer than two neurons.
    pub sem: f64,
}

pub fn summarise(shares: &[Share]) -> BinSummary {
    let n = shares.len();
    let pairs: usize = shares.iter().map(|s| s.pairs).sum();
    if pairs == 0 {
        return BinSummary {
            n_pairs: 0,
            n_neurons: 0,
            mean: f64::NAN,
            sem: f64::NAN,
        };
    }
    let w = pairs as f64;
    let mean = shares.iter().map(|s| s.pairs as f64 * s.value).sum::<f64>() / w;
    let sem = if n > 1 {
        let var = shares
            .iter()
            .map(|s| s.pairs as f64 * (s.value - mean).powi(2))
            .sum::<f64>()
            / w
            * n as f64
            / (n - 1) as f64;
        (var / n as f64).sqrt()
    } else {
        f64::NAN
    };
    BinSummary {
        n_pairs: pairs,
        n_neurons: n,
        mean,
        sem,
    }
}

/// The table of `c`: for each `(session index, key, day)` of `rows`, one row per
/// group and bin (empty bins too: `n_pairs` 0, NaN mean). `key_name` names the
/// key column (`session` for a run, `cohort` for a study).
pub fn table(
    c: &Contributions,
    bins: &DistanceBins,
    rows: &[(usize, String, i32)],
    key_name: &str,
) -> Table {
    let edges = bins.edges();
    let mut t = Columns::default();
    for (s, key, day) in rows {
        for (g, name) in GROUPS.iter().enumerate() {
            for (b, &(lo, hi)) in edges.iter().enumerate() {
                let sum = summarise(c.shares(*s, g, b));
                t.key.push(key.clone());
                t.day.push(*day);
                t.group.push(name.to_string());
                t.lo.push(lo);
                t.hi.push(hi);
                t.pairs.push(sum.n_pairs as u32);
                t.neurons.push(sum.n_neurons as u32);
                t.mean.push(sum.mean);
                t.sem.push(sum.sem);
            }
        }
    }
    Table::new()
        .with(key_name, Column::Str(t.key))
        .with("day", Column::I32(t.day))
        .with("group", Column::Str(t.group))
        .with("distance_min_um", Column::F64(t.lo))
        .with("distance_max_um", Column::F64(t.hi))
        .with("n_pairs", Column::U32(t.pairs))
        .with("n_cells", Column::U32(t.neurons))
        .with("norm_best_response", Column::F64(t.mean))
        .with("sem", Column::F64(t.sem))
}

#[derive(Default)]
struct Columns {
    key: Vec<String>,
    day: Vec<i32>,
    group: Vec<String>,
    lo: Vec<f64>,
    hi: Vec<f64>,
    pairs: Vec<u32>,
    neurons: Vec<u32>,
    mean: Vec<f64>,
    sem: Vec<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const BINS: DistanceBins = DistanceBins {
        min_um: 15.0,
        max_um: 350.0,
        width_um: 25.0,
    };

    #[test]
    fn bins_span_the_range_and_the_last_one_is_cut_at_the_maximum() {
        let e = BINS.edges();
        assert_eq!(e.len(), 14);
        assert_eq!(e[0], (15.0, 40.0));
        assert_eq!(e[12], (315.0, 340.0));
        assert_eq!(e[13], (340.0, 350.0));
        assert_eq!(BINS.bin_of(14.9), None);
        assert_eq!(BINS.bin_of(15.0), Some(0));
        assert_eq!(BINS.bin_of(39.99), Some(0));
        assert_eq!(BINS.bin_of(40.0), Some(1));
        assert_eq!(BINS.bin_of(349.0), Some(13));
        assert_eq!(BINS.bin_of(350.0), None);
        assert_eq!(BINS.bin_of(f64::NAN), None);
    }

    #[test]
    fn bins_survive_rounding_and_refuse_absurd_widths() {
        // 0.1 to 0.7 by 0.2: three bins, though 0.1 + 3·0.2 rounds below 0.7.
        let b = DistanceBins {
            min_um: 0.1,
            max_um: 0.7,
            width_um: 0.2,
        };
        assert_eq!(b.edges().len(), 3);
        assert_eq!(b.bin_of(0.7 - 1e-15), Some(2));
        assert!(b.check().is_ok());
        let exact = DistanceBins {
            min_um: 0.0,
            max_um: 100.0,
            width_um: 25.0,
        };
        assert_eq!(
            exact.edges(),
            vec![(0.0, 25.0), (25.0, 50.0), (50.0, 75.0), (75.0, 100.0)]
        );
        // 0 to 230 by 2.3 is 100 bins, not 100 and a sliver; every printed start
        // holds the distance equal to it, and the last bin ends at the maximum.
        let b = DistanceBins {
            min_um: 0.0,
            max_um: 230.0,
            width_um: 2.3,
        };
        let e = b.edges();
        assert_eq!(e.len(), 100);
        assert_eq!(e[99].1, 230.0);
        for (k, &(start, _)) in e.iter().enumerate() {
            assert_eq!(b.bin_of(start), Some(k));
        }
        let tiny = DistanceBins {
            width_um: 1e-9,
            ..exact
        };
        assert!(tiny.check().unwrap_err().contains("more than"));
        assert!(tiny.edges().len() <= DistanceBins::MAX_BINS);
        for bad in [
            (5.0, 5.0, 1.0),
            (-1.0, 5.0, 1.0),
            (0.0, 5.0, 0.0),
            (0.0, f64::INFINITY, 1.0),
        ] {
            let b = DistanceBins {
                min_um: bad.0,
                max_um: bad.1,
                width_um: bad.2,
            };
            assert!(b.check().is_err(), "{bad:?}");
        }
    }

    fn neuron(x: f64, z: f64, group: usize, values: &[f64]) -> Neuron {
        Neuron {
            position: [x, 0.0, z],
            group,
            values: values.to_vec(),
        }
    }

    #[test]
    fn pairs_land_in_the_bin_of_their_three_dimensional_distance() {
        // Sites at the origin and at x = 100. Neuron 1 at (30, 0, 40): 50 µm from
        // the first site (bin 1) and √(70² + 40²) ≈ 80.6 µm from the second (bin 2).
        let sites = [[0.0, 0.0, 0.0], [100.0, 0.0, 0.0]];
        let n = [
            neuron(30.0, 40.0, 0, &[1.0, 2.0]),
            neuron(0.0, 20.0, 1, &[3.0, f64::NAN]),
        ];
        let c = accumulate(&n, &sites, &BINS, 2);
        assert_eq!(
            c.shares(0, 0, 1),
            &[Share {
                value: 1.0,
                pairs: 1
            }]
        );
        assert_eq!(
            c.shares(1, 0, 2),
            &[Share {
                value: 2.0,
                pairs: 1
            }]
        );
        // Neuron 2: 20 µm from the first site (bin 0), √(100² + 20²) ≈ 102 (bin 3);
        // its NaN in session 1 contributes nothing.
        assert_eq!(
            c.shares(0, 1, 0),
            &[Share {
                value: 3.0,
                pairs: 1
            }]
        );
        assert_eq!(
            c.shares(0, 1, 3),
            &[Share {
                value: 3.0,
                pairs: 1
            }]
        );
        assert!(c.shares(1, 1, 0).is_empty());
        assert!(c.shares(0, 0, 0).is_empty());
    }

    #[test]
    fn a_neuron_with_several_sites_in_a_bin_counts_once_per_pair() {
        let sites = [[20.0, 0.0, 0.0], [-20.0, 0.0, 0.0], [0.0, 200.0, 0.0]];
        let n = [neuron(0.0, 0.0, 0, &[2.0]), neuron(0.0, 25.0, 0, &[4.0])];
        let c = accumulate(&n, &sites, &BINS, 1);
        // Neuron 1: two sites at 20 µm; neuron 2: two at √(20² + 25²) ≈ 32 µm.
        let s = summarise(c.shares(0, 0, 0));
        assert_eq!((s.n_pairs, s.n_neurons), (4, 2));
        assert!((s.mean - 3.0).abs() < 1e-12);
        // Neurons' values 2 and 4, equal weights: s.d. √2, s.e.m. 1.
        assert!((s.sem - 1.0).abs() < 1e-12, "{}", s.sem);
    }

    #[test]
    fn weights_follow_the_pairs() {
        let s = summarise(&[
            Share {
                value: 1.0,
                pairs: 3,
            },
            Share {
                value: 5.0,
                pairs: 1,
            },
        ]);
        assert!((s.mean - 2.0).abs() < 1e-12);
        assert_eq!(s.n_pairs, 4);
        let one = summarise(&[Share {
            value: 1.0,
            pairs: 2,
        }]);
        assert!(one.sem.is_nan() && one.mean == 1.0);
        assert!(summarise(&[]).mean.is_nan());
    }

    #[test]
    fn values_are_divided_by_their_groups_baseline_mean() {
        let mut n = vec![
            neuron(0.0, 0.0, 0, &[1.0, 3.0, 4.0]),
            neuron(0.0, 0.0, 0, &[3.0, 1.0, f64::NAN]),
            neuron(0.0, 0.0, 1, &[0.0, 0.0, 1.0]),
        ];
        normalise_by_group(&mut n, &[true, true, false]);
        // Group A's baseline mean is (1 + 3 + 3 + 1) / 4 = 2.
        assert_eq!(n[0].values, vec![0.5, 1.5, 2.0]);
        assert_eq!(n[1].values[..2], [1.5, 0.5]);
        // Group B's baseline mean is 0: no ratio.
        assert!(n[2].values.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn merged_contributions_pool_the_shares() {
        let sites = [[0.0, 0.0, 0.0]];
        let mut a = accumulate(&[neuron(20.0, 0.0, 0, &[1.0])], &sites, &BINS, 1);
        let b = accumulate(&[neuron(0.0, 30.0, 0, &[3.0])], &sites, &BINS, 1);
        a.extend(b);
        let s = summarise(a.shares(0, 0, 0));
        assert_eq!(s.n_neurons, 2);
        assert!((s.mean - 2.0).abs() < 1e-12);
    }

    #[test]
    fn contributions_stack_at_an_offset() {
        let sites = [[0.0, 0.0, 0.0]];
        let mut all = Contributions::new(4, BINS.edges().len());
        let one = accumulate(&[neuron(20.0, 0.0, 1, &[1.0, 2.0])], &sites, &BINS, 2);
        all.extend_at(2, one);
        assert!(all.shares(0, 1, 0).is_empty());
        assert_eq!(
            all.shares(2, 1, 0),
            &[Share {
                value: 1.0,
                pairs: 1
            }]
        );
        assert_eq!(
            all.shares(3, 1, 0),
            &[Share {
                value: 2.0,
                pairs: 1
            }]
        );
    }
}
