//! Decision fusion: a classifier's class probabilities blended with zero-shot confidences and a
//! cluster prior, so that where the classifier is unsure the other two settle the case.
//!
//! With c the classifier's probabilities, z the zero-shot confidences and k the cluster prior
//! (each over the same classes, z and k rescaled to sum to 1):
//!   w     = c_top1 - c_top2          (the classifier's certainty: 0 at a coin toss, 1 when sure;
//!                                     |2p - 1| with two classes)
//!   other = mean of z and k, whichever are present
//!   p     = w * c + (1 - w) * other  (p = c when neither is present)
//! So a classifier at 0.501 weighs 0.002 and the others decide, one at 0.99 weighs 0.98.

/// The blended probabilities (summing to 1) and the classifier's weight w.
pub fn blend(classifier: &[f64], zero_shot: Option<&[f64]>, cluster: Option<&[f64]>) -> (Vec<f64>, f64) {
    let normalised = |v: &[f64]| -> Option<Vec<f64>> {
        let sum: f64 = v.iter().map(|x| x.max(0.0)).sum();
        (v.len() == classifier.len() && sum > 0.0).then(|| v.iter().map(|x| x.max(0.0) / sum).collect())
    };
    let others: Vec<Vec<f64>> = [zero_shot, cluster].into_iter().flatten().filter_map(normalised).collect();
    let mut sorted = classifier.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let certainty =
        (sorted.first().copied().unwrap_or(0.0) - sorted.get(1).copied().unwrap_or(0.0)).clamp(0.0, 1.0);
    if others.is_empty() {
        return (classifier.to_vec(), 1.0);
    }
    let blended = (0..classifier.len())
        .map(|i| {
            let other = others.iter().map(|o| o[i]).sum::<f64>() / others.len() as f64;
            certainty * classifier[i] + (1.0 - certainty) * other
        })
        .collect();
    (blended, certainty)
}

#[cfg(test)]
mod tests {
    use super::blend;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
    }

    #[test]
    fn an_unsure_classifier_yields_to_zero_shot_and_clusters() {
        // classifier barely for class 1, zero-shot clearly for class 0: class 0 wins
        let (p, w) = blend(&[0.499, 0.501], Some(&[0.9, 0.1]), None);
        assert!((w - 0.002).abs() < 1e-9);
        assert!(p[0] > 0.89 && p[0] + p[1] - 1.0 < 1e-12, "{p:?}");
        // a sure classifier keeps its answer against the same zero-shot
        let (p, w) = blend(&[0.01, 0.99], Some(&[0.9, 0.1]), None);
        assert!((w - 0.98).abs() < 1e-9);
        assert!(close(&p, &[0.98 * 0.01 + 0.02 * 0.9, 0.98 * 0.99 + 0.02 * 0.1]), "{p:?}");
        assert!(p[1] > p[0]);
        // zero-shot and cluster are averaged (the cluster prior rescaled to sum to 1 first)
        let (p, _) = blend(&[0.5, 0.5], Some(&[0.8, 0.2]), Some(&[2.0, 2.0]));
        assert!(close(&p, &[0.65, 0.35]), "{p:?}");
        // three classes: the certainty is the margin between the top two
        let (p, w) = blend(&[0.5, 0.3, 0.2], Some(&[0.0, 0.0, 1.0]), None);
        assert!((w - 0.2).abs() < 1e-9);
        assert!(close(&p, &[0.1, 0.06, 0.04 + 0.8]), "{p:?}");
    }

    #[test]
    fn missing_or_unusable_evidence_leaves_the_classifier() {
        assert_eq!(blend(&[0.3, 0.7], None, None), (vec![0.3, 0.7], 1.0));
        // wrong length, or all zero: ignored
        assert_eq!(blend(&[0.3, 0.7], Some(&[1.0]), Some(&[0.0, 0.0])), (vec![0.3, 0.7], 1.0));
    }
}
