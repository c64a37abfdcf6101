//! A projection head for identification, trained on frozen CLIP features: features
//! L2-normalised, `Linear(d, hidden) -> GELU -> Linear(hidden, output)`, L2-normalised again;
//! SupCon loss (Khosla et al. 2020, the "L_out" form) over batches of `classes_per_batch`
//! classes x `copies_per_class` copies; AdamW with a cosine schedule. Written by hand on
//! `ndarray` (the workspace's matrix crate) because what is needed is one small MLP with an
//! analytic gradient: a deep-learning crate would be a heavy dependency for 40 lines of calculus.
//! Everything is f64 (a finite-difference check needs it; the sizes are small).
//!
//! GELU is the tanh form (`0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))`, PyTorch's
//! `approximate="tanh"`): std has no erf, and the two differ by under 1e-3. The forward pass,
//! the loss, its gradient and an AdamW step are checked against PyTorch's
//! (tests/golden/projection/, tests/reference/make_projection_golden.py).

use ndarray::{Array1, Array2, ArrayView2, Axis};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::Interrupt;

#[derive(Debug, Clone)]
pub struct Options {
    pub hidden: usize,
    pub output: usize,
    pub temperature: f64,
    pub epochs: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub classes_per_batch: usize,
    pub copies_per_class: usize,
    pub seed: u64,
    pub interrupt: Interrupt,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            hidden: 512,
            output: 256,
            temperature: 0.1,
            epochs: 12,
            learning_rate: 5e-4,
            weight_decay: 1e-4,
            classes_per_batch: 16,
            copies_per_class: 4,
            seed: 0,
            interrupt: Interrupt::NEVER,
        }
    }
}

/// The head's weights: `w1` is hidden x input, `w2` output x hidden (PyTorch's layout).
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub w1: Array2<f64>,
    pub b1: Array1<f64>,
    pub w2: Array2<f64>,
    pub b2: Array1<f64>,
}

/// What the backward pass needs of a forward pass.
struct Forward {
    x: Array2<f64>,
    z1: Array2<f64>,
    a: Array2<f64>,
    norms: Array1<f64>,
    y: Array2<f64>,
}

const GELU_K: f64 = 0.797_884_560_802_865_4; // sqrt(2 / pi)
const GELU_C: f64 = 0.044_715;

fn gelu(z: f64) -> f64 {
    0.5 * z * (1.0 + (GELU_K * (z + GELU_C * z * z * z)).tanh())
}

fn gelu_grad(z: f64) -> f64 {
    let t = (GELU_K * (z + GELU_C * z * z * z)).tanh();
    0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * GELU_C * z * z)
}

/// Rows scaled to unit length (a zero row stays zero), and the lengths.
fn normalise_rows(m: &Array2<f64>) -> (Array2<f64>, Array1<f64>) {
    let norms = m.map_axis(Axis(1), |r| r.dot(&r).sqrt());
    let mut out = m.clone();
    for (mut r, n) in out.rows_mut().into_iter().zip(norms.iter()) {
        if *n > 0.0 {
            r /= *n;
        }
    }
    (out, norms)
}

impl Head {
    /// PyTorch's default initialisation of a Linear layer: weights and biases uniform in
    /// +-1/sqrt(fan_in).
    pub fn init(input: usize, hidden: usize, output: usize, rng: &mut StdRng) -> Head {
        let mut uniform = |rows: usize, cols: usize, fan_in: usize| {
            let b = 1.0 / (fan_in as f64).sqrt();
            Array2::from_shape_simple_fn((rows, cols), || rng.random_range(-b..b))
        };
        let (w1, b1) = (uniform(hidden, input, input), uniform(1, hidden, input).remove_axis(Axis(0)));
        let (w2, b2) = (uniform(output, hidden, hidden), uniform(1, output, hidden).remove_axis(Axis(0)));
        Head { w1, b1, w2, b2 }
    }

    pub fn input(&self) -> usize {
        self.w1.ncols()
    }

    pub fn output(&self) -> usize {
        self.w2.nrows()
    }

    /// The four weight tensors, each as one slice.
    fn tensors(&self) -> [&[f64]; 4] {
        let whole = "weights are contiguous";
        [
            self.w1.as_slice().expect(whole),
            self.b1.as_slice().expect(whole),
            self.w2.as_slice().expect(whole),
            self.b2.as_slice().expect(whole),
        ]
    }

    fn tensors_mut(&mut self) -> [&mut [f64]; 4] {
        let whole = "weights are contiguous";
        [
            self.w1.as_slice_mut().expect(whole),
            self.b1.as_slice_mut().expect(whole),
            self.w2.as_slice_mut().expect(whole),
            self.b2.as_slice_mut().expect(whole),
        ]
    }

    pub fn hidden(&self) -> usize {
        self.w1.nrows()
    }

