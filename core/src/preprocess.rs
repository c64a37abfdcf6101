//! Image bytes to the model's input tensor, the way open_clip's eval transform does it:
//! decode, EXIF orientation, Resize(shortest side, bicubic), CenterCrop, convert("RGB"),
//! ToTensor, Normalize.
//!
//! The reference runs torchvision on a PIL image, so the PIL details that change pixels are
//! reproduced: palette and 1-bit images are resized with NEAREST (PIL ignores the requested
//! filter for them), images with alpha are resized premultiplied (PIL's RGBa) and the alpha is
//! dropped afterwards, the long side is truncated as torchvision computes it, and the crop
//! offset is rounded half-to-even as Python's `round` does.

use std::io::Cursor;
use std::sync::{Condvar, Mutex};

use fast_image_resize::images::Image as FirImage;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};
use serde::{Deserialize, Serialize};

use crate::error::{ClipError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    Bicubic,
    Bilinear,
    Nearest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeMode {
    /// Shortest side to `size`, then centre crop (open_clip's default).
    Shortest,
    /// Both sides to `size`, ignoring the aspect ratio.
    Squash,
}

/// Whose pipeline the pixels follow. open_clip (torchvision on PIL) is what the models were
/// evaluated with; the other two reproduce vectors made by other software, so that they can be
/// mixed with pg_clip's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavour {
    /// EXIF orientation applied; PIL's resize of the image's own mode (palette images NEAREST,
    /// alpha premultiplied), then crop (offset rounded half to even), then RGB.
    OpenClip,
    /// transformers' CLIPImageProcessor on `Image.open(...)`: no EXIF orientation, RGB first
    /// (do_convert_rgb, transparency onto white), resize, crop offset floored.
    Transformers,
    /// immich's loader: no EXIF orientation, RGB first, the long side as
    /// `int((long / short) * size)`, crop offset `int(side / 2 - size / 2)`.
    Immich,
}

impl Flavour {
    fn exif(self) -> bool {
        self == Flavour::OpenClip
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessConfig {
    pub size: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub interpolation: Interpolation,
    pub resize_mode: ResizeMode,
    /// Not in preprocess_cfg.json: a registration option.
    pub flavour: Flavour,
}

/// `visual/preprocess_cfg.json` as open_clip writes it; `size` is an int or `[h, w]`.
#[derive(Deserialize)]
struct RawConfig {
    size: serde_json::Value,
    mean: Vec<f32>,
    std: Vec<f32>,
    #[serde(default = "default_interp")]
    interpolation: String,
    #[serde(default = "default_resize_mode")]
    resize_mode: String,
}

fn default_interp() -> String {
    "bicubic".into()
}
fn default_resize_mode() -> String {
    "shortest".into()
}

impl PreprocessConfig {
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let size = match &raw.size {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::Array(a) if a.len() == 2 && a[0] == a[1] => a[0].as_u64(),
            _ => None,
        }
        .filter(|s| (1..=4096).contains(s))
        .ok_or_else(|| format!("\"size\" must be a positive integer or a square [h, w], got {}", raw.size))?;
        let three = |v: &Vec<f32>, what: &str| -> std::result::Result<[f32; 3], String> {
            <[f32; 3]>::try_from(v.as_slice())
                .map_err(|_| format!("\"{what}\" must have 3 values, got {}", v.len()))
        };
        let std = three(&raw.std, "std")?;
        if std.iter().any(|s| *s <= 0.0) {
            return Err("\"std\" values must be positive".into());
        }
        let interpolation = match raw.interpolation.as_str() {
            "bicubic" => Interpolation::Bicubic,
            "bilinear" => Interpolation::Bilinear,
            "nearest" => Interpolation::Nearest,
            other => {
                return Err(format!("unsupported interpolation \"{other}\" (bicubic, bilinear, nearest)"))
            }
        };
        let resize_mode = match raw.resize_mode.as_str() {
            "shortest" => ResizeMode::Shortest,
            "squash" => ResizeMode::Squash,
            other => return Err(format!("unsupported resize_mode \"{other}\" (shortest, squash)")),
        };
        Ok(PreprocessConfig {
            size: size as u32,
            mean: three(&raw.mean, "mean")?,
            std,
            interpolation,
            resize_mode,
            flavour: Flavour::OpenClip,
        })
    }

    /// Number of f32 values one image occupies in the NCHW input.
    pub fn tensor_len(&self) -> usize {
        3 * (self.size as usize) * (self.size as usize)
    }
}

/// A decoded image, already turned upright, plus what PIL would have called its mode.
#[derive(Debug)]
pub struct Decoded {
    pub image: DynamicImage,
    /// PIL opens it as mode "P" or "1" and so resizes it with NEAREST.
    pub pil_nearest: bool,
}

const ACCEPTED: &[ImageFormat] = &[
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Gif,
    ImageFormat::Bmp,
    ImageFormat::Tiff,
];

/// What one image may cost before any of its pixels is decoded: its pixel count, and the bytes
/// of the buffers preprocessing holds for it at once (decoded image, RGB(A) copy, resize
/// passes). Both come from settings only a superuser changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    pub max_pixels: u64,
    pub max_bytes: u64,
}

