//! The five procedures under Filters > Personalize: their arguments
//! (declared once; the dialogs are generated from them), and their runs.

use std::hash::{BuildHasher, Hasher};

use gimp::prelude::*;
use gimp_ui::prelude::*;

use crate::engine::{self, AddParams, LearnParams, Listing};
use crate::failure::{finish, Failure, Outcome};
use crate::pixels::{self, Source};
use crate::progress::GimpProgress;

pub const LEARN_SCENE: &str = "plug-in-pie-learn-scene";
pub const LEARN_SUBJECT: &str = "plug-in-pie-learn-subject";
pub const ADD_SUBJECT: &str = "plug-in-pie-add-subject";
pub const FORGET_CONCEPT: &str = "plug-in-pie-forget-concept";
pub const BLEND_SUBJECT: &str = "plug-in-pie-blend-subject";
pub const NAMES: [&str; 5] = [LEARN_SCENE, LEARN_SUBJECT, ADD_SUBJECT, BLEND_SUBJECT, FORGET_CONCEPT];

const MENU: &str = "<Image>/Filters/Personalize";
const AUTHORS: &str = "The pie authors";
const COPYRIGHT: &str = "The pie authors, MIT licence";
const DATE: &str = "2026";
const RW: glib::ParamFlags = glib::ParamFlags::READWRITE;
/// The nick of the dialogs' list entry shown when the library has nothing to offer.
const NOTHING: &str = "none";

pub fn create(plug_in: &gimp::PlugIn, name: &str) -> Option<gimp::Procedure> {
    let p = match name {
        LEARN_SCENE => learn_scene_procedure(plug_in),
        LEARN_SUBJECT => learn_subject_procedure(plug_in),
        ADD_SUBJECT => add_subject_procedure(plug_in),
        FORGET_CONCEPT => forget_concept_procedure(plug_in),
        BLEND_SUBJECT => blend_subject_procedure(plug_in),
        _ => return None,
    };
    Some(p.upcast())
}

fn common(p: &gimp::ImageProcedure, label: &str, blurb: &str, help: &str) {
    p.set_image_types("RGB*, GRAY*");
    p.set_sensitivity_mask(gimp::ProcedureSensitivityMask::DRAWABLE);
    p.set_menu_label(label);
    p.add_menu_path(MENU);
    p.set_documentation(blurb, Some(help), None);
    p.set_attribution(AUTHORS, COPYRIGHT, DATE);
}

fn device_choice() -> gimp::Choice {
    let c = gimp::Choice::new();
    c.add("auto", 0, "Automatic", "CUDA when a working NVIDIA GPU is found, otherwise the CPU");
    c.add("cpu", 1, "CPU", "Always the CPU");
    c.add("cuda", 2, "CUDA GPU", "An NVIDIA GPU through CUDA; fails when there is none");
    c
}

fn anchor_choice() -> gimp::Choice {
    let c = gimp::Choice::new();
    let labels = [
        "Bottom (standing)",
        "Centre",
        "Top",
        "Left",
        "Right",
        "Bottom left",
        "Bottom right",
        "Top left",
        "Top right",
    ];
    for (i, (nick, label)) in pie::Anchor::NAMES.iter().zip(labels).enumerate() {
        c.add(nick, i as i32, label, "Which side of the selection the subject rests against");
    }
    c
}

/// Light, grain and shadow: the same arguments for Add Subject and Blend Pasted Subject.
fn look_arguments(p: &gimp::ImageProcedure) {
    let d = pie::Look::default();
    p.add_double_argument(
        "harmonize",
        "Take on the scene's _light",
        Some("How much of the scene's light (white balance, exposure, contrast) the subject takes on: 0 keeps its own, 1 all the scene's"),
        0.0,
        1.0,
        f64::from(d.harmonize),
        RW,
    );
    p.add_double_argument(
        "shadow",
        "Contact s_hadow",
        Some("How dark the shadow the subject casts on the ground under it is; 0 = none. The selection bounds it: leave room below the subject"),
        0.0,
        1.0,
        f64::from(d.shadow),
        RW,
    );
    p.add_boolean_argument(
        "match-grain",
        "Match the photo's _grain and sharpness",
        Some("Give the subject the grain and sharpness of the photo around it"),
        d.grain,
        RW,
    );
}

fn look_of(config: &gimp::ProcedureConfig) -> pie::Look {
    pie::Look {
        harmonize: config.property::<f64>("harmonize") as f32,
        shadow: config.property::<f64>("shadow") as f32,
        grain: config.property::<bool>("match-grain"),
    }
}

fn backbone_choice() -> gimp::Choice {
    let c = gimp::Choice::new();
    c.add(
        "pixel-unet",
        0,
        "pixel-unet (small, any computer)",
        "pie's small model, trained from scratch on this photo; runs on a CPU",
    );
    c.add(
        "sd",
        1,
        "Stable Diffusion (GPU)",
        "Fine-tunes a local Stable Diffusion checkpoint (diffusers layout); wants an NVIDIA GPU",
    );
    c
}

