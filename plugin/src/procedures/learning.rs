//! What Learn Scene and Learn Subject share: their parameters and the run
//! under GIMP's progress bar.

use super::*;

/// `scene`: Learn Subject's scene (the subject takes its model); `None` for Learn Scene.
pub(super) fn learn_params(
    config: &gimp::ProcedureConfig,
    scene: Option<&engine::Concept>,
) -> Outcome<LearnParams> {
    let name = get_string(config, "name");
    if name.is_empty() {
        return Err(Failure::msg("Give the new concept a name (letters a-z, digits, '-' or '_')."));
    }
    // Said here in the dialog's words (the engine would say "--force"), before any export or training.
    if !config.property::<bool>("replace") && engine::list()?.concepts.iter().any(|c| c.name == name) {
        return Err(Failure::msg(format!(
            "A concept named '{name}' already exists: choose another name, or tick \
             'Replace an existing concept of that name'."
        )));
    }
    let class_word = Some(get_string(config, "class-word")).filter(|w| !w.is_empty());
    // Only Learn Scene has a backbone argument: a subject takes its scene's.
    let chosen = || -> Outcome<pie::Backbone> {
        Ok(match get_string(config, "backbone").as_str() {
            "" => pie::Backbone::default(),
            name => name.parse::<pie::Backbone>()?,
        })
    };
    let (backbone, base, class_word) = match scene {
        None => match chosen()? {
            b if b.fine_tunes_a_base() => (Some(b), Some(sd_base(config)?), class_word),
            // The settings of a fine-tuned base are kept (the dialog remembers them) but not used.
            _ => (None, None, None),
        },
        Some(s) if s.backbone.fine_tunes_a_base() => (None, None, class_word),
        Some(_) => (None, None, None),
    };
    Ok(LearnParams {
        name,
        preset: get_string(config, "preset"),
        device: get_string(config, "device"),
        steps: config.property::<i32>("steps").max(0) as u32,
        minutes: Some(config.property::<f64>("minutes")).filter(|m| m.is_finite() && *m > 0.0),
        replace: config.property::<bool>("replace"),
        backbone,
        base,
        class_word,
        trainer_args: get_string(config, "trainer-args").split_whitespace().map(str::to_string).collect(),
        resume: config.property::<bool>("resume"),
    })
}

/// Learn Scene's checkpoint for the sd model: `base-file` (one .safetensors
/// file) when set, else `base`, a local folder that looks like a diffusers
/// checkpoint; checked before anything starts (the trainer checks the file's
/// contents).
pub(super) fn sd_base(config: &gimp::ProcedureConfig) -> Outcome<std::path::PathBuf> {
    const LAYOUT: &str =
        "model_index.json, unet/, vae/, text_encoder/, tokenizer/ and scheduler/ (the diffusers layout)";
    if let Some(file) = config.property::<Option<gimp::gio::File>>("base-file") {
        return sd_base_file(&file);
    }
    let Some(file) = config.property::<Option<gimp::gio::File>>("base") else {
        return Err(Failure::msg(format!(
            "The Stable Diffusion model (sd) fine-tunes a checkpoint on this computer: choose its folder as \
             \"Stable Diffusion checkpoint\", the folder that holds {LAYOUT}, or its single .safetensors file; \
             or pick the pixel-unet model."
        )));
    };
    let Some(path) = file.path() else {
        return Err(Failure::msg(format!(
            "The Stable Diffusion checkpoint {} is not a local folder: choose a folder on this computer that holds {LAYOUT}.",
            file.uri()
        )));
    };
    if !path.is_dir() {
        return Err(Failure::msg(format!(
            "The Stable Diffusion checkpoint {} is not a folder{}: choose the folder that holds {LAYOUT}.",
            path.display(),
            if path.exists() { "" } else { " (it does not exist)" }
        )));
    }
    if !path.join("model_index.json").is_file() {
        return Err(Failure::msg(format!(
            "The folder {} has no model_index.json, so it is not a Stable Diffusion checkpoint: choose the folder \
             that holds {LAYOUT}.",
            path.display()
        )));
    }
    Ok(path)
}

fn sd_base_file(file: &gimp::gio::File) -> Outcome<std::path::PathBuf> {
    let Some(path) = file.path() else {
        return Err(Failure::msg(format!(
            "The Stable Diffusion checkpoint file {} is not a local file: choose a .safetensors file on this computer.",
            file.uri()
        )));
    };
    if !path.is_file() {
        return Err(Failure::msg(format!(
            "The Stable Diffusion checkpoint file {} is not a file{}: choose the checkpoint's .safetensors file.",
            path.display(),
            if path.exists() { "" } else { " (it does not exist)" }
        )));
    }
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("safetensors") => Ok(path),
        Some("ckpt" | "pt" | "pth" | "bin" | "pkl") => Err(Failure::msg(format!(
            "{} is a pickle checkpoint: pie does not open pickles, since opening one runs whatever code it \
             holds. Convert it to .safetensors first (with a tool you trust, in a sandbox) and choose that file.",
            path.display()
        ))),
        _ => Err(Failure::msg(format!(
            "{} is not a .safetensors checkpoint: choose a single-file Stable Diffusion checkpoint \
             (.safetensors) or, as \"Stable Diffusion checkpoint\", a folder in diffusers layout.",
            path.display()
        ))),
    }
}

/// Runs one learning job under GIMP's progress bar; from the dialog, the
/// user is also told where the concept went (a batch caller reads the PDB status).
pub(super) fn learn_with_progress(
    mode: gimp::RunMode,
    title: &str,
    job: impl FnOnce(&mut GimpProgress) -> Outcome<String>,
) -> Outcome {
    let mut progress = GimpProgress::start(title);
    let result = job(&mut progress);
    progress.finish();
    let summary = result?;
    if mode == gimp::RunMode::Interactive {
        gimp::message(&summary);
    }
    Ok(())
}
