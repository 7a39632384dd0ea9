//! Pixels between GIMP and the engine.
//!
//! Reading: the layer in any precision (8/16/32-bit integer, half, float,
//! double; linear or perceptual) and RGB, RGBA, gray or gray-alpha, converted
//! by babl to non-linear ("R'G'B'") RGB in the layer's own colour space, at a
//! depth that loses nothing: u8 stays u8 (so a PNG's bytes reach the engine
//! exactly as `pie add` reads them), u16 becomes u16, everything else f32.
//! The selection is read over the layer's rectangle in image coordinates
//! (layer offsets respected) as a "Y u8" mask, feathering included.
//!
//! Writing: a new layer of the image's base type above the layer, covering
//! only the rectangle the engine changed, in the same babl format the pixels
//! were read in.

use gimp::prelude::*;
use gimp::{babl, gegl};
use image::{DynamicImage, GrayImage, ImageBuffer};

use crate::failure::{Failure, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    U8,
    U16,
    F32,
}

pub fn depth_of(precision: gimp::Precision) -> Depth {
    use gimp::Precision as P;
    match precision {
        P::U8Linear | P::U8NonLinear | P::U8Perceptual => Depth::U8,
        P::U16Linear | P::U16NonLinear | P::U16Perceptual => Depth::U16,
        _ => Depth::F32,
    }
}

pub fn encoding(depth: Depth, alpha: bool) -> &'static str {
    match (depth, alpha) {
        (Depth::U8, false) => "R'G'B' u8",
        (Depth::U8, true) => "R'G'B'A u8",
        (Depth::U16, false) => "R'G'B' u16",
        (Depth::U16, true) => "R'G'B'A u16",
        (Depth::F32, false) => "R'G'B' float",
        (Depth::F32, true) => "R'G'B'A float",
    }
}

/// The layer the user works on, as the engine sees it.
pub struct Source {
    pub drawable: gimp::Drawable,
    pub image: DynamicImage,
    /// The layer's position in the image.
    pub offset_x: i32,
    pub offset_y: i32,
    pub depth: Depth,
    pub alpha: bool,
    format: babl::Format,
    rgba_format: babl::Format,
}

fn babl_format(drawable: &gimp::Drawable, enc: &str) -> babl::Format {
    if drawable.is_rgb() {
        // keep the layer's colour space (its profile), only the encoding changes
        babl::Format::format_with_space(enc, &drawable.format().space())
    } else {
        babl::Format::from_encoding(enc)
    }
}

/// The one layer the procedure works on.
pub fn single_layer(drawables: &[gimp::Drawable]) -> Outcome<gimp::Drawable> {
    match drawables {
        [d] if d.is_layer() => Ok(d.clone()),
        [_] => Err(Failure::msg(
            "pie works on a layer: select a layer (not a channel or a layer mask) in the Layers dialog and try again.",
        )),
        [] => Err(Failure::msg("No layer is selected: select the layer to work on in the Layers dialog.")),
        many => Err(Failure::msg(format!(
            "{} layers are selected: select exactly one layer in the Layers dialog.",
            many.len()
        ))),
    }
}

pub fn read_layer(image: &gimp::Image, drawable: &gimp::Drawable) -> Outcome<Source> {
    if drawable.is_indexed() {
        return Err(Failure::msg("The image is indexed: convert it with Image > Mode > RGB and try again."));
    }
    let width = drawable.width();
    let height = drawable.height();
    if width <= 0 || height <= 0 {
        return Err(Failure::msg("The layer is empty (0 pixels wide or high)."));
    }
    let (offset_x, offset_y) =
        drawable.offsets().ok_or_else(|| Failure::msg("GIMP did not report the layer's position."))?;
    let depth = depth_of(image.precision());
    let alpha = drawable.has_alpha();
    let format = babl_format(drawable, encoding(depth, alpha));
    let rgba_format = babl_format(drawable, encoding(depth, true));
    let buffer =
        drawable.buffer().ok_or_else(|| Failure::msg("GIMP did not hand over the layer's pixels."))?;
    let rect = gegl::Rectangle::new(0, 0, width as u32, height as u32);
    let bytes = buffer.get_pixels(&rect, 1.0, &format, gegl::AbyssPolicy::None);
    drop(buffer);
    let (w, h) = (width as u32, height as u32);
    let bad = || Failure::msg("The layer's pixels have an unexpected size.");
    let img = match (depth, alpha) {
        (Depth::U8, false) => DynamicImage::ImageRgb8(ImageBuffer::from_raw(w, h, bytes).ok_or_else(bad)?),
        (Depth::U8, true) => DynamicImage::ImageRgba8(ImageBuffer::from_raw(w, h, bytes).ok_or_else(bad)?),
        (Depth::U16, false) => {
            DynamicImage::ImageRgb16(ImageBuffer::from_raw(w, h, to_u16(&bytes)).ok_or_else(bad)?)
        }
        (Depth::U16, true) => {
            DynamicImage::ImageRgba16(ImageBuffer::from_raw(w, h, to_u16(&bytes)).ok_or_else(bad)?)
        }
        (Depth::F32, false) => {
            DynamicImage::ImageRgb32F(ImageBuffer::from_raw(w, h, to_f32(&bytes)).ok_or_else(bad)?)
        }
        (Depth::F32, true) => {
            DynamicImage::ImageRgba32F(ImageBuffer::from_raw(w, h, to_f32(&bytes)).ok_or_else(bad)?)
        }
    };
    Ok(Source {
        drawable: drawable.clone(),
        image: img,
        offset_x,
        offset_y,
        depth,
        alpha,
        format,
        rgba_format,
    })
}

