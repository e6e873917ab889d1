//! Templates and conditions, on minijinja. One environment holds every workflow's templates
//! by name (`{workflow}/{pc}/{locale}/{field}`); HTML parts are named `....html`, which
//! minijinja autoescapes, so a payload's `<script>` reaches an email's HTML only as text.
//! Undefined values are "chainable": `subscriber.data.plan` on a subscriber without data is
//! empty and false, not an error, because custom data differs from one subscriber to the next.

use crate::model::Subscriber;
use crate::workflow::Workflow;
use minijinja::value::{Enumerator, Object};
use minijinja::{Environment, UndefinedBehavior, Value};
use serde::Serialize;
use std::sync::{Arc, OnceLock};

/// The render environment of a set of workflows.
pub struct Renderer {
    env: Environment<'static>,
    /// The parts (subject, title, body, html) each send step has per locale, under
    /// `{workflow}/{pc}/{locale}`: a send asks once per message, instead of formatting and
    /// looking up four names (minijinja answers a missing one with an error built for a
    /// person to read, which costs more than the lookup).
    parts: std::collections::HashMap<String, Vec<(Part, String)>>,
}

/// A part of a message's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// An email's subject.
    Subject,
    /// A push notification's title.
    Title,
    /// The text.
    Body,
    /// An email's HTML.
    Html,
}

impl Part {
    /// In the order a send renders them.
    pub const ALL: [Part; 4] = [Part::Subject, Part::Title, Part::Body, Part::Html];

    /// Its template's name after `{workflow}/{pc}/{locale}/`.
    pub fn file(self) -> &'static str {
        match self {
            Part::Subject => "subject",
            Part::Title => "title",
            Part::Body => "body",
            Part::Html => "html.html",
        }
    }
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
        let mut parts: std::collections::HashMap<String, Vec<(Part, String)>> = Default::default();
        for w in workflows {
            for (name, src) in &w.templates {
                if let Err(e) = env.add_template_owned(name.clone(), src.clone()) {
                    // Checked when the workflow was compiled; log rather than lose the rest.
                    tracing::error!(template = %name, error = %e, "template does not compile");
                    continue;
                }
                let part = Part::ALL.into_iter().find_map(|part| {
                    let step = name.strip_suffix(part.file())?.strip_suffix('/')?;
                    Some((step, part))
                });
                if let Some((step, part)) = part {
                    parts
                        .entry(step.to_string())
                        .or_default()
                        .push((part, name.clone()));
                }
            }
        }
        for v in parts.values_mut() {
            v.sort_by_key(|(p, _)| Part::ALL.iter().position(|q| q == p));
        }
        Renderer { env, parts }
    }

    /// The parts the send step `{workflow}/{pc}/{locale}` has templates for, with their
    /// templates' names, in [`Part::ALL`]'s order.
    pub fn parts(&self, step: &str) -> &[(Part, String)] {
        self.parts.get(step).map(Vec::as_slice).unwrap_or(&[])
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

/// A subscriber as templates see it (`subscriber.id`, `subscriber.data.name`...), read
/// field by field as a template asks: a bulk send renders every message against another
/// subscriber, and converting each whole subscriber (its custom data above all) into
/// template values cost more than the rendering. Answers like `Value::from_serialize` of
/// the subscriber: absent fields are undefined and not listed.
#[derive(Debug)]
pub struct SubscriberValue {
    sub: Arc<Subscriber>,
    data: OnceLock<Value>,
}

impl SubscriberValue {
    /// The template value of `sub`.
    pub fn value(sub: Arc<Subscriber>) -> Value {
        Value::from_object(SubscriberValue {
            sub,
            data: OnceLock::new(),
        })
    }

    fn keys(&self) -> Vec<&'static str> {
        let s = &self.sub;
        let mut keys = vec!["id"];
        let present = [
            ("email", s.email.is_some()),
            ("phone", s.phone.is_some()),
            ("push_tokens", !s.push_tokens.is_empty()),
            ("chat", s.chat.is_some()),
            ("locale", s.locale.is_some()),
            ("data", !s.data.is_empty()),
        ];
        keys.extend(present.iter().filter(|(_, p)| *p).map(|(k, _)| *k));
        keys
    }
}

