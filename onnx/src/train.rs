//! Launching the trainer (`python -m pie_trainer`) as an argument vector,
//! reading its progress stream (schema/README.md, version 1), and stopping
//! it cleanly with SIGINT when asked.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::backbone::Backbone;
use crate::device::Device;
use crate::events::Event;
use crate::library::Library;
use crate::manifest::Stage;
use crate::{Error, Progress, Result};

#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// A short run for trying things out (minutes, lower quality).
    pub quick: bool,
    pub steps: Option<u64>,
    /// A time budget for the whole run, in minutes (positive, finite): training
    /// stops in time for the bundle to be written from the model at that step.
    pub minutes: Option<f64>,
    pub seed: Option<u64>,
    pub device: Device,
    /// Replace an existing concept of the same name.
    pub force: bool,
    /// Continue from the checkpoint a cancelled run left.
    pub resume: bool,
    /// Further trainer arguments, passed through as they are (e.g. `--resolution 32`).
    pub extra_args: Vec<String>,
    /// `None`: the trainer's default for a scene ([`Backbone::default`]); a subject follows its scene.
    pub backbone: Option<Backbone>,
    /// sd: the local Stable Diffusion checkpoint to fine-tune: a diffusers-layout folder or a single
    /// `.safetensors` file (converted by the trainer, once, into pie's cache).
    pub base: Option<PathBuf>,
    /// sd: the class noun trained with the identifier ("dog", "backpack", "scene").
    pub class_word: Option<String>,
    /// sd: LoRA rank (0 = full fine-tuning of the UNet); the trainer's default when unset.
    pub lora_rank: Option<u32>,
    /// sd: fine-tune the text encoder too.
    pub train_text_encoder: bool,
    /// Scene only: a mask (white = left out) of pixels the scene is never
    /// learned from, e.g. an object to be blended back later.
    pub exclude: Option<PathBuf>,
    /// sd: weights of the exported graphs, `auto`, `fp32` or `fp16` (fp16 runs on CUDA only).
    pub export_precision: Option<String>,
    /// sd: `auto`, `on` or `off`: fuse the exported graphs for CUDA (the bundle then runs on CUDA only).
    pub optimize: Option<String>,
}

pub use crate::locations::TrainerEnv;

/// Puts the trainer's source folder (an argument, never part of the code) at
/// the head of `sys.path`, then runs what follows.
const BOOT_PATH: &str = "import sys; sys.path.insert(0, sys.argv.pop(1)); ";

impl TrainerEnv {
    /// The trainer's Python in isolated mode (`-I`): neither the working
    /// folder, nor `PYTHONPATH`, nor a user site folder can put a module
    /// ahead of the trainer's own (a `numpy.py` in a downloads folder would
    /// otherwise run as part of the trainer). `PIE_TRAINER_PATH`, the one
    /// source folder pie is told to use, goes in through `sys.path` instead.
    /// Runs `code` (Python source) with `args` as `sys.argv[1..]`.
    pub fn python_code(&self, code: &str) -> Command {
        let mut cmd = Command::new(&self.python);
        // -u: isolated mode ignores PYTHONUNBUFFERED, and the progress stream
        // must reach pie line by line.
        cmd.args(["-I", "-u"]);
        match &self.pythonpath {
            Some(pp) => {
                cmd.arg("-c").arg(format!("{BOOT_PATH}{code}")).arg(pp);
            }
            None => {
                cmd.arg("-c").arg(code);
            }
        }
        cmd
    }

    /// `python -m pie_trainer`, isolated as [`Self::python_code`] says.
    pub fn trainer_command(&self) -> Command {
        match &self.pythonpath {
            Some(_) => self.python_code(
                "import runpy; runpy.run_module('pie_trainer', run_name='__main__', alter_sys=True)",
            ),
            None => {
                let mut cmd = Command::new(&self.python);
                cmd.args(["-I", "-u", "-m", "pie_trainer"]);
                cmd
            }
        }
    }
}

/// The trainer's Python, where [`crate::locations::Context::trainer`] finds it.
pub fn find_trainer() -> Result<TrainerEnv> {
    crate::locations::Context::current().trainer()
}

