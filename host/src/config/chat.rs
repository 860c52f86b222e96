//! `[chat.slack]`: Remedy in the incident channel. Plans are posted with
//! Approve / Reject buttons, decisions come back signed, and `/remedy`
//! reaches the kill switch. Secrets (the bot token, the signing secret) are
//! read from environment variables the config names, never from the file.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::HttpUrl;
use crate::escalation::Priority;

/// `[chat]`: chat platforms Remedy takes part in.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// Plans posted to Slack with Approve / Reject buttons; `/remedy`.
    pub slack: Option<SlackConfig>,
}

/// Slack's public Web API.
pub const SLACK_API_URL: &str = "https://slack.com/api";

/// Slack: plans posted with Approve / Reject buttons to a channel, and
/// `/remedy pause|resume|status`. The bot token and signing secret come
/// from environment variables.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The variable holding the bot token (`xoxb-…`); default
    /// `SLACK_BOT_TOKEN`.
    #[serde(default = "bot_token_env")]
    pub bot_token_env: String,
    /// The variable holding the app's signing secret; default
    /// `SLACK_SIGNING_SECRET`.
    #[serde(default = "signing_secret_env")]
    pub signing_secret_env: String,
    /// The channel (id, e.g. `C0123ABCD`) plans are posted to, unless the
    /// plan's priority or plugin names another.
    pub channel: Option<SlackChannel>,
    /// Channels by the plan's priority (`p0 = "C…"`), over `channel`.
    #[serde(default)]
    pub channels: BTreeMap<Priority, SlackChannel>,
    /// Slack user ids (`U…`) who may approve and reject plans and pull or
    /// release the kill switch.
    #[serde(default)]
    pub approvers: Vec<SlackUser>,
    /// Slack user ids who may read (`/remedy status`).
    #[serde(default)]
    pub readers: Vec<SlackUser>,
    /// Whoever can use the app in the workspace may read (`/remedy
    /// status`); approving still needs `approvers`.
    #[serde(default)]
    pub anyone_may_read: bool,
    /// The console's address as operators reach it (e.g.
    /// `https://remedy.example.com`): messages link each run's page.
    pub console_url: Option<HttpUrl>,
    /// The Web API's base URL (default `https://slack.com/api`).
    pub api_url: Option<HttpUrl>,
}

fn bot_token_env() -> String {
    "SLACK_BOT_TOKEN".into()
}

fn signing_secret_env() -> String {
    "SLACK_SIGNING_SECRET".into()
}

/// A Slack user id as Slack sends it (`U0123ABCD`, `W…` on Enterprise
/// Grid): a display name would let anyone who takes that name approve.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String")]
#[schemars(example = &"U0123ABCD")]
pub struct SlackUser(String);

impl SlackUser {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SlackUser {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if slack_id(&s, &['U', 'W']) {
            Ok(SlackUser(s))
        } else {
            Err(format!(
                "`{s}` is not a Slack user id (`U…` or `W…`, as in the member's profile: ⋮ → Copy member ID)"
            ))
        }
    }
}

/// A Slack channel id (`C…`, `G…` for a private one).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "String")]
#[schemars(example = &"C0123ABCD")]
pub struct SlackChannel(String);

impl SlackChannel {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SlackChannel {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if slack_id(&s, &['C', 'G']) {
            Ok(SlackChannel(s))
        } else {
            Err(format!(
                "`{s}` is not a Slack channel id (`C…`; a name can be renamed, the id cannot: channel details → About)"
            ))
        }
    }
}

fn slack_id(s: &str, first: &[char]) -> bool {
    s.len() >= 3
        && s.len() <= 32
        && s.starts_with(first)
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

impl SlackConfig {
    /// The channel a plan of `priority` is posted to (`plugin`: the
    /// plugin's own `slack_channel`, which wins).
    pub fn channel_for<'a>(
        &'a self,
        plugin: Option<&'a SlackChannel>,
        priority: Priority,
    ) -> Option<&'a SlackChannel> {
        plugin
            .or_else(|| self.channels.get(&priority))
            .or(self.channel.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_and_names_refused() {
        assert!(SlackUser::try_from("U0123ABCD".to_string()).is_ok());
        assert!(SlackUser::try_from("W0123ABCD".to_string()).is_ok());
        let e = SlackUser::try_from("@alice".to_string()).unwrap_err();
        assert!(e.contains("not a Slack user id"), "{e}");
        assert!(SlackChannel::try_from("C0123ABCD".to_string()).is_ok());
        let e = SlackChannel::try_from("#incidents".to_string()).unwrap_err();
        assert!(e.contains("not a Slack channel id"), "{e}");
    }
}
