//! Argument parsing and the commands.

mod blend;
mod demo;
mod doctor;
mod gimp;
mod output;
mod progress;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use pie::{AddRequest, Device, Library, Result, Sampler, Scheduler, TrainOptions};
use serde_json::json;

use progress::CliProgress;

const MAIN_EXAMPLES: &str = "\
Examples:
  pie learn-scene garden.jpg --name garden
  pie learn-subject rex.jpg --mask rex-mask.png --scene garden --name rex
  pie add garden.jpg --selection where.png --concept rex --out garden-rex.png
  pie concepts
  pie doctor            # what pie found: ONNX Runtime, CUDA, the trainer, the plug-in

Exit status: 0 ok, 1 internal error, 2 bad input, 3 cancelled (Ctrl-C),
4 something pie needs is missing (ONNX Runtime, CUDA, the trainer).";

const LEARN_SCENE_EXAMPLES: &str = "\
Examples:
  pie learn-scene garden.jpg --name garden
  pie learn-scene garden.jpg --name garden --quick          # minutes, to try things out
  pie learn-scene garden.jpg --name garden --resume         # after Ctrl-C
  pie learn-scene garden.jpg --name garden --trainer-arg=--resolution --trainer-arg=32
  pie learn-scene garden.jpg --name garden-sd --backbone sd --base ~/models/stable-diffusion-v1-5";

const LEARN_SUBJECT_EXAMPLES: &str = "\
Examples:
  pie learn-subject rex.jpg --scene garden --name rex
  pie learn-subject rex.jpg --scene garden-sd --name rex-sd --class-word dog   # grows on the scene's sd backbone
  pie learn-subject rex.jpg --mask rex-mask.png --scene garden --name rex --quick";

const ADD_EXAMPLES: &str = "\
Pixels outside the selection stay exactly as they are. With --variants K > 1,
OUT gets -1, -2, … before its extension (result.png → result-1.png, …).
OUT is written only when complete, and never over IMAGE or the selection.

Examples:
  pie add garden.jpg --selection where.png --concept rex --out garden-rex.png
  pie add garden.jpg --selection where.png --concept rex --out try.png --variants 4 --seed 10
      # writes try-1.png .. try-4.png from seeds 10..13
  pie add garden.jpg --selection where.png --concept rex --out soft.png --strength 0.5
  pie add garden.jpg --selection where.png --concept rex-sd --out sd.png --scheduler dpm++2m --steps 25
  pie add garden.jpg --selection where.png --concept rex-sd --out sit.png \\
      --prompt \"a photo of {subject} sitting on the grass in {scene}\"";

const BLEND_EXAMPLES: &str = "\
The pasted subject and everything in IMAGE stay as they are in the file;
OUT gets the subject in the scene's light, with the scene's grain, its
shadow, and the seam redrawn by the concept. Only the subject and the scene
just around and under it change. The concept is the scene learned from the
photo, or a subject learned in it: then the model redraws the subject's edge
as that subject.

Examples:
  pie blend pasted.png --mask rex-where.png --concept garden --out blended.png
  pie blend garden.jpg --subject rex-cutout.png --at 420,310 --concept garden --out blended.png
  pie blend pasted.png --mask m.png --concept garden --out b.png --shadow 0 --harmonize 0.8
  pie blend garden.jpg --subject rex-cutout.png --at 420,310 --concept rex --out blended.png";

const CONCEPTS_EXAMPLES: &str = "\
Examples:
  pie concepts                 # list
  pie concepts show rex        # validate and describe
  pie concepts remove rex
  pie --json concepts list";

/// How --device is read: the three names, `gpu` accepted for cuda.
fn device_parser() -> impl clap::builder::TypedValueParser<Value = Device> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new([
        PossibleValue::new("auto"),
        PossibleValue::new("cpu"),
        PossibleValue::new("cuda").alias("gpu"),
    ])
    .try_map(|s| s.parse::<Device>())
}

fn at_least_one(s: &str) -> std::result::Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a whole number ({e})")),
    }
}

/// A time budget: a positive, finite number of minutes (fractions allowed).
fn positive_minutes(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(_) => Err("must be a positive number of minutes".into()),
        Err(_) => Err("not a number of minutes".into()),
    }
}

/// A number that is one: NaN and infinities are refused, not read as "not given".
fn finite(s: &str) -> std::result::Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err("must be a finite number".into()),
        Err(e) => Err(format!("not a number ({e})")),
    }
}

