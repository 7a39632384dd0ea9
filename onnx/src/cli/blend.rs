//! `pie blend`: the subject the user pasted, made to fit the scene.

use std::path::{Path, PathBuf};

use image::{DynamicImage, GenericImage, GenericImageView, GrayImage};
use pie::{AddOptions, Error, Library, Result};

use super::output;
use super::progress::CliProgress;
use super::Written;

/// How the user gives the pasted subject.
pub enum Pasted<'a> {
    /// IMAGE already holds it; this is its mask.
    Mask(&'a Path),
    /// A cut-out with transparency, its top-left corner at `at`.
    Layer { subject: &'a Path, at: (i64, i64) },
}

/// Reads and checks everything, blends, and writes `out` only when complete.
pub fn run(lib: &Library, image: &Path, pasted: &Pasted, concept: &str, out: &Path, opts: &AddOptions, json: bool) -> Result<Written> {
    let inputs: Vec<&Path> = match pasted {
        Pasted::Mask(m) => vec![image, m],
        Pasted::Layer { subject, .. } => vec![image, subject],
    };
    output::check_writable(out, &inputs, lib.path())?;
    let scene = pie::open_image(image)?;
    let (composite, mask) = match pasted {
        Pasted::Mask(m) => (scene, pie::open_mask(m)?),
        Pasted::Layer { subject, at } => paste(scene, &pie::open_image(subject)?, subject, *at)?,
    };
    let bundle = lib.load(concept)?;
    let mut opts = opts.clone();
    let (strength, guidance) = pie::concept_defaults(&bundle);
    if opts.strength.is_nan() {
        opts.strength = strength;
    }
    if opts.guidance.is_nan() {
        opts.guidance = guidance;
    }
    opts.variants = 1;
    let mut p = CliProgress::new(json, "blend");
    let mut staged = output::Staged::default();
    let mut done = None;
    pie::blend_each(&bundle, &composite, &mask, &opts, &mut p, &mut |o| {
        staged.write(out, &o.image)?;
        done = Some(Written { path: PathBuf::from(out), seed: o.seed, device: o.device, changed: o.changed, stats: o.stats });
        Ok(())
    })?;
    p.finish();
    staged.commit()?;
    done.ok_or_else(|| Error::internal("blend made no result"))
}

/// The scene with the cut-out laid over it at `at`, and where it landed.
fn paste(mut scene: DynamicImage, subject: &DynamicImage, path: &Path, (ax, ay): (i64, i64)) -> Result<(DynamicImage, GrayImage)> {
    if !subject.color().has_alpha() {
        return Err(Error::bad(format!(
            "the subject {} has no transparency, so pie cannot tell it from its background: cut it out (a PNG with alpha), \
             or paste it into the image yourself and give its --mask",
            path.display()
        )));
    }
    let sub = subject.to_rgba8();
    let (w, h) = scene.dimensions();
    let mut mask = GrayImage::new(w, h);
    let mut landed = false;
    for (x, y, px) in sub.enumerate_pixels() {
        let (tx, ty) = (ax + i64::from(x), ay + i64::from(y));
        let a = px.0[3];
        if a == 0 || tx < 0 || ty < 0 || tx >= i64::from(w) || ty >= i64::from(h) {
            continue;
        }
        let (tx, ty) = (tx as u32, ty as u32);
        let under = scene.get_pixel(tx, ty).0;
        let k = f32::from(a) / 255.0;
        let mixed: [u8; 4] = [0, 1, 2, 3].map(|c| if c == 3 { under[3] } else { (k * f32::from(px.0[c]) + (1.0 - k) * f32::from(under[c])).round() as u8 });
        scene.put_pixel(tx, ty, image::Rgba(mixed));
        mask.put_pixel(tx, ty, image::Luma([a]));
        landed = true;
    }
    if !landed {
        return Err(Error::bad(format!(
            "the subject {} placed at {ax},{ay} does not overlap the {w}x{h} image (or is fully transparent): move it with --at",
            path.display()
        )));
    }
    Ok((scene, mask))
}