    /// The weights as little-endian f32, `w1`, `b1`, `w2`, `b2` in turn: how they are stored.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.tensors().iter().flat_map(|t| t.iter()).flat_map(|&v| (v as f32).to_le_bytes()).collect()
    }

    /// The head of these sizes from [`Head::to_bytes`]'s bytes; None when they do not fit.
    pub fn from_bytes(input: usize, hidden: usize, output: usize, bytes: &[u8]) -> Option<Head> {
        let n = hidden
            .checked_mul(input)?
            .checked_add(hidden)?
            .checked_add(output.checked_mul(hidden)?)?
            .checked_add(output)?;
        if input == 0 || hidden == 0 || output == 0 || bytes.len() != n.checked_mul(4)? {
            return None;
        }
        let mut values =
            bytes.chunks_exact(4).map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        let mut take = |k: usize| -> Vec<f64> { values.by_ref().take(k).collect() };
        let w1 = Array2::from_shape_vec((hidden, input), take(hidden * input)).ok()?;
        let b1 = Array1::from(take(hidden));
        let w2 = Array2::from_shape_vec((output, hidden), take(output * hidden)).ok()?;
        let b2 = Array1::from(take(output));
        Some(Head { w1, b1, w2, b2 })
    }

    pub fn parameters(&self) -> usize {
        self.w1.len() + self.b1.len() + self.w2.len() + self.b2.len()
    }

    fn forward(&self, features: ArrayView2<f64>) -> Forward {
        let (x, _) = normalise_rows(&features.to_owned());
        let z1 = x.dot(&self.w1.t()) + &self.b1;
        let a = z1.mapv(gelu);
        let z2 = a.dot(&self.w2.t()) + &self.b2;
        let (y, norms) = normalise_rows(&z2);
        Forward { x, z1, a, norms, y }
    }

    /// Each row of `features` through the head: unit-length rows of the output size.
    pub fn project(&self, features: ArrayView2<f64>) -> Array2<f64> {
        self.forward(features).y
    }

    /// The gradient of a loss with respect to every weight, given its gradient `dy` with
    /// respect to the outputs of `f`.
    fn backward(&self, f: &Forward, dy: &Array2<f64>) -> Head {
        // through y = z2 / |z2|: dz2 = (dy - y (y . dy)) / |z2|
        let mut dz2 = dy.clone();
        for ((mut g, y), n) in dz2.rows_mut().into_iter().zip(f.y.rows()).zip(f.norms.iter()) {
            let along = y.dot(&g);
            g.scaled_add(-along, &y);
            if *n > 0.0 {
                g /= *n;
            }
        }
        let dw2 = dz2.t().dot(&f.a);
        let db2 = dz2.sum_axis(Axis(0));
        let mut dz1 = dz2.dot(&self.w2);
        dz1.zip_mut_with(&f.z1, |g, z| *g *= gelu_grad(*z));
        let dw1 = dz1.t().dot(&f.x);
        let db1 = dz1.sum_axis(Axis(0));
        Head { w1: dw1, b1: db1, w2: dw2, b2: db2 }
    }
}

/// SupCon's L_out over unit rows `y` with class `labels`, at temperature `t`: for each anchor
/// with at least one other row of its class, minus the mean over those positives of the log
/// softmax (over every other row) of the similarity; the mean over such anchors. The loss and
/// its gradient with respect to `y`. No anchor with a positive: loss 0, gradient 0.
pub fn supcon(y: ArrayView2<f64>, labels: &[usize], t: f64) -> (f64, Array2<f64>) {
    let n = y.nrows();
    let s = y.dot(&y.t()) / t;
    let positives: Vec<usize> =
        (0..n).map(|i| (0..n).filter(|&j| j != i && labels[j] == labels[i]).count()).collect();
    let anchors = positives.iter().filter(|&&p| p > 0).count();
    let mut g = Array2::<f64>::zeros((n, n));
    if anchors == 0 {
        return (0.0, Array2::zeros(y.raw_dim()));
    }
    let mut loss = 0.0;
    for i in (0..n).filter(|&i| positives[i] > 0) {
        let row = s.row(i);
        let peak = (0..n).filter(|&a| a != i).map(|a| row[a]).fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = (0..n).filter(|&a| a != i).map(|a| (row[a] - peak).exp()).sum();
        let log_total = peak + total.ln();
        let p = positives[i] as f64;
        for a in (0..n).filter(|&a| a != i) {
            let positive = labels[a] == labels[i];
            if positive {
                loss -= (row[a] - log_total) / p;
            }
            g[[i, a]] = ((row[a] - log_total).exp() - if positive { 1.0 / p } else { 0.0 }) / anchors as f64;
        }
    }
    // dS_ij = g_ij with S = Y Y^T / t, so dY = (G + G^T) Y / t
    let dy = (&g + &g.t()).dot(&y) / t;
    (loss / anchors as f64, dy)
}