impl ImageLimits {
    /// For tests and tools that trust their images.
    pub const TRUSTED: ImageLimits = ImageLimits { max_pixels: u64::MAX, max_bytes: u64::MAX };
}

/// Bytes shared by the images a backend decodes in parallel: each decode takes its footprint
/// before it allocates and gives it back when done, so the decoding threads together never hold
/// more than the total. Every footprint is at most `max_bytes` (checked first), and `max_bytes`
/// is at most the total, so a waiting decode always gets its share once others finish.
pub struct Budget {
    total: u64,
    left: Mutex<u64>,
    freed: Condvar,
}

impl Budget {
    pub fn new(total: u64) -> Self {
        Budget { total, left: Mutex::new(total), freed: Condvar::new() }
    }

    fn take(&self, bytes: u64) -> Grant<'_> {
        let bytes = bytes.min(self.total);
        let mut left = self.left.lock().unwrap_or_else(|p| p.into_inner());
        while *left < bytes {
            left = self.freed.wait(left).unwrap_or_else(|p| p.into_inner());
        }
        *left -= bytes;
        Grant { budget: self, bytes }
    }
}

struct Grant<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Drop for Grant<'_> {
    fn drop(&mut self) {
        *self.budget.left.lock().unwrap_or_else(|p| p.into_inner()) += self.bytes;
        self.budget.freed.notify_all();
    }
}

/// Decode image bytes, refusing anything over `limits` before its pixels are decoded, and turn
/// the image upright by its EXIF orientation.
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<Decoded> {
    decode_as(bytes, Flavour::OpenClip, limits)
}

/// Decode as `flavour` does: upright (open_clip) or as stored (transformers, immich).
pub fn decode_as(bytes: &[u8], flavour: Flavour, limits: &ImageLimits) -> Result<Decoded> {
    let (decoder, format, w, h) = open(bytes, limits)?;
    check_bytes(w, h, decoder.total_bytes(), 0, limits)?;
    finish(decoder, format, bytes, flavour.exif())
}

