//! The one Add skeleton every backbone runs through: check the request and
//! the selection, let the concept's backbone make ready what its variants
//! share, then for each variant sample (with progress and cancel), blend the
//! result back through the selection and hand it on. Outside the selection
//! nothing changes. What differs between backbones sits behind [`Engine`].

use std::borrow::Cow;
use std::time::{Duration, Instant};

use image::{DynamicImage, GenericImageView, GrayImage};

use crate::backbone::{About, Backbone, BackboneParts, Fault};
use crate::bundle::Bundle;
use crate::composite::region;
use crate::imageops::{self, Planes, Rect};
use crate::manifest::{Manifest, Text};
use crate::precision::Precision;
use crate::request::{AddRequest, Defaults, Settings};
use crate::runtime::Device;
use crate::schedule::Scheduler;
use crate::{Error, Opt, Progress, Result};

/// Where the time went.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct AddStats {
    pub total: Duration,
    /// Inside ONNX Runtime's `run`.
    pub runtime: Duration,
    /// Creating the sessions (loading the graphs).
    pub session: Duration,
    pub steps: usize,
    pub work_w: usize,
    pub work_h: usize,
    /// pixel-unet: which of its denoiser graphs ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
}

#[derive(Debug, Clone)]
pub struct AddOutput {
    pub seed: u64,
    /// Same size and colour type as the input; bit-identical where the selection is 0; alpha untouched.
    pub image: DynamicImage,
    /// Bounding box of the pixels that may differ from the input.
    pub changed: Rect,
    /// The device that really ran the model.
    pub device: Device,
    /// Why `auto` ran on the CPU, said once per process.
    pub note: Option<String>,
    /// How many times the subject's cut-out was enlarged past its own
    /// photo's resolution, when that is enough to make it look softer than
    /// the photo (more than [`SOFT_ENLARGEMENT`]); each front end says so.
    pub enlarged: Option<f32>,
    pub stats: AddStats,
}

/// Past this enlargement the cut-out's own softness shows against the photo
/// (tests/eval/look.py: the dog enlarged 3x reads 2.0 px of edge blur against
/// the photo's 0.8).
pub const SOFT_ENLARGEMENT: f32 = 2.0;

/// One backbone's side of a bundle and of an Add. A new backbone is one
/// module implementing this, named in [`Backbone`].
pub(crate) trait Engine: Sync {
    /// What its concepts lack that some options need, for the error that refuses them.
    fn lacks(&self) -> &'static str;
    /// Whether it reads `opt` (a request that gives one it does not is refused).
    fn reads(&self, opt: Opt) -> bool;
    fn schedulers(&self) -> &'static [Scheduler];
    fn defaults(&self) -> Defaults;
    /// Whether it can blend a pasted subject (Blend Pasted Subject).
    fn blends(&self) -> bool;
    /// See [`Backbone::about`].
    fn about(&self) -> About;
    /// See [`Backbone::fine_tunes_a_base`].
    fn fine_tunes_a_base(&self) -> bool;
    /// Whether bundle.json's `text` section is as it must be for this backbone.
    fn check_text(&self, text: Option<&Text>) -> std::result::Result<(), String>;
    /// The rules of its `model` (and the schedule it takes) that serde and the schema cannot state.
    fn check_model(&self, m: &Manifest) -> std::result::Result<(), String>;
    /// Its graphs' declared signatures against its contract.
    fn check_graphs(&self, m: &Manifest) -> std::result::Result<(), String>;
    /// Loads what its Add needs beyond the manifest, once every file is checked.
    fn load(&self, dir: &std::path::Path, m: &Manifest) -> std::result::Result<BackboneParts, Fault>;
    /// What `pie concepts show` says of its side of the bundle, one line each.
    fn describe(&self, bundle: &Bundle) -> Vec<String>;
    /// Checks what only it has, opens its models and makes ready everything
    /// the variants share.
    fn prepare<'a>(&self, job: &Job<'a>, progress: &mut dyn Progress) -> Result<Prepared<'a>>;
}

pub(crate) fn backbone_of(bundle: &Bundle) -> &'static dyn Engine {
    bundle.manifest.backbone.engine()
}

/// One Add's inputs, checked.
pub(crate) struct Job<'a> {
    pub bundle: &'a Bundle,
    pub scene: &'a DynamicImage,
    pub selection: &'a GrayImage,
    /// Blend: where the pasted subject is (it is already in `scene`).
    pub pasted: Option<&'a GrayImage>,
    /// The selection's bounding box.
    pub bbox: Rect,
    pub settings: &'a Settings,
}

/// What a backbone made ready for the variants of one Add.
pub(crate) struct Prepared<'a> {
    /// The part of the image the results cover.
    pub crop: Rect,
    pub work_w: usize,
    pub work_h: usize,
    /// Denoiser steps per variant.
    pub steps: usize,
    /// The device the denoiser really runs on, and why `auto` fell back.
    pub device: Device,
    pub note: Option<String>,
    /// How many times the subject's cut-out was enlarged to the photo's
    /// pixels; `None` where the backbone does not paste at the photo's scale.
    pub enlarged: Option<f32>,
    /// Which denoiser graph runs, where a backbone has more than one.
    pub precision: Option<Precision>,
    pub session: Duration,
    /// What a result is blended through, over the whole image.
    pub write: Cow<'a, GrayImage>,
    pub sampler: Box<dyn Variant + 'a>,
}