/// The loss of `head` on one batch, and its gradient.
pub fn loss_and_gradient(head: &Head, features: ArrayView2<f64>, labels: &[usize], t: f64) -> (f64, Head) {
    let f = head.forward(features);
    let (loss, dy) = supcon(f.y.view(), labels, t);
    (loss, head.backward(&f, &dy))
}

/// AdamW (Loshchilov & Hutter): Adam's moments, and the weight decay applied to the weights
/// directly rather than through the gradient; PyTorch's defaults beta (0.9, 0.999), eps 1e-8.
struct AdamW {
    m: Head,
    v: Head,
    step: i32,
}

impl AdamW {
    fn new(like: &Head) -> AdamW {
        let zero = Head {
            w1: Array2::zeros(like.w1.raw_dim()),
            b1: Array1::zeros(like.b1.raw_dim()),
            w2: Array2::zeros(like.w2.raw_dim()),
            b2: Array1::zeros(like.b2.raw_dim()),
        };
        AdamW { m: zero.clone(), v: zero, step: 0 }
    }

    fn update(&mut self, head: &mut Head, grad: &Head, lr: f64, weight_decay: f64) {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        const EPS: f64 = 1e-8;
        self.step += 1;
        let (c1, c2) = (1.0 - B1.powi(self.step), 1.0 - B2.powi(self.step));
        let apply = |w: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64]| {
            for (((w, g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *w -= lr * weight_decay * *w;
                *m = B1 * *m + (1.0 - B1) * g;
                *v = B2 * *v + (1.0 - B2) * g * g;
                *w -= lr * (*m / c1) / ((*v / c2).sqrt() + EPS);
            }
        };
        let tensors = head.tensors_mut().into_iter().zip(grad.tensors());
        for ((w, g), (m, v)) in tensors.zip(self.m.tensors_mut().into_iter().zip(self.v.tensors_mut())) {
            apply(w, g, m, v);
        }
    }
}

#[derive(Debug, Clone)]
pub struct Trained {
    pub head: Head,
    /// The mean batch loss of each epoch
    pub losses: Vec<f64>,
}

/// Train a head on `features` (one row per augmented copy) of classes `labels` (0-based; each
/// class needs at least two rows). Deterministic for a seed. A bad option or class is the
/// message of the error; a cancel is `Interrupt::check`'s.
pub fn train(features: ArrayView2<f32>, labels: &[usize], opts: &Options) -> Result<Trained, String> {
    train_with_progress(features, labels, opts, &mut |_, _| {})
}

/// [`train`], calling `progress(epoch, mean loss)` after each epoch (1-based).
pub fn train_with_progress(
    features: ArrayView2<f32>,
    labels: &[usize],
    opts: &Options,
    progress: &mut dyn FnMut(usize, f64),
) -> Result<Trained, String> {
    if features.nrows() != labels.len() || features.nrows() == 0 {
        return Err(format!("{} feature rows but {} labels", features.nrows(), labels.len()));
    }
    let bad = |what: &str, v: f64, lo: f64, hi: f64| -> Result<(), String> {
        if v.is_finite() && v >= lo && v <= hi {
            Ok(())
        } else {
            Err(format!("{what} must be between {lo} and {hi}, not {v}"))
        }
    };
    bad("hidden", opts.hidden as f64, 1.0, 4096.0)?;
    bad("output", opts.output as f64, 1.0, 4096.0)?;
    bad("temperature", opts.temperature, 0.01, 10.0)?;
    bad("epochs", opts.epochs as f64, 1.0, 1000.0)?;
    bad("learning_rate", opts.learning_rate, 1e-7, 1.0)?;
    bad("weight_decay", opts.weight_decay, 0.0, 1.0)?;
    bad("classes_per_batch", opts.classes_per_batch as f64, 2.0, 1024.0)?;
    bad("copies_per_class", opts.copies_per_class as f64, 2.0, 64.0)?;
    let classes = labels.iter().max().map_or(0, |m| m + 1);
    let mut rows_of: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        rows_of[l].push(i);
    }
    if let Some(c) = rows_of.iter().position(|r| r.len() < 2) {
        return Err(format!("class {c} has {} rows; every class needs at least 2", rows_of[c].len()));
    }
    let x = features.mapv(f64::from);
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut head = Head::init(x.ncols(), opts.hidden, opts.output, &mut rng);
    let mut adam = AdamW::new(&head);
    let per_epoch = classes.div_ceil(opts.classes_per_batch);
    let total = (per_epoch * opts.epochs) as f64;
    let mut step = 0usize;
    let mut losses = Vec::with_capacity(opts.epochs);
    let mut order: Vec<usize> = (0..classes).collect();
    for _ in 0..opts.epochs {
        order.shuffle(&mut rng);
        let mut sum = 0.0;
        for group in order.chunks(opts.classes_per_batch) {
            opts.interrupt.check()?;
            let mut rows = Vec::new();
            let mut batch_labels = Vec::new();
            for &c in group {
                let mut pool = rows_of[c].clone();
                pool.shuffle(&mut rng);
                for &r in pool.iter().cycle().take(opts.copies_per_class.max(2)) {
                    rows.push(r);
                    batch_labels.push(c);
                }
            }
            let batch = x.select(Axis(0), &rows);
            let (loss, grad) = loss_and_gradient(&head, batch.view(), &batch_labels, opts.temperature);
            let lr = opts.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total).cos());
            adam.update(&mut head, &grad, lr, opts.weight_decay);
            sum += loss;
            step += 1;
        }
        losses.push(sum / per_epoch as f64);
        progress(losses.len(), sum / per_epoch as f64);
    }
    Ok(Trained { head, losses })
}