fn to_u16(bytes: &[u8]) -> Vec<u16> {
    bytes.chunks_exact(2).map(|c| u16::from_ne_bytes([c[0], c[1]])).collect()
}

fn to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The scene layer with the pasted layer laid over it (by the engine), in
/// the scene layer's own pixels, and the mask of where it landed.
pub fn lay_over(scene: &Source, pasted: &Source) -> Outcome<(DynamicImage, GrayImage)> {
    let at = (
        i64::from(pasted.offset_x) - i64::from(scene.offset_x),
        i64::from(pasted.offset_y) - i64::from(scene.offset_y),
    );
    pie::composite::place::lay_over(&scene.image, &pasted.image, at).ok_or_else(|| {
        Failure::msg("The pasted layer does not overlap the scene layer below it (or is fully transparent): move it over the scene.")
    })
}

/// The selection's bounds in image coordinates, or None when nothing is selected.
pub fn selection_bounds(image: &gimp::Image) -> Option<(i32, i32, i32, i32)> {
    match gimp::Selection::bounds(image) {
        Some((true, x1, y1, x2, y2)) if x2 > x1 && y2 > y1 => Some((x1, y1, x2, y2)),
        _ => None,
    }
}

/// The selection over the layer's rectangle: 0 outside, 255 fully selected,
/// in between where it is feathered. Parts of the layer outside the canvas
/// are never selected.
pub fn read_mask(image: &gimp::Image, src: &Source) -> Outcome<GrayImage> {
    let (w, h) = (src.image.width(), src.image.height());
    let selection = image.selection().ok_or_else(|| Failure::msg("GIMP did not hand over the selection."))?;
    let buffer =
        selection.buffer().ok_or_else(|| Failure::msg("GIMP did not hand over the selection's pixels."))?;
    let rect = gegl::Rectangle::new(src.offset_x, src.offset_y, w, h);
    let bytes = buffer.get_pixels(&rect, 1.0, &babl::Format::from_encoding("Y u8"), gegl::AbyssPolicy::None);
    GrayImage::from_raw(w, h, bytes).ok_or_else(|| Failure::msg("The selection mask has an unexpected size."))
}

/// A rectangle in the layer's coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// Adds `result` (the whole layer as the engine returned it) as a new layer
/// above the source layer, limited to `changed`. Returns the new layer.
pub fn add_result_layer(
    image: &gimp::Image,
    src: &Source,
    result: &DynamicImage,
    changed: Rect,
    name: &str,
) -> Outcome<gimp::Layer> {
    let (w, h) = (src.image.width(), src.image.height());
    if result.width() != w || result.height() != h {
        return Err(Failure::msg(format!(
            "The engine returned a {}x{} image for a {}x{} layer.",
            result.width(),
            result.height(),
            w,
            h
        )));
    }
    let Rect { x, y, w: cw, h: ch } = changed;
    if cw == 0 || ch == 0 || x + cw > w || y + ch > h {
        return Err(Failure::msg(format!(
            "The engine reported a changed region ({x},{y} {cw}x{ch}) outside the {w}x{h} layer."
        )));
    }
    let crop = result.crop_imm(x, y, cw, ch);
    // Always RGBA in the source's depth and colour space; babl converts it to
    // the new layer's format (gray-alpha in a grayscale image).
    let bytes: Vec<u8> = match src.depth {
        Depth::U8 => crop.to_rgba8().into_raw(),
        Depth::U16 => crop.to_rgba16().into_raw().iter().flat_map(|v| v.to_ne_bytes()).collect(),
        Depth::F32 => crop.to_rgba32f().into_raw().iter().flat_map(|v| v.to_ne_bytes()).collect(),
    };
    let kind = match image.base_type() {
        gimp::ImageBaseType::Gray => gimp::ImageType::GrayaImage,
        _ => gimp::ImageType::RgbaImage,
    };
    let layer =
        gimp::Layer::new(image, Some(name), cw as i32, ch as i32, kind, 100.0, gimp::LayerMode::Normal);
    // Above the source layer, inside the same group if it is in one.
    let parent = src.drawable.parent().and_then(|p| p.downcast::<gimp::Layer>().ok());
    let position = image.item_position(&src.drawable);
    if !image.insert_layer(&layer, parent.as_ref(), position.max(0)) {
        return Err(Failure::msg("GIMP refused to add the result layer to the image."));
    }
    layer.set_offsets(src.offset_x + x as i32, src.offset_y + y as i32);
    let buffer =
        layer.buffer().ok_or_else(|| Failure::msg("GIMP did not hand over the new layer's pixels."))?;
    buffer.set_pixels(&gegl::Rectangle::new(0, 0, cw, ch), 0, &src.rgba_format, &bytes, None);
    buffer.flush();
    drop(buffer);
    layer.update(0, 0, cw as i32, ch as i32);
    Ok(layer)
}

impl Source {
    /// The layer as an 8- or 16-bit image the image crate can write as PNG
    /// (for the trainer); float layers are written as 16-bit.
    pub fn for_png(&self) -> DynamicImage {
        match self.depth {
            Depth::U8 | Depth::U16 => self.image.clone(),
            Depth::F32 if self.alpha => DynamicImage::ImageRgba16(self.image.to_rgba16()),
            Depth::F32 => DynamicImage::ImageRgb16(self.image.to_rgb16()),
        }
    }

    #[allow(dead_code)]
    pub fn format_name(&self) -> String {
        self.format.encoding()
    }
}