fn scheduler_choice() -> gimp::Choice {
    let c = gimp::Choice::new();
    c.add("ddim", 0, "DDIM", "DDIM: the default");
    c.add("dpm++2m", 1, "DPM++ 2M", "DPM-Solver++ 2M: good results in 20-25 steps");
    c
}

fn preset_choice() -> gimp::Choice {
    let c = gimp::Choice::new();
    c.add("quick", 0, "Quick", "A short training run (minutes on a CPU): rougher results");
    c.add("default", 1, "Default", "The full training run: better results, several times longer");
    c
}

/// The library's concepts of one stage as a list for a dialog, with `NOTHING`
/// as the only entry when there are none.
fn concept_choice(listing: Option<&Listing>, stage: u8) -> (gimp::Choice, String) {
    let c = gimp::Choice::new();
    let mut first = None;
    if let Some(l) = listing {
        for (i, k) in l.concepts.iter().filter(|k| k.stage == stage).enumerate() {
            let sd = if k.backbone == "sd" { ", Stable Diffusion" } else { "" };
            let label = match &k.parent {
                Some(parent) => format!("{} (in {parent}{sd})", k.name),
                None if sd.is_empty() => k.name.clone(),
                None => format!("{} (Stable Diffusion)", k.name),
            };
            c.add(&k.name, i as i32 + 1, &label, "");
            first.get_or_insert_with(|| k.name.clone());
        }
    }
    let default = first.unwrap_or_else(|| {
        let what = if stage == 1 { "no learned scene yet" } else { "no learned subject yet" };
        c.add(NOTHING, 0, &format!("({what})"), "");
        NOTHING.to_string()
    });
    (c, default)
}

/// `gimp_procedure_add_choice_aux_argument` keeps the choice (it goes into the
/// param spec, as with `add_choice_argument`), but gimp 0.1's binding lends it
/// and unrefs it afterwards, which frees it under GIMP's feet: hand over a
/// reference of our own.
fn add_choice_aux(
    p: &gimp::ImageProcedure,
    name: &str,
    nick: &str,
    blurb: &str,
    choice: gimp::Choice,
    value: &str,
) {
    p.add_choice_aux_argument(name, nick, Some(blurb), &choice, value, RW);
    std::mem::forget(choice);
}

fn learn_common_arguments(p: &gimp::ImageProcedure, default_name: &str) {
    p.add_string_argument(
        "name",
        "Concept _name",
        Some("Name of the new concept in the library: 1-64 characters a-z, 0-9, '-' or '_'"),
        default_name,
        RW,
    );
    p.add_choice_argument("preset", "_Quality", Some("Training preset"), preset_choice(), "quick", RW);
    p.add_choice_argument("device", "_Device", Some("Where to train"), device_choice(), "auto", RW);
    p.add_int_argument(
        "steps",
        "Training s_teps",
        Some("Training steps; 0 uses the preset's number"),
        0,
        1_000_000,
        0,
        RW,
    );
    p.add_boolean_argument(
        "replace",
        "Re_place an existing concept of that name",
        Some("Replace a concept of the same name instead of refusing"),
        false,
        RW,
    );
}

/// Appended after each Learn procedure's other arguments, so scripts that
/// pass them by position keep working.
fn resume_argument(p: &gimp::ImageProcedure) {
    p.add_boolean_argument(
        "resume",
        "Continue a stopped r_un",
        Some("When a Learn of this name was cancelled, continue it from the checkpoint it left (same photo; the \
              settings it began with) instead of starting over; FALSE starts over. Without a stopped run it \
              makes no difference"),
        true,
        RW,
    );
}

fn class_word_argument(p: &gimp::ImageProcedure, blurb: &str) {
    p.add_string_argument("class-word", "Class _word", Some(blurb), "", RW);
}

/// For scripts (not in the dialog): what `pie learn-* --trainer-arg` passes.
fn trainer_args_argument(p: &gimp::ImageProcedure) {
    p.add_string_argument(
        "trainer-args",
        "Trainer arguments",
        Some("Advanced, for scripts: further arguments for pie's trainer, separated by spaces (as `pie learn-scene --trainer-arg`), e.g. \"--resolution 64\"; empty = none"),
        "",
        RW,
    );
}

