//! Where a result may be written: the region Blend changes around a pasted
//! subject, the mask a result is blended through, and the copy of the scene it
//! is written into. Shared by every backbone.

use image::{DynamicImage, GenericImageView, GrayImage};

use crate::imageops::{self, Rect};
use crate::{Error, Result};

/// The region Blend may change: the subject's bounds with room around it
/// for the seam and below it for the shadow.
pub fn blend_selection(image: &DynamicImage, subject: &GrayImage) -> Result<GrayImage> {
    if subject.dimensions() != image.dimensions() {
        return Err(Error::bad(format!(
            "the subject's mask is {}x{} but the image is {}x{}: they must be the same size",
            subject.width(),
            subject.height(),
            image.width(),
            image.height()
        )));
    }
    let b = imageops::mask_bbox(subject)
        .ok_or_else(|| Error::bad("the subject's mask is empty (0 everywhere): nothing to blend"))?;
    if subject.as_raw().iter().all(|&v| v > 0) {
        return Err(Error::bad(
            "the subject covers the whole image: there is no scene around it to blend it into",
        ));
    }
    let m = (b.w.min(b.h) / 10).max(4);
    let (x0, y0) = (b.x.saturating_sub(m), b.y.saturating_sub(m));
    let x1 = (b.right() + m).min(image.width());
    let y1 = (b.bottom() + m + b.h / 6).min(image.height());
    Ok(GrayImage::from_fn(image.width(), image.height(), |x, y| {
        image::Luma([if x >= x0 && x < x1 && y >= y0 && y < y1 { 255 } else { 0 }])
    }))
}

/// The image the result is written into: a copy of the scene in its own depth
/// and channels where those can be kept, else RGBA8.
pub fn result_base(scene: &DynamicImage) -> DynamicImage {
    match scene {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_)
        | DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_)
        | DynamicImage::ImageRgb32F(_)
        | DynamicImage::ImageRgba32F(_) => scene.clone(),
        other => DynamicImage::ImageRgba8(other.to_rgba8()),
    }
}

/// The mask the result is blended through. A hard-edged selection would show
/// its edge as a seam, so the result fades in over the selection's short side
/// divided by `div` (1 to 12 pixels) inside it; outside stays untouched either way.
pub fn blend_mask<'a>(selection: &'a GrayImage, bbox: Rect, div: u32) -> std::borrow::Cow<'a, GrayImage> {
    if imageops::is_hard(selection) {
        let r = (bbox.w.min(bbox.h) / div).clamp(1, 12);
        std::borrow::Cow::Owned(imageops::feather_inward(selection, bbox, r))
    } else {
        std::borrow::Cow::Borrowed(selection)
    }
}

/// How wide the selection's faded edge is, in pixels: the inward feather
/// Add gives a hard-edged one, or, for a feathered one, how far in from its
/// bounds it reaches full strength (along its middle row and column, at most a
/// quarter of its size).
pub fn faded_edge(selection: &GrayImage, b: Rect) -> u32 {
    if imageops::is_hard(selection) {
        return (b.w.min(b.h) / FEATHER_DIV_SUBJECT).clamp(1, 12);
    }
    let (mx, my) = (b.x + b.w / 2, b.y + b.h / 2);
    let full = |x: u32, y: u32| selection.get_pixel(x, y).0[0] >= 250;
    let most = b.w.min(b.h) / 4;
    let from = |f: &dyn Fn(u32) -> bool| (0..most).find(|&i| f(i)).unwrap_or(most);
    let l = from(&|i| full(b.x + i, my));
    let r = from(&|i| full(b.right() - 1 - i, my));
    let t = from(&|i| full(mx, b.y + i));
    let d = from(&|i| full(mx, b.bottom() - 1 - i));
    l.max(r).max(t).max(d)
}

/// A hard-edged selection's edge is faded over its shorter side divided by
/// these: a scene concept's whole selection, and, wider, a subject's, so where
/// the subject meets the selection's edge it melts into the kept scene.
pub const FEATHER_DIV: u32 = 24;
pub const FEATHER_DIV_SUBJECT: u32 = 12;
