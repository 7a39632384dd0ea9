//! The plug-in's only door to the pie engine (the `pie-engine` crate, lib
//! `pie`): the library listing, Add, Learn Scene, Learn Subject and Forget. Thin
//! calls; the plug-in holds no image processing of its own, so the same
//! inputs and seed give the same pixels as the `pie` command line.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use image::{DynamicImage, GrayImage};

use crate::failure::{Failure, Outcome};
use crate::pixels::Rect;
use crate::progress::GimpProgress;

/// A concept of the library, for the dialogs' lists and error messages.
pub struct Concept {
    pub name: String,
    /// 1 scene, 2 subject, 0 unreadable.
    pub stage: u8,
    pub parent: Option<String>,
    /// `pixel-unet` or `sd`.
    pub backbone: String,
}

pub struct Listing {
    pub path: PathBuf,
    pub concepts: Vec<Concept>,
}

impl From<pie::Error> for Failure {
    fn from(e: pie::Error) -> Failure {
        match e.kind() {
            pie::ErrorKind::Cancelled => Failure::Cancelled,
            pie::ErrorKind::Unavailable if !e.to_string().contains("install.sh") => Failure::Error(format!(
                "{} (pie's install.sh sets up ONNX Runtime and the trainer for the plug-in: run it again \
                 from the pie source folder; `pie doctor` shows what pie finds.)",
                sentence(&e.to_string())
            )),
            _ => Failure::Error(sentence(&e.to_string())),
        }
    }
}