/// Learns a scene (Stage I) from `image` as concept `name`; returns the bundle folder.
pub fn learn_scene(
    lib: &Library,
    image: &Path,
    name: &str,
    opts: &TrainOptions,
    progress: &mut dyn Progress,
) -> Result<PathBuf> {
    check_new(lib, name, opts)?;
    check_image(image)?;
    let mut args: Vec<String> = vec!["scene".into(), path_arg(image)?, "--name".into(), name.into()];
    if let Some(m) = &opts.exclude {
        check_image(m)?;
        args.extend(["--exclude".into(), path_arg(m)?]);
    }
    args.extend(common_args(lib, opts)?);
    run(lib, name, &args, progress)
}

/// Learns a subject (Stage II) on top of scene `scene`; `mask` marks the subject in `image`.
pub fn learn_subject(
    lib: &Library,
    image: &Path,
    scene: &str,
    name: &str,
    mask: Option<&Path>,
    opts: &TrainOptions,
    progress: &mut dyn Progress,
) -> Result<PathBuf> {
    check_new(lib, name, opts)?;
    check_image(image)?;
    if opts.exclude.is_some() {
        return Err(Error::bad("--exclude is an option of learn-scene: a subject's own mask is --mask"));
    }
    if name == scene {
        return Err(Error::bad(format!("the subject needs its own name, not the scene's ({scene:?})")));
    }
    let sb = lib.load(scene)?;
    if sb.manifest.stage != Stage::Scene {
        let scenes: Vec<String> = lib
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.stage == Some(Stage::Scene))
            .map(|c| c.name)
            .collect();
        let grown_from = sb
            .manifest
            .parent
            .as_ref()
            .map(|p| format!(" (it was learned on the scene {:?})", p.name))
            .unwrap_or_default();
        return Err(Error::bad(format!(
            "{scene:?} is a subject, not a scene{grown_from}: --scene takes a scene concept ({})",
            if scenes.is_empty() {
                "the library has none; learn one with `pie learn-scene`".to_string()
            } else {
                format!("scenes: {}", scenes.join(", "))
            }
        )));
    }
    // A subject is learned on its scene's backbone.
    let scene_backbone = sb.manifest.backbone;
    let mut opts = opts.clone();
    match opts.backbone {
        None if scene_backbone != Backbone::default() => opts.backbone = Some(scene_backbone),
        Some(b) if b != scene_backbone => {
            return Err(Error::bad(format!("--backbone {b}: the scene {scene:?} was learned with the {scene_backbone} backbone, and a subject grows from its scene's")))
        }
        _ => {}
    }
    let opts = &opts;
    let mut args: Vec<String> = vec![
        "subject".into(),
        path_arg(image)?,
        "--scene".into(),
        scene.into(),
        "--name".into(),
        name.into(),
    ];
    if let Some(m) = mask {
        check_image(m)?;
        args.push("--mask".into());
        args.push(path_arg(m)?);
    }
    args.extend(common_args(lib, opts)?);
    run(lib, name, &args, progress)
}

fn check_new(lib: &Library, name: &str, opts: &TrainOptions) -> Result<()> {
    lib.concept_dir(name)?;
    if lib.contains(name) && !opts.force && !opts.resume {
        return Err(Error::bad(format!(
            "a concept named {name:?} already exists: pick another name, or pass --force to replace it"
        )));
    }
    Ok(())
}

fn check_image(p: &Path) -> Result<()> {
    crate::probe_image(p).map(|_| ()).map_err(|e| match e {
        crate::ImageFailure::Io(e) => Error::io("cannot read", p, e),
        crate::ImageFailure::Refused(why) => Error::bad(format!("{} {why}", p.display())),
    })
}

fn path_arg(p: &Path) -> Result<String> {
    // Absolute, so the trainer's working folder does not matter; a leading '-'
    // could otherwise be read as an option.
    let abs = std::path::absolute(p).map_err(|e| Error::io("bad path", p, e))?;
    abs.to_str().map(str::to_string).ok_or_else(|| Error::bad(format!("{} is not a UTF-8 path", p.display())))
}

