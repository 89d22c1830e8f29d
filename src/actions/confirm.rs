//! Confirming that a reload took effect: after the round's actions, poll
//! the target until it says the new config is in force (`--confirm-url`,
//! e.g. Prometheus' `/api/v1/status/runtimeinfo`), or run a command that
//! must exit 0 (`--confirm-exec`), within a timeout.
//!
//! "I sent the request" is not "it took": a target that answers 200 and
//! then rejects the config (or never reloads) is caught here, and the
//! round is retried until it holds or a newer version supersedes it.

use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::{Exec, Round, WebhookOptions, webhook::Webhook};
use crate::event::Event;

/// Time between two polls of the confirmation URL.
const POLL: Duration = Duration::from_millis(250);

/// What must hold for a reload to count as done.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Confirm {
    /// A JSON document fetched with GET.
    Url {
        /// The URL, checked like a webhook's.
        hook: Webhook,
        /// A JSON pointer to a boolean that must be `true`
        /// (`/data/reloadConfigSuccess`); skipped when the document has no
        /// such member.
        success: String,
        /// A JSON pointer to an RFC 3339 time that must not be older than
        /// the round (`/data/lastConfigTime`); skipped when absent.
        time: String,
        /// How long to keep polling.
        timeout: Duration,
    },
    /// A command that must exit 0 (the config on its stdin, as `--exec`).
    Exec(Exec),
}

impl Confirm {
    /// Polls `url` (GET) until `success` is `true` and `time` is not older
    /// than the round, for at most `timeout`.
    pub fn url(
        url: &str,
        success: impl Into<String>,
        time: impl Into<String>,
        timeout: Duration,
        options: WebhookOptions,
    ) -> Result<Self, String> {
        let options = WebhookOptions {
            method: "GET".into(),
            timeout: options.timeout.min(timeout),
            ..options
        };
        Ok(Confirm::Url {
            hook: Webhook::new(url, options)?,
            success: success.into(),
            time: time.into(),
            timeout,
        })
    }

    /// What is checked, safe to print.
    pub fn target(&self) -> String {
        match self {
            Confirm::Url { hook, .. } => hook.display_url().to_owned(),
            Confirm::Exec(exec) => exec.program.clone(),
        }
    }

    /// Whether the round that started at `since` took effect.
    pub(crate) fn run(
        &self,
        event: &Event,
        since: SystemTime,
        round: &Round<'_>,
    ) -> (u32, Result<(), String>) {
        match self {
            Confirm::Exec(exec) => (
                1,
                exec.run(event, round.dir, &round.shared.child, &|| round.closing())
                    .map_err(|e| e.to_string()),
            ),
            Confirm::Url {
                hook,
                success,
                time,
                timeout,
            } => {
                let deadline = Instant::now() + *timeout;
                let mut polls = 0;
                loop {
                    polls += 1;
                    let verdict = hook
                        .get_json()
                        .and_then(|doc| took_effect(&doc, success, time, since));
                    match verdict {
                        Ok(()) => return (polls, Ok(())),
                        Err(why) if Instant::now() + POLL >= deadline => {
                            return (
                                polls,
                                Err(format!(
                                    "not confirmed within {}: {why}",
                                    humantime::format_duration(*timeout)
                                )),
                            );
                        }
                        Err(why) => {
                            log::debug!("confirm {}: not yet: {why}", hook.display_url());
                            if !round.pause(POLL) {
                                return (polls, Err(format!("{why} (superseded)")));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Whether `doc` says the reload happened: the success flag is `true`
/// (if the document has it) and the reload time is not older than
/// `since` (if it has one); at least one of the two must be there.
fn took_effect(doc: &Value, success: &str, time: &str, since: SystemTime) -> Result<(), String> {
    let flag = doc.pointer(success);
    let when = doc.pointer(time);
    if flag.is_none() && when.is_none() {
        return Err(format!("the answer has neither {success} nor {time}"));
    }
    if let Some(flag) = flag
        && flag != &Value::Bool(true)
    {
        return Err(format!("{success} is {flag}"));
    }
    if let Some(when) = when {
        let text = when.as_str().unwrap_or_default();
        // A full RFC 3339 time, its offset included: an instant, whatever
        // zone the server writes in.
        let at: SystemTime =
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|e| format!("{time}: {when} is not an RFC 3339 time: {e}"))?
                .into();
        // Second precision on either side must not turn a reload made
        // just after the round began into "too old".
        let since = since - Duration::from_secs(1);
        if at < since {
            return Err(format!("{time} is {text}, older than the reload"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_flag_and_the_time_must_both_say_so() {
        let since = humantime::parse_rfc3339("2026-11-26T12:00:00Z").unwrap();
        let (s, t) = ("/data/reloadConfigSuccess", "/data/lastConfigTime");
        let doc =
            |ok: bool, at: &str| json!({"data": {"reloadConfigSuccess": ok, "lastConfigTime": at}});
        assert!(took_effect(&doc(true, "2026-11-26T12:00:05.123Z"), s, t, since).is_ok());
        let e = took_effect(&doc(false, "2026-11-26T12:00:05Z"), s, t, since).unwrap_err();
        assert!(e.contains("reloadConfigSuccess is false"), "{e}");
        let e = took_effect(&doc(true, "2026-11-26T11:59:00Z"), s, t, since).unwrap_err();
        assert!(e.contains("older than the reload"), "{e}");
        assert!(took_effect(&json!({"data": {}}), s, t, since).is_err());
        assert!(took_effect(&json!({"data": {"reloadConfigSuccess": true}}), s, t, since).is_ok());
    }

    /// The round began at 12:00:00Z. A reload time is an instant whatever
    /// its offset: 07:00:05-05:00 is 12:00:05Z (newer), 14:00:00+03:00 is
    /// 11:00:00Z (an hour older). Read as UTC, the first was never
    /// confirmed and the second was accepted.
    #[test]
    fn reload_times_are_compared_as_instants_with_their_offsets() {
        let since = humantime::parse_rfc3339("2026-11-26T12:00:00Z").unwrap();
        let (s, t) = ("/data/reloadConfigSuccess", "/data/lastConfigTime");
        let at = |at: &str| json!({"data": {"reloadConfigSuccess": true, "lastConfigTime": at}});
        for newer in [
            "2026-11-26T12:00:05Z",
            "2026-11-26T12:00:05.123456789Z",
            "2026-11-26T07:00:05-05:00",
            "2026-11-26T15:00:05.5+03:00",
            "2026-11-26t12:00:05z",
        ] {
            assert!(took_effect(&at(newer), s, t, since).is_ok(), "{newer}");
        }
        for older in [
            "2026-11-26T11:00:00Z",
            "2026-11-26T06:00:00-05:00",
            "2026-11-26T14:00:00+03:00",
        ] {
            let e = took_effect(&at(older), s, t, since).unwrap_err();
            assert!(e.contains("older than the reload"), "{older}: {e}");
        }
        let e = took_effect(&at("yesterday"), s, t, since).unwrap_err();
        assert!(e.contains("not an RFC 3339 time"), "{e}");
    }
}
