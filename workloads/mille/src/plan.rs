//! The parts of a `terraform show -json` plan that mille draws and summarises: every resource
//! change and drift entry (keyed by address and deposed key), and the configuration's
//! references and explicit dependencies, module by module.
//!
//! Parsing skips what mille never shows (`prior_state`, `planned_values`, values before and
//! after, schemas) without building them: serde walks past unknown fields, and expressions
//! are read by [`Refs`], which keeps only the strings under `references` and drops every
//! constant. Values are never kept, so no sensitive or unknown value can be rendered or cached.

use crate::input::{self, InputError};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;

/// What a change does, from its `actions` list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// `["create"]`.
    Create,
    /// `["read"]` (a data source read at apply time).
    Read,
    /// `["update"]`.
    Update,
    /// `["delete", "create"]` or, with `create_first`, `["create", "delete"]`
    /// (create_before_destroy).
    Replace {
        /// Whether the new object is created before the old one is destroyed.
        create_first: bool,
    },
    /// `["delete"]`.
    Delete,
    /// `["no-op"]` (or an empty list).
    NoOp,
    /// Anything else (`["forget"]`, `["create", "forget"]`, future actions), joined by `+`.
    Other(String),
}

impl Action {
    /// From a change's `actions`.
    pub fn of(actions: &[String]) -> Action {
        let a: Vec<&str> = actions.iter().map(String::as_str).collect();
        match a.as_slice() {
            ["create"] => Action::Create,
            ["read"] => Action::Read,
            ["update"] => Action::Update,
            ["delete", "create"] => Action::Replace {
                create_first: false,
            },
            ["create", "delete"] => Action::Replace { create_first: true },
            ["delete"] => Action::Delete,
            ["no-op"] | [] => Action::NoOp,
            other => Action::Other(other.join("+")),
        }
    }

    /// The key counts use: `create`, `read`, `update`, `replace`, `delete`, `no-op`, or the
    /// joined actions.
    pub fn key(&self) -> &str {
        match self {
            Action::Create => "create",
            Action::Read => "read",
            Action::Update => "update",
            Action::Replace { .. } => "replace",
            Action::Delete => "delete",
            Action::NoOp => "no-op",
            Action::Other(s) => s,
        }
    }

    /// Whether the change destroys an object (delete, or either replace order).
    pub fn destroys(&self) -> bool {
        matches!(self, Action::Delete | Action::Replace { .. })
    }
}

/// Managed resource or data source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `resource`.
    Managed,
    /// `data`.
    Data,
}

/// One resource change (or drift entry).
#[derive(Debug, Clone)]
pub struct Change {
    /// The instance address (`module.a["x"].aws_s3_bucket.b[0]`).
    pub address: String,
    /// The module instance it lives in (`module.a["x"]`), `None` for the root module.
    pub module: Option<String>,
    /// Managed or data.
    pub mode: Mode,
    /// Resource type.
    pub ty: String,
    /// Resource name.
    pub name: String,
    /// The deposed object's key, for a deposed object (same address as the current one).
    pub deposed: Option<String>,
    /// The address it moved from.
    pub previous_address: Option<String>,
    /// Whether the change imports the object.
    pub importing: bool,
    /// What it does.
    pub action: Action,
    /// Why, as Terraform says (`replace_because_tainted`, ...).
    pub reason: Option<String>,
}

impl Change {
    /// The unique key of a change: address and deposed key.
    pub fn key(&self) -> (String, Option<String>) {
        (self.address.clone(), self.deposed.clone())
    }

    /// The configuration path of its module: instance keys dropped (`module.a.module.b`).
    pub fn module_path(&self) -> Vec<String> {
        self.module.as_deref().map(module_names).unwrap_or_default()
    }

    /// The resource's address within its module, instance key dropped
    /// (`aws_s3_bucket.b`, `data.aws_ami.x`).
    pub fn config_address(&self) -> String {
        match self.mode {
            Mode::Managed => format!("{}.{}", self.ty, self.name),
            Mode::Data => format!("data.{}.{}", self.ty, self.name),
        }
    }
}

