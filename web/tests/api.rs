//! Handler tests: the router against the test database web/tests/run.sh makes (examples/web.sql
//! on the project cluster), real pg_clip, real images. Each test labels under its own classifier.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use pg_clip_web::config::Config;
use pg_clip_web::{api, app, db};
use serde_json::{json, Value};
use tower::ServiceExt;

fn config(tweak: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::parse(&[], &|k| std::env::var(k).ok()).unwrap();
    tweak(&mut c);
    c
}

fn router_with(cfg: &Config) -> (axum::Router, deadpool_postgres::Pool) {
    let pool = db::pool(cfg).unwrap();
    (app(Arc::new(api::AppState { pool: pool.clone() }), cfg.max_body), pool)
}

fn router() -> axum::Router {
    router_with(&config(|_| {})).0
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    /// A problem-details answer with this status, and its body.
    fn problem(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{}", String::from_utf8_lossy(&self.body));
        assert_eq!(self.headers[header::CONTENT_TYPE], "application/problem+json");
        let p = self.json();
        assert_eq!(p["status"], status.as_u16());
        p
    }
}

async fn send(r: &axum::Router, req: Request<Body>) -> Answer {
    let res = r.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer { status, headers, body }
}

async fn get(r: &axum::Router, uri: &str) -> Answer {
    send(r, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn post(r: &axum::Router, uri: &str, content_type: &str, body: Vec<u8>) -> Answer {
    send(r, Request::post(uri).header(header::CONTENT_TYPE, content_type).body(Body::from(body)).unwrap())
        .await
}

async fn post_json(r: &axum::Router, uri: &str, v: Value) -> Answer {
    post(r, uri, "application/json", serde_json::to_vec(&v).unwrap()).await
}

/// A camera frame and the card it shows, as the database has them.
async fn frame(pool: &deadpool_postgres::Pool) -> (Vec<u8>, String) {
    let c = pool.get().await.unwrap();
    let r = c.query_one("SELECT image, card FROM demo_frames ORDER BY id LIMIT 1", &[]).await.unwrap();
    (r.get(0), r.get(1))
}

fn multipart(images: &[&[u8]]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for (i, img) in images.iter().enumerate() {
        body.extend_from_slice(
            format!("--XyZ\r\ncontent-disposition: form-data; name=\"image\"; filename=\"f{i}.jpg\"\r\ncontent-type: image/jpeg\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(img);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--XyZ--\r\n");
    ("multipart/form-data; boundary=XyZ".into(), body)
}

/// A valid PNG header claiming `w` x `h` pixels, and no pixel data.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    fn crc(data: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        let body: Vec<u8> = kind.iter().chain(data).copied().collect();
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc(&body).to_be_bytes());
    };
    let ihdr: Vec<u8> =
        w.to_be_bytes().iter().chain(&h.to_be_bytes()).chain(&[8, 0, 0, 0, 0]).copied().collect();
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[]);
    chunk(b"IEND", &[]);
    png
}

#[tokio::test]
async fn health_says_ready_with_the_model_and_the_set() {
    let r = router();
    assert_eq!(get(&r, "/healthz").await.json()["status"], "ok");
    for path in ["/readyz", "/health"] {
        let h = get(&r, path).await;
        assert_eq!(h.status, StatusCode::OK, "{}", String::from_utf8_lossy(&h.body));
        let h = h.json();
        assert_eq!(h["status"], "ready");
        assert_eq!(h["extension_version"], "0.2.0");
        assert_eq!(h["models"][0]["name"], "demo");
        assert_eq!(h["models"][0]["ok"], true);
        assert_eq!(h["sets"][0]["name"], "demo_cards");
        assert_eq!(h["sets"][0]["embedded"], 48);
    }
}

