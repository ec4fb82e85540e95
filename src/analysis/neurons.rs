//! Single-neuron measures of one session (SCIENCE.md §2, §3.1–3.5).
//!
//! In: a cell's ΔF/F trace and the session's trials (onset frame, stimulus,
//! repetition). Out: the single-trial responses (mean ΔF/F in the response
//! window minus the mean in the pre-stimulus window), the tuning curve, per
//! stimulus a one-sided paired test of response against baseline across
//! repetitions with Benjamini–Hochberg over the cell's stimuli, responsiveness,
//! best response, trial-to-trial reliability (mean correlation of the stimulus
//! vectors of pairs of repetitions) and the tuning width (the normalised response
//! at rank 15 of 34 in the sorted tuning curve, rank scaled for other counts).

use super::maps::pearson;
use super::stats::{benjamini_hochberg, paired_t_greater, wilcoxon_greater};

/// The session's trials, in presentation order.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialDesign {
    /// Trial numbers (as in stimuli.csv; 0, 1, ... unless set).
    pub trial: Vec<u32>,
    pub onset: Vec<usize>,
    pub stimulus: Vec<usize>,
    /// Occurrence of the trial's stimulus so far (0 for its first presentation).
    pub repetition: Vec<usize>,
    pub n_stimuli: usize,
}

impl TrialDesign {
    /// Build from onsets and stimulus indices; repetitions are counted per stimulus.
    pub fn new(onset: Vec<usize>, stimulus: Vec<usize>, n_stimuli: usize) -> Self {
        let mut seen = vec![0usize; n_stimuli];
        let repetition = stimulus
            .iter()
            .map(|&s| {
                seen[s] += 1;
                seen[s] - 1
            })
            .collect();
        TrialDesign {
            trial: (0..onset.len() as u32).collect(),
            onset,
            stimulus,
            repetition,
            n_stimuli,
        }
    }

    pub fn n_repetitions(&self) -> usize {
        self.repetition.iter().map(|r| r + 1).max().unwrap_or(0)
    }
}

/// The test of responsiveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    Wilcoxon,
    PairedT,
    /// Max-statistic test against circular shifts of the trace (SCIENCE.md §3.1's
    /// "shuffle" mode): `shuffles` shifts, seeded per cell.
    Shuffle {
        shuffles: usize,
        seed: u64,
    },
}

/// Settings of the single-neuron analysis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NeuronSettings {
    pub baseline_frames: usize,
    pub response_frames: usize,
    pub test: Test,
    pub fdr_q: f64,
    pub min_amplitude: f64,
    /// Rank of the tuning width for 34 stimuli (scaled for other counts).
    pub width_rank: usize,
}

/// One cell in one session.
#[derive(Debug, Clone, PartialEq)]
pub struct CellSession {
    /// Per trial: response − baseline (NaN when a window leaves the movie).
    pub responses: Vec<f64>,
    /// Per stimulus: mean response, s.e.m., p-value, BH-adjusted p, responsive.
    pub tuning: Vec<f64>,
    pub sem: Vec<f64>,
    pub p: Vec<f64>,
    pub q: Vec<f64>,
    pub responsive_to: Vec<bool>,
    pub responsive: bool,
    pub best: f64,
    pub reliability: f64,
    pub width: f64,
    /// Split-half tuning reliability (SCIENCE.md §3.8): the Pearson correlation,
    /// over the stimuli, of the tuning curves of the even and the odd
    /// repetitions; NaN with fewer than two repetitions or no variance.
    pub split_half: f64,
}

/// Mean ΔF/F over `[onset, onset + nr)` minus the mean over `[onset − nb, onset)`.
pub fn trial_response(dff: &[f32], onset: usize, nb: usize, nr: usize) -> f64 {
    if onset < nb || onset + nr > dff.len() || nr == 0 || nb == 0 {
        return f64::NAN;
    }
    let mean = |w: &[f32]| w.iter().map(|&v| v as f64).sum::<f64>() / w.len() as f64;
    mean(&dff[onset..onset + nr]) - mean(&dff[onset - nb..onset])
}

