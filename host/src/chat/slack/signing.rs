//! Slack's request signing, as Slack documents it ("Verifying requests
//! from Slack"): `X-Slack-Signature` is `v0=` and the hex HMAC-SHA256 of
//! `v0:{X-Slack-Request-Timestamp}:{raw body}` keyed with the app's signing
//! secret. A timestamp more than five minutes from now is refused, so a
//! captured request cannot be sent again later; within those five minutes
//! the caller refuses a signature it has seen (see `Seen`).

use crate::locks::MutexExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a request's timestamp may be from now, in seconds.
pub const MAX_SKEW_SECS: i64 = 5 * 60;

/// Why a request is not taken as Slack's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsigned {
    #[error("no X-Slack-Request-Timestamp header")]
    NoTimestamp,
    #[error("X-Slack-Request-Timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("the request was signed {0} s away from now (more than {MAX_SKEW_SECS}): refused as a possible replay")]
    Stale(i64),
    #[error("no X-Slack-Signature header")]
    NoSignature,
    #[error("X-Slack-Signature is not `v0=` and 64 hex digits")]
    BadSignature,
    #[error("the signature does not match the request")]
    Mismatch,
    #[error("this exact request was received already: refused as a replay")]
    Replayed,
}

/// Checks a request against `secret` at `now` (Unix seconds).
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), Unsigned> {
    let ts = timestamp.ok_or(Unsigned::NoTimestamp)?;
    let at: i64 = ts.trim().parse().map_err(|_| Unsigned::BadTimestamp)?;
    let skew = now.saturating_sub(at);
    if skew.unsigned_abs() > MAX_SKEW_SECS as u64 {
        return Err(Unsigned::Stale(skew));
    }
    let sig = signature.ok_or(Unsigned::NoSignature)?;
    let hex_part = sig.strip_prefix("v0=").ok_or(Unsigned::BadSignature)?;
    let expected = hex::decode(hex_part)
        .ok()
        .filter(|b| b.len() == 32)
        .ok_or(Unsigned::BadSignature)?;
    let mut mac = mac(secret);
    mac.update(b"v0:");
    mac.update(ts.as_bytes());
    mac.update(b":");
    mac.update(body);
    // Constant time: a timing difference must not reveal how much of a
    // guessed signature was right.
    mac.verify_slice(&expected).map_err(|_| Unsigned::Mismatch)
}

/// The `X-Slack-Signature` Slack would send for `body` at `timestamp`
/// (tests and the demo sign with it).
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length")
}

/// Signatures of requests taken in the last [`MAX_SKEW_SECS`] (a replay
/// has the same one): a request seen before is refused. Bounded: at the
/// cap, the oldest are forgotten first, and they are the ones the
/// timestamp check refuses soonest anyway.
#[derive(Default)]
pub struct Seen {
    inner: std::sync::Mutex<std::collections::VecDeque<(i64, String)>>,
}

/// How many signatures [`Seen`] keeps.
pub const SEEN_CAP: usize = 16_384;

impl Seen {
    /// Records `signature` taken at `now`; `false` when it was seen.
    pub fn first(&self, signature: &str, now: i64) -> bool {
        let mut q = self.inner.locked();
        while q
            .front()
            .is_some_and(|(at, _)| now - at > 2 * MAX_SKEW_SECS || q.len() >= SEEN_CAP)
        {
            q.pop_front();
        }
        if q.iter().any(|(_, s)| s == signature) {
            return false;
        }
        q.push_back((now, signature.to_string()));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The worked example of Slack's "Verifying requests from Slack".
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const NOW: i64 = 1531420618 + 10;

    #[test]
    fn slacks_documented_example_verifies() {
        assert_eq!(sign(SECRET.as_bytes(), TS, BODY.as_bytes()), SIG);
        verify(SECRET.as_bytes(), Some(TS), Some(SIG), BODY.as_bytes(), NOW).unwrap();
    }

    #[test]
    fn a_forged_altered_or_stale_request_is_refused() {
        let v = |secret: &str, ts: Option<&str>, sig: Option<&str>, body: &str, now: i64| {
            verify(secret.as_bytes(), ts, sig, body.as_bytes(), now)
        };
        assert_eq!(
            v("wrong-secret", Some(TS), Some(SIG), BODY, NOW),
            Err(Unsigned::Mismatch)
        );
        let altered = BODY.replace("user_id=U2CERLKJA", "user_id=U2CERLKJB");
        assert_eq!(
            v(SECRET, Some(TS), Some(SIG), &altered, NOW),
            Err(Unsigned::Mismatch)
        );
        // The timestamp is part of what is signed: moving it breaks it.
        assert_eq!(
            v(SECRET, Some("1531420619"), Some(SIG), BODY, NOW),
            Err(Unsigned::Mismatch)
        );
        assert_eq!(
            v(SECRET, Some(TS), Some(SIG), BODY, NOW + 301),
            Err(Unsigned::Stale(311))
        );
        assert_eq!(
            v(SECRET, Some(TS), Some(SIG), BODY, 1531420618 - 301),
            Err(Unsigned::Stale(-301))
        );
        assert_eq!(
            v(SECRET, None, Some(SIG), BODY, NOW),
            Err(Unsigned::NoTimestamp)
        );
        assert_eq!(
            v(SECRET, Some("soon"), Some(SIG), BODY, NOW),
            Err(Unsigned::BadTimestamp)
        );
        assert_eq!(
            v(SECRET, Some(TS), None, BODY, NOW),
            Err(Unsigned::NoSignature)
        );
        assert_eq!(
            v(SECRET, Some(TS), Some("v1=abcd"), BODY, NOW),
            Err(Unsigned::BadSignature)
        );
        assert_eq!(
            v(SECRET, Some(TS), Some(&SIG[..20]), BODY, NOW),
            Err(Unsigned::BadSignature)
        );
    }

    #[test]
    fn a_signature_is_taken_once_and_forgotten_after_the_window() {
        let seen = Seen::default();
        assert!(seen.first(SIG, NOW));
        assert!(!seen.first(SIG, NOW + 1));
        assert!(seen.first("v0=other", NOW + 1));
        // Long after, the timestamp check refuses it; the set forgot it.
        assert!(seen.first(SIG, NOW + 2 * MAX_SKEW_SECS + 5));
    }
}
