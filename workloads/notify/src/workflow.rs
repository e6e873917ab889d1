//! Workflows: what a trigger does, step by step. A definition (TOML in the config file, or
//! JSON through the API) is checked and compiled into a flat program of [`Op`]s: a branch
//! becomes a conditional jump, a step's `if` a jump over it. A run's position is then one
//! number (its program counter), which is what a delayed or digested run carries in its job.

use crate::model::{check_id, Channel, Invalid};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A duration in milliseconds, written as an integer of ms or as text: `500ms`, `30s`,
/// `10m`, `2h`, `1d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    /// Parses `500ms`, `30s`, `10m`, `2h`, `1d` or a plain number of ms.
    pub fn parse(s: &str) -> Result<Millis, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (n, unit) = s.split_at(split);
        let n: u64 = n
            .parse()
            .map_err(|_| format!("{s:?}: a duration like 500ms, 30s, 10m, 2h or 1d"))?;
        let scale = match unit.trim() {
            "" | "ms" => 1,
            "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("{s:?}: a duration like 500ms, 30s, 10m, 2h or 1d")),
        };
        n.checked_mul(scale)
            .map(Millis)
            .ok_or_else(|| format!("{s:?}: too long"))
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Millis(n)),
            Raw::S(s) => Millis::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// The text of one message in one locale. Which fields a channel needs: email `subject` and
/// `body` (plain text; `html` optional), SMS `body`, push `title` and `body`, chat `body`.
/// Every field is a minijinja template over `subscriber`, `payload` and, after a digest,
/// `digest` (`digest.count`, `digest.events`). `html` is escaped as HTML; the others are text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Email subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Push title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Email HTML part (autoescaped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

impl Template {
    /// The fields set, as (name, source).
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("subject", self.subject.as_deref()),
            ("title", self.title.as_deref()),
            ("body", self.body.as_deref()),
            ("html", self.html.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
    }

    fn check(&self, channel: Channel) -> Result<(), Invalid> {
        let need: &[&str] = match channel {
            Channel::Email => &["subject", "body"],
            Channel::Sms | Channel::Chat => &["body"],
            Channel::Push => &["title", "body"],
        };
        for f in need {
            if !self.fields().any(|(k, _)| k == *f) {
                return Err(Invalid::new(*f, format!("{channel} templates need `{f}`")));
            }
        }
        if channel != Channel::Email && self.html.is_some() {
            return Err(Invalid::new("html", "only email templates have html"));
        }
        if channel != Channel::Email && self.subject.is_some() {
            return Err(Invalid::new(
                "subject",
                "only email templates have a subject",
            ));
        }
        if channel != Channel::Push && self.title.is_some() {
            return Err(Invalid::new("title", "only push templates have a title"));
        }
        Ok(())
    }
}

/// One step of a workflow, as a definition writes it (`type = "..."`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Step {
    /// Waits, then goes on.
    Delay {
        /// How long.
        #[serde(rename = "for")]
        wait: Millis,
        /// Skip the step unless this expression is true.
        #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
        cond: Option<String>,
    },
    /// Collects events: the first event of a key opens a window; every event of that key
    /// (and subscriber) until the window ends joins it, and the window ends as one run with
    /// `digest.events` holding them all. The other events' runs end there ("digested").
    Digest {
        /// How long the window stays open after its first event.
        window: Millis,
        /// A template giving the key (default: one window per subscriber and workflow).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// Skip the step unless this expression is true.
        #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
        cond: Option<String>,
    },
    /// At most `limit` runs per window and key (default: per subscriber); the rest end
    /// ("throttled").
    Throttle {
        /// Runs allowed per window.
        limit: u32,
        /// The window.
        window: Millis,
        /// A template giving the key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// Skip the step unless this expression is true.
        #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
        cond: Option<String>,
    },
    /// Runs `then` when the expression holds, else `else`.
    Branch {
        /// A minijinja expression over `subscriber`, `payload`, `preferences`.
        #[serde(rename = "if")]
        cond: String,
        /// Steps when true.
        #[serde(default)]
        then: Vec<Step>,
        /// Steps when false.
        #[serde(default, rename = "else")]
        otherwise: Vec<Step>,
    },
    /// Sends an email.
    Email(Send),
    /// Sends a text message.
    Sms(Send),
    /// Sends a push notification to each of the subscriber's devices.
    Push(Send),
    /// Posts a chat message.
    Chat(Send),
}