pub(crate) trait Variant {
    /// One result from `seed`: the crop in [0, 1] at its own size. Time
    /// inside ONNX Runtime goes to `runtime`; `on_step(i)` is called before
    /// step i and once after the last, and its error stops the work.
    fn sample(
        &mut self,
        seed: u64,
        runtime: &mut Duration,
        on_step: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<Planes>;
}

/// Says the models are loading; stops here if the user cancelled.
pub(crate) fn loading(progress: &mut dyn Progress) -> Result<()> {
    progress.update(0.0, "loading the model");
    if progress.cancelled() {
        return Err(Error::Cancelled);
    }
    Ok(())
}

/// Checks the selection against the scene; returns its bounding box.
pub fn check_selection(scene: &DynamicImage, selection: &GrayImage) -> Result<Rect> {
    if scene.width() == 0 || scene.height() == 0 {
        return Err(Error::bad("the image is empty (0 pixels)"));
    }
    if selection.dimensions() != scene.dimensions() {
        return Err(Error::bad(format!(
            "the selection mask is {}x{} but the image is {}x{}: they must be the same size",
            selection.width(),
            selection.height(),
            scene.width(),
            scene.height()
        )));
    }
    let bbox = imageops::mask_bbox(selection).ok_or_else(|| {
        Error::bad("the selection mask is empty (0 everywhere): select where the subject should go")
    })?;
    if selection.as_raw().iter().all(|&v| v > 0) {
        return Err(Error::bad(
            "the selection covers the whole image: leave part of the scene unselected so pie can match it",
        ));
    }
    Ok(bbox)
}

/// Adds the bundle's subject into `selection` of `scene` (a scene concept
/// re-synthesizes the selection as more of the scene), handing each result
/// to `sink` as soon as it is made, so a caller that stores them (the
/// command line) never holds K full-size copies of a large photo at once.
/// An error from `sink` stops the work.
pub fn add_each(
    bundle: &Bundle,
    scene: &DynamicImage,
    selection: &GrayImage,
    request: &AddRequest,
    progress: &mut dyn Progress,
    sink: &mut dyn FnMut(AddOutput) -> Result<()>,
) -> Result<()> {
    run_each(bundle, scene, selection, None, request, progress, sink)
}

/// Blend Pasted Subject: `image` already holds the subject where the user
/// put it, `subject` is its mask; the subject is made to fit the scene
/// around it (light, grain, shadow, the seam redrawn by the scene concept)
/// and only it and the scene just around and under it change.
pub fn blend_each(
    bundle: &Bundle,
    image: &DynamicImage,
    subject: &GrayImage,
    request: &AddRequest,
    progress: &mut dyn Progress,
    sink: &mut dyn FnMut(AddOutput) -> Result<()>,
) -> Result<()> {
    let backbone = bundle.manifest.backbone;
    if !backbone.engine().blends() {
        return Err(Error::bad(format!(
            "{:?} is learned with the {backbone} backbone: blending a pasted subject works with {} concepts (learn the scene with that backbone)",
            bundle.name(),
            Backbone::names_where(|b| b.engine().blends(), " and ")
        )));
    }
    let selection = region::blend_selection(image, subject)?;
    run_each(bundle, image, &selection, Some(subject), request, progress, sink)
}

fn run_each(
    bundle: &Bundle,
    scene: &DynamicImage,
    selection: &GrayImage,
    pasted: Option<&GrayImage>,
    request: &AddRequest,
    progress: &mut dyn Progress,
    sink: &mut dyn FnMut(AddOutput) -> Result<()>,
) -> Result<()> {
    let started = Instant::now();
    let settings = request.resolve(bundle)?;
    let bbox = check_selection(scene, selection)?;
    let job = Job { bundle, scene, selection, pasted, bbox, settings: &settings };
    let mut prep = backbone_of(bundle).prepare(&job, progress)?;
    let base = region::result_base(scene);
    let (n, variants) = (prep.steps, settings.variants);
    let enlarged = prep.enlarged.filter(|&f| f > SOFT_ENLARGEMENT);
    for v in 0..variants {
        let seed = settings.seed.wrapping_add(v as u64);
        let mut stats = AddStats {
            session: prep.session,
            steps: n,
            work_w: prep.work_w,
            work_h: prep.work_h,
            precision: prep.precision,
            ..Default::default()
        };
        let total = (variants * n) as f64;
        let mut on_step = |i: usize| -> Result<()> {
            let text = if variants > 1 {
                format!("variant {}/{variants}: step {i}/{n}", v + 1)
            } else {
                format!("step {i}/{n}")
            };
            progress.update((v * n + i) as f64 / total, &text);
            if progress.cancelled() {
                return Err(Error::Cancelled);
            }
            Ok(())
        };
        let res = prep.sampler.sample(seed, &mut stats.runtime, &mut on_step)?;
        let mut image = base.clone();
        imageops::blend_into(&mut image, prep.crop, &res, &prep.write);
        stats.total = started.elapsed();
        sink(AddOutput {
            seed,
            image,
            changed: bbox,
            device: prep.device,
            note: prep.note.clone(),
            enlarged,
            stats,
        })?;
    }
    progress.update(1.0, "done");
    Ok(())
}