/// The decoder of `bytes` with the image's size, after the checks that need only the header.
fn open<'a>(
    bytes: &'a [u8],
    limits: &ImageLimits,
) -> Result<(Box<dyn ImageDecoder + 'a>, ImageFormat, u32, u32)> {
    if bytes.is_empty() {
        return Err(ClipError::empty_image());
    }
    let format = image::guess_format(bytes).map_err(|_| ClipError::unknown_format(bytes))?;
    let name = format_name(format);
    if !ACCEPTED.contains(&format) {
        return Err(ClipError::unsupported_format(name));
    }
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        // the JPEG decoder would fill the missing part with grey; PIL refuses, and so do we
        return Err(ClipError::decode(name, "data ends before the end-of-image marker (truncated file)"));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // the decoders' own allocations (rows, palettes, frames) under the same byte limit
    let mut l = Limits::default();
    l.max_alloc = Some(limits.max_bytes);
    reader.limits(l);
    let decoder = reader.into_decoder().map_err(|e| ClipError::decode(name, e))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(ClipError::decode(name, format!("image has no pixels ({w}x{h})")));
    }
    if u64::from(w) * u64::from(h) > limits.max_pixels {
        return Err(ClipError::too_many_pixels(w, h, limits.max_pixels));
    }
    Ok((Box::new(decoder), format, w, h))
}

/// ERROR unless the decoded image, its 8-bit RGBA copy and `more` bytes fit `limits.max_bytes`.
/// (Sums saturate: a sum past u64 is over any limit.)
fn check_bytes(w: u32, h: u32, decoded: u64, more: u64, limits: &ImageLimits) -> Result<u64> {
    let total = decoded.saturating_add(u64::from(w) * u64::from(h) * 4).saturating_add(more);
    if total > limits.max_bytes {
        return Err(ClipError::too_many_bytes(w, h, total, limits.max_bytes));
    }
    Ok(total)
}

fn finish(
    mut decoder: Box<dyn ImageDecoder + '_>,
    format: ImageFormat,
    bytes: &[u8],
    exif: bool,
) -> Result<Decoded> {
    let name = format_name(format);
    // A bad EXIF block is not worth losing the image for: PIL's exif_transpose ignores it too.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| ClipError::decode(name, e))?;
    if exif {
        image.apply_orientation(orientation);
    }
    Ok(Decoded { image, pil_nearest: pil_resizes_nearest(format, bytes) })
}

/// Walk the JPEG's marker segments and entropy-coded data from SOI to EOI. Searching for an
/// EOI byte pair is not enough: EXIF thumbnails carry their own, and motion photos append a
/// video after the real one. Inside entropy-coded data 0xFF is always followed by 0x00 or a
/// restart marker, so the first other marker ends the scan.
fn jpeg_is_complete(b: &[u8]) -> bool {
    let mut i = 2; // after SOI
    while i + 1 < b.len() {
        if b[i] != 0xFF {
            return false;
        }
        let marker = b[i + 1];
        match marker {
            0xD9 => return true,          // EOI
            0xFF => i += 1,               // fill byte
            0x01 | 0xD0..=0xD7 => i += 2, // TEM, RSTn: no length
            _ => {
                if i + 3 >= b.len() {
                    return false;
                }
                let len = usize::from(b[i + 2]) << 8 | usize::from(b[i + 3]);
                i += 2 + len;
                if marker == 0xDA {
                    // SOS: skip entropy-coded data up to the next real marker
                    while i + 1 < b.len()
                        && !(b[i] == 0xFF && b[i + 1] != 0x00 && !(0xD0..=0xD7).contains(&b[i + 1]))
                    {
                        i += 1;
                    }
                }
            }
        }
    }
    false
}

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Gif => "GIF",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::Pnm => "PNM",
        ImageFormat::Tga => "TGA",
        ImageFormat::Ico => "ICO",
        ImageFormat::Hdr => "HDR",
        ImageFormat::OpenExr => "OpenEXR",
        ImageFormat::Avif => "AVIF",
        ImageFormat::Qoi => "QOI",
        ImageFormat::Dds => "DDS",
        ImageFormat::Farbfeld => "farbfeld",
        _ => "unknown",
    }
}