fn learn_scene_procedure(plug_in: &gimp::PlugIn) -> gimp::ImageProcedure {
    let p = gimp::ImageProcedure::new(
        plug_in,
        LEARN_SCENE,
        gimp::PDBProcType::Plugin,
        |proc_, mode, image, drawables, config| {
            finish(proc_, run_learn_scene(proc_, mode, image, drawables, config))
        },
    );
    common(
        &p,
        "Learn _Scene...",
        "Learn the active layer as a scene (Stage I) for Add Subject",
        "Fine-tunes pie's small diffusion model on the active layer, the scene photo you want to put \
         subjects into, and stores it under the given name in pie's concept library. Learn a subject \
         from this scene next (Learn Subject).",
    );
    learn_common_arguments(&p, "my-scene");
    p.add_choice_argument(
        "backbone",
        "_Model",
        Some("pixel-unet: pie's small model, learned from scratch (any computer). sd: fine-tunes a local Stable Diffusion checkpoint (set its folder below; wants an NVIDIA GPU). A subject learned from this scene uses the same model"),
        backbone_choice(),
        "pixel-unet",
        RW,
    );
    p.add_file_argument(
        "base",
        "Stable Diffusion chec_kpoint",
        Some("Model sd only: the folder of a local Stable Diffusion checkpoint in diffusers layout (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)"),
        gimp::FileChooserAction::SelectFolder,
        true,
        None::<&gimp::gio::File>,
        RW,
    );
    class_word_argument(
        &p,
        "Model sd only: the class noun of the scene (e.g. landscape, room); empty = the trainer's default",
    );
    trainer_args_argument(&p);
    resume_argument(&p);
    p
}

fn learn_subject_procedure(plug_in: &gimp::PlugIn) -> gimp::ImageProcedure {
    let p = gimp::ImageProcedure::new(
        plug_in,
        LEARN_SUBJECT,
        gimp::PDBProcType::Plugin,
        |proc_, mode, image, drawables, config| {
            finish(proc_, run_learn_subject(proc_, mode, image, drawables, config))
        },
    );
    common(
        &p,
        "Learn Su_bject...",
        "Learn the active layer as a subject (Stage II), grown from a learned scene",
        "Fine-tunes the model of a learned scene on the active layer, a photo of your subject (a pet, \
         an object, a person), while keeping what it knows about the scene. The selection, if any, \
         marks the subject in the photo. The result is a new concept in pie's library that Add Subject \
         can paint into the scene.",
    );
    // A string, so that scripts may name any scene, also one learned after
    // GIMP started; the dialog offers the library's scenes as a list instead.
    p.add_string_argument("scene", "Scene", Some("Name of the learned scene (Stage I) to grow from"), "", RW);
    learn_common_arguments(&p, "my-subject");
    class_word_argument(
        &p,
        "Scenes learned with Stable Diffusion only (ignored otherwise): the class noun of the subject (e.g. dog, backpack, person); empty = the trainer's default",
    );
    trainer_args_argument(&p);
    resume_argument(&p);
    let listing = engine::list().ok();
    let (choice, default) = concept_choice(listing.as_ref(), 1);
    add_choice_aux(
        &p,
        "scene-choice",
        "S_cene to grow from",
        "A scene learned with Learn Scene",
        choice,
        &default,
    );
    p
}

fn add_subject_procedure(plug_in: &gimp::PlugIn) -> gimp::ImageProcedure {
    let p = gimp::ImageProcedure::new(
        plug_in,
        ADD_SUBJECT,
        gimp::PDBProcType::Plugin,
        |proc_, mode, image, drawables, config| {
            finish(proc_, run_add_subject(proc_, mode, image, drawables, config))
        },
    );
    common(
        &p,
        "_Add Subject to Selection...",
        "Paint a learned subject into the selection, as if photographed there",
        "Samples the learned subject into the selected region of the active layer with pie's \
         personalized diffusion model. The result is a new layer above the active one, named after the \
         subject and the seed, covering only the region that changed; the active layer is never \
         modified. With several variants, each becomes its own layer. The same seed gives the same \
         pixels as `pie add` on the command line. The subject takes on the scene's light, grain and \
         sharpness and casts a contact shadow on the ground under it; the shadow stays inside the \
         selection, so leave some room below where the subject stands.",
    );
    p.add_string_argument(
        "concept",
        "Subject",
        Some("Name of the learned subject (Stage II concept) to add"),
        "",
        RW,
    );
    p.add_int_argument(
        "seed",
        "S_eed",
        Some("Random seed; -1 picks a new one (the layer's name shows which)"),
        -1,
        i32::MAX,
        -1,
        RW,
    );
    p.add_int_argument(
        "steps",
        "Sampling s_teps",
        Some("Denoising steps: more is slower and finer"),
        1,
        1000,
        50,
        RW,
    );
    let (strength, guidance) = engine::default_strength_guidance();
    p.add_double_argument(
        "strength",
        "Stre_ngth",
        Some("How much is re-synthesized where the subject meets the scene: 1 starts from noise, lower keeps more of the subject as photographed. Used only when concept-defaults is FALSE"),
        0.0,
        1.0,
        strength,
        RW,
    );
    p.add_double_argument(
        "guidance",
        "_Guidance",
        Some("Classifier-free guidance: higher follows the subject more closely. Used only when concept-defaults is FALSE"),
        0.0,
        20.0,
        guidance,
        RW,
    );
    p.add_int_argument(
        "variants",
        "_Variants",
        Some("How many results, each as its own layer"),
        1,
        16,
        1,
        RW,
    );
    p.add_choice_argument("device", "_Device", Some("Where to sample"), device_choice(), "auto", RW);
    p.add_boolean_argument(
        "concept-defaults",
        "Use the concept's strength and g_uidance",
        Some(&format!(
            "TRUE: the strength and guidance of the subject's model (pixel-unet {strength} and {guidance}, \
             Stable Diffusion {} and {}), ignoring the strength and guidance arguments; \
             FALSE: the strength and guidance arguments",
            pie::sd::DEFAULT_STRENGTH,
            pie::sd::DEFAULT_GUIDANCE
        )),
        true,
        RW,
    );
    p.add_choice_argument(
        "scheduler",
        "Sc_heduler",
        Some("Subjects learned with Stable Diffusion only (pixel-unet subjects always use DDIM): DDIM, or DPM++ 2M (good in 20-25 steps)"),
        scheduler_choice(),
        "ddim",
        RW,
    );
    p.add_string_argument(
        "prompt",
        "_Prompt",
        Some("Subjects learned with Stable Diffusion only: what to draw, with {subject} and {scene} for the learned \
              subject and scene, e.g. \"a photo of {subject} sitting in the grass of {scene} at dusk\"; empty: the \
              subject's own prompt"),
        "",
        RW,
    );
    p.add_string_argument(
        "negative-prompt",
        "_Negative prompt",
        Some("Subjects learned with Stable Diffusion only: what to steer away from, e.g. \"blurry, cartoon\"; empty: the \
              subject's own (usually none)"),
        "",
        RW,
    );
    p.add_double_argument(
        "scale",
        "_Size",
        Some("The subject's size, as a fraction of the largest that fits the selection"),
        0.05,
        1.0,
        1.0,
        RW,
    );
    p.add_choice_argument(
        "anchor",
        "Stands _at",
        Some("Where in the selection the subject rests"),
        anchor_choice(),
        "bottom",
        RW,
    );
    p.add_boolean_argument("flip", "_Mirror", Some("Mirror the subject left to right"), false, RW);
    look_arguments(&p);
    let listing = engine::list().ok();
    let (choice, default) = concept_choice(listing.as_ref(), 2);
    add_choice_aux(
        &p,
        "concept-choice",
        "Su_bject",
        "A subject learned with Learn Subject",
        choice,
        &default,
    );
    p
}

