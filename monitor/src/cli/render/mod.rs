//! The terminal renderers: one function per report, named after it, each a pure function
//! from the data to the text a person reads (`render::topology`, `render::status`,
//! `render::plan`, `render::undo`; `render::top` draws `pinsight top`'s screen). A new terminal view gets a file here beside them.

mod plan;
mod status;
pub mod top;
mod topology;

pub use plan::{plan, undo};
pub use status::status;
pub use topology::topology;
