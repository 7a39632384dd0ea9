//! `pie blend`: the subject the user pasted, made to fit the scene.

use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage};
use pie::{AddRequest, Error, Library, Result};

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
pub fn run(
    lib: &Library,
    image: &Path,
    pasted: &Pasted,
    concept: &str,
    out: &Path,
    request: &AddRequest,
    json: bool,
) -> Result<Written> {
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
    let request = AddRequest { variants: 1, ..request.clone() };
    let mut p = CliProgress::new(json, "blend");
    let mut staged = output::Staged::default();
    let mut done = None;
    pie::blend_each(&bundle, &composite, &mask, &request, &mut p, &mut |o| {
        staged.write(out, &o.image)?;
        done = Some(Written {
            path: PathBuf::from(out),
            seed: o.seed,
            device: o.device,
            changed: o.changed,
            stats: o.stats,
        });
        Ok(())
    })?;
    p.finish();
    staged.commit()?;
    done.ok_or_else(|| Error::internal("blend made no result"))
}

/// The scene with the cut-out laid over it at `at`, and where it landed.
fn paste(
    scene: DynamicImage,
    subject: &DynamicImage,
    path: &Path,
    (ax, ay): (i64, i64),
) -> Result<(DynamicImage, GrayImage)> {
    if !subject.color().has_alpha() {
        return Err(Error::bad(format!(
            "the subject {} has no transparency, so pie cannot tell it from its background: cut it out (a PNG with alpha), \
             or paste it into the image yourself and give its --mask",
            path.display()
        )));
    }
    pie::composite::place::lay_over(&scene, subject, (ax, ay)).ok_or_else(|| {
        Error::bad(format!(
            "the subject {} placed at {ax},{ay} does not overlap the {}x{} image (or is fully transparent): move it with --at",
            path.display(),
            scene.width(),
            scene.height()
        ))
    })
}
