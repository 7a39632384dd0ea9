//! pie's GIMP 3 plug-in: Learn Scene, Learn Subject and Add Subject to
//! Selection under Filters > Personalize. GIMP glue only: every pixel the
//! plug-in produces comes from the pie engine, so the same seed gives the
//! same result here and from `pie add`.

mod engine;
mod failure;
mod pixels;
mod procedures;
mod progress;
mod setup;

use gimp::prelude::*;
use gimp::subclass::prelude::*;

mod imp {
    use super::*;

    #[derive(Default)]
    pub struct PiePlugIn;

    #[glib::object_subclass]
    impl ObjectSubclass for PiePlugIn {
        const NAME: &'static str = "PiePlugIn";
        type Type = super::PiePlugIn;
        type ParentType = gimp::PlugIn;
    }

    impl ObjectImpl for PiePlugIn {}

    impl PlugInImpl for PiePlugIn {
        fn query_procedures(&self) -> Vec<String> {
            procedures::NAMES.iter().map(|s| s.to_string()).collect()
        }

        fn create_procedure(&self, name: &str) -> Option<gimp::Procedure> {
            procedures::create(self.obj().upcast_ref::<gimp::PlugIn>(), name)
        }

        // No translations (yet): returning None keeps GIMP from warning about
        // a missing catalog on every start.
        fn set_i18n(&self, _procedure_name: &str) -> Option<I18n> {
            None
        }
    }
}

glib::wrapper! {
    pub struct PiePlugIn(ObjectSubclass<imp::PiePlugIn>) @extends gimp::PlugIn;
}

fn main() -> glib::ExitCode {
    setup::environment();
    gimp::main::<PiePlugIn>()
}
