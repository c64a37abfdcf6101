//! The HTTP API. Every ML operation is one `clip.*` call: the extension is the one source of
//! behaviour, this server only carries requests and renders answers.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use deadpool_postgres::{Object, Pool};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::problem::{Doing, Path, Problem, ProblemResponses, Query, Result};

pub struct AppState {
    pub pool: Pool,
}

pub type Shared = State<Arc<AppState>>;

impl AppState {
    /// A connection from the pool, or 503 when none comes free in time.
    pub async fn conn(&self) -> Result<Object> {
        self.pool.get().await.map_err(Problem::pool)
    }
}

// --- identification -----------------------------------------------------------------------

#[derive(Debug, Deserialize, IntoParams)]
pub struct IdentifyParams {
    /// The reference set to match against
    pub set: String,
    /// How many matches
    #[param(minimum = 1, maximum = 100)]
    pub k: Option<i32>,
    /// Leave out matches scoring below this (cosine similarity)
    pub min_score: Option<f32>,
    /// Leave out matches whose margin over the next label is below this
    pub min_margin: Option<f32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Match {
    pub rank: i32,
    pub reference_id: i64,
    pub label: String,
    pub variant: Option<String>,
    pub score: f32,
    pub margin: f32,
    pub image_url: String,
    pub thumbnail_url: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Identified {
    pub set: String,
    pub model: String,
    /// The model's stamp (SHA-256 over its files) that the references were embedded with
    pub stamp: String,
    /// Whether any reference matched within the thresholds
    pub recognised: bool,
    /// The version of the reference set's projection head that compared the frame (null: the
    /// set has none, it is off, or nothing matched)
    pub head: Option<i32>,
    pub matches: Vec<Match>,
}

/// Image bytes (for the OpenAPI description: a binary string, not an array of numbers).
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct ImageBytes(Vec<u8>);

/// A form of images (for the OpenAPI description; the handlers read the fields themselves).
#[allow(dead_code)]
#[derive(ToSchema)]
pub struct ImageForm {
    /// One field `image` per image, in order
    #[schema(value_type = Vec<String>, format = Binary)]
    image: Vec<Vec<u8>>,
}

/// The images of a request: the multipart fields named `image`, or the whole body.
async fn images_of(req: Request) -> Result<Vec<Bytes>> {
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let too_large = |status: StatusCode, text: String| Problem::new(status, text);
    if !multipart {
        let body = Bytes::from_request(req, &()).await.map_err(|r| too_large(r.status(), r.body_text()))?;
        if body.is_empty() {
            return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "the request has no image"));
        }
        return Ok(vec![body]);
    }
    let mut form =
        Multipart::from_request(req, &()).await.map_err(|r| too_large(r.status(), r.body_text()))?;
    let mut images = Vec::new();
    while let Some(field) = form.next_field().await.map_err(|e| too_large(e.status(), e.body_text()))? {
        if field.name() == Some("image") {
            images.push(field.bytes().await.map_err(|e| too_large(e.status(), e.body_text()))?);
        }
    }
    if images.is_empty() {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "the form has no field named image"));
    }
    Ok(images)
}

/// The set's model and stamp, or 404.
async fn set_model(c: &Object, set: &str) -> Result<(String, String)> {
    let row = c
        .query_opt(
            "SELECT c.model, m.stamp FROM clip.reference_set r JOIN clip.collection c ON c.name = r.name
             JOIN clip.model m ON m.name = c.model WHERE r.name = $1",
            &[&set],
        )
        .await
        .map_err(Problem::of_db(Doing::Model))?;
    let row = row.ok_or_else(|| Problem::not_found(format!("reference set \"{set}\" does not exist")))?;
    Ok((row.get(0), row.get(1)))
}

fn check_k(k: Option<i32>) -> Result<i32> {
    match k.unwrap_or(1) {
        k @ 1..=100 => Ok(k),
        k => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("k must be between 1 and 100, not {k}"),
        )),
    }
}

/// The URL of a row's image and of its thumbnail under `/images` (a collection's rows) or
/// `/refs` (a reference set's), versioned by the content hash so that a changed image gets a
/// new URL.
pub fn image_url(under: &str, collection: &str, id: i64, hash: Option<&str>) -> (String, String) {
    let v = hash.map(|h| format!("?v={}", &h[..h.len().min(16)])).unwrap_or_default();
    (format!("/{under}/{collection}/{id}{v}"), format!("/{under}/{collection}/{id}/thumbnail{v}"))
}

