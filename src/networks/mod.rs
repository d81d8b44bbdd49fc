//! The networks the engine runs: batches of MLPs (the edited models), the parameter graph that
//! packs them for the editor, and the editor itself. Forward and backward by hand; no files.

pub mod editor;
pub mod graph;
pub mod linear;
pub mod mlp;
