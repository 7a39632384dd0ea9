//! The procedures' shared arguments and the choices their dialogs offer,
//! each declared once.

use super::*;

pub(super) const RW: glib::ParamFlags = glib::ParamFlags::READWRITE;

/// The nick of the dialogs' list entry shown when the library has nothing to offer.
pub(super) const NOTHING: &str = "none";

pub(super) fn device_choice() -> gimp::Choice {
    let c = gimp::Choice::new();
    c.add("auto", 0, "Automatic", "CUDA when a working NVIDIA GPU is found, otherwise the CPU");
    c.add("cpu", 1, "CPU", "Always the CPU");
    c.add("cuda", 2, "CUDA GPU", "An NVIDIA GPU through CUDA; fails when there is none");
    c
}

pub(super) fn anchor_choice() -> gimp::Choice {
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
pub(super) fn look_arguments(p: &gimp::ImageProcedure) {
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

pub(super) fn look_of(config: &gimp::ProcedureConfig) -> pie::Look {
    pie::Look {
        harmonize: config.property::<f64>("harmonize") as f32,
        shadow: config.property::<f64>("shadow") as f32,
        grain: config.property::<bool>("match-grain"),
    }
}

pub(super) fn backbone_choice() -> gimp::Choice {
    let c = gimp::Choice::new();
    for (i, b) in pie::Backbone::ALL.into_iter().enumerate() {
        let about = b.about();
        c.add(b.name(), i as i32, about.label, about.help);
    }
    c
}

pub(super) fn scheduler_choice() -> gimp::Choice {
    let c = gimp::Choice::new();
    c.add("ddim", 0, "DDIM", "DDIM: the default");
    c.add("dpm++2m", 1, "DPM++ 2M", "DPM-Solver++ 2M: good results in 20-25 steps");
    c
}

pub(super) fn preset_choice() -> gimp::Choice {
    let c = gimp::Choice::new();
    c.add("quick", 0, "Quick", "A short training run (minutes on a CPU): rougher results");
    c.add("default", 1, "Default", "The full training run: better results, several times longer");
    c
}

/// The library's concepts of the given stages as a list for a dialog, with `NOTHING`
/// as the only entry when there are none.
pub(super) fn concept_choice(listing: Option<&Listing>, stages: &[pie::Stage]) -> (gimp::Choice, String) {
    let c = gimp::Choice::new();
    let mut first = None;
    if let Some(l) = listing {
        for (i, k) in l.concepts.iter().filter(|k| stages.contains(&k.stage)).enumerate() {
            let note = k.backbone_note();
            let label = match &k.parent {
                Some(parent) => format!("{} (in {parent}{note})", k.name),
                None if note.is_empty() => k.name.clone(),
                None => format!("{} ({})", k.name, k.backbone.about().title),
            };
            c.add(&k.name, i as i32 + 1, &label, "");
            first.get_or_insert_with(|| k.name.clone());
        }
    }
    let default = first.unwrap_or_else(|| {
        let nouns: Vec<&str> = stages.iter().map(|s| s.noun()).collect();
        c.add(NOTHING, 0, &format!("(no learned {} yet)", nouns.join(" or ")), "");
        NOTHING.to_string()
    });
    (c, default)
}

/// Add's and Blend's denoising steps.
pub(super) fn sampling_steps_argument(p: &gimp::ImageProcedure) {
    p.add_int_argument(
        "steps",
        "Sampling s_teps",
        Some("Denoising steps: more is slower and finer"),
        1,
        1000,
        50,
        RW,
    );
}

/// A dialog-only list of the library's concepts of some stages (the procedure's
/// string argument holds the name scripts pass).
pub(super) fn concept_list_argument(
    p: &gimp::ImageProcedure,
    name: &str,
    nick: &str,
    blurb: &str,
    stages: &[pie::Stage],
) {
    let listing = engine::list().ok();
    let (choice, default) = concept_choice(listing.as_ref(), stages);
    add_choice_aux(p, name, nick, blurb, choice, &default);
}

/// `gimp_procedure_add_choice_aux_argument` keeps the choice (it goes into the
/// param spec, as with `add_choice_argument`), but gimp 0.1's binding lends it
/// and unrefs it afterwards, which frees it under GIMP's feet: hand over a
/// reference of our own.
pub(super) fn add_choice_aux(
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

pub(super) fn learn_common_arguments(p: &gimp::ImageProcedure, default_name: &str) {
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
pub(super) fn resume_argument(p: &gimp::ImageProcedure) {
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

/// Appended after `resume` (scripts pass arguments by position): a time budget
/// for the whole Learn, 0 = none (all the steps run).
pub(super) fn minutes_argument(p: &gimp::ImageProcedure) {
    p.add_double_argument(
        "minutes",
        "Time _budget (minutes)",
        Some("Stop learning in time to have the concept within this many minutes, keeping what was learned by \
              then (the progress bar counts the time down); 0 = no budget, all the steps run"),
        0.0,
        24.0 * 60.0,
        0.0,
        RW,
    );
}

pub(super) fn class_word_argument(p: &gimp::ImageProcedure, blurb: &str) {
    p.add_string_argument("class-word", "Class _word", Some(blurb), "", RW);
}

/// For scripts (not in the dialog): what `pie learn-* --trainer-arg` passes.
pub(super) fn trainer_args_argument(p: &gimp::ImageProcedure) {
    p.add_string_argument(
        "trainer-args",
        "Trainer arguments",
        Some("Advanced, for scripts: further arguments for pie's trainer, separated by spaces (as `pie learn-scene --trainer-arg`), e.g. \"--resolution 64\"; empty = none"),
        "",
        RW,
    );
}

pub(super) fn get_string(config: &gimp::ProcedureConfig, name: &str) -> String {
    config.property::<Option<String>>(name).unwrap_or_default().trim().to_string()
}