/// GIFs are always palette images in PIL; PNGs are when their IHDR colour type is 3 (indexed)
/// or they are 1-bit grey (mode "1").
fn pil_resizes_nearest(format: ImageFormat, bytes: &[u8]) -> bool {
    match format {
        ImageFormat::Gif => true,
        // IHDR sits right after the 8-byte signature: length(4) type(4) w(4) h(4) depth(1) colour(1)
        ImageFormat::Png if bytes.len() > 25 => bytes[25] == 3 || (bytes[25] == 0 && bytes[24] == 1),
        _ => false,
    }
}

/// The size an image of `w` x `h` is resized to before the crop, or an ERROR when that size
/// does not fit in `max_bytes` as 8-bit RGBA (an extreme aspect ratio: 1 x 20,000,000 would
/// become 224 x 4,480,000,000). Computed in f64, so nothing overflows on the way.
pub fn resize_target(w: u32, h: u32, cfg: &PreprocessConfig, max_bytes: u64) -> Result<(u32, u32)> {
    let size = cfg.size;
    match cfg.resize_mode {
        ResizeMode::Squash => Ok((size, size)),
        ResizeMode::Shortest => {
            // torchvision and transformers: new_long = int(size * long / short), in double
            // precision; immich: int((long / short) * size), which rounds differently
            let (short, long) = if w <= h { (w, h) } else { (h, w) };
            let (size_f, long_f, short_f) = (f64::from(size), f64::from(long), f64::from(short.max(1)));
            let new_long = match cfg.flavour {
                Flavour::Immich => (long_f / short_f * size_f).floor(),
                _ => (size_f * long_f / short_f).floor(),
            };
            let bytes = new_long * f64::from(size) * 4.0;
            if new_long > f64::from(u32::MAX) || bytes > max_bytes as f64 {
                return Err(ClipError::extreme_aspect(w, h, size, new_long, max_bytes));
            }
            let new_long = new_long as u32;
            Ok(if w <= h { (size, new_long) } else { (new_long, size) })
        }
    }
}

/// Bytes the resize holds besides the source: the target and the intermediate image of the
/// two-pass convolution (one side resized, the other not yet), as 8-bit RGBA.
fn resize_bytes(w: u32, h: u32, new_w: u32, new_h: u32) -> u64 {
    let px = |a: u32, b: u32| u64::from(a) * u64::from(b) * 4;
    px(new_w, new_h).saturating_add(px(new_w, h).max(px(w, new_h)))
}