/// How well queries find their references, by exact cosine search: the share whose nearest
/// reference has their label, and the margins, each query's best similarity to a reference of
/// its own label minus its best to a reference of another (negative: misidentified), as
/// `clip.verify_reference_set` measures them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub queries: usize,
    pub top1_rate: f64,
    pub median_margin: f64,
    pub lowest_margin: f64,
}

/// [`Evaluation`] of unit-row `queries` of labels `query_labels` against unit-row `refs` of
/// labels `ref_labels` (at least two labels among the references).
pub fn evaluate(
    refs: ArrayView2<f64>,
    ref_labels: &[usize],
    queries: ArrayView2<f64>,
    query_labels: &[usize],
) -> Evaluation {
    let sims = queries.dot(&refs.t());
    let mut margins: Vec<f64> = Vec::with_capacity(queries.nrows());
    let mut hits = 0usize;
    for (row, &label) in sims.rows().into_iter().zip(query_labels) {
        let (mut own, mut other) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        for (&v, &l) in row.iter().zip(ref_labels) {
            if l == label {
                own = own.max(v);
            } else {
                other = other.max(v);
            }
        }
        hits += usize::from(own > other);
        margins.push(own - other);
    }
    margins.sort_by(f64::total_cmp);
    let n = margins.len();
    let median = match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => margins[n / 2],
        _ => (margins[n / 2 - 1] + margins[n / 2]) / 2.0,
    };
    Evaluation {
        queries: n,
        top1_rate: if n == 0 { f64::NAN } else { hits as f64 / n as f64 },
        median_margin: median,
        lowest_margin: margins.first().copied().unwrap_or(f64::NAN),
    }
}

/// The baseline a head must beat: centre the reference embeddings and whiten them with their
/// covariance, shrunk towards its mean variance (`(1 - a) C + a tr(C)/d I`, a = 0.1: with fewer
/// references than dimensions C alone is singular). Cosine after whitening is the same for
/// every whitening matrix W with W^T W = C^-1 (ZCA, PCA, Cholesky), so the Cholesky factor is
/// used: no eigendecomposition, which ndarray lacks.
pub struct Whitening {
    mean: Array1<f64>,
    /// lower-triangular L with L L^T = the shrunk covariance
    l: Array2<f64>,
}

const WHITENING_SHRINKAGE: f64 = 0.1;

impl Whitening {
    pub fn fit(refs: ArrayView2<f64>) -> Whitening {
        let (n, d) = refs.dim();
        let mean = refs.mean_axis(Axis(0)).unwrap_or_else(|| Array1::zeros(d));
        let centred = &refs - &mean;
        let mut c = centred.t().dot(&centred) / (n.max(1) as f64);
        let mean_var = (c.diag().sum() / d as f64).max(1e-12);
        c *= 1.0 - WHITENING_SHRINKAGE;
        for i in 0..d {
            c[[i, i]] += WHITENING_SHRINKAGE * mean_var;
        }
        // Cholesky-Banachiewicz; positive definite by the shrinkage
        let mut l = Array2::<f64>::zeros((d, d));
        for i in 0..d {
            for j in 0..=i {
                let dot: f64 = (0..j).map(|k| l[[i, k]] * l[[j, k]]).sum();
                if i == j {
                    l[[i, i]] = (c[[i, i]] - dot).max(1e-12).sqrt();
                } else {
                    l[[i, j]] = (c[[i, j]] - dot) / l[[j, j]];
                }
            }
        }
        Whitening { mean, l }
    }

    /// Rows centred, whitened (L^-1 x, by forward substitution) and scaled to unit length.
    pub fn apply(&self, x: ArrayView2<f64>) -> Array2<f64> {
        let d = self.mean.len();
        let mut out = &x - &self.mean;
        for mut r in out.rows_mut() {
            for i in 0..d {
                let dot: f64 = (0..i).map(|k| self.l[[i, k]] * r[k]).sum();
                r[i] = (r[i] - dot) / self.l[[i, i]];
            }
        }
        normalise_rows(&out).0
    }
}

