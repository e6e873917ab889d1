//! mille: Terraform plans as a resource graph clustered by module and coloured by action, and
//! a Markdown summary for the pull request.
//!
//! - [`cache`]: rendered outputs on disk, keyed by the plan's hash and the renderer version.
//! - [`input`]: decoding a plan file (UTF-8, UTF-16 with a BOM) and the one-line refusals.
//! - [`plan`]: the plan's changes and configuration references, parsed without keeping
//!   values (so nothing sensitive or unknown can be rendered or cached).
//! - [`graph`]: nodes per change, edges from references and `depends_on`, resolved per module
//!   instance.
//! - [`summary`]: the PR summary, always within GitHub's comment limit, and the JSON counts.
//! - [`layout`]: a compound layered layout (modules as boxes), computed in process.
//! - [`svg`]: the laid-out graph as SVG.
//! - [`html`]: `graph.html`, the graph with zoom, pan, filters and modules opened on click.
//! - [`dot`]: the graph as Graphviz DOT.
//! - [`source`]: a plan file memory-mapped, hashed and parsed without holding it whole.
//! - [`serve`]: `mille serve`, PR webhooks rendered on a Weir worker pool.
//! - [`synth`]: synthetic plans of any size, for tests and benchmarks.

pub mod cache;
pub mod dot;
pub mod graph;
pub mod html;
pub mod input;
pub mod layout;
pub mod plan;
pub mod serve;
pub mod source;
pub mod summary;
pub mod svg;
pub mod synth;

pub use graph::Graph;
pub use input::InputError;
pub use plan::{Action, Change, Plan};
