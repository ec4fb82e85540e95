//! Optimal one-to-one assignment (the Hungarian method, `pathfinding`'s
//! Kuhn–Munkres), shared by ROI scoring, tracking and tagging.

/// The one-to-one pairs (row, column) that maximise the total weight, among the
/// pairs with a positive weight. `weights` is row-major, `rows × cols`; a weight
/// of 0 or less marks a pair that is not allowed.
pub fn max_weight_pairs(rows: usize, cols: usize, weights: &[i64]) -> Vec<(usize, usize)> {
    if rows == 0 || cols == 0 {
        return Vec::new();
    }
    // Kuhn–Munkres needs no more rows than columns.
    let transpose = rows > cols;
    let (r, c) = if transpose {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let at = |i: usize, j: usize| {
        let w = if transpose {
            weights[j * cols + i]
        } else {
            weights[i * cols + j]
        };
        w.max(0)
    };
    let data: Vec<i64> = (0..r * c).map(|k| at(k / c, k % c)).collect();
    let m =
        pathfinding::matrix::Matrix::from_vec(r, c, data).expect("matrix size matches its data");
    let (_, assign) = pathfinding::kuhn_munkres::kuhn_munkres(&m);
    let mut out: Vec<(usize, usize)> = assign
        .iter()
        .enumerate()
        .filter(|&(i, &j)| at(i, j) > 0)
        .map(|(i, &j)| if transpose { (j, i) } else { (i, j) })
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_best_total_and_skips_forbidden_pairs() {
        // Greedy would take (0,0)=9 and leave row 1 with its forbidden column.
        let w = [9, 8, 7, 0];
        assert_eq!(max_weight_pairs(2, 2, &w), vec![(0, 1), (1, 0)]);
        // More rows than columns.
        let w = [1, 5, 3];
        assert_eq!(max_weight_pairs(3, 1, &w), vec![(1, 0)]);
        assert!(max_weight_pairs(0, 3, &[]).is_empty());
        assert!(max_weight_pairs(2, 1, &[0, -1]).is_empty());
    }
}