/// A reference set's training pool: each reference's embedding and label, and augmented copies
/// of the references, each naming its reference and whether it is held out of training.
pub struct Pool<'a> {
    pub refs: ArrayView2<'a, f32>,
    pub ref_labels: &'a [usize],
    pub copies: ArrayView2<'a, f32>,
    pub copy_ref: &'a [usize],
    pub copy_held_out: &'a [bool],
}

/// The fraction of a set's labels [`fit`] holds out of a first training, to measure whether a
/// head serves references added after it was trained.
#[derive(Debug, Clone, Copy)]
pub struct Split {
    pub held_out_labels: f64,
}

/// One line of a fit's evaluation: which queries (`held_out_copies` of every reference, or
/// `held_out_references`, copies of references whose labels the evaluated head never saw),
/// searched how (`clip`: the embeddings as they are; `whitened`: [`Whitening`]; `head`).
#[derive(Debug, Clone)]
pub struct EvaluationRow {
    pub queries: &'static str,
    pub method: &'static str,
    pub evaluation: Evaluation,
}

pub struct Fitted {
    pub head: Head,
    pub losses: Vec<f64>,
    pub evaluations: Vec<EvaluationRow>,
}

/// Train the head of a reference set on the training copies and the references themselves
/// (each label a class), and evaluate it on the held-out copies against the plain embeddings
/// and the whitening baseline. When at least 5 labels allow it, a first head is trained
/// without `split.held_out_labels` of the labels (at least one, chosen by the seed) and
/// evaluated on their copies with every reference projected, as references added after
/// training would be; the head kept is then trained on every label.
pub fn fit(
    pool: &Pool,
    split: Split,
    opts: &Options,
    progress: &mut dyn FnMut(&str, usize, f64),
) -> Result<Fitted, String> {
    let d = pool.refs.ncols();
    let labels = pool.ref_labels.iter().max().map_or(0, |m| m + 1);
    if labels < 2 {
        return Err(format!("a projection head needs references of at least 2 labels, not {labels}"));
    }
    if pool.copies.ncols() != d
        || pool.copies.nrows() != pool.copy_ref.len()
        || pool.copy_ref.len() != pool.copy_held_out.len()
    {
        return Err("copies and their references do not match".into());
    }
    if let Some(&r) = pool.copy_ref.iter().find(|&&r| r >= pool.refs.nrows()) {
        return Err(format!("a copy names reference {r} of {}", pool.refs.nrows()));
    }
    let refs64 = normalise_rows(&pool.refs.mapv(f64::from)).0;
    let copies64 = normalise_rows(&pool.copies.mapv(f64::from)).0;
    let copy_label: Vec<usize> = pool.copy_ref.iter().map(|&r| pool.ref_labels[r]).collect();
    let whitening = Whitening::fit(refs64.view());
    let whitened_refs = whitening.apply(refs64.view());

    // the training rows of the labels in `keep`: references, then their training copies
    let rows_for = |keep: &dyn Fn(usize) -> bool| -> (Array2<f32>, Vec<usize>) {
        let refs = (0..pool.refs.nrows()).filter(|&r| keep(pool.ref_labels[r]));
        let copies = (0..pool.copy_ref.len()).filter(|&c| !pool.copy_held_out[c] && keep(copy_label[c]));
        let mut rows: Vec<f32> = Vec::new();
        let mut lab = Vec::new();
        for r in refs {
            rows.extend(pool.refs.row(r).iter());
            lab.push(pool.ref_labels[r]);
        }
        for c in copies {
            rows.extend(pool.copies.row(c).iter());
            lab.push(copy_label[c]);
        }
        // classes renumbered densely, as train wants them
        let mut dense = vec![usize::MAX; labels];
        let mut next = 0;
        let lab = lab
            .into_iter()
            .map(|l| {
                if dense[l] == usize::MAX {
                    dense[l] = next;
                    next += 1;
                }
                dense[l]
            })
            .collect::<Vec<_>>();
        (Array2::from_shape_vec((lab.len(), d), rows).expect("rows of d"), lab)
    };
    let held: Vec<usize> = (0..copies64.nrows()).filter(|&c| pool.copy_held_out[c]).collect();
    let mut evaluations = Vec::new();
    let mut measure = |queries: &'static str, of: &[usize], head: &Head| {
        if of.is_empty() {
            return;
        }
        let q = copies64.select(Axis(0), of);
        let ql: Vec<usize> = of.iter().map(|&c| copy_label[c]).collect();
        let projected_refs = head.project(refs64.view());
        for (method, r, qq) in [
            ("clip", refs64.clone(), q.clone()),
            ("whitened", whitened_refs.clone(), whitening.apply(q.view())),
            ("head", projected_refs, head.project(q.view())),
        ] {
            evaluations.push(EvaluationRow {
                queries,
                method,
                evaluation: evaluate(r.view(), pool.ref_labels, qq.view(), &ql),
            });
        }
    };

    let mut without = None;
    if labels >= 5 && split.held_out_labels > 0.0 {
        let mut order: Vec<usize> = (0..labels).collect();
        order.shuffle(&mut StdRng::seed_from_u64(opts.seed ^ 0x5eed));
        let n_out = ((labels as f64 * split.held_out_labels).round() as usize).clamp(1, labels - 2);
        let mut out = vec![false; labels];
        for &l in &order[..n_out] {
            out[l] = true;
        }
        let (x, l) = rows_for(&|label| !out[label]);
        let first = train_with_progress(x.view(), &l, opts, &mut |e, loss| {
            progress("without held-out labels", e, loss)
        })?;
        let of: Vec<usize> = held.iter().copied().filter(|&c| out[copy_label[c]]).collect();
        without = Some((first.head, of));
    }
    let (x, l) = rows_for(&|_| true);
    let trained = train_with_progress(x.view(), &l, opts, &mut |e, loss| progress("every label", e, loss))?;
    measure("held_out_copies", &held, &trained.head);
    if let Some((head, of)) = without {
        measure("held_out_references", &of, &head);
    }
    Ok(Fitted { head: trained.head, losses: trained.losses, evaluations })
}