/// The engine's messages start in lower case (they follow "pie: " on the
/// command line) and may name the command line's option ("--device cuda: ");
/// GIMP shows them on their own, after the dialog's "Device".
fn sentence(s: &str) -> String {
    let s = s.strip_prefix("--device ").map(|rest| format!("device {rest}")).unwrap_or_else(|| s.to_string());
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

impl pie::Progress for GimpProgress {
    fn update(&mut self, fraction: f64, text: &str) {
        GimpProgress::update(self, fraction, text)
    }
    // GIMP's cancel button kills the plug-in (see progress.rs): nothing to poll.
}

fn library() -> Outcome<pie::Library> {
    Ok(pie::Library::open(None)?)
}

pub fn list() -> Outcome<Listing> {
    let lib = library()?;
    let concepts = lib
        .list()?
        .into_iter()
        .filter(|c| c.problem.is_none())
        .map(|c| Concept { name: c.name, stage: c.stage, parent: c.parent, backbone: c.backbone })
        .collect();
    Ok(Listing { path: lib.path().to_path_buf(), concepts })
}

/// One thing Forget Concept can delete, with a label saying what it is and
/// what it holds on disk.
pub struct Forgettable {
    pub name: String,
    pub label: String,
}

/// Every concept (an unreadable one too: that is when deleting it matters
/// most) and every stopped training run, as `pie concepts list` shows them.
pub fn forgettable() -> Outcome<Vec<Forgettable>> {
    let lib = library()?;
    let mut out: Vec<Forgettable> = lib
        .list()?
        .into_iter()
        .map(|c| {
            let what = match (c.stage, &c.parent) {
                (_, _) if c.problem.is_some() => "unreadable".to_string(),
                (2, Some(p)) => format!("subject in {p}"),
                (2, None) => "subject".to_string(),
                _ => "scene".to_string(),
            };
            let sd = if c.backbone == "sd" { ", Stable Diffusion" } else { "" };
            Forgettable {
                label: format!("{} ({what}{sd}, {})", c.name, pie::library::megabytes(c.bytes)),
                name: c.name,
            }
        })
        .collect();
    for r in lib.interrupted() {
        let label = format!("{} (stopped training run, {})", r.name, pie::library::megabytes(r.bytes));
        match out.iter_mut().find(|f| f.name == r.name) {
            // Learning again under a concept's name and stopping: both go.
            Some(f) => f.label.push_str(&format!(" + {label}")),
            None => out.push(Forgettable { name: r.name, label }),
        }
    }
    Ok(out)
}

/// Deletes concept `name` (and its stopped run's checkpoint), or the
/// checkpoint of a stopped run that never became a concept: `pie concepts remove`.
pub fn forget(name: &str) -> Outcome<()> {
    Ok(library()?.remove(name)?)
}

fn device(name: &str) -> Outcome<pie::Device> {
    Ok(pie::Device::from_str(if name.is_empty() { "auto" } else { name })?)
}

pub struct AddParams {
    pub concept: String,
    pub seed: u64,
    pub steps: u32,
    /// `None`: the concept's (its backbone's default, as `pie add` without `--strength`).
    pub strength: Option<f64>,
    /// `None`: the concept's (as `pie add` without `--guidance`).
    pub guidance: Option<f64>,
    pub variants: u32,
    pub device: String,
    /// `ddim` or `dpm++2m`; used for sd concepts only (pixel-unet concepts always run DDIM).
    pub scheduler: String,
    /// sd concepts only: replace the concept's prompt / negative prompt (`pie add --prompt`, `--negative-prompt`).
    pub prompt: Option<String>,
    pub negative_prompt: Option<String>,
    pub placement: pie::Placement,
    pub look: pie::Look,
}

/// The strength and guidance Add Subject's arguments default to: the
/// pixel-unet backbone's, as in the engine.
pub fn default_strength_guidance() -> (f64, f64) {
    let d = pie::AddOptions::default();
    // Through the shortest decimal, so 0.2f32 becomes 0.2, not 0.20000000298.
    let f = |v: f32| v.to_string().parse::<f64>().unwrap_or(v as f64);
    (f(d.strength), f(d.guidance))
}

pub struct Variant {
    pub seed: u64,
    pub image: DynamicImage,
    pub changed: Rect,
    /// Something the user should know (e.g. CUDA fell back to the CPU).
    pub note: Option<String>,
}

impl From<pie::AddOutput> for Variant {
    fn from(o: pie::AddOutput) -> Variant {
        Variant {
            seed: o.seed,
            image: o.image,
            changed: Rect { x: o.changed.x, y: o.changed.y, w: o.changed.w, h: o.changed.h },
            note: o.note,
        }
    }
}

pub fn add(
    p: &AddParams,
    scene: &DynamicImage,
    mask: &GrayImage,
    progress: &mut GimpProgress,
) -> Outcome<Vec<Variant>> {
    let lib = library()?;
    progress.update(-1.0, "checking the concept");
    let bundle = lib.load(&p.concept)?;
    let given = pie::AddOptions {
        seed: p.seed,
        steps: p.steps as usize,
        // NaN: not given, the concept's own (resolved by the engine, as for `pie add`).
        strength: p.strength.map_or(f32::NAN, |s| s as f32),
        guidance: p.guidance.map_or(f32::NAN, |g| g as f32),
        variants: p.variants as usize,
        device: device(&p.device)?,
        placement: p.placement,
        look: p.look,
        ..pie::AddOptions::default()
    };
    let opts = pie::with_concept_defaults(&given, &bundle);
    // A pixel-unet subject has no text encoder: the sd-only arguments are left
    // out for it (the dialog keeps the last values for the next sd subject).
    let is_sd = bundle.manifest.is_sd();
    let sd = pie::SdOptions {
        scheduler: if is_sd && !p.scheduler.is_empty() {
            pie::Scheduler::from_str(&p.scheduler)?
        } else {
            pie::Scheduler::Ddim
        },
        prompt: p.prompt.clone().filter(|_| is_sd),
        negative_prompt: p.negative_prompt.clone().filter(|_| is_sd),
        ..pie::SdOptions::default()
    };
    let mut outputs = Vec::with_capacity(opts.variants);
    pie::add_each_with(&bundle, scene, mask, &opts, &sd, progress, &mut |o| {
        outputs.push(o);
        Ok(())
    })?;
    Ok(outputs.into_iter().map(Variant::from).collect())
}

pub struct BlendParams {
    /// The scene concept.
    pub concept: String,
    pub seed: u64,
    pub steps: u32,
    pub device: String,
    pub look: pie::Look,
}

/// Blend Pasted Subject: `composite` holds the pasted subject over the scene, `mask` where it is.
pub fn blend(
    p: &BlendParams,
    composite: &DynamicImage,
    mask: &GrayImage,
    progress: &mut GimpProgress,
) -> Outcome<Variant> {
    let lib = library()?;
    progress.update(-1.0, "checking the concept");
    let bundle = lib.load(&p.concept)?;
    let given = pie::AddOptions {
        seed: p.seed,
        steps: p.steps as usize,
        strength: f32::NAN,
        guidance: f32::NAN,
        device: device(&p.device)?,
        look: p.look,
        ..pie::AddOptions::default()
    };
    let opts = pie::with_concept_defaults(&given, &bundle);
    let mut out = None;
    pie::blend_each(&bundle, composite, mask, &opts, progress, &mut |o| {
        out = Some(o);
        Ok(())
    })?;
    Ok(out.ok_or_else(|| Failure::msg("The engine made no result."))?.into())
}

pub struct LearnParams {
    pub name: String,
    pub preset: String,
    pub device: String,
    /// 0: the preset's.
    pub steps: u32,
    pub replace: bool,
    /// `Some("sd")` with `base`; `None`: the trainer's default (a subject: its scene's).
    pub backbone: Option<String>,
    /// sd: the Stable Diffusion checkpoint folder.
    pub base: Option<PathBuf>,
    /// sd: the class noun; `None`: the trainer's default.
    pub class_word: Option<String>,
    /// Passed to the trainer as they are (`pie learn-* --trainer-arg`).
    pub trainer_args: Vec<String>,
    /// Continue a stopped run of this name if the library has one (`--resume`).
    pub resume: bool,
}

/// `stage`: 1 Learn Scene, 2 Learn Subject. `resume` is passed only when the
/// library holds a stopped run of this name and stage (`--resume` without one
/// is an error; one of the other stage is started over).
fn train_options(lib: &pie::Library, p: &LearnParams, stage: u8) -> Outcome<pie::TrainOptions> {
    let resume =
        p.resume && lib.interrupted().iter().any(|r| r.name == p.name && (r.stage == stage || r.stage == 0));
    Ok(pie::TrainOptions {
        quick: p.preset != "default",
        steps: (p.steps > 0).then_some(p.steps as u64),
        device: device(&p.device)?,
        force: p.replace,
        backbone: p.backbone.clone(),
        base: p.base.clone(),
        class_word: p.class_word.clone(),
        extra_args: p.trainer_args.clone(),
        resume,
        ..pie::TrainOptions::default()
    })
}

/// A refused resume (the stopped run was of another photo, say) says how to start over.
fn learn_failure(e: pie::Error, resumed: bool) -> Failure {
    let bad = e.kind() == pie::ErrorKind::BadInput;
    match Failure::from(e) {
        Failure::Error(m) if resumed && bad => Failure::Error(format!(
            "{m} (This continued a stopped run of the same name: untick 'Continue a stopped run' to start over.)"
        )),
        f => f,
    }
}

fn learned(opts: &pie::TrainOptions) -> &'static str {
    if opts.resume {
        "pie continued the stopped run and learned"
    } else {
        "pie learned"
    }
}

