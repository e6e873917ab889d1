//! The nouns a notification platform keeps: subscribers and their addresses, topics,
//! preferences, and the channels messages go out on. Each type validates what a client sends
//! before anything is stored, and says in its error which field is wrong.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The ways a message reaches a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Email, over SMTP or an HTTP email API.
    Email,
    /// Text messages, over an HTTP SMS API.
    Sms,
    /// Mobile push, over an HTTP push API (device tokens).
    Push,
    /// Chat (Slack-style channels), over an HTTP chat API.
    Chat,
}

impl Channel {
    /// Every channel, in a stable order.
    pub const ALL: [Channel; 4] = [Channel::Email, Channel::Sms, Channel::Push, Channel::Chat];

    /// Its name, as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::Chat => "chat",
        }
    }

    /// The channel named `s`.
    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A field that failed validation: its JSON path and what it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The JSON path of the field (`subscribers[2].email`).
    pub field: String,
    /// What a valid value looks like.
    pub reason: String,
}

impl Invalid {
    /// A new error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error under a parent path (`subscribers[2]` + `email`).
    pub fn under(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_string()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

/// Checks an identifier: 1–128 characters of `A-Z a-z 0-9 _ - . : @ +`.
pub fn check_id(field: &str, id: &str) -> Result<(), Invalid> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:@+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            "1 to 128 characters of A-Z a-z 0-9 _ - . : @ +",
        ))
    }
}

/// A person who receives notifications.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscriber {
    /// The caller's id for this person (`user-42`).
    pub id: String,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number in E.164 form (`+15551234567`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Device tokens for push.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub push_tokens: Vec<String>,
    /// A chat destination (a channel or user id of the chat provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<String>,
    /// BCP 47 language tag (`fr`, `pt-BR`); templates fall back from `pt-BR` to `pt` to the
    /// workflow's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
    /// Anything else the caller wants templates and branches to see (`plan`, `name`...).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub data: serde_json::Map<String, serde_json::Value>,
}

impl Subscriber {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), Invalid> {
        check_id("id", &self.id)?;
        if let Some(e) = &self.email {
            let at = e.find('@');
            let ok = e.len() <= 254
                && at.is_some_and(|i| i > 0 && i + 1 < e.len())
                && !e.contains(char::is_whitespace)
                && !e.contains(['<', '>', ',', ';']);
            if !ok {
                return Err(Invalid::new("email", "an address like name@example.com"));
            }
        }
        if let Some(p) = &self.phone {
            let digits = p.strip_prefix('+').unwrap_or("");
            let ok = (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
            if !ok {
                return Err(Invalid::new(
                    "phone",
                    "E.164: a + then 8 to 15 digits (+15551234567)",
                ));
            }
        }
        if self.push_tokens.len() > 16 {
            return Err(Invalid::new("push_tokens", "at most 16 device tokens"));
        }
        for (i, t) in self.push_tokens.iter().enumerate() {
            if t.is_empty() || t.len() > 4096 || t.contains(char::is_whitespace) {
                return Err(Invalid::new(
                    format!("push_tokens[{i}]"),
                    "1 to 4096 characters, no spaces",
                ));
            }
        }
        if let Some(c) = &self.chat {
            if c.is_empty() || c.len() > 256 || c.contains(char::is_whitespace) {
                return Err(Invalid::new("chat", "1 to 256 characters, no spaces"));
            }
        }
        if let Some(l) = &self.locale {
            let ok = (2..=35).contains(&l.len())
                && l.split('-').all(|p| {
                    !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_alphanumeric())
                });
            if !ok {
                return Err(Invalid::new("locale", "a BCP 47 tag like en, fr or pt-BR"));
            }
        }
        let data = serde_json::to_vec(&self.data).map(|v| v.len()).unwrap_or(0);
        if data > 16 * 1024 {
            return Err(Invalid::new("data", "at most 16 KiB of JSON"));
        }
        Ok(())
    }

    /// The address this subscriber has on `channel`, if any (push: the first token; a push
    /// send goes to every token, see [`Subscriber::addresses`]).
    pub fn addresses(&self, channel: Channel) -> Vec<String> {
        match channel {
            Channel::Email => self.email.iter().cloned().collect(),
            Channel::Sms => self.phone.iter().cloned().collect(),
            Channel::Push => self.push_tokens.clone(),
            Channel::Chat => self.chat.iter().cloned().collect(),
        }
    }
}