/// The bar's fraction and text for one progress event. With a time budget the
/// bar counts time: the fraction is the budget used (or the steps done, when
/// they end the run sooner), and the text says the time left.
fn progress_line(
    stage: u8,
    step: u64,
    total: u64,
    loss: f64,
    eta_s: f64,
    budget_s: Option<f64>,
    elapsed_s: Option<f64>,
) -> (f64, String) {
    let by_steps = if total > 0 { step as f64 / total as f64 } else { 0.0 };
    match (budget_s, elapsed_s) {
        (Some(budget), Some(elapsed)) if budget > 0.0 => {
            let frac = (elapsed / budget).max(by_steps).clamp(0.0, 1.0);
            let text = format!(
                "stage {stage}: {} left of {}, step {step}, loss {loss:.4}",
                clock(eta_s),
                clock(budget)
            );
            (frac, text)
        }
        _ => (
            by_steps.clamp(0.0, 1.0),
            format!("stage {stage}: step {step}/{total}, loss {loss:.4}, {}s left", eta_s.round()),
        ),
    }
}

/// Seconds as m:ss.
fn clock(seconds: f64) -> String {
    let s = if seconds.is_finite() { seconds.max(0.0).round() as u64 } else { 0 };
    format!("{}:{:02}", s / 60, s % 60)
}

fn common_args(lib: &Library, o: &TrainOptions) -> Result<Vec<String>> {
    let mut a = vec!["--library".to_string(), path_arg(lib.path())?];
    if o.quick {
        a.push("--quick".into());
    }
    if let Some(s) = o.steps {
        a.extend(["--steps".into(), s.to_string()]);
    }
    if let Some(m) = o.minutes {
        if !(m.is_finite() && m > 0.0) {
            return Err(Error::bad(format!("--minutes must be a positive number of minutes, got {m}")));
        }
        a.extend(["--minutes".into(), m.to_string()]);
    }
    if let Some(s) = o.seed {
        a.extend(["--seed".into(), s.to_string()]);
    }
    a.extend(["--device".into(), o.device.to_string()]);
    if let Some(b) = o.backbone {
        a.extend(["--backbone".into(), b.to_string()]);
    }
    let fine_tuned = o.backbone.is_some_and(Backbone::fine_tunes_a_base);
    // The backbones the options of a fine-tuned base belong to, for the messages.
    let of = || Backbone::names_where(Backbone::fine_tunes_a_base, " or --backbone ");
    if let Some(base) = &o.base {
        if !fine_tuned {
            let titles = Backbone::ALL
                .into_iter()
                .filter(|b| b.fine_tunes_a_base())
                .map(|b| b.about().title)
                .collect::<Vec<_>>()
                .join(" or ");
            return Err(Error::bad(format!(
                "--base is the {titles} checkpoint of --backbone {}; add --backbone {}",
                of(),
                of()
            )));
        }
        // A folder or a single file: which files are checkpoints (and which are refused, as
        // pickles are) the trainer says, from their contents.
        if !base.is_dir() && !base.is_file() {
            return Err(Error::bad(format!(
                "--base {}: does not exist; it must be a local Stable Diffusion checkpoint: a folder in diffusers layout (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) or a single .safetensors file",
                base.display()
            )));
        }
        a.extend(["--base".into(), path_arg(base)?]);
    }
    let sd_only = [
        ("--class-word", o.class_word.clone()),
        ("--lora-rank", o.lora_rank.map(|r| r.to_string())),
        ("--export-precision", o.export_precision.clone()),
        ("--optimize", o.optimize.clone()),
    ];
    for (flag, v) in sd_only {
        if let Some(v) = v {
            if !fine_tuned {
                return Err(Error::bad(format!("{flag} is an option of --backbone {}", of())));
            }
            a.extend([flag.to_string(), v]);
        }
    }
    if o.train_text_encoder {
        if !fine_tuned {
            return Err(Error::bad(format!("--train-text-encoder is an option of --backbone {}", of())));
        }
        a.push("--train-text-encoder".into());
    }
    if o.force {
        a.push("--force".into());
    }
    if o.resume {
        a.push("--resume".into());
    }
    a.extend(o.extra_args.iter().cloned());
    Ok(a)
}

