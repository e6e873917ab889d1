//! Synthetic plans for tests and benchmarks: `changes` resource changes spread over
//! `modules` modules (some counted, some with for_each keys holding dots and slashes), each
//! with about `bytes_per_change` of attribute values before and after, references inside
//! each module (chains, as VPC → subnet → route do) and from each module to the previous
//! one through an output, as real plans have. Deterministic: the same arguments give the
//! same plan.

use serde_json::{json, Value};

/// A plan as `terraform show -json` would write it.
pub fn plan(changes: usize, modules: usize, bytes_per_change: usize) -> Value {
    let modules = modules.max(1);
    let actions: [&[&str]; 8] = [
        &["create"],
        &["create"],
        &["update"],
        &["no-op"],
        &["delete", "create"],
        &["create"],
        &["read"],
        &["delete"],
    ];
    let filler = "x".repeat(bytes_per_change.saturating_sub(200) / 2);
    let mut rcs = Vec::with_capacity(changes);
    let mut calls = serde_json::Map::new();
    let per = changes.div_ceil(modules);
    for m in 0..modules {
        let key = format!("team-{m}.example.com/a");
        let inst = format!("module.m{m}[\"{key}\"]");
        let mut resources = Vec::new();
        for r in 0..per {
            let n = m * per + r;
            if n >= changes {
                break;
            }
            let a = actions[n % actions.len()];
            let data = a == ["read"];
            let ty = if data {
                "aws_iam_policy_document"
            } else {
                "aws_instance"
            };
            let name = format!("r{r}");
            let address = if data {
                format!("{inst}.data.{ty}.{name}")
            } else {
                format!("{inst}.{ty}.{name}")
            };
            rcs.push(json!({
                "address": address, "module_address": inst,
                "mode": if data { "data" } else { "managed" }, "type": ty, "name": name,
                "provider_name": "registry.terraform.io/hashicorp/aws",
                "change": {
                    "actions": a,
                    "before": if a == ["create"] { Value::Null } else { json!({"tags": {"filler": filler}, "id": n}) },
                    "after": json!({"tags": {"filler": filler}, "ami": format!("ami-{n:08x}")}),
                    "after_unknown": {"id": true}, "before_sensitive": {}, "after_sensitive": {"password": true},
                },
            }));
            let mut refs = Vec::new();
            if r > 0 {
                let prev = r - 1;
                refs.push(format!("aws_instance.r{prev}.id"));
                refs.push(format!("aws_instance.r{prev}"));
            }
            if r == 0 && m > 0 {
                refs.push("var.upstream".to_string());
            }
            resources.push(json!({
                "address": if data { format!("data.{ty}.{name}") } else { format!("{ty}.{name}") },
                "mode": if data { "data" } else { "managed" }, "type": ty, "name": name,
                "expressions": {"subnet_id": {"references": refs}, "ami": {"constant_value": "ami-1"}},
            }));
        }
        let mut inputs = serde_json::Map::new();
        if m > 0 {
            let prev = m - 1;
            inputs.insert(
                "upstream".into(),
                json!({"references": [format!("module.m{prev}.first"), format!("module.m{prev}")]}),
            );
        }
        calls.insert(
            format!("m{m}"),
            json!({
                "source": format!("./modules/m{m}"),
                "expressions": inputs,
                "for_each_expression": {"references": ["var.teams"]},
                "module": {
                    "resources": resources,
                    "outputs": {"first": {"expression": {"references": ["aws_instance.r0.id", "aws_instance.r0"]}}},
                },
            }),
        );
    }
    json!({
        "format_version": "1.2",
        "terraform_version": "1.9.5",
        "resource_changes": rcs,
        "configuration": {"root_module": {"module_calls": calls}},
    })
}
