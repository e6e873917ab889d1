//! periodic: the Code Periodic Table. It parses a codebase into syntax trees (tree-sitter:
//! Rust, Python, JavaScript, TypeScript, Go), fingerprints their subtrees with names and
//! constants abstracted, and keeps an index of the structural patterns that recur — each an
//! element of the table, grouped by kind, with its count and where it occurs — and of clone
//! groups, updated incrementally as files change.
//!
//! - [`lang`]: languages by extension, their grammars, the kinds of patterns.
//! - [`fingerprint`]: one file's subtree fingerprints and winnowed token hashes.
//! - [`deps`]: the import graph, resolved to files.
//! - [`clones`]: clone groups from shared token hashes.
//! - [`index`]: walking a folder, keeping what did not change, parsing the rest in parallel.
//! - [`query`]: `periodic match`, by fingerprint and by shared token hashes.
//! - [`watch`]: the index kept in memory and current as files change.
//! - [`push`]: `periodic push`, a repository's changes sent to a server.
//! - [`serve`]: `periodic serve`, the team's sharded index fed by Weir jobs.
//! - [`store`]: the memory-mapped, versioned, checksummed index file.

pub mod clones;
pub mod deps;
pub mod fingerprint;
pub mod index;
pub mod lang;
pub mod push;
pub mod query;
pub mod serve;
pub mod store;
pub mod watch;

pub use fingerprint::Settings;
pub use lang::{Kind, Lang};