fn blend_subject_procedure(plug_in: &gimp::PlugIn) -> gimp::ImageProcedure {
    let p = gimp::ImageProcedure::new(
        plug_in,
        BLEND_SUBJECT,
        gimp::PDBProcType::Plugin,
        |proc_, mode, image, drawables, config| {
            finish(proc_, run_blend_subject(proc_, mode, image, drawables, config))
        },
    );
    common(
        &p,
        "_Blend Pasted Subject...",
        "Make a pasted subject look photographed in the scene below it",
        "Paste the subject as a layer over the scene (with transparency around it) and move, scale, rotate or \
         flip it as you like; then select the pasted layer and run this. The subject takes on the scene's \
         light, grain and sharpness, casts a contact shadow on the ground under it, and the learned scene \
         redraws where the two meet. The result is a new layer above the pasted one, in one undo step; the \
         pasted layer and the scene are left as they are. Needs a scene learned with Learn Scene from the \
         layer below (or the same photo). Same as `pie blend` on the command line.",
    );
    p.add_string_argument("concept", "Scene", Some("Name of the learned scene (Stage I concept)"), "", RW);
    p.add_int_argument("seed", "S_eed", Some("Random seed; -1 picks a new one"), -1, i32::MAX, -1, RW);
    p.add_int_argument(
        "steps",
        "Sampling s_teps",
        Some("Denoising steps: more is slower and finer"),
        1,
        1000,
        50,
        RW,
    );
    p.add_choice_argument("device", "_Device", Some("Where to sample"), device_choice(), "auto", RW);
    look_arguments(&p);
    let listing = engine::list().ok();
    let (choice, default) = concept_choice(listing.as_ref(), 1);
    add_choice_aux(&p, "concept-choice", "Sc_ene", "A scene learned with Learn Scene", choice, &default);
    p
}

