//! From pairwise match probabilities to tracks across all sessions.
//!
//! 1. For every pair of sessions, an optimal one-to-one assignment (Hungarian,
//!    [`crate::assign`], on each connected group of candidates) keeps
//!    at most one partner per ROI among the pairs with `P(same) ≥ threshold`.
//! 2. Those links, most probable first, merge ROIs into tracks (constrained
//!    average-linkage clustering, as CellReg's final clustering step does): two
//!    tracks join when they share no session and the mean `P(same)` over all their
//!    cross pairs (0 for pairs too far apart to be candidates) reaches the
//!    threshold.
//!
//! Because every pair of sessions is linked directly, a cell missing on one day
//! still joins its other days into one track.

use std::collections::HashMap;

/// A candidate pair: global ROI indices and the probability they are one cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub a: usize,
    pub b: usize,
    pub p: f64,
}

/// One track: per session, the global index of its ROI (None where absent), and
/// per session the mean P(same) of that ROI with the track's other ROIs.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub members: Vec<Option<usize>>,
    pub confidence: Vec<Option<f64>>,
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

/// The one-to-one links of one session pair among `edges` (all with p ≥ threshold).
pub(crate) fn assign_pair(edges: &[Candidate]) -> Vec<Candidate> {
    // Connected groups of the bipartite candidate graph.
    let mut nodes: Vec<usize> = edges.iter().flat_map(|e| [e.a, e.b]).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let index: HashMap<usize, usize> = nodes.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut parent: Vec<usize> = (0..nodes.len()).collect();
    for e in edges {
        let (x, y) = (
            find(&mut parent, index[&e.a]),
            find(&mut parent, index[&e.b]),
        );
        parent[x] = y;
    }
    let mut groups: HashMap<usize, Vec<Candidate>> = HashMap::new();
    for e in edges {
        let root = find(&mut parent, index[&e.a]);
        groups.entry(root).or_default().push(*e);
    }
    let mut roots: Vec<usize> = groups.keys().copied().collect();
    roots.sort_unstable();
    let mut out = Vec::new();
    for root in roots {
        let group = &groups[&root];
        if group.len() == 1 {
            out.push(group[0]);
            continue;
        }
        out.extend(hungarian(group));
    }
    out
}

/// Maximum-total-probability one-to-one subset of a connected group of edges.
fn hungarian(group: &[Candidate]) -> Vec<Candidate> {
    let mut left: Vec<usize> = group.iter().map(|e| e.a).collect();
    let mut right: Vec<usize> = group.iter().map(|e| e.b).collect();
    for v in [&mut left, &mut right] {
        v.sort_unstable();
        v.dedup();
    }
    let mut w = vec![0i64; left.len() * right.len()];
    for e in group {
        let i = left.binary_search(&e.a).expect("left node");
        let j = right.binary_search(&e.b).expect("right node");
        w[i * right.len() + j] = 1 + (e.p * 1e6).round() as i64;
    }
    crate::assign::max_weight_pairs(left.len(), right.len(), &w)
        .into_iter()
        .map(|(i, j)| {
            *group
                .iter()
                .find(|e| e.a == left[i] && e.b == right[j])
                .expect("assigned pairs are edges")
        })
        .collect()
}

