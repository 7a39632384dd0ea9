//! The dialogs, generated from the procedures' declared arguments, and the
//! workarounds for what gimp-ui 0.1 does not bind.

use super::*;

/// Shows the procedure's dialog (built from its declared arguments).
/// `choice` is (list argument, string argument): the list starts at the
/// string's value when the library has it, and its pick is copied back.
/// The dialog greys out `property` unless the choice `switch` is one of
/// `values` (gimp_procedure_dialog_set_sensitive_if_in, which gimp-ui 0.1 does not bind).
pub(super) fn sensitive_if<S: AsRef<str>>(
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
pub(super) fn sensitive_unless(
    d: &gimp_ui::ProcedureDialog,
    config: &gimp::ProcedureConfig,
    property: &str,
    switch: &str,
) {
    ProcedureDialogExt::set_sensitive(d, property, true, Some(config), Some(switch), true);
}

/// The dialog greys out `property` while the boolean `switch` is FALSE.
pub(super) fn sensitive_when(
    d: &gimp_ui::ProcedureDialog,
    config: &gimp::ProcedureConfig,
    property: &str,
    switch: &str,
) {
    ProcedureDialogExt::set_sensitive(d, property, true, Some(config), Some(switch), false);
}

pub(super) fn dialog(
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
