//! Thumbnails for browsing a collection: the image upright, its longer side scaled down to a
//! size (never up), as JPEG. Decoded under the same limits as embedding.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::DynamicImage;

use crate::error::{ClipError, ErrorKind, Result};
use crate::preprocess::{self, ImageLimits};

/// The largest thumbnail side served (a browser grid or a labelling screen needs no more).
pub const MAX_SIZE: u32 = 1024;

/// A JPEG whose longer side is at most `size` pixels (16 to [`MAX_SIZE`]).
pub fn make(bytes: &[u8], size: u32, limits: &ImageLimits) -> Result<Vec<u8>> {
    check_size(size)?;
    of_image(&preprocess::decode(bytes, limits)?.image, size)
}

pub fn check_size(size: u32) -> Result<()> {
    if (16..=MAX_SIZE).contains(&size) {
        return Ok(());
    }
    Err(ClipError::new(
        ErrorKind::InvalidImage,
        format!("a thumbnail size must be between 16 and {MAX_SIZE} pixels, not {size}"),
    ))
}

/// The thumbnail of an image already decoded (refresh makes it from the decode it embeds):
/// the output is allocated, not a copy of the whole image.
pub fn of_image(img: &DynamicImage, size: u32) -> Result<Vec<u8>> {
    let (w, h) = (img.width(), img.height());
    let long = w.max(h);
    let small = if long > size {
        // (u64: a 1 x 20,000,000 image must not overflow; at least one pixel each way)
        let scale = |x: u32| ((u64::from(x) * u64::from(size)).div_ceil(u64::from(long)) as u32).max(1);
        img.resize_exact(scale(w), scale(h), FilterType::Triangle).to_rgb8()
    } else {
        img.to_rgb8()
    };
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut Cursor::new(&mut out), 85).encode_image(&small).map_err(|e| {
        ClipError::new(ErrorKind::InvalidImage, format!("could not encode the thumbnail: {e}"))
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    fn dims(jpeg: &[u8]) -> (u32, u32) {
        let d = image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg).unwrap();
        (d.width(), d.height())
    }

    #[test]
    fn the_longer_side_is_scaled_to_the_size_and_small_images_are_kept() {
        assert_eq!(dims(&make(&png(400, 100), 200, &ImageLimits::TRUSTED).unwrap()), (200, 50));
        assert_eq!(dims(&make(&png(90, 300), 150, &ImageLimits::TRUSTED).unwrap()), (45, 150));
        assert_eq!(dims(&make(&png(60, 40), 256, &ImageLimits::TRUSTED).unwrap()), (60, 40));
        assert_eq!(dims(&make(&png(5000, 1), 64, &ImageLimits::TRUSTED).unwrap()), (64, 1));
    }

    #[test]
    fn bad_sizes_and_bad_images_are_errors() {
        for size in [0, 15, MAX_SIZE + 1] {
            assert_eq!(
                make(&png(10, 10), size, &ImageLimits::TRUSTED).unwrap_err().kind,
                ErrorKind::InvalidImage
            );
        }
        assert_eq!(
            make(b"not an image", 64, &ImageLimits::TRUSTED).unwrap_err().kind,
            ErrorKind::InvalidImage
        );
    }
}
