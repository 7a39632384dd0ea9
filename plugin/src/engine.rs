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
    pub stage: pie::Stage,
    pub parent: Option<String>,
    pub backbone: pie::Backbone,
}

impl Concept {
    /// What a list says of its backbone after its name: nothing for the
    /// default one, ", Stable Diffusion" for sd.
    pub fn backbone_note(&self) -> String {
        backbone_note(self.backbone)
    }
}

fn backbone_note(b: pie::Backbone) -> String {
    if b == pie::Backbone::default() {
        String::new()
    } else {
        format!(", {}", b.about().title)
    }
}

pub struct Listing {
    pub path: PathBuf,
    pub concepts: Vec<Concept>,
}

impl From<pie::Error> for Failure {
    fn from(e: pie::Error) -> Failure {
        use pie::Error as E;
        let named = |option: pie::Opt, value: &str| match value {
            "" => format!("'{}'", label(option)),
            v => format!("'{}' {v}", label(option)),
        };
        let text = match &e {
            E::Cancelled => return Failure::Cancelled,
            E::OutOfRange { option, value, range } => {
                format!("{} is out of range ({range}).", named(*option, value))
            }
            E::NotForBackbone { option, value, concept, backbone, lacks, readers } => format!(
                "{} is for {} concepts; '{concept}' is a {backbone} concept ({lacks}): leave it at its default or empty.",
                named(*option, value),
                readers.join(" and ")
            ),
            E::Conflict { option, value, why, with, with_value } => {
                format!("{} {why}: use it with {}.", named(*option, value), named(*with, with_value))
            }
            E::CudaUnavailable(why) => {
                format!("Device CUDA: CUDA cannot be used here: {why}. Choose Automatic or CPU.")
            }
            E::CudaOnly { concept, needs, cuda } => {
                let what = match needs {
                    pie::CudaOnly::Float16 => String::from("has float16 weights"),
                    pie::CudaOnly::Fused { by, graphs } => {
                        format!("has graphs fused for CUDA by {by} ({})", graphs.join(", "))
                    }
                };
                let why = match cuda {
                    None => String::from("Device CPU was chosen"),
                    Some(why) => format!("CUDA cannot be used here: {why}"),
                };
                format!(
                    "'{concept}' {what}, which pie runs on CUDA only ({why}): choose Device CUDA or Automatic \
                     on a machine with an NVIDIA GPU, or learn the concept again with float32 weights to run it on the CPU."
                )
            }
            // The engine's fix is for a terminal; for the plug-in, the fix is install.sh.
            E::Missing { what, .. } | E::Unavailable(what) => format!(
                "{} (pie's install.sh sets up ONNX Runtime and the trainer for the plug-in: run it again \
                 from the pie source folder; `pie doctor` shows what pie finds.)",
                capitalized(what)
            ),
            other => capitalized(&other.to_string()),
        };
        Failure::Error(text)
    }
}

/// An option's name as Add Subject's and Blend's dialogs label it.
fn label(option: pie::Opt) -> &'static str {
    use pie::Opt as O;
    match option {
        O::Steps => "Sampling steps",
        O::Strength => "Strength",
        O::Guidance => "Guidance",
        O::Variants => "Variants",
        O::Detail => "Detail",
        O::Threads => "Threads",
        O::Scale => "Size",
        O::Harmonize => "Take on the scene's light",
        O::Shadow => "Contact shadow",
        O::Sampler => "Sampler",
        O::Scheduler => "Scheduler",
        O::Prompt => "Prompt",
        O::NegativePrompt => "Negative prompt",
        O::CudaGraph => "CUDA graph",
    }
}

