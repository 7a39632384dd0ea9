//! pie's engine: concept bundles, ONNX Runtime sampling into a selection,
//! the concept library on disk, and launching the trainer. The `pie`
//! command line and the GIMP plug-in are both thin faces of this library.
//!
//! The API the plug-in uses:
//!
//! - [`library::Library`]: `open(explicit)` resolves `--library`, else
//!   `$PIE_HOME`, else `$XDG_DATA_HOME/pie`, else `~/.local/share/pie`;
//!   `path()`, `list()`, `load(name)` (a fully validated [`bundle::Bundle`]), `remove(name)`.
//! - [`bundle::Bundle::load`]`(dir)`: manifest, sha256 of every file, the
//!   denoiser's signature, tokens and path safety, all checked before use.
//! - [`locations`]: where the library, the cache, ONNX Runtime, the trainer and
//!   the CUDA libraries are, and which variable or default chose each.
//! - [`runtime`]: [`runtime::Device`] (`Auto`, `Cpu`, `Cuda`), loading the
//!   ONNX Runtime library ([`runtime::init`]), [`runtime::probe_cuda`].
//! - [`add()`]`(bundle, scene, selection, request, progress) -> Vec<AddOutput>`
//!   (and [`add_each`], [`blend_each`]): one [`AddRequest`] (`None` = the
//!   concept's default, resolved by [`AddRequest::resolve`]); the subject
//!   placed into the selection and re-synthesized; each output
//!   has its seed, the image (same size and colour type, bit-identical where
//!   the selection is 0, alpha preserved) and the rectangle that may differ.
//! - [`train::learn_scene`] / [`train::learn_subject`]: run the trainer, return the bundle folder.
//! - [`Progress`]: progress and cancellation, the GIMP progress bar or the CLI's.
//! - [`Error`] with [`Error::kind`] → [`ErrorKind`] (`BadInput`, `Cancelled`,
//!   `Unavailable`, `Internal`); messages name the bundle, file and what is wrong.
//!   Options at fault are named by [`Opt`], which each front end words itself.

pub mod add;
pub mod backbone;
pub mod bundle;
pub mod composite;
pub mod device;
pub mod error;
pub mod events;
pub mod imageops;
pub mod library;
pub mod locations;
pub mod manifest;
pub mod onnxfile;
pub mod pixel;
pub mod plan;
pub mod precision;
pub mod request;
pub mod runtime;
pub mod safefs;
pub mod schedule;
pub mod sd;
pub mod sdxl;
#[doc(hidden)]
pub mod testkit;
pub mod train;

pub use add::{add_each, blend_each, AddOutput, AddStats, SOFT_ENLARGEMENT};
pub use backbone::Backbone;
pub use bundle::Bundle;
pub use composite::{Anchor, Look, Placement};
pub use error::{CudaOnly, Error, ErrorKind, Opt, Result};
pub use imageops::Rect;
pub use library::{ConceptInfo, Library};
pub use manifest::{Precision, Role, Stage};
pub use request::{AddRequest, Defaults, Settings};
pub use runtime::Device;
pub use schedule::{Sampler, Scheduler};
pub use train::TrainOptions;

/// What `bundle`'s backbone uses for the options a request leaves out, one
/// definition for `pie add` and the GIMP plug-in.
pub fn concept_defaults(bundle: &Bundle) -> Defaults {
    add::backbone_of(bundle).defaults()
}

/// The defaults of the backbone a concept is learned with unless asked
/// otherwise (pixel-unet), for a dialog's fields before a concept is chosen.
pub fn default_backbone_defaults() -> Defaults {
    Backbone::default().engine().defaults()
}

/// Adds the bundle's subject into `selection` of `scene`, with whichever
/// backbone the bundle has, and returns every variant (see [`add_each`]).
pub fn add(
    bundle: &Bundle,
    scene: &image::DynamicImage,
    selection: &image::GrayImage,
    request: &AddRequest,
    progress: &mut dyn Progress,
) -> Result<Vec<AddOutput>> {
    let mut outs = Vec::with_capacity(request.variants);
    add_each(bundle, scene, selection, request, progress, &mut |o| {
        outs.push(o);
        Ok(())
    })?;
    Ok(outs)
}

/// Progress and cancellation for long work.
pub trait Progress {
    /// `fraction` in [0, 1], or negative when only the text changed.
    fn update(&mut self, fraction: f64, text: &str);
    /// Polled between steps; `true` stops the work with [`Error::Cancelled`].
    fn cancelled(&self) -> bool {
        false
    }
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn update(&mut self, _fraction: f64, _text: &str) {}
}

/// Loads an image file the way `pie add` does, with a message that names it.
/// An EXIF orientation is applied, as GIMP and the trainer apply it, so a
/// phone photo and a mask drawn over it in GIMP have the same size and pixels.
pub fn open_image(path: &std::path::Path) -> Result<image::DynamicImage> {
    decode_image(path).map_err(|e| match e {
        ImageFailure::Io(e) => Error::io("cannot read the image", path, e),
        ImageFailure::Refused(why) => Error::bad(format!("{} {why}", path.display())),
    })
}

