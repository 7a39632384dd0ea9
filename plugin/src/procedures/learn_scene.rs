//! Learn Scene: Stage I, the personalized model of the photo's scene.

use super::*;

pub(super) fn procedure(plug_in: &gimp::PlugIn) -> gimp::ImageProcedure {
    let p = image_procedure(plug_in, LEARN_SCENE, run);
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
        pie::Backbone::default().name(),
        RW,
    );
    p.add_file_argument(
        "base",
        "Stable Diffusion chec_kpoint",
        Some("Models sd and sdxl only: the folder of a local Stable Diffusion (or SDXL) checkpoint in diffusers layout (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/; SDXL also text_encoder_2/, tokenizer_2/)"),
        gimp::FileChooserAction::SelectFolder,
        true,
        None::<&gimp::gio::File>,
        RW,
    );
    class_word_argument(
        &p,
        "Models sd and sdxl only: the class noun of the scene (e.g. landscape, room); empty = the trainer's default",
    );
    trainer_args_argument(&p);
    resume_argument(&p);
    minutes_argument(&p);
    // A second argument, not a mode of the first: GTK's chooser picks either folders or files.
    // Last, so scripts that pass the older arguments by position keep working.
    p.add_file_argument(
        "base-file",
        "...or a single checkpoint _file",
        Some("Models sd and sdxl only: one .safetensors file of a Stable Diffusion 1.x/2.x (sd) or SDXL 1.0 base (sdxl) checkpoint as A1111 or ComfyUI keep it (converted once into pie's cache); used instead of the folder when set. Pickles (.ckpt) are refused"),
        gimp::FileChooserAction::Open,
        true,
        None::<&gimp::gio::File>,
        RW,
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
                "name",
                "backbone",
                "base",
                "base-file",
                "class-word",
                "preset",
                "device",
                "steps",
                "minutes",
                "replace",
                "resume",
            ],
            None,
            |d| {
                let fine_tuned: Vec<&str> = pie::Backbone::ALL
                    .into_iter()
                    .filter(|b| b.fine_tunes_a_base())
                    .map(pie::Backbone::name)
                    .collect();
                sensitive_if(d, config, "base", "backbone", &fine_tuned);
                sensitive_if(d, config, "base-file", "backbone", &fine_tuned);
                sensitive_if(d, config, "class-word", "backbone", &fine_tuned);
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