#[tokio::test]
async fn a_frame_is_identified_raw_multipart_and_in_a_batch() {
    let (r, pool) = router_with(&config(|_| {}));
    let (image, card) = frame(&pool).await;
    let raw = post(&r, "/api/v1/identify?set=demo_cards&k=3", "image/jpeg", image.clone()).await;
    assert_eq!(raw.status, StatusCode::OK, "{}", String::from_utf8_lossy(&raw.body));
    let raw = raw.json();
    assert_eq!(raw["recognised"], true);
    assert_eq!(raw["model"], "demo");
    assert_eq!(raw["stamp"].as_str().unwrap().len(), 64);
    assert_eq!(raw["matches"].as_array().unwrap().len(), 3);
    assert_eq!(raw["matches"][0]["label"], card.as_str());
    assert_eq!(raw["matches"][0]["rank"], 1);
    assert_eq!(raw.get("head"), Some(&Value::Null), "present, and null: the set has no projection head");
    let (ct, body) = multipart(&[&image]);
    let form = post(&r, "/api/v1/identify?set=demo_cards&k=3", &ct, body).await.json();
    assert_eq!(form["matches"], raw["matches"], "the same answer as a form field");
    // thresholds leave matches out; a batch answers per frame, in order
    let none = post(&r, "/api/v1/identify?set=demo_cards&min_score=0.9999", "image/jpeg", image.clone())
        .await
        .json();
    assert_eq!(none["recognised"], false);
    let bad = b"not an image".to_vec();
    let (ct, body) = multipart(&[&image, &image]);
    let batch = post(&r, "/api/v1/identify/batch?set=demo_cards", &ct, body).await.json();
    assert_eq!(batch.as_array().unwrap().len(), 2);
    assert_eq!(batch[1]["matches"][0]["label"], card.as_str());
    // the reference's image and thumbnail behind the URLs
    let thumb = get(&r, raw["matches"][0]["thumbnail_url"].as_str().unwrap()).await;
    assert_eq!(thumb.status, StatusCode::OK);
    assert_eq!(thumb.headers[header::CONTENT_TYPE], "image/jpeg");
    assert_eq!(thumb.headers[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
    let (ct, body) = multipart(&[&image, &bad]);
    post(&r, "/api/v1/identify/batch?set=demo_cards", &ct, body)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn bad_requests_are_problems_with_their_sqlstate_never_500() {
    let (r, pool) = router_with(&config(|c| c.max_body = 1 << 20));
    let (image, _) = frame(&pool).await;
    let p = post(&r, "/api/v1/identify?set=demo_cards", "image/jpeg", b"GIF89a broken".to_vec())
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(p["sqlstate"], "22023");
    assert!(p["hint"].as_str().is_some());
    let p = post(&r, "/api/v1/identify?set=demo_cards", "image/png", png_header(1, 200_000_000))
        .await
        .problem(StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(p["sqlstate"], "54000");
    post(&r, "/api/v1/identify?set=demo_cards", "image/jpeg", vec![0; 2 << 20])
        .await
        .problem(StatusCode::PAYLOAD_TOO_LARGE);
    post(&r, "/api/v1/identify?set=nope", "image/jpeg", image.clone()).await.problem(StatusCode::NOT_FOUND);
    post(&r, "/api/v1/identify?set=demo_cards&k=0", "image/jpeg", image.clone())
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    post(&r, "/api/v1/identify?set=demo_cards", "image/jpeg", Vec::new())
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    let (ct, _) = multipart(&[]);
    post(&r, "/api/v1/identify?set=demo_cards", &ct, b"--XyZ--\r\n".to_vec())
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    post(&r, "/api/v1/identify", "image/jpeg", image.clone()).await.problem(StatusCode::BAD_REQUEST);
    get(&r, "/images/demo/999999").await.problem(StatusCode::NOT_FOUND);
    get(&r, "/images/nope/1").await.problem(StatusCode::NOT_FOUND);
    get(&r, "/images/demo/1/thumbnail?size=5000").await.problem(StatusCode::UNPROCESSABLE_ENTITY);
    get(&r, "/no/such/page").await.problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_statement_timeout_is_504_and_a_busy_pool_503_with_retry_after() {
    let (r, pool) = router_with(&config(|c| c.statement_timeout = Duration::from_millis(1)));
    let (image, _) = {
        let (_, p) = router_with(&config(|_| {}));
        frame(&p).await
    };
    let many: Vec<&[u8]> = (0..32).map(|_| image.as_slice()).collect();
    let (ct, body) = multipart(&many);
    let p = post(&r, "/api/v1/identify/batch?set=demo_cards", &ct, body)
        .await
        .problem(StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(p["sqlstate"], "57014");
    drop(pool);

    let (r, pool) = router_with(&config(|c| {
        c.pool_size = 1;
        c.pool_wait = Duration::from_millis(100);
    }));
    let held = pool.get().await.unwrap();
    let a = get(&r, "/api/v1/collections").await;
    a.problem(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.headers[header::RETRY_AFTER], "1");
    drop(held);
    assert_eq!(get(&r, "/api/v1/collections").await.status, StatusCode::OK);
}

#[tokio::test]
async fn images_carry_etags_and_a_changed_version_is_not_cached_for_long() {
    let r = router();
    let first = get(&r, "/refs/demo_cards/1").await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("image/"));
    assert_eq!(first.headers[header::CACHE_CONTROL], "no-cache", "no version in the URL");
    let etag = first.headers[header::ETAG].to_str().unwrap().to_string();
    let again = send(
        &r,
        Request::get("/refs/demo_cards/1").header(header::IF_NONE_MATCH, &etag).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    let thumb = get(&r, "/refs/demo_cards/1/thumbnail?size=64").await;
    assert_eq!(thumb.headers[header::CONTENT_TYPE], "image/jpeg");
    assert_ne!(thumb.headers[header::ETAG].to_str().unwrap(), etag, "a thumbnail has its own tag");
    // the thumbnail refresh stored for this content (examples/web.sql asks for 256 px)
    let (r2, pool) = router_with(&config(|_| {}));
    let stored: Vec<u8> = pool
        .get()
        .await
        .unwrap()
        .query_one(
            "SELECT t.jpeg FROM clip.thumbnail t JOIN clip.embedding e ON e.collection = t.collection
             AND e.content_sha256 = t.content_sha256 WHERE t.collection = 'demo_cards' AND e.image_id = 1 AND t.size = 256",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(get(&r2, "/refs/demo_cards/1/thumbnail").await.body, stored);
    let stale = get(&r, "/refs/demo_cards/1?v=0000000000000000").await;
    assert_eq!(stale.headers[header::CACHE_CONTROL], "no-cache");
}

#[tokio::test]
async fn labels_from_the_api_queue_undo_history_and_conflicts() {
    let r = router();
    let base = "/api/v1/collections/demo/classifiers/api_test";
    let cols = get(&r, "/api/v1/collections").await.json();
    assert!(cols.as_array().unwrap().iter().any(|c| c["name"] == "demo" && c["embedded"] == 242));
    let next = get(&r, &format!("{base}/next?n=5")).await.json();
    let ids: Vec<i64> = next.as_array().unwrap().iter().map(|n| n["image_id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 5);
    let exclude = ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let more = get(&r, &format!("{base}/next?n=5&exclude={exclude}")).await.json();
    assert!(more.as_array().unwrap().iter().all(|n| !ids.contains(&n["image_id"].as_i64().unwrap())));

    let l = post_json(
        &r,
        &format!("{base}/labels"),
        json!({"image_ids": [ids[0], ids[1]], "label": "keep", "labelled_by": "ann"}),
    )
    .await;
    assert_eq!(l.json(), json!({"changed": 2, "refitted_version": null}));
    post_json(
        &r,
        &format!("{base}/labels"),
        json!({"image_ids": [ids[2]], "label": "trash", "labelled_by": "ann"}),
    )
    .await;
    let info = get(&r, base).await.json();
    assert_eq!(info["classes"], json!(["keep", "trash"]));
    assert_eq!(info["labelled"], 3);
    let u = post_json(&r, &format!("{base}/undo"), json!({"labelled_by": "ann"})).await.json();
    assert_eq!(u, json!([{"image_id": ids[2], "label": null, "previous": "trash"}]));
    let h = get(&r, &format!("{base}/history?labelled_by=ann")).await.json();
    assert_eq!(h.as_array().unwrap().len(), 4);
    assert_eq!(h[0]["undo"], true);
    // someone else changed the label since: the undo is refused, 409
    post_json(
        &r,
        &format!("{base}/labels"),
        json!({"image_ids": [ids[1]], "label": "trash", "labelled_by": "bob"}),
    )
    .await;
    let p = post_json(&r, &format!("{base}/undo"), json!({"labelled_by": "ann"}))
        .await
        .problem(StatusCode::CONFLICT);
    assert_eq!(p["sqlstate"], "55000");
    assert_eq!(
        post_json(&r, &format!("{base}/undo"), json!({"labelled_by": "nobody"})).await.json(),
        json!([])
    );
    post_json(&r, &format!("{base}/undo"), json!({"labelled_by": "ann", "steps": 0}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    post_json(&r, &format!("{base}/labels"), json!({"image_ids": [1], "label": ""}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY);
    post_json(
        &r,
        "/api/v1/collections/demo/classifiers/Bad-Name/labels",
        json!({"image_ids": [1], "label": "x"}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY);
    get(&r, &format!("{base}/next?mode=sideways")).await.problem(StatusCode::UNPROCESSABLE_ENTITY);
    get(&r, &format!("{base}/next?exclude=1,x")).await.problem(StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        post(&r, &format!("{base}/labels"), "application/json", b"{".to_vec()).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn the_openapi_document_describes_the_routes() {
    let doc = get(&router(), "/openapi.json").await.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/api/v1/identify",
        "/api/v1/identify/batch",
        "/refs/{set}/{reference_id}",
        "/healthz",
        "/readyz",
        "/api/v1/collections/{collection}/classifiers/{classifier}/labels",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }
}

#[tokio::test]
async fn the_grid_filters_and_sorts_by_prediction_label_and_similarity() {
    let (r, pool) = router_with(&config(|_| {}));
    let grid = |q: &str| format!("/api/v1/collections/demo/grid?{q}");
    let all = get(&r, &grid("limit=500")).await.json();
    assert_eq!(all["total"], 242);
    assert_eq!(all["fitted"], false);
    let ids: Vec<i64> =
        all["tiles"].as_array().unwrap().iter().map(|t| t["image_id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "by id without a classifier");

    let red = get(&r, &grid("text=a%20red%20star&limit=20")).await.json();
    let sims: Vec<f64> =
        red["tiles"].as_array().unwrap().iter().map(|t| t["similarity"].as_f64().unwrap()).collect();
    assert_eq!(sims.len(), 20);
    assert!(sims.windows(2).all(|w| w[0] >= w[1]), "most similar first: {sims:?}");
    let like = get(&r, &grid("like=5&limit=3")).await.json();
    assert_eq!(like["tiles"][0]["image_id"], 241, "the exact copy of image 5 is the most like it");

    // a classifier fitted on 12 labels: its predictions filter and sort the grid
    let c = pool.get().await.unwrap();
    let truth =
        c.query("SELECT id, packaged FROM demo_images WHERE id <= 240 ORDER BY id", &[]).await.unwrap();
    let pick = |k: &str| -> Vec<i64> {
        truth
            .iter()
            .filter(|t| t.get::<_, &str>(1) == k)
            .take(6)
            .map(|t| i64::from(t.get::<_, i32>(0)))
            .collect()
    };
    for k in ["packaged", "loose"] {
        let body = json!({"image_ids": pick(k), "label": k, "labelled_by": "grid"});
        assert_eq!(
            post_json(&r, "/api/v1/collections/demo/classifiers/grid_test/labels", body).await.status,
            StatusCode::OK
        );
    }
    c.execute("SELECT * FROM clip.fit_classifier('demo', 'grid_test', '{\"folds\": 3}')", &[]).await.unwrap();
    let packaged =
        get(&r, &grid("classifier=grid_test&class=packaged&sort=probability_desc&limit=500")).await.json();
    let tiles = packaged["tiles"].as_array().unwrap();
    assert!(!tiles.is_empty() && tiles.iter().all(|t| t["prediction"] == "packaged"));
    let ps: Vec<f64> = tiles.iter().map(|t| t["probability"].as_f64().unwrap()).collect();
    assert!(ps.windows(2).all(|w| w[0] >= w[1]));
    let sure =
        get(&r, &grid("classifier=grid_test&class=packaged&min_probability=0.8&limit=500")).await.json();
    assert_eq!(sure["total"].as_u64().unwrap() as usize, ps.iter().filter(|p| **p >= 0.8 - 1e-6).count());
    let labelled = get(&r, &grid("classifier=grid_test&labelled=yes&limit=500")).await.json();
    assert_eq!(labelled["total"], 12);
    assert!(labelled["tiles"].as_array().unwrap().iter().all(|t| t["label"].is_string()));
    let unsure = get(&r, &grid("classifier=grid_test&sort=uncertainty&limit=5")).await.json();
    let us: Vec<f64> =
        unsure["tiles"].as_array().unwrap().iter().map(|t| t["uncertainty"].as_f64().unwrap()).collect();
    assert!(us.windows(2).all(|w| w[0] >= w[1]));

    // an attribute's confidence and a cluster filter the grid and show on each tile
    let card: i64 = c
        .query_one(
            "SELECT count(*) FROM clip.feature_image_attribute WHERE collection = 'demo' AND attribute_code = 'card'
             AND confidence >= 0.5",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let cards = get(&r, &grid("attribute=card&min_confidence=0.5&limit=500")).await.json();
    assert_eq!(cards["total"], card);
    assert!(cards["tiles"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["attribute_confidence"].as_f64().unwrap() >= 0.5));
    c.execute("SELECT count(*) FROM clip.kmeans('demo', 'grid_k', 3)", &[]).await.unwrap();
    let in_1: i64 = c
        .query_one(
            "SELECT count(*) FROM clip.cluster_assignment WHERE clustering = 'grid_k' AND cluster = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let one = get(&r, &grid("clustering=grid_k&cluster=1&limit=500")).await.json();
    assert_eq!(one["total"], in_1);
    assert!(one["tiles"].as_array().unwrap().iter().all(|t| t["cluster"] == 1));

    get(&r, &grid("sort=sideways")).await.problem(StatusCode::UNPROCESSABLE_ENTITY);
    get(&r, &grid("text=x&like=1")).await.problem(StatusCode::UNPROCESSABLE_ENTITY);
    get(&r, &grid("labelled=maybe")).await.problem(StatusCode::UNPROCESSABLE_ENTITY);
    get(&r, &grid("classifier=grid_test&class=zebra")).await.problem(StatusCode::UNPROCESSABLE_ENTITY);
    get(&r, "/api/v1/collections/nope/grid").await.problem(StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn duplicates_come_in_groups_with_their_sizes() {
    let r = router();
    let groups = get(&r, "/api/v1/collections/demo/duplicates").await.json();
    let groups = groups.as_array().unwrap();
    let ids = |g: &Value| -> Vec<i64> {
        g["images"].as_array().unwrap().iter().map(|m| m["image_id"].as_i64().unwrap()).collect()
    };
    let exact = groups.iter().find(|g| g["kind"] == "exact").expect("an exact group");
    assert_eq!(ids(exact), vec![5, 241]);
    assert_eq!(exact["images"][0]["bytes"], exact["images"][1]["bytes"]);
    let near =
        groups.iter().find(|g| g["kind"] == "near" && ids(g) == vec![7, 242]).expect("the re-encoded copy");
    assert!(
        near["images"][0]["bytes"].as_i64() > near["images"][1]["bytes"].as_i64(),
        "the original is larger"
    );
    assert!(near["similarity"].as_f64().unwrap() >= 0.95);
}

#[tokio::test]
async fn attributes_come_with_their_calibration_and_histogram() {
    let (r, pool) = router_with(&config(|_| {}));
    let a = get(&r, "/api/v1/collections/demo/attributes").await.json();
    assert_eq!(a["vocabulary"], "demo");
    let card =
        a["attributes"].as_array().unwrap().iter().find(|x| x["code"] == "card").expect("the card attribute");
    let c = pool.get().await.unwrap();
    let accepted: i64 = c
        .query_one(
            "SELECT count(*) FROM clip.feature_image_attribute WHERE collection = 'demo' AND attribute_code = 'card'
             AND confidence >= $1::float8",
            &[&card["threshold"].as_f64().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(card["accepted"], accepted);
    assert_eq!(card["percentiles"].as_array().unwrap().len(), 6);
    let bins = get(&r, "/api/v1/collections/demo/attributes/card/histogram?bins=10").await.json();
    let bins = bins.as_array().unwrap();
    assert_eq!(bins.len(), 10);
    assert_eq!(
        bins.iter().map(|b| b["images"].as_i64().unwrap()).sum::<i64>(),
        242,
        "every scored image in a bin"
    );
    get(&r, "/api/v1/collections/demo_cards/attributes").await.problem(StatusCode::NOT_FOUND);
    get(&r, "/api/v1/collections/demo/attributes/nope/histogram").await.problem(StatusCode::NOT_FOUND);
}
