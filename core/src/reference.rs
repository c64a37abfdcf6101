//! Reference sets: labels read from file names, and the augmented copies that
//! `clip.verify_reference_set` identifies against the set to see how well it separates.

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
/// first brought down to at most 512 pixels on its short side: the model sees 224 or so, and
/// blurring or encoding a 12-megapixel scan would cost seconds for nothing.
pub fn augmented_copies(
    bytes: &[u8],
    limits: &preprocess::ImageLimits,
) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let decoded = preprocess::decode(bytes, limits)?;
    let mut img = decoded.image.to_rgb8();
    let short = img.width().min(img.height());
    if short > 512 {
        let (w, h) = (img.width() as u64 * 512 / short as u64, img.height() as u64 * 512 / short as u64);
        img = imageops::resize(&img, w.max(1) as u32, h.max(1) as u32, FilterType::CatmullRom);
    }
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
    RgbImage::from_fn(w, h, |x, y| {
        // the source pixel that lands on (x, y): rotate back by -angle
        let (dx, dy) = (x as f32 - cx, y as f32 - cy);
        let sx = cos * dx + sin * dy + cx;
        let sy = -sin * dx + cos * dy + cy;
        if sx < 0.0 || sy < 0.0 || sx > (w - 1) as f32 || sy > (h - 1) as f32 {
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

#[cfg(test)]
mod tests {
    use super::*;

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
