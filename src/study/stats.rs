//! The study's statistics (SCIENCE.md §6.1): a two-sided paired t-test of a
//! post-ablation day against the baseline, an ordinary one-way ANOVA across days,
//! and a two-sided permutation test of a cohort against control. Distributions
//! from statrs; the permutation test is seeded and parallel, with one random
//! stream per block of permutations so the result does not depend on the thread
//! count.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use statrs::distribution::{ContinuousCDF, FisherSnedecor, StudentsT};

/// (t, two-sided p) of a paired t-test of `after` against `before` (pairs with a
/// non-finite value dropped). NaN with fewer than two pairs or no variance.
pub fn paired_t_two_sided(before: &[f64], after: &[f64]) -> (f64, f64) {
    let d: Vec<f64> = before
        .iter()
        .zip(after)
        .map(|(b, a)| a - b)
        .filter(|v| v.is_finite())
        .collect();
    let n = d.len() as f64;
    if d.len() < 2 {
        return (f64::NAN, f64::NAN);
    }
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    if !(var > 0.0) {
        return (f64::NAN, f64::NAN);
    }
    let t = mean / (var / n).sqrt();
    let p = match StudentsT::new(0.0, 1.0, n - 1.0) {
        Ok(dist) => 2.0 * (1.0 - dist.cdf(t.abs())),
        Err(_) => f64::NAN,
    };
    (t, p.min(1.0))
}

/// (F, p) of an ordinary one-way ANOVA over `groups` (non-finite values dropped,
/// groups left empty ignored). NaN with fewer than two groups or no residual
/// degrees of freedom or variance.
pub fn one_way_anova(groups: &[Vec<f64>]) -> (f64, f64) {
    let groups: Vec<Vec<f64>> = groups
        .iter()
        .map(|g| {
            g.iter()
                .copied()
                .filter(|v| v.is_finite())
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect();
    let k = groups.len();
    let n: usize = groups.iter().map(|g| g.len()).sum();
    if k < 2 || n <= k {
        return (f64::NAN, f64::NAN);
    }
    let grand = groups.iter().flatten().sum::<f64>() / n as f64;
    let mut between = 0.0;
    let mut within = 0.0;
    for g in &groups {
        let m = g.iter().sum::<f64>() / g.len() as f64;
        between += g.len() as f64 * (m - grand).powi(2);
        within += g.iter().map(|v| (v - m).powi(2)).sum::<f64>();
    }
    let (df1, df2) = ((k - 1) as f64, (n - k) as f64);
    if !(within > 0.0) {
        return (f64::NAN, f64::NAN);
    }
    let f = (between / df1) / (within / df2);
    let p = match FisherSnedecor::new(df1, df2) {
        Ok(dist) => 1.0 - dist.cdf(f),
        Err(_) => f64::NAN,
    };
    (f, p)
}

/// Permutations per random stream: blocks are the unit of parallel work.
const BLOCK: usize = 500;

/// (mean(a) − mean(b), two-sided p) of a permutation test that shuffles the labels
/// of the pooled values `permutations` times. p = (1 + #{|perm| ≥ |observed|}) /
/// (1 + permutations). Non-finite values are dropped; NaN when a side is empty.
pub fn permutation_two_sided(a: &[f64], b: &[f64], permutations: usize, seed: u64) -> (f64, f64) {
    let a: Vec<f64> = a.iter().copied().filter(|v| v.is_finite()).collect();
    let b: Vec<f64> = b.iter().copied().filter(|v| v.is_finite()).collect();
    if a.is_empty() || b.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let observed = mean(&a) - mean(&b);
    let pooled: Vec<f64> = a.iter().chain(&b).copied().collect();
    // A small tolerance so that permutations equal to the observed split count.
    let bar = observed.abs() * (1.0 - 1e-12);
    let blocks = permutations.div_ceil(BLOCK);
    let extreme: usize = (0..blocks)
        .into_par_iter()
        .map(|blk| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(blk as u64);
            let mut v = pooled.clone();
            let n = BLOCK.min(permutations - blk * BLOCK);
            (0..n)
                .filter(|_| {
                    v.shuffle(&mut rng);
                    (mean(&v[..a.len()]) - mean(&v[a.len()..])).abs() >= bar
                })
                .count()
        })
        .sum();
    (observed, (1 + extreme) as f64 / (1 + permutations) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_t_matches_a_hand_computation() {
        // Differences 1, 2, 3: mean 2, sd 1, t = 2 / (1/√3) = 3.4641, df 2,
        // two-sided p = 0.0742 (t table).
        let (t, p) = paired_t_two_sided(&[0.0, 0.0, 0.0], &[1.0, 2.0, 3.0]);
        assert!((t - 3.4641).abs() < 1e-3, "{t}");
        assert!((p - 0.0742).abs() < 1e-3, "{p}");
        let (t, p) = paired_t_two_sided(&[1.0, 2.0, 3.0], &[0.0, 0.0, 0.0]);
        assert!((t + 3.4641).abs() < 1e-3 && (p - 0.0742).abs() < 1e-3);
        assert!(paired_t_two_sided(&[1.0], &[2.0]).1.is_nan());
    }

    #[test]
    fn anova_matches_a_hand_computation() {
        // Groups {1,2,3}, {4,5,6}: between SS 13.5 (df 1), within SS 4 (df 4),
        // F = 13.5, p = 0.0213 (F table, df 1 and 4).
        let (f, p) = one_way_anova(&[vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]);
        assert!((f - 13.5).abs() < 1e-9, "{f}");
        assert!((p - 0.0213).abs() < 5e-4, "{p}");
        let (_, p) = one_way_anova(&[vec![1.0, 2.0, 3.0], vec![1.0, 2.0, 3.0]]);
        assert!((p - 1.0).abs() < 1e-9);
    }

    #[test]
    fn permutation_test_is_exact_enough_and_deterministic() {
        // Fully separated groups of 4: only 2 of the 70 splits are as extreme,
        // so p ≈ 2/70 = 0.029.
        let a = [10.0, 11.0, 12.0, 13.0];
        let b = [0.0, 1.0, 2.0, 3.0];
        let (d, p) = permutation_two_sided(&a, &b, 10_000, 7);
        assert!((d - 10.0).abs() < 1e-12);
        assert!((p - 2.0 / 70.0).abs() < 0.01, "{p}");
        assert_eq!(
            permutation_two_sided(&a, &b, 10_000, 7),
            permutation_two_sided(&a, &b, 10_000, 7)
        );
        let (_, p) = permutation_two_sided(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0], 2_000, 1);
        assert!(p > 0.9, "{p}");
    }
}