/// Returns a sentence saying what was learned and where it is.
pub fn learn_scene(image: &Path, p: &LearnParams, progress: &mut GimpProgress) -> Outcome<String> {
    let lib = library()?;
    let opts = train_options(&lib, p, 1)?;
    let dir = pie::train::learn_scene(&lib, image, &p.name, &opts, progress)
        .map_err(|e| learn_failure(e, opts.resume))?;
    Ok(format!("{} the scene '{}' ({}).", learned(&opts), p.name, dir.display()))
}

pub fn learn_subject(
    image: &Path,
    scene: &str,
    mask: Option<&Path>,
    p: &LearnParams,
    progress: &mut GimpProgress,
) -> Outcome<String> {
    let lib = library()?;
    let opts = train_options(&lib, p, 2)?;
    let dir = pie::train::learn_subject(&lib, image, scene, &p.name, mask, &opts, progress)
        .map_err(|e| learn_failure(e, opts.resume))?;
    Ok(format!("{} the subject '{}' in the scene '{scene}' ({}).", learned(&opts), p.name, dir.display()))
}

#[cfg(test)]
mod tests {
    use super::sentence;

    #[test]
    fn messages_read_as_sentences() {
        assert_eq!(
            sentence("--device cuda: CUDA cannot be used here"),
            "Device cuda: CUDA cannot be used here"
        );
        assert_eq!(sentence("no concept named \"x\""), "No concept named \"x\"");
        assert_eq!(sentence(""), "");
    }
}