#[cfg(test)]
mod tests {
    use ndarray::s;

    use super::*;

    fn small(seed: u64) -> (Head, Array2<f64>, Vec<usize>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let head = Head::init(6, 5, 4, &mut rng);
        let x = Array2::from_shape_simple_fn((8, 6), || rng.random_range(-1.0..1.0));
        (head, x, vec![0, 0, 1, 1, 2, 2, 3, 3])
    }

    /// Each weight's analytic derivative against the central difference of the loss.
    #[test]
    fn the_gradient_matches_finite_differences() {
        let (head, x, labels) = small(3);
        let (_, grad) = loss_and_gradient(&head, x.view(), &labels, 0.5);
        let loss = |h: &Head| loss_and_gradient(h, x.view(), &labels, 0.5).0;
        let eps = 1e-6;
        let mut worst: f64 = 0.0;
        for (t, analytic) in grad.tensors().iter().enumerate() {
            for (k, want) in analytic.iter().enumerate() {
                let (mut up, mut down) = (head.clone(), head.clone());
                up.tensors_mut()[t][k] += eps;
                down.tensors_mut()[t][k] -= eps;
                let numeric = (loss(&up) - loss(&down)) / (2.0 * eps);
                worst = worst.max((numeric - want).abs() / want.abs().max(1e-3));
            }
        }
        assert!(worst < 1e-5, "relative error {worst}");
    }

    #[test]
    fn supcon_is_zero_without_positives_and_small_when_classes_separate() {
        let y = Array2::from_shape_vec((3, 2), vec![1.0, 0.0, 0.0, 1.0, -1.0, 0.0]).unwrap();
        let (loss, dy) = supcon(y.view(), &[0, 1, 2], 0.1);
        assert_eq!((loss, dy.sum()), (0.0, 0.0));
        // two copies of each of two classes, exactly opposite: positives dominate every softmax
        let y = Array2::from_shape_vec((4, 2), vec![1.0, 0.0, 1.0, 0.0, -1.0, 0.0, -1.0, 0.0]).unwrap();
        let (loss, _) = supcon(y.view(), &[0, 0, 1, 1], 0.1);
        assert!(loss < 1e-8, "{loss}");
    }

    fn blobs(classes: usize, copies: usize, dim: usize, noise: f64, seed: u64) -> (Array2<f32>, Vec<usize>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let centres = Array2::from_shape_simple_fn((classes, dim), || rng.random_range(-1.0..1.0));
        let mut x = Array2::<f32>::zeros((classes * copies, dim));
        let mut labels = Vec::new();
        for c in 0..classes {
            for k in 0..copies {
                let r = c * copies + k;
                for d in 0..dim {
                    x[[r, d]] = (centres[[c, d]] + rng.random_range(-noise..noise)) as f32;
                }
                labels.push(c);
            }
        }
        (x, labels)
    }

    fn opts(epochs: usize) -> Options {
        Options {
            hidden: 32,
            output: 16,
            epochs,
            learning_rate: 1e-2,
            classes_per_batch: 4,
            copies_per_class: 2,
            ..Options::default()
        }
    }

    #[test]
    fn training_lowers_the_loss_and_is_the_same_for_a_seed() {
        let (x, labels) = blobs(8, 6, 12, 0.6, 1);
        let a = train(x.view(), &labels, &opts(30)).unwrap();
        assert!(a.losses.last().unwrap() < &(a.losses[0] * 0.5), "{:?}", a.losses);
        let b = train(x.view(), &labels, &opts(30)).unwrap();
        assert_eq!(a.head, b.head, "deterministic for a seed");
        let c = train(x.view(), &labels, &Options { seed: 9, ..opts(30) }).unwrap();
        assert_ne!(a.head, c.head);
    }

