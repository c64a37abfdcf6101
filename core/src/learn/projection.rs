//! A projection head for identification, trained on frozen CLIP features: features
//! L2-normalised, `Linear(d, hidden) -> GELU -> Linear(hidden, output)`, L2-normalised again;
//! SupCon loss (Khosla et al. 2020, the "L_out" form) over batches of `classes_per_batch`
//! classes x `copies_per_class` copies; AdamW with a cosine schedule. Written by hand on
//! `ndarray` (the workspace's matrix crate) because what is needed is one small MLP with an
//! analytic gradient: a deep-learning crate would be a heavy dependency for 40 lines of calculus.
//! Everything is f64 (a finite-difference check needs it; the sizes are small).
//!
//! GELU is the tanh form (`0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))`, PyTorch's
//! `approximate="tanh"`): std has no erf, and the two differ by under 1e-3.

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
    }
    Ok(Trained { head, losses })
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

    #[test]
    fn bad_options_and_lonely_classes_are_refused() {
        let (x, labels) = blobs(3, 2, 4, 0.1, 0);
        assert!(train(x.view(), &labels, &Options { temperature: 0.0, ..opts(1) }).is_err());
        assert!(train(x.view(), &labels, &Options { copies_per_class: 1, ..opts(1) }).is_err());
        assert!(train(x.view(), &[0, 0, 1, 1, 2, 3], &opts(1)).unwrap_err().contains("class 2 has 1 rows"));
        assert!(train(x.slice(s![..2, ..]), &labels, &opts(1)).is_err());
    }
}
