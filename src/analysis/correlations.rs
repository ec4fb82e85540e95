//! Pairwise correlation structure of one session (SCIENCE.md §5.1–5.2).
//!
//! In: the analysed cells' tuning curves and single-trial responses. Out: for
//! every pair of cells the signal correlation (Pearson correlation of the two
//! trial-averaged tuning curves over the stimuli) and the noise correlation
//! (Pearson correlation over all trials of the z-scored residuals
//! `(a − T(s)) / sd(s)`, pooled over stimuli, so shared tuning does not count).

use super::maps::pearson;
use super::neurons::{CellSession, TrialDesign};
use rayon::prelude::*;

/// One pair's correlations (NaN where undefined).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairCorrelation {
    pub a: usize,
    pub b: usize,
    pub signal: f64,
    pub noise: f64,
}

/// Z-scored residuals of a cell's trial responses from its tuning curve; NaN
/// where the stimulus has fewer than two responses or no spread.
pub fn residuals(cell: &CellSession, design: &TrialDesign) -> Vec<f64> {
    let n = design.n_stimuli;
    let mut ss = vec![(0.0, 0usize); n];
    for (t, &s) in design.stimulus.iter().enumerate() {
        let r = cell.responses[t];
        if r.is_finite() {
            ss[s].0 += (r - cell.tuning[s]).powi(2);
            ss[s].1 += 1;
        }
    }
    let sd: Vec<f64> = ss
        .iter()
        .map(|&(sum, k)| {
            if k > 1 {
                (sum / (k - 1) as f64).sqrt()
            } else {
                f64::NAN
            }
        })
        .collect();
    design
        .stimulus
        .iter()
        .enumerate()
        .map(|(t, &s)| {
            if sd[s] > 0.0 {
                (cell.responses[t] - cell.tuning[s]) / sd[s]
            } else {
                f64::NAN
            }
        })
        .collect()
}

/// Pearson correlation over the positions where both are finite.
pub fn pearson_complete(a: &[f64], b: &[f64]) -> f64 {
    let (x, y): (Vec<f64>, Vec<f64>) = a
        .iter()
        .zip(b)
        .filter(|(p, q)| p.is_finite() && q.is_finite())
        .map(|(p, q)| (*p, *q))
        .unzip();
    pearson(&x, &y).unwrap_or(f64::NAN)
}

/// Every pair (a < b) of `cells` (indices into the slice), in order.
pub fn pair_correlations(cells: &[&CellSession], design: &TrialDesign) -> Vec<PairCorrelation> {
    let res: Vec<Vec<f64>> = cells.iter().map(|c| residuals(c, design)).collect();
    (0..cells.len())
        .into_par_iter()
        .flat_map_iter(|a| {
            let res = &res;
            (a + 1..cells.len()).map(move |b| PairCorrelation {
                a,
                b,
                signal: pearson_complete(&cells[a].tuning, &cells[b].tuning),
                noise: pearson_complete(&res[a], &res[b]),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::neurons::{analyse_responses, NeuronSettings, Test};

    fn settings() -> NeuronSettings {
        NeuronSettings {
            baseline_frames: 1,
            response_frames: 1,
            test: Test::PairedT,
            fdr_q: 0.05,
            min_amplitude: 0.0,
            width_rank: 15,
        }
    }

    #[test]
    fn shared_tuning_is_signal_and_shared_trial_noise_is_noise() {
        // 3 stimuli × 4 repetitions. Cells 0 and 1 share tuning; cells 0 and 2
        // share trial-to-trial fluctuations but not tuning.
        let stim: Vec<usize> = (0..12).map(|t| t % 3).collect();
        let design = TrialDesign::new(vec![0; 12], stim.clone(), 3);
        let wobble = |t: usize| {
            [
                0.3, -0.2, 0.1, -0.25, 0.15, 0.05, -0.1, 0.2, -0.3, 0.25, 0.0, -0.05,
            ][t]
        };
        let tune_a = [1.0, 2.0, 3.0];
        let tune_b = [3.0, 1.0, 2.0];
        let cell = |tune: [f64; 3], noise: &dyn Fn(usize) -> f64| {
            let r: Vec<f64> = (0..12).map(|t| tune[stim[t]] + noise(t)).collect();
            analyse_responses(r, &design, &settings())
        };
        let c0 = cell(tune_a, &wobble);
        let c1 = cell(tune_a, &|t| wobble((t + 5) % 12) * 0.5);
        let c2 = cell(tune_b, &wobble);
        let pairs = pair_correlations(&[&c0, &c1, &c2], &design);
        assert_eq!(pairs.len(), 3);
        let p01 = pairs.iter().find(|p| p.a == 0 && p.b == 1).unwrap();
        let p02 = pairs.iter().find(|p| p.a == 0 && p.b == 2).unwrap();
        assert!(p01.signal > 0.99, "{p01:?}");
        assert!(p02.signal < 0.0, "{p02:?}");
        assert!((p02.noise - 1.0).abs() < 1e-9, "{p02:?}");
        assert!(p01.noise < 0.9, "{p01:?}");
    }
}