    #[test]
    fn a_tiny_separable_case_reaches_zero_loss() {
        let (x, labels) = blobs(4, 2, 8, 0.05, 2);
        let t = train(x.view(), &labels, &Options { classes_per_batch: 4, ..opts(300) }).unwrap();
        let y = t.head.project(x.mapv(f64::from).view());
        let (loss, _) = supcon(y.view(), &labels, 0.1);
        assert!(loss < 1e-3, "final loss {loss}, curve ends {:?}", &t.losses[t.losses.len() - 3..]);
    }

    /// The forward pass, the loss, its gradient and one AdamW step against PyTorch's on the
    /// same weights (tests/golden/projection/head.json, tests/reference/make_projection_golden.py).
    #[test]
    fn the_head_matches_pytorch() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/golden/projection/head.json");
        let j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let floats = |v: &serde_json::Value| -> Vec<f64> {
            v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
        };
        let rows = |v: &serde_json::Value| -> Array2<f64> {
            let r: Vec<Vec<f64>> = v.as_array().unwrap().iter().map(floats).collect();
            Array2::from_shape_vec((r.len(), r[0].len()), r.concat()).unwrap()
        };
        let sizes: Vec<usize> =
            j["sizes"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let (i, h, o) = (sizes[0], sizes[1], sizes[2]);
        let tensors = |v: &serde_json::Value| -> Head {
            let t: Vec<Vec<f64>> = v.as_array().unwrap().iter().map(floats).collect();
            Head {
                w1: Array2::from_shape_vec((h, i), t[0].clone()).unwrap(),
                b1: Array1::from(t[1].clone()),
                w2: Array2::from_shape_vec((o, h), t[2].clone()).unwrap(),
                b2: Array1::from(t[3].clone()),
            }
        };
        let close = |a: &[f64], b: &[f64], tol: f64, what: &str| {
            assert_eq!(a.len(), b.len(), "{what}");
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}: {x} vs {y}");
            }
        };
        let mut head = tensors(&j["weights"]);
        let x = rows(&j["features"]);
        let labels: Vec<usize> =
            j["labels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let t = j["temperature"].as_f64().unwrap();
        let y = head.project(x.view());
        close(y.as_slice().unwrap(), rows(&j["projected"]).as_slice().unwrap(), 1e-9, "projected");
        let (loss, grad) = loss_and_gradient(&head, x.view(), &labels, t);
        close(&[loss], &[j["loss"].as_f64().unwrap()], 1e-9, "loss");
        let want = tensors(&j["gradients"]);
        for (k, (a, b)) in grad.tensors().iter().zip(want.tensors()).enumerate() {
            close(a, b, 1e-8, &format!("gradient of tensor {k}"));
        }
        let mut adam = AdamW::new(&head);
        adam.update(&mut head, &grad, j["lr"].as_f64().unwrap(), j["weight_decay"].as_f64().unwrap());
        let want = tensors(&j["after_adamw"]);
        for (k, (a, b)) in head.tensors().iter().zip(want.tensors()).enumerate() {
            close(a, b, 1e-9, &format!("tensor {k} after AdamW"));
        }
    }

    #[test]
    fn weights_survive_their_bytes() {
        let (head, x, _) = small(4);
        let back = Head::from_bytes(6, 5, 4, &head.to_bytes()).unwrap();
        let (a, b) = (head.project(x.view()), back.project(x.view()));
        assert!(a.iter().zip(b.iter()).all(|(p, q)| (p - q).abs() < 1e-6));
        assert_eq!(back.parameters(), head.parameters());
        assert!(Head::from_bytes(6, 5, 3, &head.to_bytes()).is_none());
        assert!(Head::from_bytes(usize::MAX, 5, 4, &head.to_bytes()).is_none());
    }

    #[test]
    fn evaluation_counts_hits_and_margins() {
        // references: label 0 at x, label 1 at y; queries near x, near y, and a miss
        let refs = Array2::from_shape_vec((2, 2), vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        let q =
            normalise_rows(&Array2::from_shape_vec((3, 2), vec![1.0, 0.2, 0.1, 1.0, 1.0, 0.5]).unwrap()).0;
        let e = evaluate(refs.view(), &[0, 1], q.view(), &[0, 1, 1]);
        assert_eq!(e.queries, 3);
        assert!((e.top1_rate - 2.0 / 3.0).abs() < 1e-12);
        let m: Vec<f64> = q.rows().into_iter().map(|r| r[0] - r[1]).collect();
        assert!((e.lowest_margin + m[2]).abs() < 1e-12, "the miss: own (y) minus other (x)");
        assert!((e.median_margin - m[0]).abs() < 1e-12);
    }

    #[test]
    fn whitening_factors_the_shrunk_covariance() {
        let mut rng = StdRng::seed_from_u64(5);
        let x = Array2::from_shape_simple_fn((7, 4), || rng.random_range(-1.0..1.0));
        let w = Whitening::fit(x.view());
        let centred = &x - &x.mean_axis(Axis(0)).unwrap();
        let c = centred.t().dot(&centred) / 7.0;
        let mean_var = c.diag().sum() / 4.0;
        let shrunk = &c * 0.9 + &(Array2::<f64>::eye(4) * 0.1 * mean_var);
        let llt = w.l.dot(&w.l.t());
        assert!(llt.iter().zip(shrunk.iter()).all(|(a, b)| (a - b).abs() < 1e-12));
        // whitened rows are unit length, and whitening the mean gives the zero row
        let y = w.apply(x.view());
        assert!(y.rows().into_iter().all(|r| (r.dot(&r) - 1.0).abs() < 1e-12));
        let m = x.mean_axis(Axis(0)).unwrap().insert_axis(Axis(0));
        assert!(w.apply(m.view()).iter().all(|v| v.abs() < 1e-12));
    }

    /// Look-alike references: every class shares one large common vector, and differs from the
    /// others along a few small directions that copies blur with noise along other directions.
    #[test]
    fn a_fit_widens_held_out_margins_of_look_alikes_and_reports_each_way() {
        let (classes, dim) = (12, 24);
        let mut rng = StdRng::seed_from_u64(11);
        let common: Vec<f64> = (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut refs = Array2::<f32>::zeros((classes, dim));
        for c in 0..classes {
            for d in 0..dim {
                let own = if d < 8 { rng.random_range(-0.25..0.25) } else { 0.0 };
                refs[[c, d]] = (common[d] * 1.5 + own) as f32;
            }
        }
        let per = 20;
        let mut copies = Array2::<f32>::zeros((classes * per, dim));
        let (mut copy_ref, mut held) = (Vec::new(), Vec::new());
        for c in 0..classes {
            for k in 0..per {
                let r = c * per + k;
                for d in 0..dim {
                    let noise =
                        if d >= 8 { rng.random_range(-0.6..0.6) } else { rng.random_range(-0.05..0.05) };
                    copies[[r, d]] = refs[[c, d]] + noise as f32;
                }
                copy_ref.push(c);
                held.push(k >= 16);
            }
        }
        let labels: Vec<usize> = (0..classes).collect();
        let pool = Pool {
            refs: refs.view(),
            ref_labels: &labels,
            copies: copies.view(),
            copy_ref: &copy_ref,
            copy_held_out: &held,
        };
        let opts = Options {
            hidden: 64,
            output: 16,
            epochs: 150,
            learning_rate: 5e-3,
            classes_per_batch: 6,
            copies_per_class: 6,
            ..Options::default()
        };
        let mut epochs = 0;
        let f = fit(&pool, Split { held_out_labels: 0.25 }, &opts, &mut |_, _, _| epochs += 1).unwrap();
        assert_eq!(epochs, 300, "two trainings reported");
        let get = |q: &str, m: &str| {
            f.evaluations.iter().find(|e| e.queries == q && e.method == m).unwrap().evaluation
        };
        assert_eq!(f.evaluations.len(), 6);
        let (before, after) = (get("held_out_copies", "clip"), get("held_out_copies", "head"));
        assert_eq!(before.queries, classes * 4);
        assert!(after.median_margin > before.median_margin + 0.05, "{before:?} -> {after:?}");
        assert!(after.top1_rate >= before.top1_rate, "{before:?} -> {after:?}");
        assert_eq!(get("held_out_references", "head").queries, 3 * 4, "3 of 12 labels held out");
        let again = fit(&pool, Split { held_out_labels: 0.25 }, &opts, &mut |_, _, _| {}).unwrap();
        assert_eq!(again.head, f.head);
        let one = [0usize; 12];
        let lonely = Pool { ref_labels: &one, ..pool };
        assert!(fit(&lonely, Split { held_out_labels: 0.0 }, &opts, &mut |_, _, _| {}).is_err());
    }

    #[test]
    fn bad_options_and_lonely_classes_are_refused() {
        let (x, labels) = blobs(3, 2, 4, 0.1, 0);
        assert!(train(x.view(), &labels, &Options { temperature: 0.0, ..opts(1) }).is_err());
        assert!(train(x.view(), &labels, &Options { copies_per_class: 1, ..opts(1) }).is_err());
        assert!(train(x.view(), &[0, 0, 1, 1, 2, 3], &opts(1)).unwrap_err().contains("class 2 has 1 rows"));
        assert!(train(x.slice(s![..2, ..]), &labels, &opts(1)).is_err());
    }
}