fn scheduler_parser() -> impl clap::builder::TypedValueParser<Value = Scheduler> {
    use clap::builder::{PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(Scheduler::ALL.map(Scheduler::name)).try_map(|s| s.parse::<Scheduler>())
}

fn sampler_parser() -> impl clap::builder::TypedValueParser<Value = Sampler> {
    use clap::builder::{PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(["ddim", "ddpm"]).try_map(|s| s.parse::<Sampler>())
}

#[derive(Parser)]
#[command(name = "pie", version, about = "Personalized image editing: learn a scene and a subject, then add the subject into a selection", after_help = MAIN_EXAMPLES)]
pub struct Cli {
    /// Concept library folder (default: $PIE_HOME, else $XDG_DATA_HOME/pie, else ~/.local/share/pie)
    #[arg(long, global = true, value_name = "DIR")]
    library: Option<PathBuf>,
    /// Machine-readable output: JSON lines on stdout, no progress bars
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

/// The concept, the output and how the model runs (Add and Blend).
#[derive(clap::Args, Clone)]
struct RunArgs {
    /// The concept: a subject, or a scene (Blend, or Add re-synthesizing the selection as scene)
    #[arg(long)]
    concept: String,
    /// Output image (.png, .tif or .jpg)
    #[arg(long)]
    out: PathBuf,
    /// Random seed: the same seed gives the same result on the same device
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Denoising steps over the whole schedule; STEPS × STRENGTH of them run [default: 50]
    #[arg(long)]
    steps: Option<usize>,
    /// How much is re-synthesized where subject and scene meet (0 < F ≤ 1; 1 starts from noise)
    /// [default: 0.2, 0.7 for sd and sdxl concepts]
    #[arg(long, value_parser = finite)]
    strength: Option<f32>,
    /// Classifier-free guidance scale (1 = none, and faster) [default: 3, 7.5 for sd and sdxl concepts]
    #[arg(long, value_parser = finite)]
    guidance: Option<f32>,
    /// Where to run the model: auto = CUDA when it works here, else the CPU (saying why); cuda = CUDA or an error
    #[arg(long, default_value = "auto", value_parser = device_parser())]
    device: Device,
    /// ONNX Runtime threads (default: all cores but one)
    #[arg(long)]
    threads: Option<usize>,
}

impl RunArgs {
    /// The request they make; what they leave out is the concept's.
    fn request(&self, look: &LookArgs) -> AddRequest {
        AddRequest {
            seed: self.seed,
            steps: self.steps,
            strength: self.strength,
            guidance: self.guidance,
            device: self.device,
            threads: self.threads,
            look: look.look(),
            ..Default::default()
        }
    }
}

/// How the subject is made to look photographed in the scene (Add and Blend).
#[derive(clap::Args, Clone)]
struct LookArgs {
    /// How much of the scene's light (white balance, exposure, contrast) the subject takes on, 0 to 1
    #[arg(long, default_value_t = pie::Look::default().harmonize, value_parser = finite)]
    harmonize: f32,
    /// How dark the contact shadow under the subject is, 0 (none) to 1; the selection must leave room below the subject
    #[arg(long, default_value_t = pie::Look::default().shadow, value_parser = finite)]
    shadow: f32,
    /// Keep the subject's own grain and sharpness instead of matching the scene's
    #[arg(long)]
    no_grain: bool,
}

impl LookArgs {
    fn look(&self) -> pie::Look {
        pie::Look { harmonize: self.harmonize, shadow: self.shadow, grain: !self.no_grain }
    }
}

fn anchor_parser() -> impl clap::builder::TypedValueParser<Value = pie::Anchor> {
    use clap::builder::{PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(pie::Anchor::NAMES).try_map(|s| s.parse::<pie::Anchor>())
}

fn backbone_parser() -> impl clap::builder::TypedValueParser<Value = pie::Backbone> {
    use clap::builder::{PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new(pie::Backbone::ALL.map(pie::Backbone::name))
        .try_map(|s| s.parse::<pie::Backbone>())
}

/// Reads `X,Y`.
fn position(s: &str) -> std::result::Result<(i64, i64), String> {
    let (x, y) = s.split_once(',').ok_or("give it as X,Y (pixels from the image's top-left corner)")?;
    let n = |v: &str| v.trim().parse::<i64>().map_err(|e| format!("{v:?} is not a whole number ({e})"));
    Ok((n(x)?, n(y)?))
}

#[derive(clap::Args, Clone)]
struct TrainArgs {
    /// A short training run (minutes; for trying things out)
    #[arg(long)]
    quick: bool,
    /// Training steps (default: the trainer's, fewer with --quick)
    #[arg(long, value_parser = at_least_one)]
    steps: Option<u64>,
    /// Time budget in minutes for the whole run: training stops in time to write the concept
    /// from the model at that step (the bar then counts down time)
    #[arg(long, value_name = "N", value_parser = positive_minutes, allow_negative_numbers = true)]
    minutes: Option<f64>,
    /// Random seed, for a reproducible run (default: the trainer's)
    #[arg(long)]
    seed: Option<u64>,
    /// Where to train: auto = CUDA when PyTorch can use it, else the CPU; cuda = CUDA or an error
    #[arg(long, default_value = "auto", value_parser = device_parser())]
    device: Device,
    /// Replace an existing concept of the same name
    #[arg(long)]
    force: bool,
    /// Continue a cancelled run from its checkpoint
    #[arg(long)]
    resume: bool,
    /// Pass an extra argument to the trainer (repeatable), e.g. --trainer-arg=--resolution --trainer-arg=32
    #[arg(long = "trainer-arg", value_name = "ARG", allow_hyphen_values = true)]
    trainer_args: Vec<String>,
    /// The model to learn with: pixel-unet (small, trained from scratch; the default) or sd
    /// (fine-tunes a local Stable Diffusion checkpoint, see --base). A subject takes its scene's
    #[arg(long, value_parser = backbone_parser())]
    backbone: Option<pie::Backbone>,
    /// With --backbone sd: the local Stable Diffusion 1.x/2.x checkpoint, a folder in diffusers layout or a single .safetensors file (A1111/ComfyUI; converted once into pie's cache)
    #[arg(long, value_name = "DIR|FILE")]
    base: Option<PathBuf>,
    /// With --backbone sd: the class noun of what is learned (e.g. dog, backpack; default: the trainer's)
    #[arg(long, value_name = "WORD")]
    class_word: Option<String>,
    /// With --backbone sd: LoRA rank, 0 = full fine-tuning of the UNet (default: the trainer's, 8)
    #[arg(long, value_name = "R")]
    lora_rank: Option<u32>,
    /// With --backbone sd: fine-tune the text encoder too
    #[arg(long)]
    train_text_encoder: bool,
    /// With --backbone sd: weights of the exported graphs; fp16 runs on CUDA only (default auto: fp16 when training on CUDA)
    #[arg(long, value_parser = ["auto", "fp32", "fp16"])]
    export_precision: Option<String>,
    /// With --backbone sd: fuse the graphs for CUDA with ONNX Runtime's transformer optimizer; the concept then runs on CUDA only, and on needs fp16 (default auto: on for an fp16 export on CUDA)
    #[arg(long, value_parser = ["auto", "on", "off"])]
    optimize: Option<String>,
}

impl TrainArgs {
    fn options(&self) -> TrainOptions {
        TrainOptions {
            quick: self.quick,
            steps: self.steps,
            minutes: self.minutes,
            seed: self.seed,
            device: self.device,
            force: self.force,
            resume: self.resume,
            extra_args: self.trainer_args.clone(),
            backbone: self.backbone,
            base: self.base.clone(),
            class_word: self.class_word.clone(),
            lora_rank: self.lora_rank,
            train_text_encoder: self.train_text_encoder,
            export_precision: self.export_precision.clone(),
            optimize: self.optimize.clone(),
            exclude: None,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Stage I: learn a scene from a photo
    #[command(after_help = LEARN_SCENE_EXAMPLES)]
    LearnScene {
        /// The scene photo (PNG, JPEG or TIFF)
        image: PathBuf,
        /// Concept name (a-z, 0-9, '-', '_')
        #[arg(long)]
        name: String,
        /// Pixels never to learn from: a gray mask the size of IMAGE, white = left out
        /// (an object you will blend back in later, so the scene is learned without it)
        #[arg(long, value_name = "MASK")]
        exclude: Option<PathBuf>,
        #[command(flatten)]
        train: TrainArgs,
    },
    /// Stage II: learn a subject on top of a learned scene
    #[command(after_help = LEARN_SUBJECT_EXAMPLES)]
    LearnSubject {
        /// A photo of the subject (PNG, JPEG or TIFF)
        image: PathBuf,
        /// The scene concept to grow from (see `pie concepts`)
        #[arg(long)]
        scene: String,
        /// Name for the new subject concept (a-z, 0-9, '-', '_')
        #[arg(long)]
        name: String,
        /// The subject's mask (white = subject), same size as IMAGE
        #[arg(long)]
        mask: Option<PathBuf>,
        #[command(flatten)]
        train: TrainArgs,
    },
    /// Add a learned subject into the selected region of a photo
    #[command(after_help = ADD_EXAMPLES)]
    Add {
        /// The photo to edit (PNG, JPEG or TIFF; 8/16-bit, gray and alpha are kept)
        image: PathBuf,
        /// Selection mask: 8-bit gray, same size as IMAGE, 255 inside, 0 outside, values between feather
        #[arg(long)]
        selection: PathBuf,
        #[command(flatten)]
        run: RunArgs,
        /// Results from seeds SEED, SEED+1, …
        #[arg(long, default_value_t = 1)]
        variants: usize,
        /// ddim (deterministic) or ddpm (adds fresh noise each step)
        #[arg(long, default_value = "ddim", value_parser = sampler_parser())]
        sampler: Sampler,
        /// Full-resolution detail put back when the concept works below 1:1 (0 to 1; pixel-unet concepts) [default: 1]
        #[arg(long, value_parser = finite)]
        detail: Option<f32>,
        /// sd concepts: ddim or dpm++2m (DPM-Solver++ 2M, good in 20-25 steps) [default: ddim]
        #[arg(long, value_parser = scheduler_parser())]
        scheduler: Option<Scheduler>,
        /// sd concepts: the prompt instead of the concept's; {subject} and {scene} become
        /// the concepts' identifier and class word, e.g. "a photo of {subject} on the grass in {scene}"
        #[arg(long, value_name = "TEXT")]
        prompt: Option<String>,
        /// sd concepts: the negative prompt instead of the concept's (usually empty)
        #[arg(long, value_name = "TEXT")]
        negative_prompt: Option<String>,
        /// sd concepts on CUDA: capture the UNet in a CUDA graph and replay it every step, or
        /// fail (the default does so wherever ONNX Runtime can, and says when it cannot)
        #[arg(long, conflicts_with = "no_cuda_graph")]
        cuda_graph: bool,
        /// sd concepts on CUDA: run the UNet step by step, without a CUDA graph
        #[arg(long)]
        no_cuda_graph: bool,
        /// The subject's size, as a fraction of the largest that fits the selection (0.05 to 1)
        #[arg(long, default_value_t = 1.0, value_parser = finite)]
        scale: f32,
        /// Where in the selection the subject rests
        #[arg(long, default_value = "bottom", value_parser = anchor_parser())]
        anchor: pie::Anchor,
        /// Mirror the subject left to right
        #[arg(long)]
        flip: bool,
        #[command(flatten)]
        look: LookArgs,
    },
    /// Make a subject the user pasted (placed, scaled, turned as they like) look photographed in the scene
    #[command(after_help = BLEND_EXAMPLES)]
    Blend {
        /// The photo: the scene, or the scene with the subject already pasted in (with --mask)
        image: PathBuf,
        /// The pasted subject's mask (white = subject), same size as IMAGE, which already holds it
        #[arg(long, conflicts_with = "subject", required_unless_present = "subject")]
        mask: Option<PathBuf>,
        /// The subject as an image with transparency (PNG, TIFF), pasted at --at
        #[arg(long)]
        subject: Option<PathBuf>,
        /// Where the subject's top-left corner goes, X,Y in IMAGE's pixels
        #[arg(long, value_parser = position, default_value = "0,0", requires = "subject")]
        at: (i64, i64),
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        look: LookArgs,
    },
    /// List, show or remove learned concepts
    #[command(after_help = CONCEPTS_EXAMPLES)]
    Concepts {
        #[command(subcommand)]
        action: Option<ConceptsCmd>,
    },
    /// Learn a drawn scene and subject quickly, add the subject, and write the results
    #[command(
        after_help = "Needs no photos and no network. The demo keeps its concepts in DIR/library,\nnever in your concept library (so --library does not apply to it)."
    )]
    Demo {
        /// Folder for the demo's images and its own concept library
        #[arg(long, default_value = "pie-demo", value_name = "DIR")]
        out: PathBuf,
        /// Where to train and run the model
        #[arg(long, default_value = "auto", value_parser = device_parser())]
        device: Device,
        /// Pass an extra argument to the trainer (repeatable)
        #[arg(long = "trainer-arg", value_name = "ARG", allow_hyphen_values = true)]
        trainer_args: Vec<String>,
    },
    /// Show what pie found: ONNX Runtime, CUDA, the trainer, the GIMP plug-in
    Doctor,
}

#[derive(Subcommand)]
enum ConceptsCmd {
    /// List the concepts (the default)
    List,
    /// Validate a concept and show its manifest
    Show {
        /// The concept's name
        name: String,
    },
    /// Delete a concept
    Remove {
        /// The concept's name
        name: String,
    },
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    progress::install_ctrlc();
    let json = cli.json;
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            let k = e.kind();
            // Messages can carry text pie did not write (ONNX Runtime's, a
            // file's): terminal control codes in it must not reach the terminal.
            let message = pie::error::printable(&e.to_string());
            if json {
                println!("{}", json!({"event": "error", "kind": k.as_str(), "message": message}));
            } else {
                eprintln!("pie: {message}");
            }
            k.exit_code()
        }
    }
}

/// A command line clap refused. With --json anywhere on it, a script gets
/// the usual error event on stdout rather than text meant for a person.
fn usage_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind as K;
    let json = std::env::args_os().skip(1).take_while(|a| a != "--").any(|a| a == "--json");
    if !json
        || matches!(
            e.kind(),
            K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand
        )
    {
        e.exit();
    }
    let text = e.render().to_string();
    // The first paragraph is the error; what follows is usage for a terminal.
    let message =
        text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect::<Vec<_>>().join(" ");
    let message = message.trim_start_matches("error: ");
    println!("{}", json!({"event": "error", "kind": pie::ErrorKind::BadInput.as_str(), "message": message}));
    pie::ErrorKind::BadInput.exit_code()
}

fn say(json: bool, human: &str, value: serde_json::Value) {
    if json {
        println!("{value}");
    } else {
        println!("{human}");
    }
}

fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    let lib = || Library::open(cli.library.clone());
    match cli.cmd {
        Cmd::LearnScene { ref image, ref name, ref exclude, ref train } => {
            let lib = lib()?;
            let mut p = CliProgress::new(json, "scene");
            let opts = TrainOptions { exclude: exclude.clone(), ..train.options() };
            let dir = pie::train::learn_scene(&lib, image, name, &opts, &mut p)
                .map_err(|e| resume_hint(e, json))?;
            p.finish();
            say(
                json,
                &format!("learned scene {name:?}: {}", dir.display()),
                json!({"event": "done", "name": name, "bundle": dir}),
            );
            Ok(())
        }
        Cmd::LearnSubject { ref image, ref scene, ref name, ref mask, ref train } => {
            let lib = lib()?;
            let mut p = CliProgress::new(json, "subject");
            let dir = pie::train::learn_subject(
                &lib,
                image,
                scene,
                name,
                mask.as_deref(),
                &train.options(),
                &mut p,
            )
            .map_err(|e| resume_hint(e, json))?;
            p.finish();
            say(
                json,
                &format!("learned subject {name:?} in scene {scene:?}: {}", dir.display()),
                json!({"event": "done", "name": name, "bundle": dir}),
            );
            Ok(())
        }
        Cmd::Add {
            ref image,
            ref selection,
            ref run,
            variants,
            sampler,
            detail,
            scheduler,
            ref prompt,
            ref negative_prompt,
            cuda_graph,
            no_cuda_graph,
            scale,
            anchor,
            flip,
            ref look,
        } => {
            let (concept, out) = (&run.concept, &run.out);
            let request = AddRequest {
                variants,
                sampler,
                detail,
                scheduler,
                prompt: prompt.clone(),
                negative_prompt: negative_prompt.clone(),
                cuda_graph: match (cuda_graph, no_cuda_graph) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                placement: pie::Placement { scale, anchor, flip },
                ..run.request(look)
            };
            let outs = add(&lib()?, image, selection, concept, out, &request, json)?;
            let mut before = std::time::Duration::ZERO;
            for o in outs {
                let path = &o.path;
                // stats.total runs from the start of the whole add: a variant's own time is the step since the last.
                let own = o.stats.total.saturating_sub(before);
                before = o.stats.total;
                say(
                    json,
                    &format!(
                        "wrote {} (seed {}, {} steps on {}, {:.1} s)",
                        path.display(),
                        o.seed,
                        o.stats.steps,
                        ran_on(o.device, o.stats.precision),
                        own.as_secs_f64()
                    ),
                    json!({"event": "done", "out": path, "seed": o.seed, "device": o.device, "precision": o.stats.precision, "changed": o.changed, "seconds": o.stats.total.as_secs_f64()}),
                );
            }
            Ok(())
        }
        Cmd::Blend { ref image, ref mask, ref subject, at, ref run, ref look } => {
            let (concept, out) = (&run.concept, &run.out);
            let request = run.request(look);
            let pasted = match (mask, subject) {
                (Some(m), _) => blend::Pasted::Mask(m),
                (None, Some(s)) => blend::Pasted::Layer { subject: s, at },
                (None, None) => {
                    return Err(pie::Error::bad(
                        "give the pasted subject: --mask (IMAGE already holds it) or --subject with --at",
                    ))
                }
            };
            let o = blend::run(&lib()?, image, &pasted, concept, out, &request, json)?;
            say(
                json,
                &format!(
                    "wrote {} (seed {}, {} steps on {}, {:.1} s)",
                    o.path.display(),
                    o.seed,
                    o.stats.steps,
                    ran_on(o.device, o.stats.precision),
                    o.stats.total.as_secs_f64()
                ),
                json!({"event": "done", "out": o.path, "seed": o.seed, "device": o.device, "precision": o.stats.precision, "changed": o.changed, "seconds": o.stats.total.as_secs_f64()}),
            );
            Ok(())
        }
        Cmd::Concepts { ref action } => {
            concepts(&lib()?, action.as_ref().unwrap_or(&ConceptsCmd::List), json)
        }
        Cmd::Demo { ref out, device, ref trainer_args } => demo::run(out, device, trainer_args, json),
        Cmd::Doctor => doctor::run(&cli.library, json),
    }
}

/// A stopped training run keeps a checkpoint: say how to continue it.
fn resume_hint(e: pie::Error, json: bool) -> pie::Error {
    if e.kind() == pie::ErrorKind::Cancelled && !json {
        eprintln!(
            "pie: training stopped; its checkpoint is kept: run the same command with --resume to continue"
        );
    }
    e
}

/// What `pie add` reports of one result it wrote.
pub struct Written {
    pub path: PathBuf,
    pub seed: u64,
    pub device: Device,
    pub changed: pie::Rect,
    pub stats: pie::add::AddStats,
}

/// `pie add`, shared with the demo. Every input is checked before the model runs,
/// and nothing is written unless everything succeeded. Each result goes to a
/// temporary file as soon as it is made, so K variants of a large photo are
/// never all in memory at once.
pub fn add(
    lib: &Library,
    image: &Path,
    selection: &Path,
    concept: &str,
    out: &Path,
    request: &AddRequest,
    json: bool,
) -> Result<Vec<Written>> {
    let paths = output::output_paths(out, request.variants);
    for p in &paths {
        output::check_writable(p, &[image, selection], lib.path())?;
    }
    let scene = pie::open_image(image)?;
    let mask = pie::open_mask(selection)?;
    let bundle = lib.load(concept)?;
    let mut p = CliProgress::new(json, "add");
    if let Some(lost) = output::jpeg_loses(out, scene.color()) {
        p.note(&format!(
            "{} is a JPEG, which cannot hold the image's {lost}: use .png or .tif to keep it",
            out.display()
        ));
    }
    let mut staged = output::Staged::default();
    let mut written = Vec::with_capacity(paths.len());
    let mut note = None;
    let mut enlarged = None;
    let mut names = paths.iter();
    pie::add_each(&bundle, &scene, &mask, request, &mut p, &mut |o| {
        let path =
            names.next().ok_or_else(|| pie::Error::internal("add made more results than --variants"))?;
        staged.write(path, &o.image)?;
        note = note.take().or(o.note);
        enlarged = enlarged.or(o.enlarged);
        written.push(Written {
            path: path.clone(),
            seed: o.seed,
            device: o.device,
            changed: o.changed,
            stats: o.stats,
        });
        Ok(())
    })?;
    p.finish();
    if let Some(n) = note {
        p.note(&n);
    }
    if let Some(f) = enlarged {
        p.note(&format!(
            "the subject's cut-out is enlarged {f:.1}x past its own photo's resolution, so it looks softer than \
             the photo: learn the subject from a larger photo, or give a smaller selection or --scale"
        ));
    }
    staged.commit()?;
    Ok(written)
}

fn concepts(lib: &Library, action: &ConceptsCmd, json: bool) -> Result<()> {
    match action {
        ConceptsCmd::List => {
            let list = lib.list()?;
            let stopped = lib.interrupted();
            if json {
                println!(
                    "{}",
                    json!({"event": "concepts", "library": lib.path(), "concepts": list, "interrupted": stopped})
                );
                return Ok(());
            }
            if list.is_empty() {
                println!("no concepts in {} (learn one with `pie learn-scene`)", lib.path().display());
            } else {
                println!("concepts in {}:", lib.path().display());
                for c in list {
                    let extra = match (&c.problem, &c.parent) {
                        (Some(p), _) => format!("  (unreadable: {p})"),
                        (None, Some(parent)) => format!("  (in scene {parent})"),
                        _ => String::new(),
                    };
                    println!(
                        "  {:<24} {:<8} {:>9}  {}{extra}",
                        c.name,
                        c.role.map_or("?", pie::Role::name),
                        pie::library::megabytes(c.bytes),
                        c.created
                    );
                }
            }
            if !stopped.is_empty() {
                println!("stopped training runs (continue: the same learn command with --resume; discard: `pie concepts remove NAME`):");
                for r in stopped {
                    let what = r.stage.map_or("?", pie::Stage::noun);
                    println!("  {:<24} {:<8} checkpoint {}", r.name, what, pie::library::megabytes(r.bytes));
                }
            }
            Ok(())
        }
        ConceptsCmd::Show { name } => {
            let b = lib.load(name)?;
            if json {
                println!(
                    "{}",
                    json!({"event": "concept", "path": b.dir, "valid": true, "manifest": b.manifest})
                );
            } else {
                let m = &b.manifest;
                println!("{} ({}), {}", m.name, m.stage.noun(), b.dir.display());
                println!("  valid: every file present with its sha256, every graph's signature matches");
                if let Some(p) = &m.parent {
                    println!("  grown from scene: {}", p.name);
                }
                for c in &m.tokens.concepts {
                    println!("  token {}: {} ({}, \"{}\")", c.id, c.name, c.role, c.identifier);
                }
                for line in b.describe() {
                    println!("  {line}");
                }
                println!("  trainer {} {}, created {}", m.trainer.name, m.trainer.version, m.created);
                for f in &m.files {
                    println!("  file {} ({} bytes)", f.path, f.bytes);
                }
            }
            Ok(())
        }
        ConceptsCmd::Remove { name } => {
            lib.remove(name)?;
            say(json, &format!("removed {name:?}"), json!({"event": "removed", "name": name}));
            Ok(())
        }
    }
}

/// "cpu", or "cpu, int8" where the int8 denoiser ran.
fn ran_on(device: Device, precision: Option<pie::precision::Precision>) -> String {
    match precision {
        Some(p @ pie::precision::Precision::Int8) => format!("{device}, {p}"),
        _ => device.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_argument_is_explained_and_the_main_commands_have_examples() {
        let cmd = super::Cli::command();
        cmd.clone().debug_assert();
        fn walk(c: &clap::Command, path: &str) {
            for a in c.get_arguments().filter(|a| !matches!(a.get_id().as_str(), "help" | "version")) {
                assert!(a.get_help().is_some(), "`{path}`: {} has no help text", a.get_id());
            }
            for s in c.get_subcommands().filter(|s| s.get_name() != "help") {
                assert!(s.get_about().is_some(), "`{path} {}` has no description", s.get_name());
                walk(s, &format!("{path} {}", s.get_name()));
            }
        }
        walk(&cmd, "pie");
        for name in ["learn-scene", "learn-subject", "add", "concepts"] {
            let sub = cmd.find_subcommand(name).expect(name);
            assert!(
                sub.get_after_help().is_some_and(|h| h.to_string().contains("Examples:")),
                "`pie {name} --help` has no examples"
            );
        }
    }
}
