//! The resource graph: one node per resource change (keyed by address and deposed key),
//! grouped by module instance, with an edge from a resource to each resource it refers to or
//! depends on.
//!
//! References are resolved the way Terraform reads them, per module instance: attributes and
//! instance keys are stripped (`aws_vpc.main.id`, `aws_subnet.a[0]` → every instance of the
//! block in the same module instance); `module.m.out` follows output `out` of every instance
//! of child `m`, recursively; `var.v` follows the calling module's input expression; a
//! module call's `depends_on` applies to every resource inside it. `count.*`, `each.*`,
//! `path.*`, `self` and `terraform.*` are not dependencies; `local.*` is not in the plan's
//! configuration and is skipped. A reference to something with no change adds nothing.

use crate::plan::{split_address, Change, Module, Plan};
use std::collections::{BTreeMap, BTreeSet};

/// How deep output and variable chains are followed (a guard against cycles).
const MAX_DEPTH: usize = 24;

/// The graph of a plan.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// The resource changes, in the plan's order.
    pub nodes: Vec<Change>,
    /// `(from, to)`: `from` refers to or depends on `to` (indices into `nodes`).
    pub edges: BTreeSet<(usize, usize)>,
}

impl Graph {
    /// Builds the graph of `plan`'s resource changes.
    pub fn of(plan: &Plan) -> Graph {
        Graph::build(plan.changes.clone(), plan.config.as_ref())
    }

    /// [`Graph::of`], taking the plan's changes rather than copying them (the plan is not
    /// needed afterwards).
    pub fn from_plan(mut plan: Plan) -> Graph {
        let changes = std::mem::take(&mut plan.changes);
        Graph::build(changes, plan.config.as_ref())
    }

    fn build(nodes: Vec<Change>, config: Option<&crate::plan::Module>) -> Graph {
        let mut by_block: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
        for (i, c) in nodes.iter().enumerate() {
            by_block
                .entry((c.module.clone().unwrap_or_default(), c.config_address()))
                .or_default()
                .push(i);
        }
        let instances: BTreeSet<String> = nodes.iter().filter_map(|c| c.module.clone()).collect();
        let mut g = Graph {
            nodes,
            edges: BTreeSet::new(),
        };
        let Some(root) = config else {
            return g;
        };
        let r = Resolver {
            root,
            by_block: &by_block,
            instances: &instances,
        };
        let mut edges = BTreeSet::new();
        for (i, c) in g.nodes.iter().enumerate() {
            let inst = c.module.clone().unwrap_or_default();
            let path = c.module_path();
            let mut targets = BTreeSet::new();
            if let Some(block) = r
                .module(&path)
                .and_then(|m| m.resources.get(&c.config_address()))
            {
                for reference in block.references.iter().chain(&block.depends_on) {
                    r.resolve(reference, &inst, &path, 0, &mut targets);
                }
            }
            // A module call's depends_on holds for everything inside it, at every level.
            let mut up_inst = inst.clone();
            let mut up_path = path.clone();
            while let Some(name) = up_path.pop() {
                up_inst = parent_instance(&up_inst);
                if let Some(call) = r.module(&up_path).and_then(|m| m.calls.get(&name)) {
                    for d in &call.depends_on {
                        r.resolve(d, &up_inst, &up_path, 0, &mut targets);
                    }
                }
            }
            targets.remove(&i);
            edges.extend(targets.into_iter().map(|t| (i, t)));
        }
        g.edges = edges;
        g
    }

    /// The module instances holding changes, each with its nodes (root as `""`).
    pub fn modules(&self) -> BTreeMap<String, Vec<usize>> {
        let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, c) in self.nodes.iter().enumerate() {
            out.entry(c.module.clone().unwrap_or_default())
                .or_default()
                .push(i);
        }
        out
    }
}

struct Resolver<'a> {
    root: &'a Module,
    by_block: &'a BTreeMap<(String, String), Vec<usize>>,
    instances: &'a BTreeSet<String>,
}

