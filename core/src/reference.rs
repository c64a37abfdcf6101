//! Reference sets: labels read from file names, the augmented copies that
//! `clip.verify_reference_set` identifies against the set to see how well it separates, and the
//! seeded random copies a projection head is trained and evaluated on.

use std::io::Cursor;
use std::sync::LazyLock;

use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use regex::Regex;

use crate::preprocess;
use crate::{ClipError, Result};

/// A leading set code such as `LOB-EN001_`, `SDK-001_` or `MP22-EN045a_`: letters and digits,
/// a hyphen, an optional language code, a card number, an underscore.
static SET_CODE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z0-9]{2,6}-[A-Za-z]{0,2}[0-9]{1,4}[A-Za-z]?_").expect("valid regex")
});

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLabel {
    pub label: String,
    pub variant: Option<String>,
}

/// The label of a reference image from its file name: the stem, without a leading set code,
/// with a trailing suffix from `variants` (case-insensitive, after `_` or a space) split off,
/// underscores to spaces, title case. A name that would come out empty keeps its stem.
pub fn label_from_filename(path: &str, variants: &[String]) -> FileLabel {
    let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
    let stem = match name.rfind('.') {
        Some(i)
            if i > 0
                && (1..=5).contains(&(name.len() - i - 1))
                && name[i + 1..].chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            &name[..i]
        }
        _ => name,
    };
    let body = SET_CODE.find(stem).map_or(stem, |m| &stem[m.end()..]);
    let mut words: Vec<&str> = body.split(['_', ' ']).filter(|w| !w.is_empty()).collect();
    let mut variant = None;
    if words.len() >= 2 {
        let last = words[words.len() - 1].to_lowercase();
        if variants.iter().any(|v| v.eq_ignore_ascii_case(&last)) {
            variant = Some(last);
            words.pop();
        }
    }
    if words.is_empty() {
        words = stem.split(['_', ' ']).filter(|w| !w.is_empty()).collect();
    }
    let label = words.iter().map(|w| title_case(w)).collect::<Vec<_>>().join(" ");
    FileLabel { label: if label.is_empty() { stem.to_string() } else { label }, variant }
}

/// Upper-case the first letter of the word and of each hyphenated part, lower-case the rest
/// ("blue-eyes" -> "Blue-Eyes", "harpie's" -> "Harpie's", unlike Python's str.title()).
fn title_case(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut start = true;
    for c in word.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        start = c == '-';
    }
    out
}

/// The variant list of the `pg_clip.identify_variants` setting: comma-separated, trimmed.
pub fn parse_variants(list: &str) -> Vec<String> {
    list.split(',').map(|s| s.trim().to_lowercase()).filter(|s| !s.is_empty()).collect()
}

/// What a camera does to a reference: the four copies `clip.verify_reference_set` identifies.
pub const AUGMENTATIONS: [&str; 4] = ["crop", "rotate", "color", "blur"];

/// Augmented copies of an image, as PNG bytes, in the order of [`AUGMENTATIONS`]. The image is
/// first brought down to at most 512 pixels on its short side (and 2,048 on its long side): the model sees 224 or so, and
/// blurring or encoding a 12-megapixel scan would cost seconds for nothing.
pub fn augmented_copies(
    bytes: &[u8],
    limits: &preprocess::ImageLimits,
) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let img = working_copy(bytes, limits)?;
    AUGMENTATIONS
        .iter()
        .map(|&kind| {
            let out = augment(&img, kind);
            let mut png = Vec::new();
            DynamicImage::ImageRgb8(out)
                .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
                .map_err(|e| ClipError::decode("PNG", e).context(format!("augmentation {kind}")))?;
            Ok((kind, png))
        })
        .collect()
}

/// The image decoded and brought down to at most 512 pixels on its short side and 2,048 on its
/// long side (a panorama's copies stay small: a batch of them is encoded at once), what every
/// augmentation starts from.
fn working_copy(bytes: &[u8], limits: &preprocess::ImageLimits) -> Result<RgbImage> {
    let decoded = preprocess::decode(bytes, limits)?;
    let img = decoded.image.to_rgb8();
    let (w, h) = (f64::from(img.width()), f64::from(img.height()));
    let scale = (512.0 / w.min(h)).min(2048.0 / w.max(h));
    if scale >= 1.0 {
        return Ok(img);
    }
    let (w, h) = (((w * scale) as u32).max(1), ((h * scale) as u32).max(1));
    Ok(imageops::resize(&img, w, h, FilterType::CatmullRom))
}

