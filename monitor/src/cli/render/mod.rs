//! The terminal renderers: one function per report, named after it, each a pure function
//! from the data to the text a person reads (`render::topology`, `render::status`,
//! `render::plan`, `render::undo`; `render::top` draws `pinsight top`'s screen). A new
//! terminal view gets a file here beside them.

mod plan;
mod status;
pub mod top;
mod topology;

pub use plan::{plan, undo};
pub use status::status;
pub use topology::topology;

use crate::probes::Moves;

/// Header of a moves column: a vCPU's moves by scope (pinsight_vcpu_migrations_total).
const MOVES_HEADER: &str = "moves smt/core/node/socket";

/// A vCPU's moves by scope, as [`MOVES_HEADER`] names them (unknown ones appended if any).
fn moves(m: &Moves) -> String {
    let known = format!("{}/{}/{}/{}", m.smt, m.core, m.node, m.socket);
    if m.unknown > 0 {
        format!("{known} +{} unknown", m.unknown)
    } else {
        known
    }
}
