//! Add Subject to Selection: the learned subject painted into the selection.

use super::*;

pub(super) fn procedure(plug_in: &gimp::PlugIn) -> gimp::ImageProcedure {
    let p = image_procedure(plug_in, ADD_SUBJECT, run);
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
    sampling_steps_argument(&p);
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
        Some("DDIM, or DPM++ 2M (good in 20-25 steps) for subjects learned with Stable Diffusion; pixel-unet subjects use DDIM only"),
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
    concept_list_argument(
        &p,
        "concept-choice",
        "Su_bject",
        "A subject learned with Learn Subject",
        &[pie::Stage::Subject],
    );
    p
}

fn run(call: &Call) -> Outcome {
    let Call { procedure, mode, image, drawables, config } = *call;
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
    let concept = require_concept(&get_string(config, "concept"), pie::Stage::Subject)?.name;
    let seed = match config.property::<i32>("seed") {
        s if s < 0 => random_seed(),
        s => s as u64,
    };
    let strength = config.property::<f64>("strength");
    let guidance = config.property::<f64>("guidance");
    let concept_defaults = config.property::<bool>("concept-defaults");
    // Scripts written before concept-defaults existed set strength and
    // guidance and expect them used: say why they are not.
    if concept_defaults
        && mode == gimp::RunMode::Noninteractive
        && (strength, guidance) != engine::default_strength_guidance()
    {
        eprintln!(
            "pie: Add Subject: concept-defaults is TRUE, so the concept's strength and guidance are used, \
             not strength {strength} and guidance {guidance}: pass concept-defaults FALSE to use those"
        );
    }
    let request = pie::AddRequest {
        seed,
        steps: Some(config.property::<i32>("steps").max(1) as usize),
        strength: (!concept_defaults).then_some(strength as f32),
        guidance: (!concept_defaults).then_some(guidance as f32),
        variants: config.property::<i32>("variants").max(1) as usize,
        device: engine::device(&get_string(config, "device"))?,
        scheduler: Some(get_string(config, "scheduler").parse()?),
        prompt: Some(get_string(config, "prompt")).filter(|p| !p.is_empty()),
        negative_prompt: Some(get_string(config, "negative-prompt")).filter(|p| !p.is_empty()),
        placement: pie::Placement {
            scale: config.property::<f64>("scale") as f32,
            anchor: get_string(config, "anchor").parse().unwrap_or_default(),
            flip: config.property::<bool>("flip"),
        },
        look: look_of(config),
        ..Default::default()
    };
    let src = pixels::read_layer(image, &layer)?;
    let mask = pixels::read_mask(image, &src)?;
    if mask.pixels().all(|p| p[0] == 0) {
        return Err(Failure::msg(
            "The selection does not overlap the active layer: select a region on this layer.",
        ));
    }
    let mut progress = GimpProgress::start(&format!("Adding '{concept}'"));
    // One undo step for all the variants, each added as soon as it is made,
    // so a long run shows its first results early.
    let undo = UndoGroup::start(image);
    let mut note = None;
    let mut enlarged = None;
    let result = engine::add(&concept, &request, &src.image, &mask, &mut progress, &mut |v| {
        // each goes right above the source layer, under the previous one:
        // the first variant ends on top
        let name = format!("{concept} (seed {})", v.seed);
        pixels::add_result_layer(image, &src, &v.image, v.changed, &name)?;
        gimp::displays_flush();
        note = note.take().or(v.note);
        enlarged = enlarged.or(v.enlarged);
        Ok(())
    });
    drop(undo);
    progress.finish();
    result?;
    let soft = enlarged.map(|f| {
        format!(
            "The subject is enlarged {f:.1} times past the resolution of its photo, so it looks softer than the \
             scene. Learn it from a larger photo, or make the selection (or Scale) smaller."
        )
    });
    for note in note.into_iter().chain(soft) {
        if mode == gimp::RunMode::Interactive {
            gimp::message(&note);
        } else {
            eprintln!("pie: {note}");
        }
    }
    Ok(())
}
