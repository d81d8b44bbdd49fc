//! What a requirement asks of a model and how an edit is checked against it.

pub mod metrics;