impl Resolver<'_> {
    /// The module at configuration path `path` (module call names from the root).
    fn module(&self, path: &[String]) -> Option<&Module> {
        let mut m = self.root;
        for name in path {
            m = &m.calls.get(name)?.module;
        }
        Some(m)
    }

    /// Adds to `out` the nodes `reference`, read in module instance `inst` (configuration
    /// path `path`), stands for.
    fn resolve(
        &self,
        reference: &str,
        inst: &str,
        path: &[String],
        depth: usize,
        out: &mut BTreeSet<usize>,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        let parts: Vec<String> = split_address(reference)
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        let Some(first) = parts.first().map(String::as_str) else {
            return;
        };
        match first {
            "count" | "each" | "path" | "self" | "terraform" | "local" => {}
            "var" => {
                let (Some(var), Some((call, parent_path))) = (parts.get(1), path.split_last())
                else {
                    return;
                };
                let parent_inst = parent_instance(inst);
                if let Some(c) = self.module(parent_path).and_then(|m| m.calls.get(call)) {
                    for r in c.inputs.get(var).into_iter().flatten() {
                        self.resolve(r, &parent_inst, parent_path, depth + 1, out);
                    }
                }
            }
            "module" => {
                let Some(child) = parts.get(1) else { return };
                let mut child_path = path.to_vec();
                child_path.push(child.clone());
                let Some(m) = self.module(&child_path) else {
                    return;
                };
                for child_inst in self.child_instances(inst, child) {
                    match parts.get(2) {
                        Some(output) => {
                            for r in m.outputs.get(output).into_iter().flatten() {
                                self.resolve(r, &child_inst, &child_path, depth + 1, out);
                            }
                        }
                        // `depends_on = [module.m]`: everything inside it.
                        None => self.everything_in(&child_inst, out),
                    }
                }
            }
            "data" => {
                if let (Some(ty), Some(name)) = (parts.get(1), parts.get(2)) {
                    self.block(inst, &format!("data.{ty}.{name}"), out);
                }
            }
            ty => {
                if let Some(name) = parts.get(1) {
                    self.block(inst, &format!("{ty}.{name}"), out);
                }
            }
        }
    }

    /// Every instance of block `address` in module instance `inst`.
    fn block(&self, inst: &str, address: &str, out: &mut BTreeSet<usize>) {
        if let Some(ids) = self.by_block.get(&(inst.to_string(), address.to_string())) {
            out.extend(ids);
        }
    }

    /// The instances of child module `name` of `inst` that hold changes (and the plain one).
    fn child_instances(&self, inst: &str, name: &str) -> Vec<String> {
        let prefix = if inst.is_empty() {
            format!("module.{name}")
        } else {
            format!("{inst}.module.{name}")
        };
        let mut out: BTreeSet<String> = BTreeSet::new();
        for i in self.instances.range(prefix.clone()..) {
            if !i.starts_with(&prefix) {
                break;
            }
            let rest = &i[prefix.len()..];
            if rest.is_empty() {
                out.insert(prefix.clone());
            } else if rest.starts_with('[') {
                // Up to the end of this module's instance key.
                let key_end = split_address(rest)
                    .first()
                    .and_then(|(_, k)| k.as_ref().map(|k| k.len()))
                    .unwrap_or(0);
                out.insert(format!("{prefix}{}", &rest[..key_end.min(rest.len())]));
            } else if rest.starts_with('.') {
                out.insert(prefix.clone());
            }
        }
        out.into_iter().collect()
    }

    /// Every node in module instance `inst` and below.
    fn everything_in(&self, inst: &str, out: &mut BTreeSet<usize>) {
        for ((m, _), ids) in self.by_block {
            if m == inst || m.starts_with(&format!("{inst}.")) {
                out.extend(ids);
            }
        }
    }
}

/// The module instance that contains `inst` (`""` for the root).
pub fn parent_instance(inst: &str) -> String {
    let parts = split_address(inst);
    let keep = parts.len().saturating_sub(2);
    let mut out = String::new();
    for (seg, key) in &parts[..keep] {
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(seg);
        if let Some(k) = key {
            out.push_str(k);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_of_a_module_instance_keeps_its_keys() {
        assert_eq!(
            parent_instance(r#"module.a["x.y"].module.b[0]"#),
            r#"module.a["x.y"]"#
        );
        assert_eq!(parent_instance("module.a"), "");
        assert_eq!(
            parent_instance("module.a.module.b.module.c"),
            "module.a.module.b"
        );
    }
}