/// A module of the configuration: its resources, calls and outputs.
#[derive(Debug, Clone, Default)]
pub struct Module {
    /// Resources by address within the module (`aws_vpc.main`, `data.x.y`).
    pub resources: BTreeMap<String, ConfigResource>,
    /// Module calls by name.
    pub calls: BTreeMap<String, ModuleCall>,
    /// Outputs by name: what each refers to.
    pub outputs: BTreeMap<String, Vec<String>>,
}

/// A resource block: what its expressions refer to and what it depends on.
#[derive(Debug, Clone, Default)]
pub struct ConfigResource {
    /// References of every expression (including count and for_each), as written.
    pub references: Vec<String>,
    /// `depends_on`.
    pub depends_on: Vec<String>,
}

/// A module call.
#[derive(Debug, Clone, Default)]
pub struct ModuleCall {
    /// The module's source.
    pub source: Option<String>,
    /// What each input variable's expression refers to, in the calling module.
    pub inputs: BTreeMap<String, Vec<String>>,
    /// References of count and for_each.
    pub repetition: Vec<String>,
    /// `depends_on` of the call: every resource of the module depends on these.
    pub depends_on: Vec<String>,
    /// The called module.
    pub module: Module,
}

/// A parsed plan.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// `format_version` (or `plan_format_version`), when present.
    pub format_version: Option<String>,
    /// `terraform_version`, when present.
    pub terraform_version: Option<String>,
    /// Resource changes, in the plan's order.
    pub changes: Vec<Change>,
    /// Drift: changes made outside Terraform.
    pub drift: Vec<Change>,
    /// The root module's configuration, when the plan has one.
    pub config: Option<Module>,
}

impl Plan {
    /// Parses a plan file's bytes. Refuses, with one line, anything that is not one plan.
    pub fn parse(bytes: &[u8]) -> Result<Plan, InputError> {
        let body = input::decode(bytes)?;
        let raw: RawPlan = serde_json::from_slice(&body).map_err(|e| input::classify(&body, &e))?;
        Plan::from_raw(raw)
    }

    fn from_raw(raw: RawPlan) -> Result<Plan, InputError> {
        let version = raw.format_version.or(raw.plan_format_version);
        match &version {
            Some(v) => {
                let major = v.split('.').next().unwrap_or_default();
                if major != "0" && major != "1" {
                    return Err(InputError::UnsupportedVersion(v.clone()));
                }
            }
            None if raw.resource_changes.is_none() && raw.resource_drift.is_none() => {
                return Err(InputError::NotAPlan(
                    "no format_version and no resource_changes".into(),
                ))
            }
            None => {}
        }
        Ok(Plan {
            format_version: version,
            terraform_version: raw.terraform_version,
            changes: raw.resource_changes.map(|c| c.0).unwrap_or_default(),
            drift: raw.resource_drift.map(|c| c.0).unwrap_or_default(),
            config: raw
                .configuration
                .and_then(|c| c.root_module)
                .map(RawModule::into_module),
        })
    }

    /// Counts of changes by [`Action::key`].
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for c in &self.changes {
            *out.entry(c.action.key().to_string()).or_insert(0) += 1;
        }
        out
    }
}

/// The module names of a module instance address: `module.a["x.y"].module.b[0]` → `[a, b]`.
/// Instance keys may hold `.`, `/`, `:` or `]` inside their quotes.
pub fn module_names(address: &str) -> Vec<String> {
    split_address(address)
        .into_iter()
        .collect::<Vec<_>>()
        .chunks(2)
        .filter(|pair| pair.len() == 2 && pair[0].0 == "module")
        .map(|pair| pair[1].0.clone())
        .collect()
}

/// Splits an address into `(segment, instance key)` pairs, with a lexer that knows quoted
/// keys: `module.a["k.1"].x` → `[("module", None), ("a", Some("[\"k.1\"]")), ("x", None)]`.
pub fn split_address(address: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut seg = String::new();
    let mut chars = address.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => out.push((std::mem::take(&mut seg), None)),
            '[' => {
                let mut key = String::from("[");
                let mut quoted = false;
                while let Some(k) = chars.next() {
                    key.push(k);
                    match k {
                        '\\' if quoted => {
                            if let Some(n) = chars.next() {
                                key.push(n);
                            }
                        }
                        '"' => quoted = !quoted,
                        ']' if !quoted => break,
                        _ => {}
                    }
                }
                out.push((std::mem::take(&mut seg), Some(key)));
                if chars.peek() == Some(&'.') {
                    chars.next();
                }
            }
            _ => seg.push(c),
        }
    }
    if !seg.is_empty() {
        out.push((seg, None));
    }
    out
}