/// A channel step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Send {
    /// The text per locale (`en`, `fr`, `pt-BR`).
    pub template: BTreeMap<String, Template>,
    /// Skip the step unless this expression is true.
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub cond: Option<String>,
}

/// How urgent a workflow's messages are. Transactional runs and sends go ahead of every
/// bulk one in Weir's queues (a higher job priority), so a password reset never waits
/// behind a marketing send.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// One person waits for it (password resets, sign-in codes, receipts).
    Transactional,
    /// Newsletters, digests, announcements.
    #[default]
    Bulk,
}

impl Class {
    /// The Weir job priority of this class's jobs (Weir ages a waiting job by one step a
    /// minute, so a bulk job would wait 100 minutes before it ties a fresh transactional one).
    pub fn priority(self) -> i32 {
        match self {
            Class::Transactional => 100,
            Class::Bulk => 0,
        }
    }
}

/// A workflow as defined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDef {
    /// Its id (`password-reset`).
    pub id: String,
    /// A human name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Transactional or bulk.
    #[serde(default)]
    pub class: Class,
    /// Critical workflows (security notices) ignore preferences.
    #[serde(default)]
    pub critical: bool,
    /// The locale templates fall back to.
    #[serde(default = "default_locale")]
    pub locale: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

fn default_locale() -> String {
    "en".into()
}

/// One instruction of a compiled workflow.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Wait this long.
    Delay(u64),
    /// Join a digest window.
    Digest {
        /// Window length.
        window_ms: u64,
        /// The key template's name, if any.
        key: Option<String>,
    },
    /// Count against a throttle.
    Throttle {
        /// Runs per window.
        limit: u32,
        /// Window length.
        window_ms: u64,
        /// The key template's name, if any.
        key: Option<String>,
    },
    /// Go to `to` unless the expression is true.
    Unless {
        /// The expression's source.
        cond: String,
        /// Where to go when it is false.
        to: u16,
    },
    /// Go to `to`.
    Jump(u16),
    /// Send on a channel.
    Send {
        /// The channel.
        channel: Channel,
        /// The locales with a template (the env holds `"{workflow}/{pc}/{locale}/{field}"`).
        locales: Vec<String>,
    },
}

impl Op {
    /// What the activity trail calls this step.
    pub fn label(&self) -> String {
        match self {
            Op::Delay(ms) => format!("delay {ms} ms"),
            Op::Digest { window_ms, .. } => format!("digest (window {window_ms} ms)"),
            Op::Throttle {
                limit, window_ms, ..
            } => format!("throttle ({limit} per {window_ms} ms)"),
            Op::Unless { .. } => "condition".into(),
            Op::Jump(_) => "jump".into(),
            Op::Send { channel, .. } => format!("send {channel}"),
        }
    }
}

/// A compiled workflow: its definition, program, and the templates the program names.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// The definition it came from.
    pub def: WorkflowDef,
    /// The program.
    pub ops: Vec<Op>,
    /// (template name, source, autoescape as HTML) for the render environment.
    pub templates: Vec<(String, String)>,
}

const MAX_STEPS: usize = 200;

impl Workflow {
    /// Checks `def` and compiles it. Templates and expressions are checked by `check_syntax`
    /// (the render environment's compiler), so a bad one is refused here, not at send time.
    pub fn compile(
        def: WorkflowDef,
        check_syntax: &dyn Fn(&str, bool) -> Result<(), String>,
    ) -> Result<Workflow, Invalid> {
        check_id("id", &def.id)?;
        if def.steps.is_empty() {
            return Err(Invalid::new("steps", "at least one step"));
        }
        let mut c = Compiler {
            wf: def.id.clone(),
            ops: Vec::new(),
            templates: Vec::new(),
            check: check_syntax,
        };
        c.steps(&def.steps, "steps")?;
        if c.ops.len() > MAX_STEPS {
            return Err(Invalid::new("steps", format!("at most {MAX_STEPS} steps")));
        }
        if !c.ops.iter().any(|o| matches!(o, Op::Send { .. })) {
            return Err(Invalid::new(
                "steps",
                "at least one channel step (email, sms, push, chat)",
            ));
        }
        Ok(Workflow {
            ops: c.ops,
            templates: c.templates,
            def,
        })
    }
}

