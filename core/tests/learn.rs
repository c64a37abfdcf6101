//! The learning core against scikit-learn's figures on the same committed rows
//! (tests/golden/learn/, written by tests/reference/make_learn_golden.py).

use ndarray::{Array2, Axis};
use pg_clip_core::learn::{kmeans, logreg, metrics};

fn golden() -> (Array2<f32>, Array2<f32>, serde_json::Value) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/golden/learn");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/mixture.json")).unwrap()).unwrap();
    let bytes = std::fs::read(format!("{dir}/mixture.f32")).unwrap();
    let all: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let (rows, clusters, d) =
        (j["rows"].as_u64().unwrap() as usize, j["cluster_rows"].as_u64().unwrap() as usize, 512);
    assert_eq!(all.len(), (rows + clusters) * d);
    let x = Array2::from_shape_vec((rows, d), all[..rows * d].to_vec()).unwrap();
    let z = Array2::from_shape_vec((clusters, d), all[rows * d..].to_vec()).unwrap();
    (x, z, j)
}

#[test]
fn logistic_regression_matches_scikit_learn() {
    let (x, _, j) = golden();
    let labels: Vec<usize> =
        j["labels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let train_rows = j["train"].as_u64().unwrap() as usize;
    for case in j["logreg"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let classes: Vec<usize> =
            case["classes"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let pick = |range: std::ops::Range<usize>| -> Vec<usize> {
            range.filter(|&i| classes.contains(&labels[i])).collect()
        };
        let (train, test) = (pick(0..train_rows), pick(train_rows..labels.len()));
        let xf = x.mapv(f64::from);
        let opts = logreg::Options {
            c: case["C"].as_f64().unwrap(),
            balanced: case["class_weight"].as_str() == Some("balanced"),
            max_iter: 1000,
            tol: 1e-8,
            ..Default::default()
        };
        let ytr: Vec<usize> = train.iter().map(|&i| labels[i]).collect();
        let yte: Vec<usize> = test.iter().map(|&i| labels[i]).collect();
        let model = logreg::fit(xf.select(Axis(0), &train).view(), &ytr, classes.len(), &opts).unwrap();
        let proba = model.predict_proba(xf.select(Axis(0), &test).view());
        let s = metrics::score(proba.view(), &yte);
        let (acc, ll) = (case["accuracy"].as_f64().unwrap(), case["log_loss"].as_f64().unwrap());
        // the same objective solved to a tight tolerance: the same model, up to the solver
        assert!((s.accuracy - acc).abs() <= 0.01, "{name}: accuracy {} vs scikit-learn {acc}", s.accuracy);
        assert!(
            (s.log_loss - ll).abs() <= 0.005 * ll.max(1.0),
            "{name}: log loss {} vs scikit-learn {ll}",
            s.log_loss
        );
        for (i, want) in case["proba_first_10"].as_array().unwrap().iter().enumerate() {
            for (c, w) in want.as_array().unwrap().iter().enumerate() {
                let (got, w) = (proba[[i, c]], w.as_f64().unwrap());
                assert!((got - w).abs() < 2e-3, "{name}: row {i} class {c}: {got} vs scikit-learn {w}");
            }
        }
        eprintln!(
            "{name}: accuracy {:.3} (sklearn {acc:.3}), log loss {:.4} (sklearn {ll:.4}), {} iterations",
            s.accuracy, s.log_loss, model.iterations
        );
    }
}

#[test]
fn kmeans_inertia_within_one_percent_of_scikit_learn() {
    let (_, z, j) = golden();
    for case in j["kmeans"].as_array().unwrap() {
        let k = case["k"].as_u64().unwrap() as usize;
        let want = case["inertia"].as_f64().unwrap();
        let opts =
            kmeans::Options { k, n_init: case["n_init"].as_u64().unwrap() as usize, ..Default::default() };
        let c = kmeans::kmeans(z.view(), &opts).unwrap();
        eprintln!("k {k}: inertia {:.4} (sklearn {want:.4}), {} iterations", c.inertia, c.iterations);
        assert!(c.inertia <= want * 1.01, "k {k}: inertia {} vs scikit-learn {want}", c.inertia);
        // the labels and distances agree with the centroids and the inertia
        assert_eq!(c.labels.len(), z.nrows());
        let sum: f64 = c.distances.iter().map(|&d| f64::from(d)).sum();
        assert!((sum - c.inertia).abs() < 1e-6 * sum.max(1.0));
        let again = kmeans::kmeans(z.view(), &opts).unwrap();
        assert_eq!(again.labels, c.labels, "same seed, same clustering");
    }
}

#[test]
fn metrics_match_hand_computed_cases() {
    // 4 rows, two classes: predictions 1, 1, 0, 0 against truth 1, 0, 0, 1
    let proba = ndarray::arr2(&[[0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.9, 0.1]]);
    let s = metrics::score(proba.view(), &[1, 0, 0, 1]);
    assert_eq!(s.accuracy, 0.5);
    assert_eq!((s.precision, s.recall, s.f1), (0.5, 0.5, 0.5));
    // positives score 0.8 and 0.1, negatives 0.6 and 0.3: 2 of the 4 pairs ordered right
    assert_eq!(s.roc_auc, Some(0.5));
    let ll = -(0.8f64.ln() + 0.4f64.ln() + 0.7f64.ln() + 0.1f64.ln()) / 4.0;
    assert!((s.log_loss - ll).abs() < 1e-12);
    // ties count one half
    assert_eq!(metrics::roc_auc(&[0.5, 0.5], &[1, 0]), 0.5);
    // stratified folds: each class dealt in turn
    assert_eq!(metrics::stratified_folds(&[0, 0, 1, 0, 1, 1], 2, 2), vec![0, 1, 0, 0, 1, 0]);
}

#[test]
fn photo_embeddings_match_scikit_learn() {
    let (_, _, j) = golden();
    let photos = &j["photos"];
    let all: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/golden/embeddings.json"))
            .unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = photos["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    let rows: Vec<Vec<f32>> = names
        .iter()
        .map(|n| all["images"][*n].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
        .collect();
    let x = Array2::from_shape_fn((rows.len(), rows[0].len()), |(i, j)| rows[i][j]);
    let y: Vec<usize> =
        photos["cat"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let opts = logreg::Options { c: 1.0, balanced: false, max_iter: 1000, tol: 1e-8, ..Default::default() };
    let model = logreg::fit(x.mapv(f64::from).view(), &y, 2, &opts).unwrap();
    let proba = model.predict_proba(x.mapv(f64::from).view());
    for (i, want) in photos["proba"].as_array().unwrap().iter().enumerate() {
        let w = want[1].as_f64().unwrap();
        assert!((proba[[i, 1]] - w).abs() < 2e-3, "{}: {} vs scikit-learn {w}", names[i], proba[[i, 1]]);
    }
    let want = photos["kmeans3_inertia"].as_f64().unwrap();
    let c = kmeans::kmeans(x.view(), &kmeans::Options { k: 3, n_init: 4, ..Default::default() }).unwrap();
    assert!(c.inertia <= want * 1.01, "k-means on photos: {} vs scikit-learn {want}", c.inertia);
}

#[test]
fn fits_and_clusterings_stop_when_interrupted() {
    let x = Array2::from_shape_fn((40, 4), |(i, j)| ((i * 7 + j * 3) % 11) as f32);
    let y: Vec<usize> = (0..40).map(|i| i % 2).collect();
    let stop = pg_clip_core::Interrupt(|| true);
    let opts = logreg::Options { interrupt: stop, ..Default::default() };
    assert_eq!(logreg::fit(x.mapv(f64::from).view(), &y, 2, &opts).unwrap_err(), pg_clip_core::CANCELLED);
    assert_eq!(
        metrics::cross_validate(x.mapv(f64::from).view(), &y, 2, 5, &opts).unwrap_err(),
        pg_clip_core::CANCELLED
    );
    let k = kmeans::Options { k: 3, interrupt: stop, ..Default::default() };
    assert_eq!(kmeans::kmeans(x.view(), &k).unwrap_err(), pg_clip_core::CANCELLED);
}
