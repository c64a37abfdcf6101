//! k-means as scikit-learn's `KMeans(init="k-means++", algorithm="lloyd")` does it: greedy
//! k-means++ seeding, Lloyd iterations until the centres move less than `tol` times the mean
//! feature variance, best inertia over `n_init` seeded runs. Distances are squared Euclidean;
//! on L2-normalised embeddings that is 2 - 2 cos, so the clusters follow cosine similarity.
//! Assignment, the costly step, runs as matrix products over row blocks on the CPU pool.

use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::runtime::decode_pool;

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub k: usize,
    pub n_init: usize,
    pub max_iter: usize,
    pub tol: f64,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { k: 8, n_init: 4, max_iter: 300, tol: 1e-4, seed: 0 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Clustering {
    /// k x d
    pub centroids: Array2<f32>,
    pub labels: Vec<usize>,
    /// squared distance of each row to its centroid
    pub distances: Vec<f32>,
    pub inertia: f64,
    pub iterations: usize,
}

const BLOCK: usize = 2048;

/// Nearest centroid and squared distance of every row: |x|^2 + |c|^2 - 2 x.c, block by block.
fn assign(x: ArrayView2<f32>, norms: &[f32], c: &Array2<f32>) -> (Vec<usize>, Vec<f32>) {
    let cn: Vec<f32> = c.rows().into_iter().map(|r| r.dot(&r)).collect();
    let blocks: Vec<(Vec<usize>, Vec<f32>)> = decode_pool().install(|| {
        (0..x.nrows().div_ceil(BLOCK))
            .into_par_iter()
            .map(|b| {
                let rows = b * BLOCK..((b + 1) * BLOCK).min(x.nrows());
                let dots = x.slice(s![rows.clone(), ..]).dot(&c.t());
                let mut labels = Vec::with_capacity(rows.len());
                let mut dist = Vec::with_capacity(rows.len());
                for (i, row) in rows.zip(dots.rows()) {
                    let (best, d) = row.iter().enumerate().fold((0, f32::INFINITY), |(bj, bd), (j, &dot)| {
                        let d = norms[i] + cn[j] - 2.0 * dot;
                        if d < bd { (j, d) } else { (bj, bd) }
                    });
                    labels.push(best);
                    dist.push(d.max(0.0));
                }
                (labels, dist)
            })
            .collect()
    });
    let mut labels = Vec::with_capacity(x.nrows());
    let mut dist = Vec::with_capacity(x.nrows());
    for (l, d) in blocks {
        labels.extend(l);
        dist.extend(d);
    }
    (labels, dist)
}

/// Squared distances of every row to one point.
fn distances_to(x: ArrayView2<f32>, norms: &[f32], p: ndarray::ArrayView1<f32>) -> Vec<f32> {
    let pn = p.dot(&p);
    x.dot(&p).iter().zip(norms).map(|(dot, n)| (n + pn - 2.0 * dot).max(0.0)).collect()
}

/// Greedy k-means++ (Arthur and Vassilvitskii 2007, with scikit-learn's 2 + ln k local trials
/// per centre: the candidate that lowers the total squared distance most is kept).
fn seed_centres(x: ArrayView2<f32>, norms: &[f32], k: usize, rng: &mut StdRng) -> Array2<f32> {
    let n = x.nrows();
    let trials = 2 + (k as f64).ln() as usize;
    let mut centres = Array2::<f32>::zeros((k, x.ncols()));
    let first = rng.random_range(0..n);
    centres.row_mut(0).assign(&x.row(first));
    let mut closest = distances_to(x, norms, x.row(first));
    for c in 1..k {
        let total: f64 = closest.iter().map(|&d| f64::from(d)).sum();
        let mut cumulative = Vec::with_capacity(n);
        let mut acc = 0.0;
        for &d in &closest {
            acc += f64::from(d);
            cumulative.push(acc);
        }
        let mut best: Option<(f64, usize, Vec<f32>)> = None;
        for _ in 0..trials {
            let target = rng.random::<f64>() * total;
            let cand = cumulative.partition_point(|&v| v < target).min(n - 1);
            let d = distances_to(x, norms, x.row(cand));
            let pot: f64 = closest.iter().zip(&d).map(|(a, b)| f64::from(a.min(*b))).sum();
            if best.as_ref().is_none_or(|b| pot < b.0) {
                best = Some((pot, cand, d));
            }
        }
        let (_, cand, d) = best.expect("at least one trial");
        centres.row_mut(c).assign(&x.row(cand));
        closest.iter_mut().zip(&d).for_each(|(a, b)| *a = a.min(*b));
    }
    centres
}

fn lloyd(x: ArrayView2<f32>, norms: &[f32], mut centres: Array2<f32>, opts: &Options, tol: f64) -> Clustering {
    let (n, d, k) = (x.nrows(), x.ncols(), centres.nrows());
    let mut iterations = 0;
    let (mut labels, mut dist) = assign(x, norms, &centres);
    for _ in 0..opts.max_iter {
        iterations += 1;
        // per-block sums on the CPU pool, then added up
        let (sums, counts) = decode_pool().install(|| {
            (0..n.div_ceil(BLOCK))
                .into_par_iter()
                .map(|b| {
                    let mut sums = Array2::<f64>::zeros((k, d));
                    let mut counts = vec![0usize; k];
                    for i in b * BLOCK..((b + 1) * BLOCK).min(n) {
                        counts[labels[i]] += 1;
                        sums.row_mut(labels[i]).zip_mut_with(&x.row(i), |s, &v| *s += f64::from(v));
                    }
                    (sums, counts)
                })
                .reduce(
                    || (Array2::<f64>::zeros((k, d)), vec![0usize; k]),
                    |(mut a, mut ca), (b, cb)| {
                        a += &b;
                        ca.iter_mut().zip(cb).for_each(|(x, y)| *x += y);
                        (a, ca)
                    },
                )
        });
        let mut next = Array2::<f32>::zeros((k, d));
        // an empty cluster takes the row farthest from its centre, as scikit-learn relocates them
        let mut far = Vec::new();
        if counts.contains(&0) {
            far = (0..n).collect();
            far.sort_by(|&a, &b| dist[b].total_cmp(&dist[a]));
        }
        let mut far = far.into_iter();
        for j in 0..k {
            if counts[j] == 0 {
                next.row_mut(j).assign(&x.row(far.next().unwrap_or(0)));
            } else {
                next.row_mut(j).assign(&sums.row(j).mapv(|v| (v / counts[j] as f64) as f32));
            }
        }
        let shift: f64 = (&next - &centres).iter().map(|v| f64::from(*v).powi(2)).sum();
        centres = next;
        let (l2, d2) = assign(x, norms, &centres);
        let same = l2 == labels;
        labels = l2;
        dist = d2;
        if same || shift <= tol {
            break;
        }
    }
    let inertia = dist.iter().map(|&v| f64::from(v)).sum();
    Clustering { centroids: centres, labels, distances: dist, inertia, iterations }
}

/// Cluster the rows of `x` (n x d). Reproducible for a seed.
pub fn kmeans(x: ArrayView2<f32>, opts: &Options) -> Result<Clustering, String> {
    let n = x.nrows();
    if opts.k < 1 || opts.k > n {
        return Err(format!("k must be between 1 and the number of rows ({n}), not {}", opts.k));
    }
    let norms: Vec<f32> = x.rows().into_iter().map(|r| r.dot(&r)).collect();
    // scikit-learn's tolerance: tol times the mean of the features' variances
    let mean = x.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(x.ncols()));
    let var: f64 = x
        .columns()
        .into_iter()
        .zip(mean.iter())
        .map(|(c, m)| c.iter().map(|v| f64::from(v - m).powi(2)).sum::<f64>() / n as f64)
        .sum::<f64>()
        / x.ncols().max(1) as f64;
    let tol = opts.tol * var;
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut best: Option<Clustering> = None;
    for _ in 0..opts.n_init.max(1) {
        let centres = seed_centres(x, &norms, opts.k, &mut rng);
        let run = lloyd(x, &norms, centres, opts, tol);
        if best.as_ref().is_none_or(|b| run.inertia < b.inertia) {
            best = Some(run);
        }
    }
    Ok(best.expect("n_init >= 1"))
}