/// The engine's messages start in lower case (they follow "pie: " on the
/// command line); GIMP shows them on their own.
fn capitalized(s: &str) -> String {
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
    // An unreadable concept has neither stage nor backbone, and no list offers it.
    let concepts = lib
        .list()?
        .into_iter()
        .filter_map(|c| match (c.stage, c.backbone, c.problem) {
            (Some(stage), Some(backbone), None) => {
                Some(Concept { name: c.name, stage, parent: c.parent, backbone })
            }
            _ => None,
        })
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
                (Some(pie::Stage::Subject), Some(p)) => format!("subject in {p}"),
                (Some(pie::Stage::Subject), None) => "subject".to_string(),
                _ => "scene".to_string(),
            };
            let sd = c.backbone.map(backbone_note).unwrap_or_default();
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

/// The strength and guidance Add Subject's arguments default to: those of
/// the backbone concepts are learned with by default, as in the engine.
pub fn default_strength_guidance() -> (f64, f64) {
    let d = pie::default_backbone_defaults();
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
    /// See `pie::AddOutput::enlarged`.
    pub enlarged: Option<f32>,
}

impl From<pie::AddOutput> for Variant {
    fn from(o: pie::AddOutput) -> Variant {
        Variant {
            seed: o.seed,
            image: o.image,
            changed: Rect { x: o.changed.x, y: o.changed.y, w: o.changed.w, h: o.changed.h },
            note: o.note,
            enlarged: o.enlarged,
        }
    }
}

/// Add Subject: each variant goes to `sink` as soon as it is made.
pub fn add(
    concept: &str,
    request: &pie::AddRequest,
    scene: &DynamicImage,
    mask: &GrayImage,
    progress: &mut GimpProgress,
    sink: &mut dyn FnMut(Variant) -> Outcome<()>,
) -> Outcome<()> {
    let lib = library()?;
    progress.update(-1.0, "checking the concept");
    let bundle = lib.load(concept)?;
    let mut failed = None;
    let run = pie::add_each(&bundle, scene, mask, request, progress, &mut |o| {
        sink(o.into()).map_err(|f| {
            failed = Some(f);
            pie::Error::Cancelled
        })
    });
    match failed {
        Some(f) => Err(f),
        None => Ok(run?),
    }
}

/// Blend Pasted Subject: `composite` holds the pasted subject over the scene, `mask` where it is.
pub fn blend(
    concept: &str,
    request: &pie::AddRequest,
    composite: &DynamicImage,
    mask: &GrayImage,
    progress: &mut GimpProgress,
) -> Outcome<Variant> {
    let lib = library()?;
    progress.update(-1.0, "checking the concept");
    let bundle = lib.load(concept)?;
    let mut out = None;
    pie::blend_each(&bundle, composite, mask, request, progress, &mut |o| {
        out = Some(o);
        Ok(())
    })?;
    Ok(out.ok_or_else(|| Failure::msg("The engine made no result."))?.into())
}

/// The device a dialog's choice names ("" = automatic).
pub fn device(name: &str) -> Outcome<pie::Device> {
    Ok(pie::Device::from_str(if name.is_empty() { "auto" } else { name })?)
}

pub struct LearnParams {
    pub name: String,
    pub preset: String,
    pub device: String,
    /// 0: the preset's.
    pub steps: u32,
    /// A time budget for the whole run; `None`: all the steps run.
    pub minutes: Option<f64>,
    pub replace: bool,
    /// With `base` where it fine-tunes one; `None`: the trainer's default (a subject: its scene's).
    pub backbone: Option<pie::Backbone>,
    /// The pretrained checkpoint folder, for a backbone that fine-tunes one.
    pub base: Option<PathBuf>,
    /// sd: the class noun; `None`: the trainer's default.
    pub class_word: Option<String>,
    /// Passed to the trainer as they are (`pie learn-* --trainer-arg`).
    pub trainer_args: Vec<String>,
    /// Continue a stopped run of this name if the library has one (`--resume`).
    pub resume: bool,
}

