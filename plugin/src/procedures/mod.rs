//! The five procedures under Filters > Personalize, one per file: their
//! arguments (declared once; the dialogs are generated from them) and their
//! runs. [`arguments`] and [`dialog`] hold what they share.

mod add_subject;
mod arguments;
mod blend_subject;
mod dialog;
mod export;
mod forget_concept;
mod learn_scene;
mod learn_subject;
mod learning;

use std::hash::{BuildHasher, Hasher};

use gimp::prelude::*;
use gimp_ui::prelude::*;

use crate::engine::{self, LearnParams, Listing};
use crate::failure::{finish, Failure, Outcome};
use crate::pixels::{self, Source};
use crate::progress::GimpProgress;

use arguments::*;
use dialog::*;
use export::*;
use learning::*;

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

pub fn create(plug_in: &gimp::PlugIn, name: &str) -> Option<gimp::Procedure> {
    let p = match name {
        LEARN_SCENE => learn_scene::procedure(plug_in),
        LEARN_SUBJECT => learn_subject::procedure(plug_in),
        ADD_SUBJECT => add_subject::procedure(plug_in),
        FORGET_CONCEPT => forget_concept::procedure(plug_in),
        BLEND_SUBJECT => blend_subject::procedure(plug_in),
        _ => return None,
    };
    Some(p.upcast())
}

/// One call of a procedure: what GIMP hands its run function.
#[derive(Clone, Copy)]
struct Call<'a> {
    procedure: &'a gimp::ImageProcedure,
    mode: gimp::RunMode,
    image: &'a gimp::Image,
    drawables: &'a [gimp::Drawable],
    config: &'a gimp::ProcedureConfig,
}

/// A procedure whose outcome GIMP gets as return values (see [`finish`]).
fn image_procedure(plug_in: &gimp::PlugIn, name: &str, run: fn(&Call) -> Outcome) -> gimp::ImageProcedure {
    gimp::ImageProcedure::new(
        plug_in,
        name,
        gimp::PDBProcType::Plugin,
        move |procedure, mode, image, drawables, config| {
            finish(procedure, run(&Call { procedure, mode, image, drawables, config }))
        },
    )
}

fn common(p: &gimp::ImageProcedure, label: &str, blurb: &str, help: &str) {
    p.set_image_types("RGB*, GRAY*");
    p.set_sensitivity_mask(gimp::ProcedureSensitivityMask::DRAWABLE);
    p.set_menu_label(label);
    p.add_menu_path(MENU);
    p.set_documentation(blurb, Some(help), None);
    p.set_attribution(AUTHORS, COPYRIGHT, DATE);
}

fn names_of(listing: &Listing, stage: pie::Stage) -> Vec<String> {
    listing.concepts.iter().filter(|c| c.stage == stage).map(|c| c.name.clone()).collect()
}

/// The named concept of `stage`, or an error that lists what there is.
fn require_concept(name: &str, stage: pie::Stage) -> Outcome<engine::Concept> {
    let listing = engine::list()?;
    let names = names_of(&listing, stage);
    let what = stage.noun();
    let how = match stage {
        pie::Stage::Scene => "Learn one with Filters > Personalize > Learn Scene (or `pie learn-scene`)",
        pie::Stage::Subject => {
            "Learn one with Filters > Personalize > Learn Subject (or `pie learn-subject`)"
        }
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
            format!(" ('{name}' is a {}, not a {what})", c.stage.noun())
        }
        _ => String::new(),
    };
    Err(Failure::msg(format!(
        "There is no learned {what} '{name}' in the pie library ({}){hint}. Learned {what}s: {}.",
        listing.path.display(),
        names.join(", ")
    )))
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
