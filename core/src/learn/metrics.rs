//! Classification metrics as scikit-learn computes them, and stratified k-fold
//! cross-validation of the logistic regression.

use ndarray::{ArrayView2, Axis};

use super::logreg::{self, Options};

/// Metrics of predicted probabilities against true labels (0..classes). Precision, recall and
/// F1 are for class 1 with two classes and macro averages (unweighted mean over classes) with
/// more; ROC AUC only with two classes.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub roc_auc: Option<f64>,
    pub log_loss: f64,
}

pub fn score(proba: ArrayView2<f64>, y: &[usize]) -> Scores {
    let k = proba.ncols();
    let pred: Vec<usize> =
        proba.rows().into_iter().map(|r| argmax(r.as_slice().unwrap_or(&r.to_vec()))).collect();
    let n = y.len() as f64;
    let accuracy = pred.iter().zip(y).filter(|(p, t)| p == t).count() as f64 / n;
    let per_class = |c: usize| {
        let tp = pred.iter().zip(y).filter(|(p, t)| **p == c && **t == c).count() as f64;
        let fp = pred.iter().zip(y).filter(|(p, t)| **p == c && **t != c).count() as f64;
        let fneg = pred.iter().zip(y).filter(|(p, t)| **p != c && **t == c).count() as f64;
        let precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
        let recall = if tp + fneg > 0.0 { tp / (tp + fneg) } else { 0.0 };
        let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
        (precision, recall, f1)
    };
    let (precision, recall, f1) = if k == 2 {
        per_class(1)
    } else {
        let all: Vec<_> = (0..k).map(per_class).collect();
        let mean = |f: fn(&(f64, f64, f64)) -> f64| all.iter().map(f).sum::<f64>() / k as f64;
        (mean(|t| t.0), mean(|t| t.1), mean(|t| t.2))
    };
    // probabilities clipped as scikit-learn's log_loss does (to float64 eps)
    let log_loss =
        y.iter().enumerate().map(|(i, &t)| -proba[[i, t]].clamp(f64::EPSILON, 1.0).ln()).sum::<f64>() / n;
    let roc_auc = (k == 2).then(|| roc_auc(&proba.column(1).to_vec(), y));
    Scores { accuracy, precision, recall, f1, roc_auc, log_loss }
}

fn argmax(v: &[f64]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, x)| if *x > v[best] { i } else { best })
}

/// Area under the ROC curve: the probability that a random positive scores above a random
/// negative, ties counting one half (the Mann-Whitney statistic, from average ranks).
pub fn roc_auc(score: &[f64], y: &[usize]) -> f64 {
    let mut order: Vec<usize> = (0..score.len()).collect();
    order.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    let mut rank = vec![0.0; score.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && score[order[j + 1]] == score[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        order[i..=j].iter().for_each(|&o| rank[o] = avg);
        i = j + 1;
    }
    let pos = y.iter().filter(|&&t| t == 1).count() as f64;
    let neg = y.len() as f64 - pos;
    let rank_sum: f64 = y.iter().zip(&rank).filter(|(t, _)| **t == 1).map(|(_, r)| r).sum();
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Fold of each row for stratified k-fold: within each class, rows in order are dealt to the
/// folds in turn, so every fold holds each class in proportion.
pub fn stratified_folds(y: &[usize], classes: usize, folds: usize) -> Vec<usize> {
    let mut next = vec![0usize; classes];
    y.iter()
        .map(|&c| {
            let f = next[c] % folds;
            next[c] += 1;
            f
        })
        .collect()
}

/// Mean and standard deviation (population) of each metric over the folds.
#[derive(Debug, Clone, PartialEq)]
pub struct CvScores {
    pub folds: usize,
    pub mean: Scores,
    pub std: Scores,
}

pub fn cross_validate(
    x: ArrayView2<f64>,
    y: &[usize],
    classes: usize,
    folds: usize,
    opts: &Options,
) -> Result<CvScores, String> {
    let fold = stratified_folds(y, classes, folds);
    let mut all = Vec::with_capacity(folds);
    for f in 0..folds {
        opts.interrupt.check()?;
        let train: Vec<usize> = (0..y.len()).filter(|&i| fold[i] != f).collect();
        let test: Vec<usize> = (0..y.len()).filter(|&i| fold[i] == f).collect();
        let ytr: Vec<usize> = train.iter().map(|&i| y[i]).collect();
        let yte: Vec<usize> = test.iter().map(|&i| y[i]).collect();
        let model = logreg::fit(x.select(Axis(0), &train).view(), &ytr, classes, opts)?;
        all.push(score(model.predict_proba(x.select(Axis(0), &test).view()).view(), &yte));
    }
    let stat = |f: &dyn Fn(&Scores) -> f64| {
        let v: Vec<f64> = all.iter().map(f).collect();
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (m, (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt())
    };
    let (acc, prec, rec, f1, ll) = (
        stat(&|s| s.accuracy),
        stat(&|s| s.precision),
        stat(&|s| s.recall),
        stat(&|s| s.f1),
        stat(&|s| s.log_loss),
    );
    let auc = (classes == 2).then(|| stat(&|s| s.roc_auc.unwrap_or(f64::NAN)));
    Ok(CvScores {
        folds,
        mean: Scores {
            accuracy: acc.0,
            precision: prec.0,
            recall: rec.0,
            f1: f1.0,
            roc_auc: auc.map(|a| a.0),
            log_loss: ll.0,
        },
        std: Scores {
            accuracy: acc.1,
            precision: prec.1,
            recall: rec.1,
            f1: f1.1,
            roc_auc: auc.map(|a| a.1),
            log_loss: ll.1,
        },
    })
}