/// Why an image could not be read.
pub enum ImageFailure {
    Io(std::io::Error),
    /// Worded to follow the file's name.
    Refused(String),
}

/// Decodes a regular file within pie's size limits: the header's size is
/// checked before any pixel is decoded, so a small file claiming a huge image
/// is refused without allocating it. Animated GIF and WebP are refused as
/// such rather than read by their first frame (the trainer refuses them too).
pub fn decode_image(path: &std::path::Path) -> std::result::Result<image::DynamicImage, ImageFailure> {
    use image::ImageDecoder;
    let mut decoder = image_decoder(path)?;
    // A broken EXIF block is no reason to refuse the pixels.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder).map_err(unreadable)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Checks that `path` is an image pie can decode, reading only its header.
pub fn probe_image(path: &std::path::Path) -> std::result::Result<(u32, u32), ImageFailure> {
    use image::ImageDecoder;
    Ok(image_decoder(path)?.dimensions())
}

fn unreadable(e: image::ImageError) -> ImageFailure {
    match e {
        image::ImageError::Limits(l) => ImageFailure::Refused(format!("is larger than pie decodes ({l})")),
        e => ImageFailure::Refused(format!("is not an image pie can read (PNG, JPEG, TIFF): {e}")),
    }
}

/// A decoder past the size check: the header is read once on its own, so
/// the size a file claims is checked before a decoder is set up for it.
fn image_decoder(path: &std::path::Path) -> std::result::Result<impl image::ImageDecoder, ImageFailure> {
    let reader = |path| -> std::result::Result<_, ImageFailure> {
        let file = safefs::open_regular(path).map_err(ImageFailure::Io)?;
        let mut r = image::ImageReader::new(std::io::BufReader::new(file))
            .with_guessed_format()
            .map_err(ImageFailure::Io)?;
        r.limits(safefs::image_limits());
        Ok(r)
    };
    let mut header = reader(path)?;
    header.no_limits();
    let (w, h) = header.into_dimensions().map_err(unreadable)?;
    safefs::check_image_size(w, h).map_err(ImageFailure::Refused)?;
    reader(path)?.into_decoder().map_err(unreadable)
}

/// Loads a selection mask: 8-bit gray, 255 inside, 0 outside (16-bit is
/// scaled). A mask with a transparent part is read from its alpha, as the
/// trainer reads a subject mask. A colour image is refused: it is almost
/// always the photo or another wrong file, and its luma would make a weak,
/// patchy selection without a word.
pub fn open_mask(path: &std::path::Path) -> Result<image::GrayImage> {
    let img = open_image(path)?;
    if img.color().has_alpha() {
        let la = img.to_luma_alpha8();
        if la.pixels().any(|p| p.0[1] < 255) {
            return Ok(image::GrayImage::from_fn(la.width(), la.height(), |x, y| {
                image::Luma([la.get_pixel(x, y).0[1]])
            }));
        }
    }
    if img.color().has_color() {
        // JPEG's chroma noise on a gray mask stays well under this.
        const TOLERANCE: u8 = 24;
        let rgb = img.to_rgb8();
        let colored = rgb
            .pixels()
            .filter(|p| p.0.iter().max().unwrap_or(&0) - p.0.iter().min().unwrap_or(&0) > TOLERANCE)
            .count();
        if colored > 0 {
            return Err(Error::bad(format!(
                "the selection mask {} is a colour image ({colored} of its {} pixels are not gray): a selection mask is grayscale, \
                 white (255) where the subject goes, black (0) elsewhere, gray between to feather",
                path.display(),
                rgb.width() as u64 * rgb.height() as u64
            )));
        }
    }
    Ok(img.to_luma8())
}

#[cfg(test)]
mod tests {
    #[test]
    fn concept_defaults_follow_the_backbone() {
        let d = tempfile::tempdir().unwrap();
        crate::testkit::write_bundle(
            d.path(),
            &crate::testkit::Synthetic { name: "ball".into(), ..Default::default() },
        )
        .unwrap();
        crate::sd::testkit::write_sd_bundle(
            d.path(),
            &crate::sd::testkit::SyntheticSd { name: "dog".into(), ..Default::default() },
        )
        .unwrap();
        let lib = crate::Library::open(Some(d.path().to_path_buf())).unwrap();
        let ball = super::concept_defaults(&lib.load("ball").unwrap());
        let dog = super::concept_defaults(&lib.load("dog").unwrap());
        assert_eq!((ball.strength, ball.guidance), (0.2, 3.0));
        assert_eq!((dog.strength, dog.guidance), (0.7, 7.5));
        assert_eq!(super::default_backbone_defaults(), ball);
    }
}