/// One run per concept name at a time: two would share one checkpoint
/// folder and overwrite each other's concept. The lock (on a dot-file of the
/// library, never listed) ends with the process, however it ends.
fn hold_learning(lib: &Library, name: &str) -> Result<std::fs::File> {
    let path = lib.path().join(format!(".learning-{name}.lock"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| Error::io("cannot lock", &path, e))?;
    if !crate::safefs::try_lock(&f) {
        return Err(Error::bad(format!(
            "another pie is learning {name:?} in this library right now: wait for it to finish (or stop it), or pick another name"
        )));
    }
    Ok(f)
}

enum Msg {
    Line(String),
    Eof,
}

fn run(lib: &Library, name: &str, args: &[String], progress: &mut dyn Progress) -> Result<PathBuf> {
    let env = find_trainer()?;
    std::fs::create_dir_all(lib.path())
        .map_err(|e| Error::io("cannot create the concept library", lib.path(), e))?;
    let _held = hold_learning(lib, name)?;
    let mut cmd = env.trainer_command();
    cmd.args(args);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    {
        use std::os::unix::process::CommandExt;
        // Its own process group: a terminal's Ctrl-C reaches only pie, which
        // then sends exactly one SIGINT, so the trainer can checkpoint in peace.
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe and touches only the child being set up.
        // If pie itself dies (GIMP kills a plug-in on cancel), the trainer still
        // gets its SIGINT, checkpoints and stops, instead of running on orphaned.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| Error::Missing {
        what: format!("cannot start the trainer's Python {} ({}): {e}", env.python.display(), env.source),
        fix: env.repair(),
    })?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        if let Some(out) = stdout {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(Msg::Line(l)).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        let _ = tx.send(Msg::Eof);
    });
    let stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut s);
        }
        s
    });

    let mut sent_sigint = false;
    let mut done_bundle: Option<PathBuf> = None;
    let mut error_msg: Option<String> = None;
    let mut stage: Option<Stage> = None;
    // As the trainer numbers its stages (0 before it has said).
    let number = |s: Option<Stage>| s.map_or(0, Stage::number);
    loop {
        if progress.cancelled() && !sent_sigint {
            // SAFETY: kill(2) on our own child's pid; the child is not yet reaped, so the pid is still ours.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGINT);
            }
            sent_sigint = true;
            progress.update(-1.0, "stopping the trainer (saving a checkpoint)");
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Msg::Line(l)) => match Event::parse(&l) {
                Some(Event::Start { stage: s, device }) => {
                    stage = s;
                    let dev = device.as_deref().unwrap_or("?");
                    progress.update(0.0, &format!("stage {}: training on {dev}", number(stage)));
                }
                Some(Event::Progress { step, total, loss, eta_s, budget_s, elapsed_s, .. }) => {
                    let (frac, text) =
                        progress_line(number(stage), step, total, loss, eta_s, budget_s, elapsed_s);
                    progress.update(frac, &text);
                }
                Some(Event::Phase { phase, message }) => {
                    let ph = message.as_deref().or(phase.map(|p| p.name())).unwrap_or("");
                    progress.update(-1.0, ph);
                }
                Some(Event::Preview { path, .. }) => progress.update(-1.0, &format!("preview: {path}")),
                Some(Event::Done { bundle, .. }) => {
                    done_bundle = Some(PathBuf::from(bundle));
                    progress.update(1.0, "done");
                }
                Some(Event::Error { message }) => error_msg = Some(message),
                Some(Event::Cancelled { .. }) | None => {}
            },
            Ok(Msg::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    let status = child.wait().map_err(|e| Error::internal(format!("waiting for the trainer: {e}")))?;
    let _ = reader.join();
    let stderr = err_reader.join().unwrap_or_default();
    let tail: String = {
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    };
    let msg = |fallback: &str| -> String {
        match &error_msg {
            Some(m) if !m.is_empty() => m.clone(),
            _ if !tail.is_empty() => format!("{fallback}:\n{tail}"),
            _ => fallback.to_string(),
        }
    };
    match status.code() {
        Some(0) => {
            let dir = done_bundle.unwrap_or_else(|| lib.path().join(name));
            if !dir.join("bundle.json").is_file() {
                return Err(Error::internal(format!(
                    "the trainer finished but wrote no bundle at {}",
                    dir.display()
                )));
            }
            Ok(dir)
        }
        Some(2) => Err(Error::BadInput(argparse_hint(&msg("the trainer refused its input"), args))),
        Some(3) => Err(Error::Cancelled),
        None if sent_sigint => Err(Error::Cancelled),
        _ if sent_sigint => Err(Error::Cancelled),
        code => {
            if let Some(why) = import_failure(&stderr) {
                return Err(unusable(&env, why));
            }
            Err(Error::internal(msg(&format!("the trainer failed (exit status {code:?})"))))
        }
    }
}