/// SQL for the stored content hash (hex) of row `id` of collection `collection` (both SQL
/// expressions) under the collection's current model: what versions the row's image URLs.
pub fn content_hash_sql(collection: &str, id: &str) -> String {
    format!(
        "(SELECT encode(e.content_sha256, 'hex') FROM clip.embedding e JOIN clip.collection c
           ON c.name = e.collection AND c.model = e.model WHERE e.collection = {collection} AND e.image_id = {id})"
    )
}

async fn identify_frames(s: &AppState, p: &IdentifyParams, images: Vec<Bytes>) -> Result<Vec<Identified>> {
    let k = check_k(p.k)?;
    let c = s.conn().await?;
    let (model, stamp) = set_model(&c, &p.set).await?;
    let frames: Vec<&[u8]> = images.iter().map(|b| b.as_ref()).collect();
    let sql = format!(
        "SELECT i.frame, i.rank, i.reference_id, i.label, i.variant, i.score, i.margin, {}, i.head
         FROM clip.identify_many($1::bytea[], $2, $3, $4::real, $5::real) i ORDER BY i.frame, i.rank",
        content_hash_sql("$2", "i.reference_id")
    );
    let rows = c
        .query(&sql, &[&frames, &p.set, &k, &p.min_score, &p.min_margin])
        .await
        .map_err(Problem::of_db(Doing::Model))?;
    let mut out: Vec<Identified> = (0..frames.len())
        .map(|_| Identified {
            set: p.set.clone(),
            model: model.clone(),
            stamp: stamp.clone(),
            recognised: false,
            head: None,
            matches: Vec::new(),
        })
        .collect();
    for r in rows {
        let frame: i32 = r.get(0);
        let id: i64 = r.get(2);
        let (image_url, thumbnail_url) = image_url("refs", &p.set, id, r.get::<_, Option<&str>>(7));
        if let Some(f) = out.get_mut((frame - 1) as usize) {
            f.recognised = true;
            f.head = r.get(8);
            f.matches.push(Match {
                rank: r.get(1),
                reference_id: id,
                label: r.get(3),
                variant: r.get(4),
                score: r.get(5),
                margin: r.get(6),
                image_url,
                thumbnail_url,
            });
        }
    }
    Ok(out)
}

/// Identify one image: a multipart field `image` or the raw image as the body.
#[utoipa::path(post, path = "/api/v1/identify", params(IdentifyParams),
    request_body(content = ImageBytes, description = "the image (JPEG, PNG, WebP, GIF, BMP, TIFF), raw or as multipart field `image`",
                 content_type = "application/octet-stream"),
    responses((status = 200, body = Identified), ProblemResponses))]
pub async fn identify(
    State(s): Shared,
    Query(p): Query<IdentifyParams>,
    req: Request,
) -> Result<Json<Identified>> {
    let mut images = images_of(req).await?;
    images.truncate(1);
    Ok(Json(identify_frames(&s, &p, images).await?.remove(0)))
}

/// Identify many frames at once (multipart fields `image`, in order): one answer per frame.
#[utoipa::path(post, path = "/api/v1/identify/batch", params(IdentifyParams),
    request_body(content = ImageForm, description = "one or more fields `image`", content_type = "multipart/form-data"),
    responses((status = 200, body = Vec<Identified>), ProblemResponses))]
pub async fn identify_batch(
    State(s): Shared,
    Query(p): Query<IdentifyParams>,
    req: Request,
) -> Result<Json<Vec<Identified>>> {
    let images = images_of(req).await?;
    if images.len() > 64 {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{} frames; at most 64 a request", images.len()),
        ));
    }
    Ok(Json(identify_frames(&s, &p, images).await?))
}

// --- images -----------------------------------------------------------------------------

#[derive(Debug, Deserialize, IntoParams)]
pub struct ImageParams {
    /// The content version the URL was made for (a prefix of the SHA-256): a matching one is cached for a year
    pub v: Option<String>,
    /// Thumbnail size: the longer side in pixels (16 to 1024, default 256)
    pub size: Option<i32>,
}

/// The MIME type of image bytes, from their first bytes.
pub fn mime_of(b: &[u8]) -> &'static str {
    match b {
        [0xff, 0xd8, 0xff, ..] => "image/jpeg",
        [0x89, b'P', b'N', b'G', ..] => "image/png",
        [b'G', b'I', b'F', b'8', ..] => "image/gif",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "image/webp",
        [b'B', b'M', ..] => "image/bmp",
        [b'I', b'I', 42, 0, ..] | [b'M', b'M', 0, 42, ..] => "image/tiff",
        _ => "application/octet-stream",
    }
}