/// `stage`: Learn Scene's or Learn Subject's. `resume` is passed only when the
/// library holds a stopped run of this name and stage (`--resume` without one
/// is an error; one of the other stage is started over).
fn train_options(lib: &pie::Library, p: &LearnParams, stage: pie::Stage) -> Outcome<pie::TrainOptions> {
    let resume =
        p.resume && lib.interrupted().iter().any(|r| r.name == p.name && r.stage.is_none_or(|s| s == stage));
    Ok(pie::TrainOptions {
        quick: p.preset != "default",
        steps: (p.steps > 0).then_some(p.steps as u64),
        minutes: p.minutes,
        device: device(&p.device)?,
        force: p.replace,
        backbone: p.backbone,
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
    let opts = train_options(&lib, p, pie::Stage::Scene)?;
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
    let opts = train_options(&lib, p, pie::Stage::Subject)?;
    let dir = pie::train::learn_subject(&lib, image, scene, &p.name, mask, &opts, progress)
        .map_err(|e| learn_failure(e, opts.resume))?;
    Ok(format!("{} the subject '{}' in the scene '{scene}' ({}).", learned(&opts), p.name, dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(e: pie::Error) -> String {
        match Failure::from(e) {
            Failure::Error(m) => m,
            Failure::Cancelled => String::from("cancelled"),
        }
    }

    #[test]
    fn options_at_fault_are_named_by_their_dialog_labels_never_by_flags() {
        let m = words(pie::Error::out_of_range(pie::Opt::Steps, 0, "1 to 1000"));
        assert_eq!(m, "'Sampling steps' 0 is out of range (1 to 1000).");
        let m = words(pie::Error::NotForBackbone {
            option: pie::Opt::Scheduler,
            value: "dpm++2m".into(),
            concept: "ball".into(),
            backbone: "pixel-unet",
            lacks: "no text encoder",
            readers: vec!["sd"],
        });
        assert!(
            m.starts_with("'Scheduler' dpm++2m is for sd concepts; 'ball' is a pixel-unet concept"),
            "{m}"
        );
        let m = words(pie::Error::Conflict {
            option: pie::Opt::Sampler,
            value: "ddpm".into(),
            why: "adds fresh noise",
            with: pie::Opt::Scheduler,
            with_value: "ddim".into(),
        });
        assert_eq!(m, "'Sampler' ddpm adds fresh noise: use it with 'Scheduler' ddim.");
        let m = words(pie::Error::CudaUnavailable("no driver".into()));
        assert!(m.starts_with("Device CUDA: CUDA cannot be used here: no driver"), "{m}");
        let fused = words(pie::Error::CudaOnly {
            concept: "dog".into(),
            needs: pie::CudaOnly::Fused {
                by: pie::manifest::Optimizer::OrtTransformers,
                graphs: vec!["unet", "vae_decoder"],
            },
            cuda: None,
        });
        assert!(
            fused.starts_with(
                "'dog' has graphs fused for CUDA by onnxruntime-transformers (unet, vae_decoder), \
                 which pie runs on CUDA only (Device CPU was chosen): choose Device CUDA or Automatic"
            ),
            "{fused}"
        );
        let half = words(pie::Error::CudaOnly {
            concept: "dog".into(),
            needs: pie::CudaOnly::Float16,
            cuda: Some("no driver".into()),
        });
        assert!(half.starts_with("'dog' has float16 weights, which pie runs on CUDA only (CUDA cannot be used here: no driver)"), "{half}");
        for m in [&m, &fused, &half, &words(pie::Error::Unavailable("no ONNX Runtime".into()))] {
            assert!(!m.contains("--"), "{m}");
        }
    }

    #[test]
    fn what_is_missing_gets_the_plug_ins_fix_not_the_terminals() {
        let m = words(pie::Error::Unavailable("the trainer is missing".into()));
        assert!(m.starts_with("The trainer is missing (pie's install.sh"), "{m}");
        let m = words(pie::Error::Missing {
            what: "no ONNX Runtime".into(),
            fix: "Run `bash build/onnxruntime.sh cpu`".into(),
        });
        assert!(m.starts_with("No ONNX Runtime (pie's install.sh"), "{m}");
        assert!(!m.contains("build/onnxruntime.sh"), "{m}");
        assert_eq!(words(pie::Error::Cancelled), "cancelled");
    }
}
