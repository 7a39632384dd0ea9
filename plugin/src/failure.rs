//! How a procedure ends: success, cancelled, or an execution error whose
//! message the user can act on (GIMP shows it in the error console, batch
//! mode prints it and exits with a failure code).

use gimp::prelude::*;

#[derive(Debug)]
pub enum Failure {
    /// The user cancelled (the dialog, or the engine saw a cancel request).
    Cancelled,
    /// Something the user can fix, or a report of what went wrong.
    Error(String),
}

impl Failure {
    pub fn msg(message: impl Into<String>) -> Failure {
        Failure::Error(message.into())
    }
}

pub type Outcome<T = ()> = Result<T, Failure>;

/// Turns the outcome of a run into GIMP's return values.
pub fn finish(procedure: &impl IsA<gimp::Procedure>, outcome: Outcome) -> gimp::ValueArray {
    match outcome {
        Ok(()) => procedure.new_return_values(gimp::PDBStatusType::Success, None),
        Err(Failure::Cancelled) => procedure.new_return_values(gimp::PDBStatusType::Cancel, None),
        Err(Failure::Error(message)) => procedure.new_return_values(
            gimp::PDBStatusType::ExecutionError,
            Some(glib::Error::new(gimp::PlugInError::Failed, &message)),
        ),
    }
}