/// The tuning-width rank for `n` stimuli: 15 of 34 scaled, at least 1.
pub fn scaled_rank(rank_of_34: usize, n: usize) -> usize {
    ((rank_of_34 as f64 * n as f64 / 34.0).round() as usize).clamp(1, n.max(1))
}

/// Analyse one cell's trace over the session's trials.
pub fn analyse_cell(dff: &[f32], design: &TrialDesign, s: &NeuronSettings) -> CellSession {
    let responses: Vec<f64> = design
        .onset
        .iter()
        .map(|&o| trial_response(dff, o, s.baseline_frames, s.response_frames))
        .collect();
    let mut cell = analyse_responses(responses, design, s);
    if let Test::Shuffle { shuffles, seed } = s.test {
        let null = shuffle_null(dff, design, s, shuffles, seed);
        apply_max_null(&mut cell, &null, s);
    }
    cell
}

/// The largest stimulus mean of `responses` (NaN trials skipped).
fn max_stimulus_mean(responses: &[f64], design: &TrialDesign) -> f64 {
    let mut sums = vec![(0.0, 0usize); design.n_stimuli];
    for (t, &st) in design.stimulus.iter().enumerate() {
        if responses[t].is_finite() {
            sums[st].0 += responses[t];
            sums[st].1 += 1;
        }
    }
    sums.iter()
        .filter(|x| x.1 > 0)
        .map(|x| x.0 / x.1 as f64)
        .fold(f64::NEG_INFINITY, f64::max)
}

/// Null distribution (sorted) of the largest stimulus mean when the trace is
/// shifted circularly against the schedule by at least two trial windows, which
/// keeps the trace's own autocorrelation and event rate.
fn shuffle_null(
    dff: &[f32],
    design: &TrialDesign,
    s: &NeuronSettings,
    shuffles: usize,
    seed: u64,
) -> Vec<f64> {
    use rand::{Rng, SeedableRng};
    let n = dff.len();
    let (nb, nr) = (s.baseline_frames, s.response_frames);
    let min_shift = 2 * (nb + nr);
    if n <= 2 * min_shift || shuffles == 0 {
        return Vec::new();
    }
    // Prefix sums over three copies of the trace, so a circular window around
    // any point of the middle copy is one lookup.
    let mut prefix = Vec::with_capacity(3 * n + 1);
    prefix.push(0f64);
    for k in 0..3 * n {
        let v = dff[k % n];
        let last = *prefix.last().expect("non-empty");
        prefix.push(last + if v.is_finite() { v as f64 } else { 0.0 });
    }
    let window = |a: usize, len: usize| (prefix[a + len] - prefix[a]) / len as f64;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut null: Vec<f64> = (0..shuffles)
        .map(|_| {
            let shift = rng.random_range(min_shift..n - min_shift);
            let responses: Vec<f64> = design
                .onset
                .iter()
                .map(|&o| {
                    let o = (o + shift) % n + n; // into the middle copy
                    window(o, nr) - window(o - nb, nb)
                })
                .collect();
            max_stimulus_mean(&responses, design)
        })
        .collect();
    null.sort_by(|a, b| a.total_cmp(b));
    null
}

/// Per stimulus, p = (1 + #null ≥ mean) / (1 + #null); the max statistic controls
/// the error over the cell's stimuli, so `q` is `p`.
fn apply_max_null(cell: &mut CellSession, null: &[f64], s: &NeuronSettings) {
    if null.is_empty() {
        return;
    }
    let n = null.len() as f64;
    for (j, m) in cell.tuning.iter().enumerate() {
        let p = if m.is_finite() {
            let above = null.len() - null.partition_point(|&x| x < *m);
            (1.0 + above as f64) / (1.0 + n)
        } else {
            f64::NAN
        };
        cell.p[j] = p;
        cell.q[j] = p;
        cell.responsive_to[j] = p <= s.fdr_q && *m > s.min_amplitude;
    }
    cell.responsive = cell.responsive_to.iter().any(|&r| r);
}