fn run_blend_subject(
    procedure: &gimp::ImageProcedure,
    mode: gimp::RunMode,
    image: &gimp::Image,
    drawables: &[gimp::Drawable],
    config: &gimp::ProcedureConfig,
) -> Outcome {
    let pasted = pixels::single_layer(drawables)?;
    if pasted.downcast_ref::<gimp::Layer>().is_some_and(|l| l.is_floating_sel()) {
        return Err(Failure::msg(
            "The pasted subject is still a floating selection: anchor it as a new layer (Layer > To New Layer), then run Blend on that layer.",
        ));
    }
    let layers = image.layers();
    let position = layers.iter().position(|l| l.upcast_ref::<gimp::Drawable>() == &pasted);
    let scene_layer = match position.and_then(|i| layers.get(i + 1)) {
        Some(l) => l.clone().upcast::<gimp::Drawable>(),
        None => {
            return Err(Failure::msg(
                "Blend needs the scene as the layer right below the pasted subject: paste the subject as a new layer over the photo.",
            ))
        }
    };
    if mode == gimp::RunMode::Interactive {
        dialog(
            procedure,
            config,
            &["concept-choice", "harmonize", "shadow", "match-grain", "seed", "steps", "device"],
            Some(("concept-choice", "concept")),
            |_| {},
        )?;
    }
    let concept = require_concept(&get_string(config, "concept"), 1)?.name;
    let seed = match config.property::<i32>("seed") {
        s if s < 0 => random_seed(),
        s => s as u64,
    };
    let scene = pixels::read_layer(image, &scene_layer)?;
    let subject = pixels::read_layer(image, &pasted)?;
    if !subject.alpha {
        return Err(Failure::msg(
            "The pasted layer has no transparency, so pie cannot tell the subject from its background: add an alpha channel \
             and erase around the subject (or paste a cut-out), then run Blend again.",
        ));
    }
    let (composite, mask) = pixels::lay_over(&scene, &subject)?;
    let params = engine::BlendParams {
        concept: concept.clone(),
        seed,
        steps: config.property::<i32>("steps").max(1) as u32,
        device: get_string(config, "device"),
        look: look_of(config),
    };
    let mut progress = GimpProgress::start(&format!("Blending into '{concept}'"));
    let result = engine::blend(&params, &composite, &mask, &mut progress);
    progress.finish();
    let v = result?;
    let _undo = UndoGroup::start(image);
    let layer = pixels::add_result_layer(
        image,
        &scene,
        &v.image,
        v.changed,
        &format!("{} blended (seed {})", pasted.name().map(|n| n.to_string()).unwrap_or_default(), v.seed),
    )?;
    // Above the pasted layer, which it replaces to the eye.
    image.reorder_item(&layer, layer.parent().as_ref(), image.item_position(&pasted));
    Ok(())
}

fn forget_concept_procedure(plug_in: &gimp::PlugIn) -> gimp::ImageProcedure {
    let p = gimp::ImageProcedure::new(
        plug_in,
        FORGET_CONCEPT,
        gimp::PDBProcType::Plugin,
        |proc_, mode, _image, _drawables, config| finish(proc_, run_forget_concept(proc_, mode, config)),
    );
    common(
        &p,
        "_Forget Concept...",
        "Delete a learned scene or subject (or a stopped training run) from pie's library",
        "Deletes the concept's folder from pie's concept library, with the checkpoint of a stopped \
         training run of the same name, to free the disk it takes (a Stable Diffusion concept takes \
         gigabytes). Subjects learned from a scene keep working without it; only learning a new subject \
         from that scene needs it. The same as `pie concepts remove NAME`.",
    );
    // It touches no pixels: any open image will do.
    p.set_image_types("*");
    p.set_sensitivity_mask(
        gimp::ProcedureSensitivityMask::DRAWABLE
            | gimp::ProcedureSensitivityMask::DRAWABLES
            | gimp::ProcedureSensitivityMask::NO_DRAWABLES,
    );
    p.add_string_argument(
        "concept",
        "Concept",
        Some("Name of the concept (or stopped training run) to delete"),
        "",
        RW,
    );
    let c = gimp::Choice::new();
    let items = engine::forgettable().unwrap_or_default();
    for (i, f) in items.iter().enumerate() {
        c.add(&f.name, i as i32 + 1, &f.label, "");
    }
    let default = match items.first() {
        Some(f) => f.name.clone(),
        None => {
            c.add(NOTHING, 0, "(the library is empty)", "");
            NOTHING.to_string()
        }
    };
    add_choice_aux(
        &p,
        "concept-choice",
        "_Concept to delete",
        "A concept in pie's library, with its size",
        c,
        &default,
    );
    p
}

fn run_forget_concept(
    procedure: &gimp::ImageProcedure,
    mode: gimp::RunMode,
    config: &gimp::ProcedureConfig,
) -> Outcome {
    if mode == gimp::RunMode::Interactive {
        // The dialog's OK is the confirmation; its list says what each entry is and holds.
        dialog(procedure, config, &["concept-choice"], Some(("concept-choice", "concept")), |_| {})?;
    }
    let name = get_string(config, "concept");
    if name.is_empty() {
        let have: Vec<String> = engine::forgettable()?.into_iter().map(|f| f.name).collect();
        return Err(Failure::msg(if have.is_empty() {
            "The pie library is empty: there is nothing to forget.".to_string()
        } else {
            format!("Name the concept to forget; the library has: {}.", have.join(", "))
        }));
    }
    engine::forget(&name)?;
    if mode == gimp::RunMode::Interactive {
        gimp::message(&format!("pie forgot '{name}'."));
    }
    Ok(())
}

// ---------------------------------------------------------------------------

fn get_string(config: &gimp::ProcedureConfig, name: &str) -> String {
    config.property::<Option<String>>(name).unwrap_or_default().trim().to_string()
}

