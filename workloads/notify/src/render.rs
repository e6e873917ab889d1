//! Templates and conditions, on minijinja. One environment holds every workflow's templates
//! by name (`{workflow}/{pc}/{locale}/{field}`); HTML parts are named `....html`, which
//! minijinja autoescapes, so a payload's `<script>` reaches an email's HTML only as text.
//! Undefined values are "chainable": `subscriber.data.plan` on a subscriber without data is
//! empty and false, not an error, because custom data differs from one subscriber to the next.

use crate::workflow::Workflow;
use minijinja::{Environment, UndefinedBehavior, Value};

/// The render environment of a set of workflows.
pub struct Renderer {
    env: Environment<'static>,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    // Templates must not be able to loop forever over a crafted payload.
    env.set_fuel(Some(50_000));
    env
}

/// Checks a template (or with `expr`, an expression) compiles.
pub fn check_syntax(src: &str, expr: bool) -> Result<(), String> {
    let env = environment();
    if expr {
        env.compile_expression(src)
            .map(|_| ())
            .map_err(|e| e.to_string())
    } else {
        env.template_from_str(src)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

impl Renderer {
    /// An environment with the templates of `workflows`.
    pub fn new<'a>(workflows: impl IntoIterator<Item = &'a Workflow>) -> Renderer {
        let mut env = environment();
        for w in workflows {
            for (name, src) in &w.templates {
                if let Err(e) = env.add_template_owned(name.clone(), src.clone()) {
                    // Checked when the workflow was compiled; log rather than lose the rest.
                    tracing::error!(template = %name, error = %e, "template does not compile");
                }
            }
        }
        Renderer { env }
    }

    /// Whether the template `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }

    /// Renders the template `name` over `ctx`.
    pub fn render(&self, name: &str, ctx: &Value) -> Result<String, String> {
        let t = self.env.get_template(name).map_err(|e| e.to_string())?;
        t.render(ctx).map_err(|e| format!("{name}: {e}"))
    }

    /// Evaluates a condition over `ctx`.
    pub fn holds(&self, expr: &str, ctx: &Value) -> Result<bool, String> {
        let e = self
            .env
            .compile_expression(expr)
            .map_err(|e| e.to_string())?;
        e.eval(ctx).map(|v| v.is_true()).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::{Class, Send, Step, Template, WorkflowDef};
    use std::collections::BTreeMap;

    #[test]
    fn html_parts_are_escaped_and_text_parts_are_not() {
        let mut template = BTreeMap::new();
        template.insert(
            "en".to_string(),
            Template {
                subject: Some("Hi {{ payload.name }}".into()),
                body: Some("{{ payload.name }}".into()),
                html: Some("<p>{{ payload.name }}</p>".into()),
                title: None,
            },
        );
        let def = WorkflowDef {
            id: "w".into(),
            name: None,
            class: Class::Bulk,
            critical: false,
            locale: "en".into(),
            steps: vec![Step::Email(Send {
                template,
                cond: None,
            })],
        };
        let w = Workflow::compile(def, &check_syntax).expect("compiles");
        let r = Renderer::new([&w]);
        let ctx = minijinja::context! { payload => minijinja::context! { name => "<img src=x onerror=alert(1)>" } };
        let html = r.render("w/0/en/html.html", &ctx).expect("html");
        assert_eq!(html, "<p>&lt;img src=x onerror=alert(1)&gt;</p>");
        let text = r.render("w/0/en/body", &ctx).expect("text");
        assert_eq!(text, "<img src=x onerror=alert(1)>");
    }

    #[test]
    fn conditions_see_missing_data_as_false() {
        let r = Renderer::new([]);
        let ctx = minijinja::context! { subscriber => minijinja::context! { id => "u" } };
        assert_eq!(r.holds("subscriber.data.plan == 'pro'", &ctx), Ok(false));
        assert_eq!(r.holds("subscriber.id == 'u'", &ctx), Ok(true));
        assert!(check_syntax("subscriber.id ==", true).is_err());
        assert!(check_syntax("{{ unclosed", false).is_err());
    }
}