/// Build tracks over `session_of.len()` ROIs (global indices; `session_of[i]` is
/// ROI i's session index, `< n_sessions`) from the candidate pairs.
pub fn build_tracks(
    n_sessions: usize,
    session_of: &[usize],
    candidates: &[Candidate],
    threshold: f64,
) -> Vec<Track> {
    let key = |a: usize, b: usize| if a < b { (a, b) } else { (b, a) };
    let prob: HashMap<(usize, usize), f64> =
        candidates.iter().map(|c| (key(c.a, c.b), c.p)).collect();
    let p_of = |a: usize, b: usize| prob.get(&key(a, b)).copied().unwrap_or(0.0);

    // Step 1: one-to-one links per session pair.
    let mut by_pair: HashMap<(usize, usize), Vec<Candidate>> = HashMap::new();
    for c in candidates.iter().filter(|c| c.p >= threshold) {
        let (sa, sb) = (session_of[c.a], session_of[c.b]);
        if sa == sb {
            continue;
        }
        // Orient each edge from the earlier session to the later one.
        let e = if sa < sb {
            *c
        } else {
            Candidate {
                a: c.b,
                b: c.a,
                p: c.p,
            }
        };
        by_pair.entry((sa.min(sb), sa.max(sb))).or_default().push(e);
    }
    let mut pairs: Vec<(usize, usize)> = by_pair.keys().copied().collect();
    pairs.sort_unstable();
    let mut links: Vec<Candidate> = pairs
        .iter()
        .flat_map(|k| assign_pair(&by_pair[k]))
        .collect();
    links.sort_by(|x, y| y.p.total_cmp(&x.p).then(key(x.a, x.b).cmp(&key(y.a, y.b))));

    // Step 2: constrained average linkage.
    let n = session_of.len();
    let mut parent: Vec<usize> = (0..n).collect();
    let mut members: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    for l in &links {
        let (x, y) = (find(&mut parent, l.a), find(&mut parent, l.b));
        if x == y {
            continue;
        }
        let shares_session = members[x]
            .iter()
            .any(|&i| members[y].iter().any(|&j| session_of[i] == session_of[j]));
        if shares_session {
            continue;
        }
        let total: f64 = members[x]
            .iter()
            .flat_map(|&i| members[y].iter().map(move |&j| (i, j)))
            .map(|(i, j)| p_of(i, j))
            .sum();
        let mean = total / (members[x].len() * members[y].len()) as f64;
        if mean < threshold {
            continue;
        }
        let moved = std::mem::take(&mut members[y]);
        members[x].extend(moved);
        parent[y] = x;
    }

    let mut tracks: Vec<Track> = (0..n)
        .filter(|&i| find(&mut parent, i) == i)
        .map(|root| {
            let mut slots = vec![None; n_sessions];
            for &i in &members[root] {
                slots[session_of[i]] = Some(i);
            }
            let confidence = slots
                .iter()
                .map(|slot| {
                    let i = (*slot)?;
                    let others: Vec<usize> =
                        members[root].iter().copied().filter(|&j| j != i).collect();
                    (!others.is_empty()).then(|| {
                        others.iter().map(|&j| p_of(i, j)).sum::<f64>() / others.len() as f64
                    })
                })
                .collect();
            Track {
                members: slots,
                confidence,
            }
        })
        .collect();
    // Order tracks by their first session's ROI, for stable cell ids.
    tracks.sort_by_key(|t| {
        t.members
            .iter()
            .enumerate()
            .find_map(|(s, m)| m.map(|i| (s, i)))
    });
    tracks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(a: usize, b: usize, p: f64) -> Candidate {
        Candidate { a, b, p }
    }

    #[test]
    fn a_missing_day_does_not_split_a_track() {
        // Sessions 0, 1, 2; cell X is ROI 0 (s0) and ROI 2 (s2), absent in s1.
        // Cell Y is ROIs 1 (s0), 3 (s1), 4 (s2).
        let session_of = [0, 0, 2, 1, 2];
        let cands = [
            c(0, 2, 0.95),
            c(1, 3, 0.9),
            c(3, 4, 0.92),
            c(1, 4, 0.88),
            c(0, 3, 0.1),
        ];
        let tracks = build_tracks(3, &session_of, &cands, 0.5);
        assert_eq!(tracks.len(), 2);
        assert_eq!(tracks[0].members, vec![Some(0), None, Some(2)]);
        assert_eq!(tracks[1].members, vec![Some(1), Some(3), Some(4)]);
        let conf = tracks[1].confidence[1].unwrap();
        assert!((conf - 0.91).abs() < 1e-9);
        assert_eq!(tracks[0].confidence[1], None);
    }

    #[test]
    fn one_roi_gets_at_most_one_partner_per_session() {
        // ROI 0 (s0) is close to ROIs 1 and 2 (both s1); ROI 3 (s0) fits 2 better.
        let session_of = [0, 1, 1, 0];
        let cands = [c(0, 1, 0.8), c(0, 2, 0.85), c(3, 2, 0.9)];
        let tracks = build_tracks(2, &session_of, &cands, 0.5);
        let with = |i: usize| {
            tracks
                .iter()
                .find(|t| t.members.contains(&Some(i)))
                .unwrap()
        };
        assert_eq!(with(0).members, vec![Some(0), Some(1)]);
        assert_eq!(with(3).members, vec![Some(3), Some(2)]);
    }

    #[test]
    fn weak_average_linkage_keeps_tracks_apart() {
        // 0–1 and 1–2 are linked, but 0 and 2 are not candidates: the mean over
        // {0,1}×{2} is (0 + 0.6)/2 < 0.5... only when the link is weak.
        let session_of = [0, 1, 2];
        let tracks = build_tracks(3, &session_of, &[c(0, 1, 0.9), c(1, 2, 0.6)], 0.5);
        assert_eq!(tracks.len(), 2);
        let tracks = build_tracks(
            3,
            &session_of,
            &[c(0, 1, 0.9), c(1, 2, 0.6), c(0, 2, 0.5)],
            0.5,
        );
        assert_eq!(tracks.len(), 1);
    }
}