/// One deterministic augmentation (a verification should give the same answer twice).
fn augment(img: &RgbImage, kind: &str) -> RgbImage {
    let (w, h) = img.dimensions();
    match kind {
        // 80% of each side, off-centre, as a hand-held frame that misses an edge
        "crop" => {
            let (cw, ch) = ((w * 4 / 5).max(1), (h * 4 / 5).max(1));
            imageops::crop_imm(img, (w - cw) / 4, (h - ch) * 3 / 4, cw, ch).to_image()
        }
        "rotate" => rotate(img, 8f32.to_radians()),
        // brighter, more contrast, hue turned a little: another lamp, another white balance
        "color" => {
            let b = imageops::colorops::brighten(img, 20);
            let c = imageops::colorops::contrast(&b, 15.0);
            imageops::colorops::huerotate(&c, 12)
        }
        // out of focus: a Gaussian blur of about 1% of the short side
        _ => imageops::blur(img, (w.min(h) as f32 / 100.0).max(1.0)),
    }
}

/// Rotation by `angle` about the centre with bilinear sampling, same size, black outside (as
/// torchvision's RandomRotation fills). Written here because the image crate rotates only by
/// quarter turns and imageproc would bring a dozen crates for these lines.
fn rotate(img: &RgbImage, angle: f32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
    let (sin, cos) = angle.sin_cos();
    // the source pixel that lands on (x, y): rotate back by -angle
    warp(img, |x, y| {
        let (dx, dy) = (x - cx, y - cy);
        (cos * dx + sin * dy + cx, -sin * dx + cos * dy + cy)
    })
}

/// The image seen through `source`, which maps each output pixel to the source point it shows
/// (bilinear; black outside the image).
fn warp(img: &RgbImage, source: impl Fn(f32, f32) -> (f32, f32)) -> RgbImage {
    let (w, h) = img.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        let (sx, sy) = source(x as f32, y as f32);
        if !(sx >= 0.0 && sy >= 0.0 && sx <= (w - 1) as f32 && sy <= (h - 1) as f32) {
            return Rgb([0, 0, 0]);
        }
        let (x0, y0) = (sx.floor() as u32, sy.floor() as u32);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
        let p = |xx, yy, c: usize| f32::from(img.get_pixel(xx, yy)[c]);
        Rgb(std::array::from_fn(|c| {
            let top = p(x0, y0, c) * (1.0 - fx) + p(x1, y0, c) * fx;
            let bottom = p(x0, y1, c) * (1.0 - fx) + p(x1, y1, c) * fx;
            (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8
        }))
    })
}

/// The homography (row-major 3 x 3, last entry 1) taking each `from` point to its `to` point;
/// None when the points are degenerate. Solved by Gaussian elimination with partial pivoting
/// (an 8 x 8 system: no linear-algebra crate needed for it).
fn homography(from: [(f64, f64); 4], to: [(f64, f64); 4]) -> Option<[f64; 9]> {
    let mut a = [[0f64; 9]; 8];
    for (k, ((x, y), (u, v))) in from.iter().zip(to.iter()).enumerate() {
        a[2 * k] = [*x, *y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, *u];
        a[2 * k + 1] = [0.0, 0.0, 0.0, *x, *y, 1.0, -v * x, -v * y, *v];
    }
    for col in 0..8 {
        let pivot = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        let p = a[col];
        for (_, row) in a.iter_mut().enumerate().filter(|(r, _)| *r != col) {
            let f = row[col] / p[col];
            for (x, y) in row[col..].iter_mut().zip(&p[col..]) {
                *x -= f * y;
            }
        }
    }
    let mut hm = [1f64; 9];
    for (i, row) in a.iter().enumerate() {
        hm[i] = row[8] / row[i];
    }
    Some(hm)
}