/// The per-stimulus and per-cell measures from single-trial responses.
pub fn analyse_responses(
    responses: Vec<f64>,
    design: &TrialDesign,
    s: &NeuronSettings,
) -> CellSession {
    let n = design.n_stimuli;
    let mut by_stim: Vec<Vec<f64>> = vec![Vec::new(); n];
    for (t, &st) in design.stimulus.iter().enumerate() {
        if responses[t].is_finite() {
            by_stim[st].push(responses[t]);
        }
    }
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let tuning: Vec<f64> = by_stim.iter().map(|v| mean(v)).collect();
    let sem: Vec<f64> = by_stim
        .iter()
        .zip(&tuning)
        .map(|(v, m)| {
            if v.len() < 2 {
                return f64::NAN;
            }
            let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
            (var / v.len() as f64).sqrt()
        })
        .collect();
    let p: Vec<f64> = by_stim
        .iter()
        .map(|v| match s.test {
            Test::Wilcoxon => wilcoxon_greater(v),
            Test::PairedT => paired_t_greater(v),
            // Needs the trace: [`analyse_cell`] fills it in.
            Test::Shuffle { .. } => f64::NAN,
        })
        .collect();
    let q = benjamini_hochberg(&p);
    let responsive_to: Vec<bool> = q
        .iter()
        .zip(&tuning)
        .map(|(&q, &m)| q <= s.fdr_q && m > s.min_amplitude)
        .collect();
    let best = tuning
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::NAN, f64::max);
    CellSession {
        reliability: reliability(&responses, design),
        split_half: split_half(&responses, design),
        width: width(&tuning, s.width_rank),
        responsive: responsive_to.iter().any(|&r| r),
        responses,
        tuning,
        sem,
        p,
        q,
        responsive_to,
        best,
    }
}

/// Mean Pearson correlation, over pairs of repetitions, of the vectors of
/// single-trial responses to every stimulus (SCIENCE.md §3.3).
fn reliability(responses: &[f64], design: &TrialDesign) -> f64 {
    let reps = design.n_repetitions();
    let mut vectors = vec![vec![f64::NAN; design.n_stimuli]; reps];
    for (t, (&st, &k)) in design.stimulus.iter().zip(&design.repetition).enumerate() {
        vectors[k][st] = responses[t];
    }
    let (mut sum, mut count) = (0.0, 0usize);
    for k in 0..reps {
        for l in k + 1..reps {
            // Only stimuli present in both repetitions.
            let (a, b): (Vec<f64>, Vec<f64>) = vectors[k]
                .iter()
                .zip(&vectors[l])
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|(x, y)| (*x, *y))
                .unzip();
            if let Some(r) = pearson(&a, &b) {
                sum += r;
                count += 1;
            }
        }
    }
    if count > 0 {
        sum / count as f64
    } else {
        f64::NAN
    }
}

/// The correlation of the tuning curves of the even (0, 2, …) and the odd
/// repetitions, over the stimuli with a finite mean in both.
fn split_half(responses: &[f64], design: &TrialDesign) -> f64 {
    let n = design.n_stimuli;
    let mut sums = vec![[(0.0, 0usize); 2]; n];
    for (t, (&st, &k)) in design.stimulus.iter().zip(&design.repetition).enumerate() {
        if responses[t].is_finite() {
            let half = &mut sums[st][k % 2];
            half.0 += responses[t];
            half.1 += 1;
        }
    }
    let (even, odd): (Vec<f64>, Vec<f64>) = sums
        .iter()
        .filter(|h| h[0].1 > 0 && h[1].1 > 0)
        .map(|h| (h[0].0 / h[0].1 as f64, h[1].0 / h[1].1 as f64))
        .unzip();
    pearson(&even, &odd).unwrap_or(f64::NAN)
}