// ---- the wire shapes -------------------------------------------------------------------------

#[derive(Deserialize)]
struct RawPlan {
    format_version: Option<String>,
    plan_format_version: Option<String>,
    terraform_version: Option<String>,
    resource_changes: Option<Changes>,
    resource_drift: Option<Changes>,
    configuration: Option<RawConfiguration>,
    // Big members mille does not read, skipped with a mark of how far the parser got.
    #[allow(dead_code)]
    #[serde(default)]
    planned_values: Skipped,
    #[allow(dead_code)]
    #[serde(default)]
    prior_state: Skipped,
    #[allow(dead_code)]
    #[serde(default)]
    relevant_attributes: Skipped,
    #[allow(dead_code)]
    #[serde(default)]
    output_changes: Skipped,
    #[allow(dead_code)]
    #[serde(default)]
    checks: Skipped,
    #[allow(dead_code)]
    #[serde(default)]
    variables: Skipped,
}

/// A string that, read from the file's own bytes, tells the file reader how far the parser
/// got ([`crate::source`]): every resource change and configuration resource carries one.
struct Marked(String);

impl<'de> Deserialize<'de> for Marked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Marked;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Marked, E> {
                crate::source::consumed(v.as_ptr());
                Ok(Marked(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Marked, E> {
                Ok(Marked(v.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

/// A member mille skips; its end tells the file reader how far the parser got.
#[derive(Default)]
struct Skipped;

impl<'de> Deserialize<'de> for Skipped {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&'de serde_json::value::RawValue>::deserialize(d)?;
        crate::source::consumed(raw.get().as_bytes().as_ptr_range().end);
        Ok(Skipped)
    }
}

#[derive(Deserialize)]
struct RawChange {
    address: Option<String>,
    module_address: Option<String>,
    mode: Option<String>,
    #[serde(rename = "type")]
    ty: Marked,
    name: String,
    index: Option<serde_json::Value>,
    deposed: Option<String>,
    previous_address: Option<String>,
    action_reason: Option<String>,
    change: RawChangeBody,
}

#[derive(Deserialize)]
struct RawChangeBody {
    #[serde(default)]
    actions: Vec<String>,
    importing: Option<IgnoredAny>,
}

/// A list of changes, each made a [`Change`] as soon as it is read (the wire shape is never
/// held for the whole list).
struct Changes(Vec<Change>);

impl<'de> Deserialize<'de> for Changes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Changes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of resource changes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Changes, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(raw) = seq.next_element::<RawChange>()? {
                    out.push(raw.into_change());
                }
                out.shrink_to_fit();
                Ok(Changes(out))
            }
        }
        d.deserialize_seq(V)
    }
}

impl RawChange {
    fn into_change(self) -> Change {
        let mode = match self.mode.as_deref() {
            Some("data") => Mode::Data,
            _ => Mode::Managed,
        };
        // TF 1.0.0's drift entries have no address: rebuild it.
        let address = match self.address {
            Some(a) => a,
            None => {
                let mut a = String::new();
                if let Some(m) = &self.module_address {
                    a.push_str(m);
                    a.push('.');
                }
                if mode == Mode::Data {
                    a.push_str("data.");
                }
                a.push_str(&self.ty.0);
                a.push('.');
                a.push_str(&self.name);
                match &self.index {
                    Some(serde_json::Value::Number(n)) => a.push_str(&format!("[{n}]")),
                    Some(serde_json::Value::String(s)) => {
                        a.push_str(&format!("[{}]", serde_json::Value::String(s.clone())))
                    }
                    _ => {}
                }
                a
            }
        };
        Change {
            address,
            module: self.module_address,
            mode,
            ty: self.ty.0,
            name: self.name,
            deposed: self.deposed,
            previous_address: self.previous_address,
            importing: self.change.importing.is_some(),
            action: Action::of(&self.change.actions),
            reason: self.action_reason,
        }
    }
}

#[derive(Deserialize)]
struct RawConfiguration {
    root_module: Option<RawModule>,
}

#[derive(Deserialize, Default)]
struct RawModule {
    #[serde(default)]
    resources: Vec<RawConfigResource>,
    #[serde(default)]
    module_calls: BTreeMap<String, RawModuleCall>,
    #[serde(default)]
    outputs: BTreeMap<String, RawOutput>,
}

#[derive(Deserialize)]
struct RawConfigResource {
    address: Marked,
    #[serde(default)]
    expressions: Refs,
    #[serde(default)]
    count_expression: Refs,
    #[serde(default)]
    for_each_expression: Refs,
    #[serde(default)]
    depends_on: Vec<String>,
}

#[derive(Deserialize)]
struct RawModuleCall {
    source: Option<String>,
    #[serde(default)]
    expressions: BTreeMap<String, Refs>,
    #[serde(default)]
    count_expression: Refs,
    #[serde(default)]
    for_each_expression: Refs,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    module: RawModule,
}

#[derive(Deserialize)]
struct RawOutput {
    #[serde(default)]
    expression: Refs,
    #[serde(default)]
    depends_on: Vec<String>,
}

impl RawModule {
    fn into_module(self) -> Module {
        Module {
            resources: self
                .resources
                .into_iter()
                .map(|r| {
                    let mut references = r.expressions.0;
                    references.extend(r.count_expression.0);
                    references.extend(r.for_each_expression.0);
                    (
                        r.address.0,
                        ConfigResource {
                            references,
                            depends_on: r.depends_on,
                        },
                    )
                })
                .collect(),
            calls: self
                .module_calls
                .into_iter()
                .map(|(name, c)| {
                    let mut repetition = c.count_expression.0;
                    repetition.extend(c.for_each_expression.0);
                    (
                        name,
                        ModuleCall {
                            source: c.source,
                            inputs: c.expressions.into_iter().map(|(k, v)| (k, v.0)).collect(),
                            repetition,
                            depends_on: c.depends_on,
                            module: c.module.into_module(),
                        },
                    )
                })
                .collect(),
            outputs: self
                .outputs
                .into_iter()
                .map(|(name, o)| {
                    let mut refs = o.expression.0;
                    refs.extend(o.depends_on);
                    (name, refs)
                })
                .collect(),
        }
    }
}

/// Every string found in a `references` array anywhere inside an expression tree; constants
/// and everything else are skipped without being kept.
#[derive(Debug, Default, Clone)]
pub struct Refs(pub Vec<String>);

impl<'de> Deserialize<'de> for Refs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = Vec::new();
        d.deserialize_any(Walk { out: &mut out })?;
        Ok(Refs(out))
    }
}