/// Shows the procedure's dialog (built from its declared arguments).
/// `choice` is (list argument, string argument): the list starts at the
/// string's value when the library has it, and its pick is copied back.
/// The dialog greys out `property` unless the choice `switch` is one of
/// `values` (gimp_procedure_dialog_set_sensitive_if_in, which gimp-ui 0.1 does not bind).
fn sensitive_if<S: AsRef<str>>(
    d: &gimp_ui::ProcedureDialog,
    config: &gimp::ProcedureConfig,
    property: &str,
    switch: &str,
    values: &[S],
) {
    use glib::translate::ToGlibPtr;
    let values_array = gimp::ValueArray::new(values.len() as i32);
    for v in values {
        let _ = values_array.append(Some(&v.as_ref().to_value()));
    }
    let values = values_array;
    // SAFETY: every pointer is live for the call; `values` is handed over
    // (transfer full), hence the extra reference of to_glib_full.
    unsafe {
        gimp_ui::ffi::gimp_procedure_dialog_set_sensitive_if_in(
            d.to_glib_none().0,
            property.to_glib_none().0,
            config.upcast_ref::<glib::Object>().to_glib_none().0,
            switch.to_glib_none().0,
            values.to_glib_full(),
            glib::ffi::GTRUE,
        );
    }
}

/// The dialog greys out `property` while the boolean `switch` is TRUE.
fn sensitive_unless(
    d: &gimp_ui::ProcedureDialog,
    config: &gimp::ProcedureConfig,
    property: &str,
    switch: &str,
) {
    ProcedureDialogExt::set_sensitive(d, property, true, Some(config), Some(switch), true);
}

fn dialog(
    procedure: &gimp::ImageProcedure,
    config: &gimp::ProcedureConfig,
    properties: &[&str],
    choice: Option<(&str, &str)>,
    sensitivity: impl FnOnce(&gimp_ui::ProcedureDialog),
) -> Outcome {
    if let Some((list, string)) = choice {
        let current = get_string(config, string);
        if !current.is_empty() && engine::list().is_ok_and(|l| l.concepts.iter().any(|c| c.name == current)) {
            config.set_property(list, &current);
        }
    }
    gimp_ui::init("pie");
    let d = gimp_ui::ProcedureDialog::new(procedure, config, None);
    d.fill_list(properties);
    sensitivity(&d);
    let ok = ProcedureDialogExt::run(&d);
    // SAFETY: the dialog is ours, used no more after this.
    unsafe { d.destroy() };
    if !ok {
        return Err(Failure::Cancelled);
    }
    if let Some((list, string)) = choice {
        let picked = get_string(config, list);
        config.set_property(string, if picked == NOTHING { "" } else { picked.as_str() });
    }
    Ok(())
}

fn names_of(listing: &Listing, stage: u8) -> Vec<String> {
    listing.concepts.iter().filter(|c| c.stage == stage).map(|c| c.name.clone()).collect()
}

/// The named concept of `stage`, or an error that lists what there is.
fn require_concept(name: &str, stage: u8) -> Outcome<engine::Concept> {
    let listing = engine::list()?;
    let names = names_of(&listing, stage);
    let (what, how) = if stage == 1 {
        ("scene", "Learn one with Filters > Personalize > Learn Scene (or `pie learn-scene`)")
    } else {
        ("subject", "Learn one with Filters > Personalize > Learn Subject (or `pie learn-subject`)")
    };
    if names.is_empty() {
        return Err(Failure::msg(format!(
            "The pie library ({}) has no learned {what} yet. {how}.",
            listing.path.display()
        )));
    }
    if name.is_empty() {
        return Err(Failure::msg(format!("Name the {what} to use; the library has: {}.", names.join(", "))));
    }
    if let Some(i) = listing.concepts.iter().position(|c| c.name == name && c.stage == stage) {
        return Ok(listing.concepts.into_iter().nth(i).expect("found above"));
    }
    let other = listing.concepts.iter().find(|c| c.name == name);
    let hint = match other {
        Some(c) if c.stage != stage => {
            format!(" ('{name}' is a {}, not a {what})", if c.stage == 1 { "scene" } else { "subject" })
        }
        _ => String::new(),
    };
    Err(Failure::msg(format!(
        "There is no learned {what} '{name}' in the pie library ({}){hint}. Learned {what}s: {}.",
        listing.path.display(),
        names.join(", ")
    )))
}

/// `scene`: Learn Subject's scene (the subject takes its model); `None` for Learn Scene.
fn learn_params(config: &gimp::ProcedureConfig, scene: Option<&engine::Concept>) -> Outcome<LearnParams> {
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
    let (backbone, base, class_word) = match scene {
        None => match get_string(config, "backbone").as_str() {
            "sd" => (Some("sd".to_string()), Some(sd_base(config)?), class_word),
            // The sd settings are kept (the dialog remembers them) but not used.
            _ => (None, None, None),
        },
        Some(s) if s.backbone == "sd" => (None, None, class_word),
        Some(_) => (None, None, None),
    };
    Ok(LearnParams {
        name,
        preset: get_string(config, "preset"),
        device: get_string(config, "device"),
        steps: config.property::<i32>("steps").max(0) as u32,
        replace: config.property::<bool>("replace"),
        backbone,
        base,
        class_word,
        trainer_args: get_string(config, "trainer-args").split_whitespace().map(str::to_string).collect(),
        resume: config.property::<bool>("resume"),
    })
}