impl Object for SubscriberValue {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let s = &self.sub;
        let text = |v: &Option<String>| v.as_deref().map(Value::from);
        match key.as_str()? {
            "id" => Some(Value::from(s.id.as_str())),
            "email" => text(&s.email),
            "phone" => text(&s.phone),
            "chat" => text(&s.chat),
            "locale" => text(&s.locale),
            "push_tokens" if !s.push_tokens.is_empty() => {
                Some(Value::from_serialize(&s.push_tokens))
            }
            "data" if !s.data.is_empty() => Some(
                self.data
                    .get_or_init(|| Value::from_serialize(&s.data))
                    .clone(),
            ),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.keys().into_iter().map(Value::from).collect())
    }
}

/// A value converted into template values only when a template first reads it (the
/// preferences: most templates never look at them).
#[derive(Debug)]
pub struct Lazy<T> {
    inner: Arc<T>,
    value: OnceLock<Value>,
}

impl<T: Serialize + std::fmt::Debug + Send + Sync + 'static> Lazy<T> {
    /// The template value of `inner`.
    pub fn value(inner: Arc<T>) -> Value {
        Value::from_object(Lazy {
            inner,
            value: OnceLock::new(),
        })
    }

    fn converted(&self) -> &Value {
        self.value
            .get_or_init(|| Value::from_serialize(&*self.inner))
    }
}

impl<T: Serialize + std::fmt::Debug + Send + Sync + 'static> Object for Lazy<T> {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.converted()
            .get_item(key)
            .ok()
            .filter(|v| !v.is_undefined())
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.converted().try_iter() {
            Ok(keys) => Enumerator::Values(keys.collect()),
            Err(_) => Enumerator::Empty,
        }
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
    fn subscribers_and_preferences_read_lazily_render_as_if_converted_whole() {
        use crate::model::Preferences;
        let mut data = serde_json::Map::new();
        data.insert("name".into(), "Ada <b>".into());
        data.insert(
            "plan".into(),
            serde_json::json!({"tier": "pro", "seats": 3}),
        );
        let full = Subscriber {
            id: "u1".into(),
            email: Some("ada@example.com".into()),
            phone: None,
            push_tokens: vec!["t1".into(), "t2".into()],
            chat: None,
            locale: Some("fr".into()),
            data,
        };
        let bare = Subscriber {
            id: "u2".into(),
            email: None,
            phone: Some("+15550001".into()),
            push_tokens: Vec::new(),
            chat: Some("C1".into()),
            locale: None,
            data: serde_json::Map::new(),
        };
        let prefs: Preferences =
            serde_json::from_value(serde_json::json!({"channels": {"sms": false}})).expect("prefs");
        let src = "{% for k in subscriber %}{{ k }}={{ subscriber[k] }};{% endfor %}|\
            {{ subscriber.data.name }}|{{ subscriber.data.plan.seats }}|{{ subscriber.email }}|\
            {{ subscriber.push_tokens[1] }}|{{ subscriber.missing.deeper }}|\
            {{ subscriber.data is defined }}|{{ preferences.channels.sms }}|\
            {% for k in preferences %}{{ k }};{% endfor %}";
        let env = environment();
        let t = env.template_from_str(src).expect("compiles");
        for sub in [full, bare] {
            let whole = t
                .render(minijinja::context! {
                    subscriber => Value::from_serialize(&sub),
                    preferences => Value::from_serialize(&prefs),
                })
                .expect("renders");
            let lazy = t
                .render(minijinja::context! {
                    subscriber => SubscriberValue::value(Arc::new(sub.clone())),
                    preferences => Lazy::value(Arc::new(prefs.clone())),
                })
                .expect("renders");
            assert_eq!(lazy, whole, "subscriber {}", sub.id);
            assert!(whole.contains(&sub.id), "{whole}");
        }
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
