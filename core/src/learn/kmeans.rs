//! k-means as scikit-learn's `KMeans(init="k-means++", algorithm="lloyd")` does it: greedy
//! k-means++ seeding, Lloyd iterations until the centres move less than `tol` times the mean
//! feature variance, best inertia over `n_init` seeded runs. Distances are squared Euclidean;
//! on L2-normalised embeddings that is 2 - 2 cos, so the clusters follow cosine similarity.
//! Assignment, the costly step, runs over row blocks on the CPU pool; after the first pass,
//! Hamerly's bounds skip the rows that cannot change centre (exact, not an approximation).

use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::runtime::decode_pool;
use crate::Interrupt;

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub k: usize,
    pub n_init: usize,
    pub max_iter: usize,
    pub tol: f64,
    pub seed: u64,
    pub interrupt: Interrupt,
}

impl Default for Options {
    fn default() -> Self {
        Options { k: 8, n_init: 4, max_iter: 300, tol: 1e-4, seed: 0, interrupt: Interrupt::NEVER }
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

/// Slack on the bounds' comparisons: a row is skipped only when its bounds separate it from the
/// other centres by more than the rounding of f32 distances, so rounding never skips a row that
/// Lloyd's full pass would have moved.
const EPS: f64 = 1e-5;

/// A row's nearest centre and Hamerly's bounds: `upper` >= the distance to that centre, `lower`
/// <= the distance to any other centre (Euclidean distances, not squared).
#[derive(Debug, Clone, Copy)]
struct Slot {
    centre: usize,
    upper: f64,
    lower: f64,
}

/// The nearest and second nearest centre of a row, from its squared norm, its dot products with
/// the centres and the centres' squared norms (|x|^2 + |c|^2 - 2 x.c): (index, nearest, second),
/// the two distances not squared (only those two are rooted: at k = 64 a root per centre cost
/// more than the comparisons).
fn nearest_two(norm: f32, dots: &[f32], centre_norms: &[f32]) -> (usize, f64, f64) {
    let squared = dots.iter().zip(centre_norms).map(|(&dot, n)| (norm + n - 2.0 * dot).max(0.0));
    let (j, b1, b2) = squared.enumerate().fold((0, f32::INFINITY, f32::INFINITY), |(bj, b1, b2), (j, v)| {
        if v < b1 {
            (j, v, b1)
        } else if v < b2 {
            (bj, b1, v)
        } else {
            (bj, b1, b2)
        }
    });
    (j, f64::from(b1).sqrt(), f64::from(b2).sqrt())
}

/// The centres' rows as slices, for [`few_dots`].
fn centre_slices(c: &Array2<f32>) -> Vec<&[f32]> {
    c.rows().into_iter().map(|r| r.to_slice().expect("centres are contiguous")).collect()
}

/// The dot products of one row with centres, up to 4 read together in one pass over the row (two
/// separate dot products cost 9.5 ms a pass where the row alone streams in 6.5, at 45,000 x 512).
/// Written by hand because no linear-algebra crate fuses dot products of one vector with a few.
fn few_dots(row: &[f32], c: &[&[f32]], out: &mut [f32]) {
    fn fused<const K: usize>(row: &[f32], c: [&[f32]; K], out: &mut [f32]) {
        // 8 lanes per centre: independent sums the compiler keeps in vector registers
        let mut acc = [[0f32; 8]; K];
        let n = row.len() / 8 * 8;
        for (i, r) in row[..n].chunks_exact(8).enumerate() {
            for (a, cj) in acc.iter_mut().zip(&c) {
                let cj = &cj[i * 8..i * 8 + 8];
                for l in 0..8 {
                    a[l] += r[l] * cj[l];
                }
            }
        }
        for ((d, a), cj) in out.iter_mut().zip(&acc).zip(&c) {
            *d = a.iter().sum::<f32>() + row[n..].iter().zip(&cj[n..]).map(|(x, y)| x * y).sum::<f32>();
        }
    }
    match c {
        [a] => fused(row, [*a], out),
        [a, b] => fused(row, [*a, *b], out),
        [a, b, e] => fused(row, [*a, *b, *e], out),
        [a, b, e, f] => fused(row, [*a, *b, *e, *f], out),
        _ => out.iter_mut().zip(c).for_each(|(o, cj)| fused(row, [*cj], std::slice::from_mut(o))),
    }
}

/// Per-centre sums of rows (f64) and counts.
struct Sums {
    sums: Array2<f64>,
    counts: Vec<i64>,
}

impl Sums {
    fn zeros(k: usize, d: usize) -> Self {
        Sums { sums: Array2::zeros((k, d)), counts: vec![0; k] }
    }

    fn add(&mut self, other: &Sums) {
        self.sums += &other.sums;
        self.counts.iter_mut().zip(&other.counts).for_each(|(a, b)| *a += b);
    }
}

/// A full pass: every row's nearest and second nearest centre, and (with `sums`) the sums and
/// counts of the rows per nearest centre, taken in the same pass (the data is read once, which is
/// what a pass's time is bound by). Blocks of rows run on the CPU pool; with more than 4 centres
/// a block's dot products are one matrix product, with up to 4 a row's dot products read it once
/// ([`few_dots`]; a matrix product first copies, packs, the whole block: measured 5 ms instead of
/// 11 per pass at k = 2, 45,000 x 512, with unfused dot products; at k = 8 about even).
fn full_pass(
    x: ArrayView2<f32>,
    norms: &[f32],
    c: &Array2<f32>,
    slots: &mut [Slot],
    sums: bool,
) -> (Sums, usize) {
    let (k, d) = (c.nrows(), if sums { x.ncols() } else { 0 });
    let cn: Vec<f32> = c.rows().into_iter().map(|r| r.dot(&r)).collect();
    let cs = centre_slices(c);
    let blocks: Vec<(Sums, usize)> = decode_pool().install(|| {
        slots
            .par_chunks_mut(BLOCK)
            .enumerate()
            .map(|(b, block)| {
                let rows = b * BLOCK..b * BLOCK + block.len();
                // more than 4 centres: the block's dot products as one matrix product first
                let block_dots = (k > 4).then(|| x.slice(s![rows.clone(), ..]).dot(&c.t()));
                // a block's sums in f32 (vectorised adds; at most BLOCK unit-length terms each),
                // the blocks added up in f64
                let mut acc = Array2::<f32>::zeros((k, d));
                let mut counts = vec![0i64; k];
                let mut changed = 0;
                let mut dots = vec![0f32; k];
                for (r, (i, slot)) in rows.zip(block.iter_mut()).enumerate() {
                    let row = x.row(i).to_slice().expect("embedding rows are contiguous");
                    match &block_dots {
                        Some(m) => dots.iter_mut().zip(m.row(r)).for_each(|(a, b)| *a = *b),
                        None => few_dots(row, &cs, &mut dots),
                    }
                    let (best, d1, d2) = nearest_two(norms[i], &dots, &cn);
                    changed += usize::from(best != slot.centre);
                    *slot = Slot { centre: best, upper: d1, lower: d2 };
                    if sums {
                        // (the row is still in cache from its dot products)
                        counts[best] += 1;
                        let a = acc.row_mut(best).into_slice().expect("a row of a new array");
                        a.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                    }
                }
                (Sums { sums: acc.mapv(f64::from), counts }, changed)
            })
            .collect()
    });
    let mut all = Sums::zeros(k, d);
    let mut changed = 0;
    for (b, n) in &blocks {
        all.add(b);
        changed += n;
    }
    (all, changed)
}

/// One assignment step of Lloyd's algorithm after the centres moved by `moved`, with Hamerly's
/// bounds (Hamerly 2010, "Making k-means even faster"): a row whose upper bound to its centre is
/// below both its lower bound to the others and half the distance from its centre to the next
/// centre cannot change centre, and is not read. Only the rows that change centre update the
/// sums. Exact: the assignment is the one a full pass would make. Returns how many rows moved.
///
/// Written here, not taken from a crate: the Rust k-means crates (linfa-clustering, kmeans)
/// implement neither these bounds nor scikit-learn's seeding and tolerance, which the reference
/// test and the benchmark compare against.
fn bounded_step(
    x: ArrayView2<f32>,
    norms: &[f32],
    c: &Array2<f32>,
    moved: &[f64],
    slots: &mut [Slot],
    sums: &mut Sums,
) -> usize {
    let (k, d) = (c.nrows(), x.ncols());
    let cn: Vec<f32> = c.rows().into_iter().map(|r| r.dot(&r)).collect();
    // half the distance from each centre to its nearest other centre
    let mut half = vec![f64::INFINITY; k];
    for a in 0..k {
        for b in a + 1..k {
            let ab = f64::from((cn[a] + cn[b] - 2.0 * c.row(a).dot(&c.row(b))).max(0.0)).sqrt() / 2.0;
            half[a] = half[a].min(ab);
            half[b] = half[b].min(ab);
        }
    }
    // the largest move, and the largest of the others for the centre that moved most
    let cs = centre_slices(c);
    let (far, m1, m2) = moved.iter().enumerate().fold((0, 0.0f64, 0.0f64), |(fj, a, b), (j, &v)| {
        if v > a {
            (j, v, a)
        } else if v > b {
            (fj, a, v)
        } else {
            (fj, a, b)
        }
    });
    let blocks: Vec<(usize, Option<Sums>)> = decode_pool().install(|| {
        slots
            .par_chunks_mut(BLOCK)
            .enumerate()
            .map(|(b, block)| {
                let mut delta: Option<Sums> = None;
                let mut changed = 0;
                let mut dots = vec![0f32; k];
                for (i, slot) in (b * BLOCK..).zip(block.iter_mut()) {
                    let a = slot.centre;
                    slot.upper += moved[a];
                    slot.lower -= if a == far { m2 } else { m1 };
                    let z = slot.lower.max(half[a]);
                    if slot.upper + EPS < z {
                        continue;
                    }
                    // (with up to 4 centres, all their distances cost what one costs: one read of the row)
                    let row = x.row(i).to_slice().expect("embedding rows are contiguous");
                    few_dots(row, &cs, &mut dots);
                    let (best, d1, d2) = nearest_two(norms[i], &dots, &cn);
                    *slot = Slot { centre: best, upper: d1, lower: d2 };
                    if best != a {
                        changed += 1;
                        let s = delta.get_or_insert_with(|| Sums::zeros(k, d));
                        s.counts[a] -= 1;
                        s.counts[best] += 1;
                        s.sums.row_mut(a).iter_mut().zip(row).for_each(|(v, &r)| *v -= f64::from(r));
                        s.sums.row_mut(best).iter_mut().zip(row).for_each(|(v, &r)| *v += f64::from(r));
                    }
                }
                (changed, delta)
            })
            .collect()
    });
    let mut changed = 0;
    for (n, delta) in blocks {
        changed += n;
        if let Some(delta) = delta {
            sums.add(&delta);
        }
    }
    changed
}

/// Squared distances of every row to each of some points (n x points), block by block on the
/// CPU pool: one matrix product for all of k-means++'s candidates of a round.
fn distances_to(x: ArrayView2<f32>, norms: &[f32], points: &Array2<f32>) -> Array2<f32> {
    let pn: Vec<f32> = points.rows().into_iter().map(|r| r.dot(&r)).collect();
    let blocks: Vec<Array2<f32>> = decode_pool().install(|| {
        (0..x.nrows().div_ceil(BLOCK))
            .into_par_iter()
            .map(|b| {
                let rows = b * BLOCK..((b + 1) * BLOCK).min(x.nrows());
                let mut dots = x.slice(s![rows.clone(), ..]).dot(&points.t());
                for (i, mut row) in rows.zip(dots.rows_mut()) {
                    row.iter_mut().zip(&pn).for_each(|(v, p)| *v = (norms[i] + p - 2.0 * *v).max(0.0));
                }
                dots
            })
            .collect()
    });
    let views: Vec<_> = blocks.iter().map(|b| b.view()).collect();
    ndarray::concatenate(Axis(0), &views).expect("blocks of the same width")
}

/// Greedy k-means++ (Arthur and Vassilvitskii 2007, with scikit-learn's 2 + ln k local trials
/// per centre: the candidate that lowers the total squared distance most is kept).
fn seed_centres(
    x: ArrayView2<f32>,
    norms: &[f32],
    k: usize,
    rng: &mut StdRng,
    interrupt: Interrupt,
) -> Result<Array2<f32>, String> {
    let n = x.nrows();
    let trials = 2 + (k as f64).ln() as usize;
    let mut centres = Array2::<f32>::zeros((k, x.ncols()));
    let first = rng.random_range(0..n);
    centres.row_mut(0).assign(&x.row(first));
    let mut closest: Vec<f32> =
        distances_to(x, norms, &x.slice(s![first..first + 1, ..]).to_owned()).column(0).to_vec();
    for c in 1..k {
        interrupt.check()?;
        let mut cumulative = Vec::with_capacity(n);
        let mut acc = 0.0f64;
        for &d in &closest {
            acc += f64::from(d);
            cumulative.push(acc);
        }
        let candidates: Vec<usize> = (0..trials)
            .map(|_| {
                let target = rng.random::<f64>() * acc;
                cumulative.partition_point(|&v| v < target).min(n - 1)
            })
            .collect();
        let d = distances_to(x, norms, &x.select(Axis(0), &candidates));
        let (best, _) = (0..candidates.len())
            .map(|j| (j, closest.iter().zip(d.column(j)).map(|(a, b)| f64::from(a.min(*b))).sum::<f64>()))
            .fold((0, f64::INFINITY), |(bj, bp), (j, p)| if p < bp { (j, p) } else { (bj, bp) });
        centres.row_mut(c).assign(&x.row(candidates[best]));
        closest.iter_mut().zip(d.column(best)).for_each(|(a, b)| *a = a.min(*b));
    }
    Ok(centres)
}

/// Up to this many centres, assignment steps use Hamerly's bounds. With more, on embeddings (high
/// dimension, distances alike) the bounds skip few rows early on, and the rows they do not skip
/// cost more one by one than a block's matrix product: measured on 45,000 x 512, k = 2 went from
/// 813 to 610 ms a run, k = 8 from 920 to 1,326 ms and k = 64 from 13 s to 62 s for 4 runs.
const BOUNDED_MAX_K: usize = 4;

/// Lloyd's iterations from seeded centres until no row changes centre, the centres move less than
/// `tol` in total (squared), or `max_iter`. With few centres the assignment steps after the first
/// use Hamerly's bounds (see [`bounded_step`]): Lloyd's answer, reading fewer rows as the centres
/// settle.
fn lloyd(
    x: ArrayView2<f32>,
    norms: &[f32],
    mut centres: Array2<f32>,
    opts: &Options,
    tol: f64,
    bounded: bool,
) -> Result<Clustering, String> {
    let (n, k) = (x.nrows(), centres.nrows());
    let mut slots = vec![Slot { centre: 0, upper: 0.0, lower: 0.0 }; n];
    let (mut sums, _) = full_pass(x, norms, &centres, &mut slots, true);
    let mut iterations = 1;
    while iterations <= opts.max_iter {
        opts.interrupt.check()?;
        // an empty cluster takes the row farthest from its centre (by its upper bound), as
        // scikit-learn relocates them
        if sums.counts.contains(&0) {
            let mut far: Vec<usize> = (0..n).collect();
            far.sort_by(|&a, &b| slots[b].upper.total_cmp(&slots[a].upper));
            let mut far = far.into_iter();
            for j in 0..k {
                if sums.counts[j] != 0 {
                    continue;
                }
                // (a row that is the last of its cluster stays)
                let Some(r) = far.find(|&r| sums.counts[slots[r].centre] > 1) else { break };
                let from = slots[r].centre;
                let row = x.row(r).mapv(f64::from);
                sums.counts[from] -= 1;
                sums.counts[j] += 1;
                let mut a = sums.sums.row_mut(from);
                a -= &row;
                sums.sums.row_mut(j).assign(&row);
                slots[r] = Slot { centre: j, upper: 0.0, lower: 0.0 };
            }
        }
        let mut next = centres.clone();
        for j in 0..k {
            if sums.counts[j] > 0 {
                let count = sums.counts[j] as f64;
                next.row_mut(j).assign(&sums.sums.row(j).mapv(|v| (v / count) as f32));
            }
        }
        let moved: Vec<f64> = (&next - &centres)
            .rows()
            .into_iter()
            .map(|r| r.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt())
            .collect();
        centres = next;
        if moved.iter().map(|m| m * m).sum::<f64>() <= tol {
            break;
        }
        iterations += 1;
        let changed = if bounded {
            bounded_step(x, norms, &centres, &moved, &mut slots, &mut sums)
        } else {
            let (s, changed) = full_pass(x, norms, &centres, &mut slots, true);
            sums = s;
            changed
        };
        // no row changed centre: the centres are their rows' means already
        if changed == 0 {
            break;
        }
    }
    // labels and squared distances for the final centres
    full_pass(x, norms, &centres, &mut slots, false);
    let labels = slots.iter().map(|s| s.centre).collect();
    let distances: Vec<f32> = slots.iter().map(|s| (s.upper * s.upper) as f32).collect();
    let inertia = slots.iter().map(|s| s.upper * s.upper).sum();
    Ok(Clustering { centroids: centres, labels, distances, inertia, iterations })
}

/// Cluster the rows of `x` (n x d). Reproducible for a seed.
pub fn kmeans(x: ArrayView2<f32>, opts: &Options) -> Result<Clustering, String> {
    let n = x.nrows();
    if opts.k < 1 || opts.k > n {
        return Err(format!("k must be between 1 and the number of rows ({n}), not {}", opts.k));
    }
    // rows as contiguous slices (a copy only for a view that is not in row-major order)
    let x = x.as_standard_layout();
    let x = x.view();
    let norms: Vec<f32> = x.rows().into_iter().map(|r| r.dot(&r)).collect();
    // scikit-learn's tolerance: tol times the mean of the features' variances
    let mean = x.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(x.ncols()));
    // (row by row: the rows are contiguous, the columns are not)
    let mut var = vec![0f64; x.ncols()];
    for row in x.rows() {
        var.iter_mut()
            .zip(row.iter().zip(mean.iter()))
            .for_each(|(v, (a, m))| *v += f64::from(a - m).powi(2));
    }
    let var = var.iter().sum::<f64>() / n as f64 / x.ncols().max(1) as f64;
    let tol = opts.tol * var;
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut best: Option<Clustering> = None;
    for _ in 0..opts.n_init.max(1) {
        let centres = seed_centres(x, &norms, opts.k, &mut rng, opts.interrupt)?;
        let run = lloyd(x, &norms, centres, opts, tol, opts.k <= BOUNDED_MAX_K)?;
        if best.as_ref().is_none_or(|b| run.inertia < b.inertia) {
            best = Some(run);
        }
    }
    Ok(best.expect("n_init >= 1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit rows around `k` random centres, as embeddings are.
    fn blobs(n: usize, d: usize, k: usize, seed: u64) -> Array2<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        let centres: Vec<Vec<f32>> =
            (0..k).map(|_| (0..d).map(|_| rng.random::<f32>() - 0.5).collect()).collect();
        let mut x =
            Array2::from_shape_fn((n, d), |(i, j)| centres[i % k][j] * 0.3 + rng.random::<f32>() - 0.5);
        for mut row in x.rows_mut() {
            let norm = row.dot(&row).sqrt();
            row /= norm;
        }
        x
    }

    #[test]
    fn hamerly_bounds_give_lloyds_answer() {
        let x = blobs(3000, 64, 5, 7);
        let norms: Vec<f32> = x.rows().into_iter().map(|r| r.dot(&r)).collect();
        for k in [2, 3, 8] {
            let opts = Options { k, ..Default::default() };
            let seeded =
                seed_centres(x.view(), &norms, k, &mut StdRng::seed_from_u64(3), Interrupt::NEVER).unwrap();
            let full = lloyd(x.view(), &norms, seeded.clone(), &opts, 0.0, false).unwrap();
            let bounded = lloyd(x.view(), &norms, seeded, &opts, 0.0, true).unwrap();
            assert_eq!(bounded.labels, full.labels, "k {k}");
            assert_eq!(bounded.iterations, full.iterations, "k {k}");
            assert!((bounded.inertia - full.inertia).abs() < 1e-6 * full.inertia, "k {k}");
            assert!(full.iterations > 2, "k {k}: the bounds had steps to skip rows in");
        }
    }
}