/// Learn Scene's `base` for the sd model: a local folder that looks like a
/// diffusers checkpoint, checked before anything starts.
fn sd_base(config: &gimp::ProcedureConfig) -> Outcome<std::path::PathBuf> {
    const LAYOUT: &str =
        "model_index.json, unet/, vae/, text_encoder/, tokenizer/ and scheduler/ (the diffusers layout)";
    let Some(file) = config.property::<Option<gimp::gio::File>>("base") else {
        return Err(Failure::msg(format!(
            "The Stable Diffusion model (sd) fine-tunes a checkpoint on this computer: choose its folder as \
             \"Stable Diffusion checkpoint\", the folder that holds {LAYOUT}; or pick the pixel-unet model."
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

const EXPORT_PREFIX: &str = "pie-gimp-";

/// GIMP's cancel kills the plug-in, so its temporary folder stays behind:
/// remove those of plug-in processes that are gone (`pie-gimp-<pid>-…`).
fn remove_stale_exports() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(EXPORT_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Writes the layer (and the mask) as PNG files for the trainer, in a
/// temporary folder that is removed when the returned guard is dropped.
fn export_for_trainer(
    src: &Source,
    mask: Option<&image::GrayImage>,
) -> Outcome<(tempfile::TempDir, std::path::PathBuf, Option<std::path::PathBuf>)> {
    remove_stale_exports();
    let dir = tempfile::Builder::new()
        .prefix(&format!("{EXPORT_PREFIX}{}-", std::process::id()))
        .tempdir()
        .map_err(|e| Failure::msg(format!("Cannot create a temporary folder for the trainer: {e}")))?;
    let image_path = dir.path().join("layer.png");
    src.for_png()
        .save(&image_path)
        .map_err(|e| Failure::msg(format!("Cannot write {}: {e}", image_path.display())))?;
    let mask_path = match mask {
        Some(m) => {
            let p = dir.path().join("mask.png");
            m.save(&p).map_err(|e| Failure::msg(format!("Cannot write {}: {e}", p.display())))?;
            Some(p)
        }
        None => None,
    };
    Ok((dir, image_path, mask_path))
}

fn run_learn_scene(
    procedure: &gimp::ImageProcedure,
    mode: gimp::RunMode,
    image: &gimp::Image,
    drawables: &[gimp::Drawable],
    config: &gimp::ProcedureConfig,
) -> Outcome {
    let layer = pixels::single_layer(drawables)?;
    if mode == gimp::RunMode::Interactive {
        dialog(
            procedure,
            config,
            &["name", "backbone", "base", "class-word", "preset", "device", "steps", "replace", "resume"],
            None,
            |d| {
                sensitive_if(d, config, "base", "backbone", &["sd"]);
                sensitive_if(d, config, "class-word", "backbone", &["sd"]);
            },
        )?;
    }
    let params = learn_params(config, None)?;
    let src = pixels::read_layer(image, &layer)?;
    let (_tmp, png, _) = export_for_trainer(&src, None)?;
    learn_with_progress(mode, &format!("Learning scene '{}'", params.name), |progress| {
        engine::learn_scene(&png, &params, progress)
    })
}

/// Runs one learning job under GIMP's progress bar; from the dialog, the
/// user is also told where the concept went (a batch caller reads the PDB status).
fn learn_with_progress(
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

fn run_learn_subject(
    procedure: &gimp::ImageProcedure,
    mode: gimp::RunMode,
    image: &gimp::Image,
    drawables: &[gimp::Drawable],
    config: &gimp::ProcedureConfig,
) -> Outcome {
    let layer = pixels::single_layer(drawables)?;
    if mode == gimp::RunMode::Interactive {
        dialog(
            procedure,
            config,
            &["scene-choice", "name", "class-word", "preset", "device", "steps", "replace", "resume"],
            Some(("scene-choice", "scene")),
            // the class word is for scenes learned with Stable Diffusion
            |d| {
                let sd_scenes: Vec<String> = engine::list()
                    .map(|l| {
                        l.concepts
                            .into_iter()
                            .filter(|c| c.stage == 1 && c.backbone == "sd")
                            .map(|c| c.name)
                            .collect()
                    })
                    .unwrap_or_default();
                sensitive_if(d, config, "class-word", "scene-choice", &sd_scenes);
            },
        )?;
    }
    let scene_concept = require_concept(&get_string(config, "scene"), 1)?;
    let params = learn_params(config, Some(&scene_concept))?;
    let scene = scene_concept.name;
    let src = pixels::read_layer(image, &layer)?;
    let mask = match pixels::selection_bounds(image) {
        Some(_) => {
            let m = pixels::read_mask(image, &src)?;
            if m.pixels().all(|p| p[0] == 0) {
                return Err(Failure::msg(
                    "The selection does not touch the active layer. Select the subject on this layer, \
                     or Select > None to learn the whole layer.",
                ));
            }
            Some(m)
        }
        None => None,
    };
    let (_tmp, png, mask_png) = export_for_trainer(&src, mask.as_ref())?;
    learn_with_progress(mode, &format!("Learning subject '{}' in '{scene}'", params.name), |progress| {
        engine::learn_subject(&png, &scene, mask_png.as_deref(), &params, progress)
    })
}

fn random_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
    );
    h.finish() & 0x7fff_ffff
}

/// Undo group that is closed however the run ends.
struct UndoGroup<'a>(&'a gimp::Image);

impl<'a> UndoGroup<'a> {
    fn start(image: &'a gimp::Image) -> UndoGroup<'a> {
        image.undo_group_start();
        UndoGroup(image)
    }
}

impl Drop for UndoGroup<'_> {
    fn drop(&mut self) {
        self.0.undo_group_end();
    }
}

fn run_add_subject(
    procedure: &gimp::ImageProcedure,
    mode: gimp::RunMode,
    image: &gimp::Image,
    drawables: &[gimp::Drawable],
    config: &gimp::ProcedureConfig,
) -> Outcome {
    let layer = pixels::single_layer(drawables)?;
    if pixels::selection_bounds(image).is_none() {
        return Err(Failure::msg(
            "Add Subject needs a selection: select the region where the subject should appear \
             (for example with the Rectangle or Free Select tool), then run it again.",
        ));
    }
    if mode == gimp::RunMode::Interactive {
        dialog(
            procedure,
            config,
            &[
                "concept-choice",
                "scale",
                "anchor",
                "flip",
                "harmonize",
                "shadow",
                "match-grain",
                "seed",
                "steps",
                "concept-defaults",
                "strength",
                "guidance",
                "scheduler",
                "prompt",
                "negative-prompt",
                "variants",
                "device",
            ],
            Some(("concept-choice", "concept")),
            |d| {
                sensitive_unless(d, config, "strength", "concept-defaults");
                sensitive_unless(d, config, "guidance", "concept-defaults");
            },
        )?;
    }
    let concept = require_concept(&get_string(config, "concept"), 2)?.name;
    let seed = match config.property::<i32>("seed") {
        s if s < 0 => random_seed(),
        s => s as u64,
    };
    let strength = config.property::<f64>("strength");
    let guidance = config.property::<f64>("guidance");
    let concept_defaults = config.property::<bool>("concept-defaults");
    if concept_defaults {
        // Scripts written before concept-defaults existed set strength and
        // guidance and expect them used: say why they are not.
        if mode == gimp::RunMode::Noninteractive
            && (strength, guidance) != engine::default_strength_guidance()
        {
            eprintln!(
                "pie: Add Subject: concept-defaults is TRUE, so the concept's strength and guidance are used, \
                 not strength {strength} and guidance {guidance}: pass concept-defaults FALSE to use those"
            );
        }
    } else if strength <= 0.0 {
        return Err(Failure::msg("Strength must be above 0 (1 re-synthesizes the whole selection)."));
    }
    let params = AddParams {
        concept: concept.clone(),
        seed,
        steps: config.property::<i32>("steps").max(1) as u32,
        strength: (!concept_defaults).then_some(strength),
        guidance: (!concept_defaults).then_some(guidance),
        variants: config.property::<i32>("variants").max(1) as u32,
        device: get_string(config, "device"),
        scheduler: get_string(config, "scheduler"),
        prompt: Some(get_string(config, "prompt")).filter(|p| !p.is_empty()),
        negative_prompt: Some(get_string(config, "negative-prompt")).filter(|p| !p.is_empty()),
        placement: pie::Placement {
            scale: config.property::<f64>("scale") as f32,
            anchor: get_string(config, "anchor").parse().unwrap_or_default(),
            flip: config.property::<bool>("flip"),
        },
        look: look_of(config),
    };
    let src = pixels::read_layer(image, &layer)?;
    let mask = pixels::read_mask(image, &src)?;
    if mask.pixels().all(|p| p[0] == 0) {
        return Err(Failure::msg(
            "The selection does not overlap the active layer: select a region on this layer.",
        ));
    }
    let mut progress = GimpProgress::start(&format!("Adding '{concept}'"));
    let result = engine::add(&params, &src.image, &mask, &mut progress);
    progress.finish();
    let variants = result?;
    {
        let _undo = UndoGroup::start(image);
        for v in &variants {
            // each goes right above the source layer, under the previous one:
            // the first variant ends on top
            let name = format!("{concept} (seed {})", v.seed);
            pixels::add_result_layer(image, &src, &v.image, v.changed, &name)?;
        }
    }
    let notes: Vec<&str> = variants.iter().filter_map(|v| v.note.as_deref()).collect();
    if let Some(note) = notes.first() {
        if mode == gimp::RunMode::Interactive {
            gimp::message(note);
        } else {
            eprintln!("pie: {note}");
        }
    }
    Ok(())
}