struct Compiler<'a> {
    wf: String,
    ops: Vec<Op>,
    templates: Vec<(String, String)>,
    check: &'a dyn Fn(&str, bool) -> Result<(), String>,
}

impl Compiler<'_> {
    fn pc(&self) -> u16 {
        self.ops.len().min(u16::MAX as usize) as u16
    }

    fn expr(&self, field: &str, e: &str) -> Result<String, Invalid> {
        (self.check)(e, true).map_err(|m| Invalid::new(field, m))?;
        Ok(e.to_string())
    }

    fn template(&mut self, field: &str, name: String, src: &str) -> Result<String, Invalid> {
        (self.check)(src, false).map_err(|m| Invalid::new(field, m))?;
        self.templates.push((name.clone(), src.to_string()));
        Ok(name)
    }

    /// A digest's or throttle's key template, named for the step about to be emitted.
    fn key(&mut self, field: &str, key: &Option<String>) -> Result<Option<String>, Invalid> {
        let Some(k) = key else { return Ok(None) };
        let name = format!("{}/{}/key", self.wf, self.pc());
        self.template(&format!("{field}.key"), name, k).map(Some)
    }

    /// Emits `Unless(cond, <patched>)` and returns its index, to patch once the step is in.
    fn guard(&mut self, field: &str, cond: &Option<String>) -> Result<Option<usize>, Invalid> {
        let Some(c) = cond else { return Ok(None) };
        let cond = self.expr(&format!("{field}.if"), c)?;
        self.ops.push(Op::Unless { cond, to: 0 });
        Ok(Some(self.ops.len() - 1))
    }

    fn patch(&mut self, at: Option<usize>) {
        let here = self.pc();
        if let Some(Op::Unless { to, .. }) = at.and_then(|i| self.ops.get_mut(i)) {
            *to = here;
        }
    }

    fn steps(&mut self, steps: &[Step], path: &str) -> Result<(), Invalid> {
        for (i, s) in steps.iter().enumerate() {
            let field = format!("{path}[{i}]");
            self.step(s, &field)?;
            if self.ops.len() > MAX_STEPS {
                return Err(Invalid::new(path, format!("at most {MAX_STEPS} steps")));
            }
        }
        Ok(())
    }

    fn step(&mut self, s: &Step, field: &str) -> Result<(), Invalid> {
        match s {
            Step::Delay { wait, cond } => {
                let g = self.guard(field, cond)?;
                self.ops.push(Op::Delay(wait.0));
                self.patch(g);
            }
            Step::Digest { window, key, cond } => {
                if window.0 == 0 || window.0 > 31 * 86_400_000 {
                    return Err(Invalid::new(
                        format!("{field}.window"),
                        "from 1 ms to 31 days",
                    ));
                }
                let g = self.guard(field, cond)?;
                let key = self.key(field, key)?;
                self.ops.push(Op::Digest {
                    window_ms: window.0,
                    key,
                });
                self.patch(g);
            }
            Step::Throttle {
                limit,
                window,
                key,
                cond,
            } => {
                if *limit == 0 || window.0 == 0 {
                    return Err(Invalid::new(field, "limit and window above 0"));
                }
                let g = self.guard(field, cond)?;
                let key = self.key(field, key)?;
                self.ops.push(Op::Throttle {
                    limit: *limit,
                    window_ms: window.0,
                    key,
                });
                self.patch(g);
            }
            Step::Branch {
                cond,
                then,
                otherwise,
            } => {
                let cond = self.expr(&format!("{field}.if"), cond)?;
                self.ops.push(Op::Unless { cond, to: 0 });
                let at = self.ops.len() - 1;
                self.steps(then, &format!("{field}.then"))?;
                if otherwise.is_empty() {
                    self.patch(Some(at));
                } else {
                    self.ops.push(Op::Jump(0));
                    let jump = self.ops.len() - 1;
                    self.patch(Some(at));
                    self.steps(otherwise, &format!("{field}.else"))?;
                    let end = self.pc();
                    if let Some(Op::Jump(to)) = self.ops.get_mut(jump) {
                        *to = end;
                    }
                }
            }
            Step::Email(s) => self.send(Channel::Email, s, field)?,
            Step::Sms(s) => self.send(Channel::Sms, s, field)?,
            Step::Push(s) => self.send(Channel::Push, s, field)?,
            Step::Chat(s) => self.send(Channel::Chat, s, field)?,
        }
        Ok(())
    }

    fn send(&mut self, channel: Channel, s: &Send, field: &str) -> Result<(), Invalid> {
        if s.template.is_empty() {
            return Err(Invalid::new(
                format!("{field}.template"),
                "at least one locale (template.en)",
            ));
        }
        let g = self.guard(field, &s.cond)?;
        let pc = self.pc();
        let mut locales = Vec::new();
        for (locale, t) in &s.template {
            let tf = format!("{field}.template.{locale}");
            t.check(channel).map_err(|e| e.under(&tf))?;
            for (k, src) in t.fields() {
                let suffix = if k == "html" { ".html" } else { "" };
                self.template(
                    &format!("{tf}.{k}"),
                    format!("{}/{pc}/{locale}/{k}{suffix}", self.wf),
                    src,
                )?;
            }
            locales.push(locale.clone());
        }
        self.ops.push(Op::Send { channel, locales });
        self.patch(g);
        Ok(())
    }
}

