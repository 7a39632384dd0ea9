//! Blend Pasted Subject: a subject the user pasted and placed, made to fit the scene below it.

use super::*;

pub(super) fn procedure(plug_in: &gimp::PlugIn) -> gimp::ImageProcedure {
    let p = image_procedure(plug_in, BLEND_SUBJECT, run);
    common(
        &p,
        "_Blend Pasted Subject...",
        "Make a pasted subject look photographed in the scene below it",
        "Paste the subject as a layer over the scene (with transparency around it) and move, scale, rotate or \
         flip it as you like; then select the pasted layer and run this. The subject takes on the scene's \
         light, grain and sharpness, casts a contact shadow on the ground under it, and the learned scene \
         redraws where the two meet. The result is a new layer above the pasted one, in one undo step; the \
         pasted layer and the scene are left as they are. Needs a scene learned with Learn Scene from the \
         layer below (or the same photo), or tick 'Learn the scene from the layer below first' to learn one \
         now under a new name (minutes; it stays in the library for the next Blend or Add). Pick a subject \
         learned in that scene instead, and the model redraws the subject's edge as that subject rather than \
         as a stranger. Same as `pie learn-scene` then `pie blend` on the command line.",
    );
    p.add_string_argument(
        "concept",
        "Concept",
        Some("Name of the learned scene (Stage I concept), or of a subject learned in it (Stage II)"),
        "",
        RW,
    );
    p.add_int_argument("seed", "S_eed", Some("Random seed; -1 picks a new one"), -1, i32::MAX, -1, RW);
    sampling_steps_argument(&p);
    p.add_choice_argument("device", "_Device", Some("Where to sample"), device_choice(), "auto", RW);
    look_arguments(&p);
    // After the older arguments, so scripts that pass them by position keep working.
    p.add_boolean_argument(
        "learn-scene-first",
        "Learn the scene from the layer _below first",
        Some(
            "Learn a new scene from the layer below the pasted one (as Learn Scene does, minutes) and blend \
              into it; FALSE blends into the scene or subject chosen above",
        ),
        false,
        RW,
    );
    p.add_string_argument(
        "new-scene",
        "_New scene's name",
        Some("With 'learn the scene first': the name of the scene to learn, 1-64 characters a-z, 0-9, '-' or '_'; \
              it must not exist yet"),
        "my-scene",
        RW,
    );
    p.add_choice_argument(
        "learn-preset",
        "Learning _quality",
        Some("With 'learn the scene first': the training preset"),
        preset_choice(),
        "quick",
        RW,
    );
    p.add_int_argument(
        "learn-steps",
        "Learning ste_ps",
        Some("With 'learn the scene first': training steps; 0 uses the preset's number"),
        0,
        1_000_000,
        0,
        RW,
    );
    concept_list_argument(
        &p,
        "concept-choice",
        "Sc_ene or subject",
        "A scene learned with Learn Scene, or a subject learned in it with Learn Subject",
        &[pie::Stage::Scene, pie::Stage::Subject],
    );
    p
}

fn run(call: &Call) -> Outcome {
    let Call { procedure, mode, image, drawables, config } = *call;
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
            &[
                "concept-choice",
                "learn-scene-first",
                "new-scene",
                "learn-preset",
                "learn-steps",
                "harmonize",
                "shadow",
                "match-grain",
                "seed",
                "steps",
                "device",
            ],
            Some(("concept-choice", "concept")),
            |d| {
                sensitive_unless(d, config, "concept-choice", "learn-scene-first");
                for learning in ["new-scene", "learn-preset", "learn-steps"] {
                    sensitive_when(d, config, learning, "learn-scene-first");
                }
            },
        )?;
    }
    // Every check that needs no model comes before the minutes of learning.
    let learn_first = config.property::<bool>("learn-scene-first");
    let new_scene = learn_first.then(|| new_scene_params(config)).transpose()?;
    let scene = pixels::read_layer(image, &scene_layer)?;
    let subject = pixels::read_layer(image, &pasted)?;
    if !subject.alpha {
        return Err(Failure::msg(
            "The pasted layer has no transparency, so pie cannot tell the subject from its background: add an alpha channel \
             and erase around the subject (or paste a cut-out), then run Blend again.",
        ));
    }
    let (composite, mask) = pixels::lay_over(&scene, &subject)?;
    let seed = match config.property::<i32>("seed") {
        s if s < 0 => random_seed(),
        s => s as u64,
    };
    let (concept, learned) = match new_scene {
        Some(params) => {
            let (_tmp, png, _) = export_for_trainer(&scene, None)?;
            let mut progress =
                GimpProgress::start(&format!("Learning scene '{}' from the layer below", params.name));
            let summary = engine::learn_scene(&png, &params, &mut progress);
            progress.finish();
            (params.name, Some(summary?))
        }
        None => {
            let name = get_string(config, "concept");
            // A subject concept carries its scene's model: either stage blends.
            let stage = engine::list()
                .ok()
                .and_then(|l| l.concepts.iter().find(|c| c.name == name).map(|c| c.stage))
                .unwrap_or(pie::Stage::Scene);
            (require_concept(&name, stage)?.name, None)
        }
    };
    let request = pie::AddRequest {
        seed,
        steps: Some(config.property::<i32>("steps").max(1) as usize),
        device: engine::device(&get_string(config, "device"))?,
        look: look_of(config),
        ..Default::default()
    };
    let mut progress = GimpProgress::start(&format!("Blending into '{concept}'"));
    let result = engine::blend(&concept, &request, &composite, &mask, &mut progress);
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
    if let (Some(summary), gimp::RunMode::Interactive) = (learned, mode) {
        gimp::message(&format!("{summary} Blend and Add can use it again by that name."));
    }
    Ok(())
}

/// Learn Scene's parameters for the scene learned from the layer below: a new
/// name (never a replacement: the user asked for a new scene, and an old one
/// of that name may be what other subjects were learned in).
fn new_scene_params(config: &gimp::ProcedureConfig) -> Outcome<LearnParams> {
    let name = get_string(config, "new-scene");
    if name.is_empty() {
        return Err(Failure::msg(
            "Give the scene to learn from the layer below a name (letters a-z, digits, '-' or '_') in \
             'New scene's name'.",
        ));
    }
    if engine::list()?.concepts.iter().any(|c| c.name == name) {
        return Err(Failure::msg(format!(
            "A concept named '{name}' already exists: give the new scene another name, or untick \
             'Learn the scene from the layer below first' and pick '{name}' from the list."
        )));
    }
    Ok(LearnParams {
        name,
        preset: get_string(config, "learn-preset"),
        device: get_string(config, "device"),
        steps: config.property::<i32>("learn-steps").max(0) as u32,
        replace: false,
        backbone: None,
        base: None,
        class_word: None,
        trainer_args: Vec::new(),
        resume: false,
        minutes: None,
    })
}
