//! Learning over stored embeddings: standardised L2 logistic regression (binary and
//! multinomial) with stratified cross-validation, k-means, and a projection head for
//! identification (SupCon). Plain Rust over `ndarray`,
//! checked against scikit-learn's figures on committed data (core/tests/learn.rs).

pub mod fusion;
pub mod kmeans;
pub mod logreg;
pub mod metrics;
pub mod projection;

use ndarray::{Array2, ArrayView2};

/// Rows of f32 embeddings as an f64 matrix (the solvers work in f64, as scikit-learn does).
pub fn to_f64(rows: &[&[f32]]) -> Array2<f64> {
    let d = rows.first().map_or(0, |r| r.len());
    Array2::from_shape_fn((rows.len(), d), |(i, j)| f64::from(rows[i][j]))
}

/// Per-feature mean and standard deviation (population, as scikit-learn's StandardScaler), a
/// zero deviation replaced by 1 so that a constant feature stays 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
}

impl Standardizer {
    pub fn fit(x: ArrayView2<f64>) -> Self {
        let n = x.nrows().max(1) as f64;
        let mean: Vec<f64> = x.columns().into_iter().map(|c| c.sum() / n).collect();
        let scale = x
            .columns()
            .into_iter()
            .zip(&mean)
            .map(|(c, m)| {
                let var = c.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n;
                if var > 0.0 {
                    var.sqrt()
                } else {
                    1.0
                }
            })
            .collect();
        Standardizer { mean, scale }
    }

    pub fn transform(&self, x: ArrayView2<f64>) -> Array2<f64> {
        let mut out = x.to_owned();
        for mut row in out.rows_mut() {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.scale) {
                *v = (*v - m) / s;
            }
        }
        out
    }
}