/// One random copy of an image, the same for the same seed. At `strength` 1: a random resized
/// crop (60-100% of the area, aspect 3:4 to 4:3), a rotation up to 20 degrees either way, a
/// perspective warp (each corner moved up to 8% of the side), brightness, contrast and hue
/// jitter, a Gaussian blur three times in ten and greyscale one time in ten: the copies a
/// projection head is trained on. Ranges and chances grow with `strength` (the crop keeps at
/// least 20% of the area): held-out copies are made at [`CopyKind::HeldOut`]'s.
pub fn random_augmentation(img: &RgbImage, seed: u64, strength: f32) -> RgbImage {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(seed);
    let s = strength.clamp(0.0, 2.0);
    let (w, h) = img.dimensions();
    let area = f64::from(w) * f64::from(h) * rng.random_range((1.0 - 0.4 * f64::from(s)).max(0.2)..=1.0);
    let aspect = rng.random_range((0.75f64).ln()..=(4.0f64 / 3.0).ln()).exp();
    let cw = ((area * aspect).sqrt().round() as u32).clamp(1, w);
    let ch = ((area / aspect).sqrt().round() as u32).clamp(1, h);
    let (x0, y0) = (rng.random_range(0..=w - cw), rng.random_range(0..=h - ch));
    let mut out = imageops::crop_imm(img, x0, y0, cw, ch).to_image();
    let turn = 20.0 * s;
    out = rotate(&out, rng.random_range(-turn..=turn).to_radians());
    let (fw, fh) = (f64::from(cw - 1), f64::from(ch - 1));
    let corners = [(0.0, 0.0), (fw, 0.0), (fw, fh), (0.0, fh)];
    let mut moved = corners;
    for c in moved.iter_mut() {
        let (dx, dy): (f64, f64) = (rng.random_range(-1.0..=1.0), rng.random_range(-1.0..=1.0));
        c.0 += dx * 0.08 * f64::from(s) * fw;
        c.1 += dy * 0.08 * f64::from(s) * fh;
    }
    // (the map from each output pixel back to the source: the moved corners to the original)
    if let Some(m) = homography(moved, corners) {
        out = warp(&out, |x, y| {
            let (x, y) = (f64::from(x), f64::from(y));
            let d = m[6] * x + m[7] * y + m[8];
            (((m[0] * x + m[1] * y + m[2]) / d) as f32, ((m[3] * x + m[4] * y + m[5]) / d) as f32)
        });
    }
    let jitter = |rng: &mut StdRng, most: f32| rng.random_range(-most * s..=most * s);
    out = imageops::colorops::brighten(&out, jitter(&mut rng, 25.0).round() as i32);
    out = imageops::colorops::contrast(&out, jitter(&mut rng, 20.0));
    out = imageops::colorops::huerotate(&out, jitter(&mut rng, 15.0).round() as i32);
    if rng.random_bool(f64::from(0.3 * s).min(1.0)) {
        out = imageops::blur(&out, (cw.min(ch) as f32 / 100.0 * rng.random_range(0.5f32..=1.5)).max(0.5));
    }
    if rng.random_bool(f64::from(0.1 * s).min(1.0)) {
        out = DynamicImage::ImageLuma8(imageops::grayscale(&out)).to_rgb8();
    }
    out
}

/// Which copies of a reference: those a projection head trains on, or the stronger ones, from
/// other seeds, that it is evaluated on and never sees in training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    Train,
    HeldOut,
}

impl CopyKind {
    pub fn parse(s: &str) -> Option<CopyKind> {
        match s {
            "train" => Some(CopyKind::Train),
            "held_out" => Some(CopyKind::HeldOut),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CopyKind::Train => "train",
            CopyKind::HeldOut => "held_out",
        }
    }

    fn strength(self) -> f32 {
        match self {
            CopyKind::Train => 1.0,
            CopyKind::HeldOut => 1.5,
        }
    }