/// Resized and centre-cropped RGB pixels, before scaling and normalisation.
pub fn resize_crop(decoded: &Decoded, cfg: &PreprocessConfig, limits: &ImageLimits) -> Result<RgbImage> {
    let img = &decoded.image;
    let (w, h) = (img.width(), img.height());
    let size = cfg.size;
    let (new_w, new_h) = resize_target(w, h, cfg, limits.max_bytes)?;
    // transformers and immich convert to RGB before resizing: no NEAREST for palette images,
    // no premultiplied alpha
    let own_mode = cfg.flavour == Flavour::OpenClip;
    let nearest = decoded.pil_nearest && own_mode;
    let alg = if nearest {
        ResizeAlg::Nearest
    } else {
        match cfg.interpolation {
            Interpolation::Bicubic => ResizeAlg::Convolution(FilterType::CatmullRom),
            Interpolation::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
            Interpolation::Nearest => ResizeAlg::Nearest,
        }
    };
    // With alpha, resize premultiplied RGBA (as PIL does via mode RGBa), then drop alpha.
    let (src, pixel_type, channels) = if img.color().has_alpha() && !nearest && own_mode {
        (img.to_rgba8().into_raw(), PixelType::U8x4, 4usize)
    } else if img.color().has_alpha() && cfg.flavour == Flavour::Transformers {
        (over_white(img), PixelType::U8x3, 3usize)
    } else {
        (img.to_rgb8().into_raw(), PixelType::U8x3, 3usize)
    };
    let resized = if (new_w, new_h) == (w, h) {
        src
    } else {
        let src_img =
            FirImage::from_vec_u8(w, h, src, pixel_type).map_err(|e| ClipError::decode("resized", e))?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(new_w as usize * new_h as usize * channels)
            .map_err(|_| ClipError::out_of_memory("the resized image"))?;
        buf.resize(new_w as usize * new_h as usize * channels, 0);
        let mut dst = FirImage::from_vec_u8(new_w, new_h, buf, pixel_type)
            .map_err(|e| ClipError::decode("resized", e))?;
        Resizer::new()
            .resize(&src_img, &mut dst, &ResizeOptions::new().resize_alg(alg))
            .map_err(|e| ClipError::decode("resized", e))?;
        dst.into_vec()
    };
    // torchvision center_crop: int(round((h - size) / 2.0)), Python rounds half to even;
    // transformers: (h - size) // 2; immich: int(h / 2 - size / 2), the same floor
    let offset = |side: u32| match cfg.flavour {
        Flavour::OpenClip => round_half_even(f64::from(side - size) / 2.0) as usize,
        Flavour::Transformers | Flavour::Immich => ((side - size) / 2) as usize,
    };
    let (top, left) = (offset(new_h), offset(new_w));
    let (size_u, row_len) = (size as usize, new_w as usize * channels);
    let mut out = Vec::with_capacity(size_u * size_u * 3);
    for y in top..top + size_u {
        let row = &resized[y * row_len + left * channels..][..size_u * channels];
        if channels == 3 {
            out.extend_from_slice(row);
        } else {
            for px in row.chunks_exact(4) {
                out.extend_from_slice(&px[..3]);
            }
        }
    }
    Ok(RgbImage::from_raw(size, size, out).expect("crop buffer has size*size*3 bytes"))
}

/// transformers' convert_to_rgb: transparency composited onto white (PIL's alpha_composite),
/// where PIL's convert("RGB") would drop the alpha. (An 8-bit RGBA image is read in place: the
/// RGB result is smaller than the RGBA copy the byte limit counts.)
fn over_white(img: &DynamicImage) -> Vec<u8> {
    let rgba = match img.as_rgba8() {
        Some(r) => std::borrow::Cow::Borrowed(r),
        None => std::borrow::Cow::Owned(img.to_rgba8()),
    };
    let mut out = Vec::with_capacity(rgba.len() / 4 * 3);
    for px in rgba.as_raw().chunks_exact(4) {
        let a = u32::from(px[3]);
        for &c in &px[..3] {
            out.push(((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8);
        }
    }
    out
}

fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

/// ToTensor + Normalize into `out` (one image, CHW), through a per-channel lookup table.
pub fn normalize_into(crop: &RgbImage, cfg: &PreprocessConfig, out: &mut [f32]) {
    let plane = (cfg.size * cfg.size) as usize;
    debug_assert_eq!(out.len(), 3 * plane);
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, slot) in table.iter_mut().enumerate() {
            *slot = (v as f32 / 255.0 - cfg.mean[c]) / cfg.std[c];
        }
    }
    for (i, px) in crop.as_raw().chunks_exact(3).enumerate() {
        out[i] = lut[0][px[0] as usize];
        out[plane + i] = lut[1][px[1] as usize];
        out[2 * plane + i] = lut[2][px[2] as usize];
    }
}

/// The whole pipeline for one image, writing its CHW tensor into `out`. Its whole footprint
/// (decoded image, RGBA copy, resize passes) is checked against `limits` from the header and,
/// with a `budget`, taken from it before anything is decoded.
pub fn preprocess_into(
    bytes: &[u8],
    cfg: &PreprocessConfig,
    limits: &ImageLimits,
    budget: Option<&Budget>,
    out: &mut [f32],
) -> Result<()> {
    preprocess_with_thumbnail(bytes, cfg, limits, budget, out, None).map(|_| ())
}

