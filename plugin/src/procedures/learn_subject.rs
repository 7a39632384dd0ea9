//! Learn Subject: Stage II, the subject, learned into a scene's model.

use super::*;

pub(super) fn procedure(plug_in: &gimp::PlugIn) -> gimp::ImageProcedure {
    let p = image_procedure(plug_in, LEARN_SUBJECT, run);
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
    minutes_argument(&p);
    concept_list_argument(
        &p,
        "scene-choice",
        "S_cene to grow from",
        "A scene learned with Learn Scene",
        &[pie::Stage::Scene],
    );
    p
}

fn run(call: &Call) -> Outcome {
    let Call { procedure, mode, image, drawables, config } = *call;
    let layer = pixels::single_layer(drawables)?;
    if mode == gimp::RunMode::Interactive {
        dialog(
            procedure,
            config,
            &[
                "scene-choice",
                "name",
                "class-word",
                "preset",
                "device",
                "steps",
                "minutes",
                "replace",
                "resume",
            ],
            Some(("scene-choice", "scene")),
            // the class word is for scenes learned by fine-tuning a base (Stable Diffusion)
            |d| {
                let fine_tuned: Vec<String> = engine::list()
                    .map(|l| {
                        l.concepts
                            .into_iter()
                            .filter(|c| c.stage == pie::Stage::Scene && c.backbone.fine_tunes_a_base())
                            .map(|c| c.name)
                            .collect()
                    })
                    .unwrap_or_default();
                sensitive_if(d, config, "class-word", "scene-choice", &fine_tuned);
            },
        )?;
    }
    let scene_concept = require_concept(&get_string(config, "scene"), pie::Stage::Scene)?;
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