    /// The seed of copy `n` of the image with this content hash: from the hash, so that the
    /// n-th copies of two references are not cropped alike, and disjoint between the kinds.
    fn seed(self, content_sha256: &[u8], n: u32) -> u64 {
        let mut h = [0u8; 8];
        for (d, s) in h.iter_mut().zip(content_sha256) {
            *d = *s;
        }
        let base = u64::from_le_bytes(h);
        let kind = match self {
            CopyKind::Train => 0,
            CopyKind::HeldOut => 1u64 << 63,
        };
        base ^ kind ^ u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// Copy `n` of kind `kind` of an image (whose content hash is `content_sha256`), as BMP bytes:
/// uncompressed, so that encoding it for the model's own decoder costs next to nothing.
pub fn random_copy(
    bytes: &[u8],
    limits: &preprocess::ImageLimits,
    content_sha256: &[u8],
    kind: CopyKind,
    n: u32,
) -> Result<Vec<u8>> {
    let img = working_copy(bytes, limits)?;
    let out = random_augmentation(&img, kind.seed(content_sha256, n), kind.strength());
    let mut bmp = Vec::new();
    DynamicImage::ImageRgb8(out)
        .write_to(&mut Cursor::new(&mut bmp), ImageFormat::Bmp)
        .map_err(|e| ClipError::decode("BMP", e).context(format!("{} copy {n}", kind.as_str())))?;
    Ok(bmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_homography_maps_its_points_and_a_random_copy_repeats_for_its_seed() {
        let from = [(0.0, 0.0), (10.0, 0.0), (10.0, 8.0), (0.0, 8.0)];
        let to = [(1.0, 0.5), (9.0, 1.0), (11.0, 9.0), (-1.0, 7.0)];
        let m = homography(from, to).unwrap();
        for ((x, y), (u, v)) in from.iter().zip(to.iter()) {
            let d = m[6] * x + m[7] * y + m[8];
            assert!(((m[0] * x + m[1] * y + m[2]) / d - u).abs() < 1e-9);
            assert!(((m[3] * x + m[4] * y + m[5]) / d - v).abs() < 1e-9);
        }
        assert!(homography(from, [(0.0, 0.0); 4]).is_none(), "degenerate");

        let img = RgbImage::from_fn(64, 48, |x, y| Rgb([(x * 4) as u8, (y * 5) as u8, 90]));
        assert_eq!(rotate(&img, 0.0), img, "no rotation, no change");
        let a = random_augmentation(&img, 7, 1.0);
        assert_eq!(a, random_augmentation(&img, 7, 1.0));
        assert_ne!(a, random_augmentation(&img, 8, 1.0));
        let grey = (0..100u64).filter(|s| {
            let c = random_augmentation(&img, *s, 1.0);
            c.pixels().all(|p| p[0] == p[1] && p[1] == p[2])
        });
        let n = grey.count();
        assert!((3..=25).contains(&n), "greyscale one time in ten: {n} of 100");
    }

    #[test]
    fn random_copies_repeat_for_their_number_and_differ_between_kinds() {
        let img = RgbImage::from_fn(80, 60, |x, y| Rgb([(x * 3) as u8, (y * 4) as u8, ((x ^ y) * 2) as u8]));
        let mut png = Vec::new();
        DynamicImage::ImageRgb8(img).write_to(&mut Cursor::new(&mut png), ImageFormat::Png).unwrap();
        let limits = preprocess::ImageLimits::TRUSTED;
        let copy = |kind, n| random_copy(&png, &limits, &[1, 2, 3], kind, n).unwrap();
        let a = copy(CopyKind::Train, 0);
        assert_eq!(a, copy(CopyKind::Train, 0));
        assert_ne!(a, copy(CopyKind::Train, 1));
        assert_ne!(a, copy(CopyKind::HeldOut, 0));
        assert_ne!(
            a,
            random_copy(&png, &limits, &[9, 2, 3], CopyKind::Train, 0).unwrap(),
            "seeded by content"
        );
        assert!(image::load_from_memory_with_format(&a, ImageFormat::Bmp).is_ok());
        assert_eq!(CopyKind::parse("held_out"), Some(CopyKind::HeldOut));
        assert_eq!(CopyKind::parse(CopyKind::Train.as_str()), Some(CopyKind::Train));
        assert!(random_copy(b"nope", &limits, &[], CopyKind::Train, 0).is_err());
        // a panorama's copy is brought down to 2,048 pixels on its long side
        let wide = RgbImage::from_fn(6000, 600, |x, _| Rgb([(x % 256) as u8, 90, 30]));
        let mut png = Vec::new();
        DynamicImage::ImageRgb8(wide).write_to(&mut Cursor::new(&mut png), ImageFormat::Png).unwrap();
        let copy =
            image::load_from_memory(&random_copy(&png, &limits, &[4], CopyKind::Train, 0).unwrap()).unwrap();
        assert!(copy.width() <= 2048 && copy.height() <= 205, "{}x{}", copy.width(), copy.height());
    }

    /// pg_clip.identify_variants' default: trading-card scans are named
    /// `<set code>_<card name>_<rarity>.jpg`.
    const DEFAULT_VARIANTS: &str = "pscr,scr,ur,sr,op,utr,cr,ea,gmr";

    fn parse(name: &str) -> (String, Option<String>) {
        let l = label_from_filename(name, &parse_variants(DEFAULT_VARIANTS));
        (l.label, l.variant)
    }

    #[test]
    fn file_names_become_labels() {
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("LOB-EN001_blue-eyes_white_dragon_ur.jpg", "Blue-Eyes White Dragon", Some("ur")),
            ("cards/SDK-001_dark_magician.png", "Dark Magician", None),
            ("/scans/MP22-EN045a_pot_of_greed_SCR.webp", "Pot Of Greed", Some("scr")),
            ("RA01-EN054_ash_blossom_pscr.jpeg", "Ash Blossom", Some("pscr")),
            ("harpie's_lady_sr.jpg", "Harpie's Lady", Some("sr")),
            ("red_mug.jpg", "Red Mug", None),
            ("Widget 42.JPG", "Widget 42", None),
            // a suffix alone is the name, not a variant
            ("ur.png", "Ur", None),
            // a set code alone keeps the stem
            ("LOB-EN001_.jpg", "Lob-En001", None),
            // not a set code (no number), so kept
            ("ABC-DEF_thing.png", "Abc-Def Thing", None),
            ("part.no.7", "Part.no", None),
            ("double__underscore___cr", "Double Underscore", Some("cr")),
            (r"C:\scans\bolt_m6.png", "Bolt M6", None),
        ];
        for (name, label, variant) in cases {
            assert_eq!(parse(name), (label.to_string(), variant.map(String::from)), "{name}");
        }
    }

    #[test]
    fn variant_list_is_configurable() {
        let l = label_from_filename("gear_wheel_rev2.png", &parse_variants(" REV2 , rev3,"));
        assert_eq!((l.label.as_str(), l.variant.as_deref()), ("Gear Wheel", Some("rev2")));
        let l = label_from_filename("gear_wheel_ur.png", &[]);
        assert_eq!((l.label.as_str(), l.variant), ("Gear Wheel Ur", None));
    }

    #[test]
    fn augmented_copies_differ_and_keep_size() {
        let mut img = RgbImage::new(64, 48);
        for (x, y, p) in img.enumerate_pixels_mut() {
            // a gradient with a 4-pixel checkerboard on top, so that blurring changes it
            let check = if (x / 4 + y / 4) % 2 == 0 { 60 } else { 0 };
            *p = Rgb([(x * 3 + check) as u8, (y * 4 + check) as u8, ((x + y) * 2) as u8]);
        }
        let mut png = Vec::new();
        DynamicImage::ImageRgb8(img.clone()).write_to(&mut Cursor::new(&mut png), ImageFormat::Png).unwrap();
        let copies =
            augmented_copies(&png, &preprocess::ImageLimits { max_pixels: 1 << 20, max_bytes: 1 << 30 })
                .unwrap();
        assert_eq!(copies.iter().map(|c| c.0).collect::<Vec<_>>(), AUGMENTATIONS);
        for (kind, bytes) in &copies {
            let out = image::load_from_memory(bytes).unwrap().to_rgb8();
            let expect = if *kind == "crop" { (51, 38) } else { (64, 48) };
            assert_eq!(out.dimensions(), expect, "{kind}");
            if *kind != "crop" {
                let diff: u64 =
                    out.pixels().zip(img.pixels()).map(|(a, b)| u64::from(a[0].abs_diff(b[0]))).sum();
                assert!(diff > 64 * 48, "{kind} changed too little: {diff}");
            }
        }
        // the rotation turns about the centre: the centre pixel stays, corners go black
        let rot = rotate(&img, 8f32.to_radians());
        assert_eq!(rot.get_pixel(0, 0), &Rgb([0, 0, 0]));
        let c = img.get_pixel(32, 24);
        let r = rot.get_pixel(32, 24);
        assert!((0..3).all(|i| c[i].abs_diff(r[i]) <= 6), "{c:?} vs {r:?}");
        // same input, same copies
        assert_eq!(
            copies,
            augmented_copies(&png, &preprocess::ImageLimits { max_pixels: 1 << 20, max_bytes: 1 << 30 })
                .unwrap()
        );
        assert!(augmented_copies(b"not an image", &preprocess::ImageLimits::TRUSTED).is_err());
    }
}