/// Walks any JSON value, collecting the strings of `references` arrays into `out`.
struct Walk<'a> {
    out: &'a mut Vec<String>,
}

impl<'de> de::DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an expression")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Walk { out: self.out })?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "references" {
                let refs: Vec<serde_json::Value> = map.next_value()?;
                self.out.extend(
                    refs.into_iter()
                        .filter_map(|v| v.as_str().map(String::from)),
                );
            } else {
                map.next_value_seed(Walk { out: self.out })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_with_quoted_keys_holding_dots_slashes_and_brackets() {
        assert_eq!(
            module_names(r#"module.iam["roles/compute.osAdminLogin"].module.b[0]"#),
            ["iam", "b"]
        );
        let parts = split_address(r#"module.a["k]1.x"].aws_s3_bucket.b["x"]"#);
        assert_eq!(
            parts[1],
            ("a".to_string(), Some(r#"["k]1.x"]"#.to_string()))
        );
        assert_eq!(parts.last().unwrap().0, "b");
        assert!(module_names("aws_vpc.main").is_empty());
    }

    #[test]
    fn both_replace_orders_are_replaces_and_others_keep_their_name() {
        let a = |v: &[&str]| Action::of(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(a(&["delete", "create"]).key(), "replace");
        assert_eq!(
            a(&["create", "delete"]),
            Action::Replace { create_first: true }
        );
        assert_eq!(a(&["create", "forget"]).key(), "create+forget");
        assert!(a(&["create", "delete"]).destroys());
        assert!(!a(&["update"]).destroys());
    }
}