/// A named list of subscribers a trigger can fan out to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topic {
    /// Its key (`release-notes`).
    pub key: String,
    /// A human name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One workflow's preferences for a subscriber.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowPreference {
    /// `false` turns the whole workflow off for this subscriber.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Per channel, within this workflow.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<Channel, bool>,
}

/// What a subscriber chose to receive. The most specific choice wins: this workflow on this
/// channel, then this workflow, then this channel everywhere; with no choice, a message goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Per channel, for every workflow.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<Channel, bool>,
    /// Per workflow.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub workflows: BTreeMap<String, WorkflowPreference>,
}

/// Why a message was not sent on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptOut {
    /// The subscriber turned this channel off for this workflow.
    WorkflowChannel,
    /// The subscriber turned this workflow off.
    Workflow,
    /// The subscriber turned this channel off everywhere.
    Channel,
}

impl OptOut {
    /// The reason, as the activity trail words it.
    pub fn reason(&self, workflow: &str, channel: Channel) -> String {
        match self {
            OptOut::WorkflowChannel => {
                format!("the subscriber turned {channel} off for workflow {workflow}")
            }
            OptOut::Workflow => format!("the subscriber turned workflow {workflow} off"),
            OptOut::Channel => format!("the subscriber turned {channel} off for every workflow"),
        }
    }
}

impl Preferences {
    /// Whether `workflow` may reach this subscriber on `channel`, and if not, why.
    pub fn allows(&self, workflow: &str, channel: Channel) -> Result<(), OptOut> {
        if let Some(w) = self.workflows.get(workflow) {
            if let Some(&on) = w.channels.get(&channel) {
                return if on {
                    Ok(())
                } else {
                    Err(OptOut::WorkflowChannel)
                };
            }
            if w.enabled == Some(false) {
                return Err(OptOut::Workflow);
            }
        }
        match self.channels.get(&channel) {
            Some(false) => Err(OptOut::Channel),
            _ => Ok(()),
        }
    }

    /// Applies `patch`: the channels and workflows it names replace those here; the rest stay.
    pub fn merge(&mut self, patch: Preferences) {
        self.channels.extend(patch.channels);
        for (w, p) in patch.workflows {
            let mine = self.workflows.entry(w).or_default();
            if p.enabled.is_some() {
                mine.enabled = p.enabled;
            }
            mine.channels.extend(p.channels);
        }
    }

    /// Checks workflow ids.
    pub fn validate(&self) -> Result<(), Invalid> {
        for w in self.workflows.keys() {
            check_id(&format!("workflows.{w}"), w)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_preference_wins() {
        let mut p = Preferences::default();
        p.channels.insert(Channel::Sms, false);
        assert_eq!(p.allows("w", Channel::Sms), Err(OptOut::Channel));
        assert_eq!(p.allows("w", Channel::Email), Ok(()));
        let mut w = WorkflowPreference {
            enabled: Some(false),
            ..Default::default()
        };
        w.channels.insert(Channel::Sms, true);
        p.workflows.insert("w".into(), w);
        assert_eq!(
            p.allows("w", Channel::Sms),
            Ok(()),
            "workflow+channel beats channel"
        );
        assert_eq!(p.allows("w", Channel::Email), Err(OptOut::Workflow));
        assert_eq!(p.allows("other", Channel::Sms), Err(OptOut::Channel));
    }

    #[test]
    fn subscribers_are_checked_field_by_field() {
        let mut s = Subscriber {
            id: "u1".into(),
            email: Some("a@b.c".into()),
            phone: Some("+15551234567".into()),
            ..Default::default()
        };
        assert!(s.validate().is_ok());
        s.email = Some("<img src=x>".into());
        assert_eq!(s.validate().map_err(|e| e.field), Err("email".into()));
        s.email = None;
        s.phone = Some("555".into());
        assert_eq!(s.validate().map_err(|e| e.field), Err("phone".into()));
        s.phone = None;
        s.id = "a b".into();
        assert_eq!(s.validate().map_err(|e| e.field), Err("id".into()));
    }
}
