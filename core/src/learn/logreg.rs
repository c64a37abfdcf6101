//! L2-regularised logistic regression, as scikit-learn's `LogisticRegression(solver="lbfgs")`
//! defines it: minimise `C * sum_i w_i * loss_i + ||W||^2 / 2` (intercepts not penalised),
//! with one weight vector for two classes (sigmoid) and one per class for three or more
//! (softmax, multinomial). The features are standardised first. argmin's L-BFGS solves it.

use std::cell::RefCell;

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use ndarray::{Array1, Array2, ArrayView2, Axis};

use super::Standardizer;
use crate::{Interrupt, CANCELLED};

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Inverse regularisation strength, scikit-learn's `C`.
    pub c: f64,
    /// Weight each class by n / (classes x n_class), scikit-learn's `class_weight="balanced"`.
    pub balanced: bool,
    pub max_iter: u64,
    /// Stop when the gradient norm of the per-sample objective is below this.
    pub tol: f64,
    pub interrupt: Interrupt,
}

impl Default for Options {
    fn default() -> Self {
        Options { c: 1.0, balanced: false, max_iter: 100, tol: 1e-4, interrupt: Interrupt::NEVER }
    }
}

/// A fitted model: labels are 0..classes, as indices into the caller's label set.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub classes: usize,
    pub scaler: Standardizer,
    /// One row for two classes (the weights of class 1), one row per class otherwise.
    pub coef: Array2<f64>,
    pub intercept: Array1<f64>,
    pub iterations: u64,
}

/// The objective per sample (divided by C x n, which leaves the minimiser unchanged and keeps
/// L-BFGS's tolerances meaningful whatever the data size), with its gradient. The last
/// evaluation is cached: L-BFGS asks for the cost and the gradient at the same point.
/// A point, the cost there and its gradient.
type Evaluation = (Vec<f64>, f64, Vec<f64>);

struct Problem<'a> {
    x: &'a Array2<f64>,
    y: &'a [usize],
    w: Array1<f64>,
    rows: usize,
    l2: f64,
    interrupt: Interrupt,
    cache: RefCell<Option<Evaluation>>,
}

impl Problem<'_> {
    fn evaluate(&self, p: &[f64]) -> (f64, Vec<f64>) {
        if let Some((q, f, g)) = self.cache.borrow().as_ref() {
            if q.as_slice() == p {
                return (*f, g.clone());
            }
        }
        let (d, k) = (self.x.ncols(), self.rows);
        let coef = ArrayView2::from_shape((k, d), &p[..k * d]).expect("k x d weights");
        let b = &p[k * d..];
        // scores z = X W^T + b, then dloss/dz into `r`
        let mut z = self.x.dot(&coef.t());
        let n = self.x.nrows() as f64;
        let mut loss = 0.0;
        for (i, mut row) in z.rows_mut().into_iter().enumerate() {
            row.iter_mut().zip(b).for_each(|(v, bj)| *v += bj);
            let wi = self.w[i] / n;
            if k == 1 {
                let (zi, yi) = (row[0], (self.y[i] == 1) as u8 as f64);
                // log(1 + e^z) - y z, computed without overflow
                loss += wi * (zi.max(0.0) + (-zi.abs()).exp().ln_1p() - yi * zi);
                row[0] = wi * (sigmoid(zi) - yi);
            } else {
                let peak = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = row.iter().map(|v| (v - peak).exp()).sum();
                loss += wi * (peak + sum.ln() - row[self.y[i]]);
                let yi = self.y[i];
                for (j, v) in row.iter_mut().enumerate() {
                    *v = wi * ((*v - peak).exp() / sum - if j == yi { 1.0 } else { 0.0 });
                }
            }
        }
        let gw = z.t().dot(self.x) + &coef.mapv(|v| v * self.l2);
        let gb = z.sum_axis(Axis(0));
        loss += 0.5 * self.l2 * coef.iter().map(|v| v * v).sum::<f64>();
        let mut grad = gw.into_raw_vec_and_offset().0;
        grad.extend(gb.iter());
        *self.cache.borrow_mut() = Some((p.to_vec(), loss, grad.clone()));
        (loss, grad)
    }
}

impl CostFunction for Problem<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, p: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        self.interrupt.check().map_err(argmin::core::Error::msg)?;
        Ok(self.evaluate(p).0)
    }
}

impl Gradient for Problem<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, p: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        self.interrupt.check().map_err(argmin::core::Error::msg)?;
        Ok(self.evaluate(p).1)
    }
}

pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        z.exp() / (1.0 + z.exp())
    }
}

/// Fit on rows `x` (raw embeddings) with labels `y` in 0..classes (every class present).
pub fn fit(x: ArrayView2<f64>, y: &[usize], classes: usize, opts: &Options) -> Result<Model, String> {
    if classes < 2 {
        return Err("logistic regression needs at least two classes".into());
    }
    let scaler = Standardizer::fit(x);
    let xs = scaler.transform(x);
    let n = y.len();
    let mut counts = vec![0usize; classes];
    y.iter().for_each(|&c| counts[c] += 1);
    let w: Array1<f64> = y
        .iter()
        .map(|&c| if opts.balanced { n as f64 / (classes as f64 * counts[c] as f64) } else { 1.0 })
        .collect();
    let rows = if classes == 2 { 1 } else { classes };
    let d = xs.ncols();
    let problem = Problem {
        x: &xs,
        y,
        w,
        rows,
        l2: 1.0 / (opts.c * n as f64),
        interrupt: opts.interrupt,
        cache: RefCell::new(None),
    };
    let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
        .with_tolerance_grad(opts.tol)
        .and_then(|s| s.with_tolerance_cost(0.0))
        .map_err(|e| e.to_string())?;
    let res = Executor::new(problem, solver)
        .configure(|s| s.param(vec![0.0; rows * (d + 1)]).max_iters(opts.max_iter))
        .run()
        .map_err(|e| {
            if opts.interrupt.is_set() {
                CANCELLED.to_string()
            } else {
                format!("the solver failed: {e}")
            }
        })?;
    let state = res.state();
    let p = state.get_best_param().or(state.get_param()).ok_or("the solver returned no parameters")?;
    let coef = Array2::from_shape_vec((rows, d), p[..rows * d].to_vec()).map_err(|e| e.to_string())?;
    let intercept = Array1::from_vec(p[rows * d..].to_vec());
    Ok(Model { classes, scaler, coef, intercept, iterations: state.get_iter() })
}

impl Model {
    /// Class probabilities of raw rows, one row per input row.
    pub fn predict_proba(&self, x: ArrayView2<f64>) -> Array2<f64> {
        let mut z = self.scaler.transform(x).dot(&self.coef.t());
        z.rows_mut()
            .into_iter()
            .for_each(|mut r| r.iter_mut().zip(&self.intercept).for_each(|(v, b)| *v += b));
        if self.classes == 2 {
            Array2::from_shape_fn((z.nrows(), 2), |(i, j)| {
                let p = sigmoid(z[[i, 0]]);
                if j == 1 {
                    p
                } else {
                    1.0 - p
                }
            })
        } else {
            for mut row in z.rows_mut() {
                let peak = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                row.mapv_inplace(|v| (v - peak).exp());
                let sum = row.sum();
                row.mapv_inplace(|v| v / sum);
            }
            z
        }
    }
}