/// The locale to render for `wanted` among `have`: `pt-BR`, then `pt`, then `fallback`, then
/// the first one defined.
pub fn pick_locale<'a>(have: &'a [String], wanted: Option<&str>, fallback: &str) -> &'a str {
    let find = |l: &str| have.iter().find(|h| h.eq_ignore_ascii_case(l));
    if let Some(w) = wanted {
        if let Some(h) = find(w) {
            return h;
        }
        if let Some(h) = w.split('-').next().and_then(find) {
            return h;
        }
    }
    find(fallback)
        .or_else(|| have.first())
        .map(String::as_str)
        .unwrap_or("en")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &str, _: bool) -> Result<(), String> {
        Ok(())
    }

    fn email(body: &str) -> Step {
        let mut template = BTreeMap::new();
        template.insert(
            "en".to_string(),
            Template {
                subject: Some("s".into()),
                body: Some(body.into()),
                ..Default::default()
            },
        );
        Step::Email(Send {
            template,
            cond: None,
        })
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(Millis::parse("10m"), Ok(Millis(600_000)));
        assert_eq!(Millis::parse("250"), Ok(Millis(250)));
        assert_eq!(Millis::parse("1d"), Ok(Millis(86_400_000)));
        assert!(Millis::parse("ten").is_err());
        assert!(Millis::parse("5 fortnights").is_err());
    }

    #[test]
    fn a_branch_compiles_to_jumps_around_each_arm() {
        let def = WorkflowDef {
            id: "w".into(),
            name: None,
            class: Class::Bulk,
            critical: false,
            locale: "en".into(),
            steps: vec![
                Step::Branch {
                    cond: "subscriber.data.pro".into(),
                    then: vec![email("a")],
                    otherwise: vec![email("b")],
                },
                email("c"),
            ],
        };
        let w = Workflow::compile(def, &ok).expect("compiles");
        assert!(matches!(w.ops[0], Op::Unless { to: 3, .. }));
        assert!(matches!(w.ops[1], Op::Send { .. }));
        assert_eq!(w.ops[2], Op::Jump(4));
        assert!(matches!(w.ops[3], Op::Send { .. }));
        assert!(matches!(w.ops[4], Op::Send { .. }));
    }

    #[test]
    fn a_template_missing_a_field_its_channel_needs_is_refused_by_path() {
        let mut template = BTreeMap::new();
        template.insert("en".to_string(), Template::default());
        let def = WorkflowDef {
            id: "w".into(),
            name: None,
            class: Class::Bulk,
            critical: false,
            locale: "en".into(),
            steps: vec![Step::Sms(Send {
                template,
                cond: None,
            })],
        };
        let e = Workflow::compile(def, &ok).expect_err("refused");
        assert_eq!(e.field, "steps[0].template.en.body");
    }

    #[test]
    fn locales_fall_back_from_region_to_language_to_default() {
        let have = vec!["en".to_string(), "pt".to_string()];
        assert_eq!(pick_locale(&have, Some("pt-BR"), "en"), "pt");
        assert_eq!(pick_locale(&have, Some("de"), "en"), "en");
        assert_eq!(pick_locale(&have, None, "fr"), "en");
    }
}