/// The trainer's option parser names itself `python -m pie_trainer …`, which
/// the user never typed: what it refused came through --trainer-arg (or an
/// option pie passed on), so say that, and where the trainer's options are listed.
fn argparse_hint(msg: &str, args: &[String]) -> String {
    let Some(rest) = msg.strip_prefix("python -m pie_trainer") else { return msg.to_string() };
    let text = rest.split_once(": ").map_or(rest, |(_, t)| t);
    let stage = args.first().map(String::as_str).unwrap_or("scene");
    format!("the trainer refused its arguments: {text} (--trainer-arg passes options of `python -m pie_trainer {stage} --help`)")
}

/// The line of a Python traceback that says a module could not be imported:
/// the environment, not the input, is at fault.
fn import_failure(stderr: &str) -> Option<&str> {
    stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with("ModuleNotFoundError: ") || l.starts_with("ImportError: "))
}

/// The trainer's environment is there but cannot run the trainer: say which
/// environment, what failed, and the repair that fits how it was found.
fn unusable(env: &TrainerEnv, why: &str) -> Error {
    let venv = env.venv().unwrap_or(&env.python);
    Error::Missing {
        what: format!(
            "the trainer's Python environment {} ({}) cannot run the trainer: {why}",
            venv.display(),
            env.source
        ),
        fix: match &env.pythonpath {
            Some(p) if why.contains("pie_trainer") => format!(
                "PIE_TRAINER_PATH is {}: set it to the trainer/ folder of the pie source, or unset it",
                p.display()
            ),
            _ => env.repair(),
        },
    }
}

/// Finds the trainer and checks it imports; returns what it reports.
pub fn check_trainer() -> Result<(TrainerEnv, String)> {
    let env = find_trainer()?;
    let mut cmd = env.python_code(
        "import torch, pie_trainer; print('torch', torch.__version__, '| cuda', torch.cuda.is_available())",
    );
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Unavailable(format!("cannot run {}: {e}", env.python.display())))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let why = import_failure(&err)
            .or_else(|| err.lines().rev().find(|l| !l.trim().is_empty()).map(str::trim))
            .unwrap_or("it exited without saying why");
        return Err(unusable(&env, why));
    }
    Ok((env, String::from_utf8_lossy(&out.stdout).trim().to_string()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn trainer_option_errors_point_at_trainer_arg() {
        let args = vec!["subject".to_string()];
        let m = super::argparse_hint(
            "python -m pie_trainer subject: argument --lr: invalid float value: 'x'",
            &args,
        );
        assert_eq!(m, "the trainer refused its arguments: argument --lr: invalid float value: 'x' (--trainer-arg passes options of `python -m pie_trainer subject --help`)");
        assert_eq!(
            super::argparse_hint("--resolution must be a multiple of 4, got 7", &args),
            "--resolution must be a multiple of 4, got 7"
        );
    }

    #[test]
    fn with_a_budget_the_bar_counts_time_not_steps() {
        let (f, t) = super::progress_line(1, 200, 2000, 0.05, 90.0, Some(300.0), Some(150.0));
        assert!((f - 0.5).abs() < 1e-9, "{f}");
        assert_eq!(t, "stage 1: 1:30 left of 5:00, step 200, loss 0.0500");
        // The steps ending the run first win the bar too.
        let (f, _) = super::progress_line(1, 1800, 2000, 0.05, 10.0, Some(300.0), Some(30.0));
        assert!((f - 0.9).abs() < 1e-9, "{f}");
        let (f, t) = super::progress_line(2, 3, 10, 0.5, 4.7, None, None);
        assert!((f - 0.3).abs() < 1e-9, "{f}");
        assert_eq!(t, "stage 2: step 3/10, loss 0.5000, 5s left");
    }
}