async fn serve_image(
    s: &AppState,
    collection: &str,
    id: i64,
    p: &ImageParams,
    thumb: bool,
    headers: &HeaderMap,
) -> Result<Response> {
    let size = p.size.unwrap_or(256);
    let c = s.conn().await?;
    // the hash of the bytes as read now; the thumbnail (the one refresh stored for this content,
    // else made now) only when the browser's copy is old
    let seen = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_matches('"')
        .to_string();
    let row = c
        .query_one(
            "WITH i AS (SELECT clip.image($1, $2) AS b), h AS (SELECT b, sha256(b) AS sha, encode(sha256(b), 'hex') AS hash FROM i)
             SELECT h.hash, CASE WHEN h.hash || $5 = $4 THEN NULL
                                 WHEN $3 THEN coalesce((SELECT t.jpeg FROM clip.thumbnail t WHERE t.collection = $1
                                                          AND t.content_sha256 = h.sha AND t.size = $6),
                                                       clip.make_thumbnail(h.b, $6))
                                 ELSE h.b END FROM h",
            &[&collection, &id, &thumb, &seen, &(if thumb { format!("-{size}") } else { String::new() }), &size],
        )
        .await
        .map_err(Problem::of_db(Doing::Model))?;
    let hash: String = row.get(0);
    let etag = if thumb { format!("\"{hash}-{size}\"") } else { format!("\"{hash}\"") };
    let cache = if p.v.as_deref().is_some_and(|v| !v.is_empty() && hash.starts_with(v)) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut r = match row.get::<_, Option<Vec<u8>>>(1) {
        None => StatusCode::NOT_MODIFIED.into_response(),
        Some(bytes) => {
            let mime = mime_of(&bytes);
            ([(header::CONTENT_TYPE, mime)], bytes).into_response()
        }
    };
    let h = r.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    Ok(r)
}

/// A row's image, by collection and id (never by a path a client gives).
#[utoipa::path(get, path = "/images/{collection}/{id}", params(("collection" = String, Path), ("id" = i64, Path), ImageParams),
    responses((status = 200, content_type = "image/*", body = ImageBytes), (status = 304), ProblemResponses))]
pub async fn image(
    State(s): Shared,
    Path((collection, id)): Path<(String, i64)>,
    Query(p): Query<ImageParams>,
    h: HeaderMap,
) -> Result<Response> {
    serve_image(&s, &collection, id, &p, false, &h).await
}

/// A row's thumbnail (JPEG), by collection and id.
#[utoipa::path(get, path = "/images/{collection}/{id}/thumbnail", params(("collection" = String, Path), ("id" = i64, Path), ImageParams),
    responses((status = 200, content_type = "image/jpeg", body = ImageBytes), (status = 304), ProblemResponses))]
pub async fn thumbnail(
    State(s): Shared,
    Path((collection, id)): Path<(String, i64)>,
    Query(p): Query<ImageParams>,
    h: HeaderMap,
) -> Result<Response> {
    serve_image(&s, &collection, id, &p, true, &h).await
}

/// A reference's image (a reference set is a collection).
#[utoipa::path(get, path = "/refs/{set}/{reference_id}", params(("set" = String, Path), ("reference_id" = i64, Path), ImageParams),
    responses((status = 200, content_type = "image/*", body = ImageBytes), (status = 304), ProblemResponses))]
pub async fn reference(
    State(s): Shared,
    Path((set, id)): Path<(String, i64)>,
    Query(p): Query<ImageParams>,
    h: HeaderMap,
) -> Result<Response> {
    serve_image(&s, &set, id, &p, false, &h).await
}

/// A reference's thumbnail (JPEG).
#[utoipa::path(get, path = "/refs/{set}/{reference_id}/thumbnail", params(("set" = String, Path), ("reference_id" = i64, Path), ImageParams),
    responses((status = 200, content_type = "image/jpeg", body = ImageBytes), (status = 304), ProblemResponses))]
pub async fn reference_thumbnail(
    State(s): Shared,
    Path((set, id)): Path<(String, i64)>,
    Query(p): Query<ImageParams>,
    h: HeaderMap,
) -> Result<Response> {
    serve_image(&s, &set, id, &p, true, &h).await
}
