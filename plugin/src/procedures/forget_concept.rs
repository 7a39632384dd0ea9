//! Forget Concept: a learned scene or subject (or a stopped run) deleted from the library.

use super::*;

pub(super) fn procedure(plug_in: &gimp::PlugIn) -> gimp::ImageProcedure {
    let p = image_procedure(plug_in, FORGET_CONCEPT, run);
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

fn run(call: &Call) -> Outcome {
    let Call { procedure, mode, config, .. } = *call;
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
