//! The pull-request summary: counts per action, what is destroyed or replaced first, then a
//! table per module in `<details>`, always within GitHub's 65,536-character comment limit
//! (trimmed, with a note saying what was left out).

use crate::plan::{Action, Change, Plan};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// GitHub's limit on a comment's body, in characters.
pub const COMMENT_LIMIT: usize = 65_536;

/// The order actions are shown in.
const ORDER: [&str; 6] = ["create", "update", "replace", "delete", "read", "no-op"];

/// `{"resources": N, "counts": {"create": n, ...}}`.
pub fn json(plan: &Plan) -> serde_json::Value {
    serde_json::json!({
        "resources": plan.changes.len(),
        "counts": plan.counts(),
    })
}

/// The summary as Markdown, at most `limit` characters.
pub fn markdown(plan: &Plan, limit: usize) -> String {
    let counts = plan.counts();
    let n = |k: &str| counts.get(k).copied().unwrap_or(0);
    let mut head = String::new();
    let _ = writeln!(
        head,
        "### Terraform plan: {} to add, {} to change, {} to destroy{}\n",
        n("create") + n("replace"),
        n("update"),
        n("delete") + n("replace"),
        if n("replace") > 0 {
            format!(" ({} replaced)", n("replace"))
        } else {
            String::new()
        }
    );
    let mut keys: Vec<&str> = ORDER
        .iter()
        .copied()
        .filter(|k| counts.contains_key(*k))
        .collect();
    keys.extend(
        counts
            .keys()
            .map(String::as_str)
            .filter(|k| !ORDER.contains(k)),
    );
    if keys.is_empty() {
        head.push_str("No changes: the infrastructure matches the configuration.\n");
    } else {
        let _ = writeln!(head, "| {} |", keys.join(" | "));
        let _ = writeln!(
            head,
            "|{}|",
            keys.iter().map(|_| "---:").collect::<Vec<_>>().join("|")
        );
        let _ = writeln!(
            head,
            "| {} |",
            keys.iter()
                .map(|k| n(k).to_string())
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    if !plan.drift.is_empty() {
        let _ = writeln!(
            head,
            "\n{} objects changed outside Terraform (drift).",
            plan.drift.len()
        );
    }
    let mut sections: Vec<String> = Vec::new();
    let destroys: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|c| c.action.destroys())
        .collect();
    if !destroys.is_empty() {
        let mut s = format!("\n**Destroyed or replaced ({})**\n\n", destroys.len());
        for c in destroys {
            let _ = writeln!(
                s,
                "- {} {}{}",
                describe(&c.action),
                code(&c.address),
                detail(c)
            );
        }
        sections.push(s);
    }
    let mut by_module: BTreeMap<&str, Vec<&Change>> = BTreeMap::new();
    for c in plan.changes.iter().filter(|c| c.action != Action::NoOp) {
        by_module
            .entry(c.module.as_deref().unwrap_or(""))
            .or_default()
            .push(c);
    }
    for (m, changes) in &by_module {
        let name = if m.is_empty() {
            "root module".to_string()
        } else {
            code(m)
        };
        let mut s = format!(
            "\n<details><summary>{} ({} changes)</summary>\n\n| action | resource |\n|---|---|\n",
            name,
            changes.len()
        );
        for c in changes {
            let _ = writeln!(
                s,
                "| {} | {}{} |",
                c.action.key(),
                cell(&code(&c.address)),
                cell(&detail(c))
            );
        }
        s.push_str("\n</details>\n");
        sections.push(s);
    }
    let noop = n("no-op");
    let tail = if noop > 0 {
        format!("\n{noop} resources unchanged (not listed).\n")
    } else {
        String::new()
    };
    fit(head, sections, tail, limit)
}

/// Joins the parts, leaving out whole sections from the end (then trimming the last) until
/// it fits, with a note saying how much was left out.
fn fit(head: String, sections: Vec<String>, tail: String, limit: usize) -> String {
    let total: usize = head.chars().count()
        + sections.iter().map(|s| s.chars().count()).sum::<usize>()
        + tail.chars().count();
    if total <= limit {
        return head + &sections.concat() + &tail;
    }
    let note_room = 200;
    let mut out = head;
    let mut used = out.chars().count();
    let mut kept = 0;
    for s in &sections {
        let len = s.chars().count();
        if used + len + note_room > limit {
            break;
        }
        out.push_str(s);
        used += len;
        kept += 1;
    }
    let left = sections.len() - kept;
    let note = format!(
        "\n_{left} of {} sections left out to fit GitHub's {COMMENT_LIMIT}-character comment limit; `mille render` writes the whole summary._\n",
        sections.len()
    );
    out.push_str(&note);
    // Even the head may be too long for a tiny limit: cut on a character boundary.
    if out.chars().count() > limit {
        out = out.chars().take(limit).collect();
    }
    out
}

fn describe(a: &Action) -> &'static str {
    match a {
        Action::Delete => "🔴 delete",
        Action::Replace { create_first: true } => "🟠 replace (create before destroy)",
        Action::Replace {
            create_first: false,
        } => "🟠 replace (destroy then create)",
        _ => "",
    }
}

fn detail(c: &Change) -> String {
    let mut d = Vec::new();
    if let Some(k) = &c.deposed {
        d.push(format!("deposed {k}"));
    }
    if let Some(p) = &c.previous_address {
        d.push(format!("moved from {p}"));
    }
    if c.importing {
        d.push("imported".to_string());
    }
    if let Some(r) = &c.reason {
        d.push(r.replace('_', " "));
    }
    if d.is_empty() {
        String::new()
    } else {
        format!(" ({})", d.join("; "))
    }
}

/// `s` as inline code, with enough backticks to hold any inside it.
fn code(s: &str) -> String {
    let mut run = 0;
    let mut longest = 0;
    for ch in s.chars() {
        if ch == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    let ticks = "`".repeat(longest + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{ticks}{pad}{s}{pad}{ticks}")
}

/// Text safe in a table cell: `|` escaped, no line breaks.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}
