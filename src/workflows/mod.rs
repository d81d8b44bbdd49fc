//! What users run, on top of the engine, the networks and the files: edits, editor training,
//! zoo building, fitting, the baselines and their comparison with the editor.

pub mod baselines;
pub mod compare;
pub mod edit;
pub mod fit;
pub mod train;
pub mod zoo;