/// The normalised response at the (scaled) rank of the sorted tuning curve;
/// NaN when the best response is not positive.
fn width(tuning: &[f64], rank_of_34: usize) -> f64 {
    let mut t: Vec<f64> = tuning.iter().copied().filter(|v| v.is_finite()).collect();
    if t.is_empty() {
        return f64::NAN;
    }
    t.sort_by(|a, b| b.total_cmp(a));
    if !(t[0] > 0.0) {
        return f64::NAN;
    }
    t[scaled_rank(rank_of_34, tuning.len()).min(t.len()) - 1] / t[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(test: Test) -> NeuronSettings {
        NeuronSettings {
            baseline_frames: 2,
            response_frames: 3,
            test,
            fdr_q: 0.05,
            min_amplitude: 0.0,
            width_rank: 15,
        }
    }

    #[test]
    fn responses_are_window_means_minus_baseline() {
        let dff = [0.0, 1.0, 3.0, 3.0, 6.0, 0.0];
        assert!((trial_response(&dff, 2, 2, 3) - (4.0 - 0.5)).abs() < 1e-12);
        assert!(trial_response(&dff, 1, 2, 3).is_nan());
        assert!(trial_response(&dff, 4, 2, 3).is_nan());
    }

    #[test]
    fn a_cell_driven_by_one_stimulus_is_responsive_to_it_alone() {
        // 4 stimuli × 8 repetitions, block order; stimulus 2 drives a response.
        let (mut onset, mut stim) = (vec![], vec![]);
        let mut dff = vec![0f32; 10 + 32 * 10];
        let mut t = 10;
        for rep in 0..8 {
            for s in 0..4 {
                onset.push(t);
                stim.push(s);
                let amp = if s == 2 { 1.0 + 0.1 * rep as f32 } else { 0.0 };
                // Small deterministic noise everywhere.
                for (f, v) in dff.iter_mut().enumerate().take(t + 3).skip(t - 2) {
                    *v += 0.01 * (((f * 7919) % 13) as f32 - 6.0);
                }
                for v in &mut dff[t..t + 3] {
                    *v += amp;
                }
                t += 10;
            }
        }
        let design = TrialDesign::new(onset, stim, 4);
        assert_eq!(design.n_repetitions(), 8);
        for test in [
            Test::Wilcoxon,
            Test::PairedT,
            Test::Shuffle {
                shuffles: 200,
                seed: 1,
            },
        ] {
            let c = analyse_cell(&dff, &design, &settings(test));
            assert_eq!(
                c.responsive_to,
                vec![false, false, true, false],
                "{test:?} {:?}",
                c.q
            );
            assert!(c.responsive);
            assert!((c.best - c.tuning[2]).abs() < 1e-12 && c.best > 1.0);
            // Repetition vectors all peak at stimulus 2: reliable.
            assert!(c.reliability > 0.9, "{}", c.reliability);
            // Only one positive stimulus: the width at rank 2 (15 of 34 scaled to 4) is small.
            assert!(c.width < 0.1, "{}", c.width);
        }
    }

    #[test]
    fn width_rank_scales_with_the_stimulus_count() {
        assert_eq!(scaled_rank(15, 34), 15);
        assert_eq!(scaled_rank(15, 12), 5);
        assert_eq!(scaled_rank(15, 1), 1);
        let flat = vec![1.0; 34];
        assert!((width(&flat, 15) - 1.0).abs() < 1e-12);
        assert!(width(&[-1.0, -2.0], 15).is_nan());
    }

    #[test]
    fn split_half_correlates_the_even_and_odd_repetitions_tuning() {
        // 3 stimuli × 4 repetitions, presented in blocks: s0 s1 s2 s0 s1 s2 …
        let stimulus: Vec<usize> = (0..12).map(|t| t % 3).collect();
        let design = TrialDesign::new((0..12).map(|t| 10 * t + 10).collect(), stimulus, 3);
        // Even repetitions (0, 2) respond 1, 2, 3; odd ones (1, 3) 2, 4, 6: r = 1.
        let responses: Vec<f64> = (0..12)
            .map(|t| {
                let (st, rep) = (t % 3, t / 3);
                (st + 1) as f64 * if rep % 2 == 0 { 1.0 } else { 2.0 }
            })
            .collect();
        assert!((split_half(&responses, &design) - 1.0).abs() < 1e-12);
        // Odd repetitions reversed: r = −1.
        let reversed: Vec<f64> = (0..12)
            .map(|t| {
                let (st, rep) = (t % 3, t / 3);
                if rep % 2 == 0 {
                    (st + 1) as f64
                } else {
                    (3 - st) as f64
                }
            })
            .collect();
        assert!((split_half(&reversed, &design) + 1.0).abs() < 1e-12);
        // One repetition: no halves.
        let once = TrialDesign::new(vec![10, 20, 30], vec![0, 1, 2], 3);
        assert!(split_half(&[1.0, 2.0, 3.0], &once).is_nan());
    }
}