/// As [`preprocess_into`], and a JPEG thumbnail of `thumbnail` pixels made from the same decode
/// (the image as the model's flavour decodes it).
pub fn preprocess_with_thumbnail(
    bytes: &[u8],
    cfg: &PreprocessConfig,
    limits: &ImageLimits,
    budget: Option<&Budget>,
    out: &mut [f32],
    thumbnail: Option<u32>,
) -> Result<Option<Vec<u8>>> {
    let (decoder, format, w, h) = open(bytes, limits)?;
    // (orientation may swap the sides: the larger of both targets is counted)
    let (a, b) = (resize_target(w, h, cfg, limits.max_bytes)?, resize_target(h, w, cfg, limits.max_bytes)?);
    let more = resize_bytes(w, h, a.0, a.1).max(resize_bytes(h, w, b.0, b.1));
    let footprint = check_bytes(w, h, decoder.total_bytes(), more, limits)?;
    let _grant = budget.map(|b| b.take(footprint));
    let decoded = finish(decoder, format, bytes, cfg.flavour.exif())?;
    let crop = resize_crop(&decoded, cfg, limits)?;
    normalize_into(&crop, cfg, out);
    thumbnail.map(|size| crate::thumbnail::of_image(&decoded.image, size)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_even_rounding_matches_python() {
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(3.0), 3.0);
        assert_eq!(round_half_even(37.0), 37.0);
    }

    #[test]
    fn config_accepts_int_and_square_sizes_and_rejects_others() {
        let ok = r#"{"size": 224, "mean": [0.5,0.5,0.5], "std": [0.5,0.5,0.5]}"#;
        assert_eq!(PreprocessConfig::from_json(ok).unwrap().size, 224);
        let sq = r#"{"size": [336, 336], "mean": [0,0,0], "std": [1,1,1], "interpolation": "bilinear"}"#;
        let c = PreprocessConfig::from_json(sq).unwrap();
        assert_eq!((c.size, c.interpolation), (336, Interpolation::Bilinear));
        let rect = r#"{"size": [224, 336], "mean": [0,0,0], "std": [1,1,1]}"#;
        assert!(PreprocessConfig::from_json(rect).unwrap_err().contains("square"));
        let bad = r#"{"size": 224, "mean": [0,0], "std": [1,1,1]}"#;
        assert!(PreprocessConfig::from_json(bad).unwrap_err().contains("mean"));
        let mode = r#"{"size": 224, "mean": [0,0,0], "std": [1,1,1], "resize_mode": "longest"}"#;
        assert!(PreprocessConfig::from_json(mode).unwrap_err().contains("longest"));
    }

    #[test]
    fn normalisation_is_totensor_then_normalize() {
        let cfg = PreprocessConfig {
            size: 1,
            mean: [0.5, 0.25, 0.0],
            std: [0.5, 0.25, 2.0],
            interpolation: Interpolation::Bicubic,
            resize_mode: ResizeMode::Shortest,
            flavour: Flavour::OpenClip,
        };
        let crop = RgbImage::from_raw(1, 1, vec![255, 0, 51]).unwrap();
        let mut out = [0f32; 3];
        normalize_into(&crop, &cfg, &mut out);
        assert!((out[0] - 1.0).abs() < 1e-6 && (out[1] + 1.0).abs() < 1e-6 && (out[2] - 0.1).abs() < 1e-6);
    }

    #[test]
    fn truncated_files_of_every_format_are_errors() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/images");
        for f in [
            "photos/rocket.jpg",
            "photos/chelsea.png",
            "edge/cat.webp",
            "edge/cat.gif",
            "edge/cat.bmp",
            "edge/cat.tiff",
            "edge/exif_rotate90.jpg",
        ] {
            let bytes = std::fs::read(root.join(f)).unwrap();
            assert!(decode(&bytes, &ImageLimits::TRUSTED).is_ok(), "{f} whole");
            let cut = &bytes[..bytes.len() * 2 / 3];
            let e = decode(cut, &ImageLimits::TRUSTED).expect_err(f);
            assert_eq!(e.kind, crate::ErrorKind::InvalidImage, "{f}: {e}");
        }
    }

    #[test]
    fn jpeg_with_trailing_data_after_eoi_is_complete() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/images");
        let mut bytes = std::fs::read(root.join("photos/rocket.jpg")).unwrap();
        bytes.extend_from_slice(b"\x00\x00ftypmp42 appended motion-photo video \xff\xda\x00\x10");
        assert!(jpeg_is_complete(&bytes));
        assert!(decode(&bytes, &ImageLimits::TRUSTED).is_ok());
    }

    #[test]
    fn empty_and_garbage_bytes_are_invalid_images() {
        assert!(decode(&[], &ImageLimits { max_pixels: 100, max_bytes: 1 << 20 })
            .unwrap_err()
            .message
            .contains("empty"));
        let e = decode(b"definitely not an image", &ImageLimits { max_pixels: 100, max_bytes: 1 << 20 })
            .unwrap_err();
        assert!(e.message.contains("not in a recognised format"), "{e}");
    }

    fn png(img: DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png).unwrap();
        out
    }

    fn clip_cfg() -> PreprocessConfig {
        PreprocessConfig {
            size: 224,
            mean: [0.5; 3],
            std: [0.5; 3],
            interpolation: Interpolation::Bicubic,
            resize_mode: ResizeMode::Shortest,
            flavour: Flavour::OpenClip,
        }
    }

    #[test]
    fn extreme_aspect_ratios_are_refused_before_decoding() {
        // 1 x 20,000,000 grey: 20 M pixels, under the pixel limit; resized it would be 224 x 4.48e9
        let bytes = png(DynamicImage::ImageLuma8(image::GrayImage::new(1, 20_000_000)));
        let limits = ImageLimits { max_pixels: 100_000_000, max_bytes: 1 << 30 };
        let mut out = vec![0f32; clip_cfg().tensor_len()];
        let e = preprocess_into(&bytes, &clip_cfg(), &limits, None, &mut out).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::ImageTooLarge);
        assert!(e.message.contains("extreme aspect ratio"), "{e}");
        // the same both ways round
        let wide = png(DynamicImage::ImageLuma8(image::GrayImage::new(20_000_000, 1)));
        assert!(preprocess_into(&wide, &clip_cfg(), &limits, None, &mut out)
            .unwrap_err()
            .message
            .contains("extreme"));
        // a panorama of 20:1 is fine
        let pano = png(DynamicImage::ImageLuma8(image::GrayImage::new(2000, 100)));
        preprocess_into(&pano, &clip_cfg(), &limits, None, &mut out).unwrap();
    }

    #[test]
    fn images_over_the_byte_limit_are_refused_and_the_budget_is_shared() {
        let bytes = png(DynamicImage::ImageRgb8(RgbImage::new(2000, 2000)));
        let small = ImageLimits { max_pixels: u64::MAX, max_bytes: 16 << 20 };
        let mut out = vec![0f32; clip_cfg().tensor_len()];
        let e = preprocess_into(&bytes, &clip_cfg(), &small, None, &mut out).unwrap_err();
        assert!(e.message.contains("pg_clip.max_image_memory"), "{e}");
        assert!(decode(&bytes, &small).is_err());
        // with room for one image at a time, eight threads still all finish
        let limits = ImageLimits { max_pixels: u64::MAX, max_bytes: 64 << 20 };
        let budget = Budget::new(limits.max_bytes);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let mut out = vec![0f32; clip_cfg().tensor_len()];
                    preprocess_into(&bytes, &clip_cfg(), &limits, Some(&budget), &mut out).unwrap();
                });
            }
        });
        assert_eq!(*budget.left.lock().unwrap(), limits.max_bytes);
    }
}
