//! The 202 rule. Kubernaut's Data Storage answers `202 Accepted` when its database refuses a
//! write: the event waits in a dead-letter queue, and the queue replays *every* copy it holds
//! (the first replay about a minute later). POSTing again after a 202 therefore stores the
//! event twice or more. So after a 202 (or a write whose answer never came, which may have been
//! queued too) audit-guard does not POST that event again: it polls with GET until the event
//! appears, and re-POSTs only once the queue's replay window has clearly passed — counted from
//! the later of the 202 and the last time this process saw Data Storage queue or fail a write,
//! so that the queue had a whole window of working writes to replay it.
//!
//! The time queued is remembered here (per process) and on the CR itself, in the annotation
//! [`super::mark::ANNOTATION_QUEUED_AT`], so that it survives a restart or a change of leader.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// The default replay window: well past the queue's first replay (about a minute) and its
/// retry period (30 s).
pub const DEFAULT_REPLAY_WINDOW: Duration = Duration::from_secs(10 * 60);

/// What to do about a CR's event that is not (yet) among the stored events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Never queued, or queued long enough ago that the queue evidently lost it: POST.
    Post,
    /// Queued at `queued_at`: poll only, no POST before `repost_at`.
    Wait {
        queued_at: DateTime<Utc>,
        repost_at: DateTime<Utc>,
    },
}

/// The rule as a plain function: `queued_at` the time the event was queued (None: never),
/// `last_trouble` the last time a write was queued or failed in this process.
pub fn next_step(queued_at: Option<DateTime<Utc>>, last_trouble: Option<DateTime<Utc>>, now: DateTime<Utc>, window: Duration) -> Step {
    let Some(queued_at) = queued_at else { return Step::Post };
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let since = last_trouble.map_or(queued_at, |t| t.max(queued_at));
    let repost_at = since.checked_add_signed(window).unwrap_or(DateTime::<Utc>::MAX_UTC);
    if now >= repost_at {
        Step::Post
    } else {
        Step::Wait { queued_at, repost_at }
    }
}

/// Most CRs remembered as queued; beyond it the oldest marks are forgotten (their CRs still
/// carry the annotation, which the controller and the webhook read back).
const CAPACITY: usize = 100_000;

/// This process's memory of queued events, shared by the controller, the writer and the webhook.
#[derive(Debug)]
pub struct QueuedEvents {
    window: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    marks: HashMap<String, DateTime<Utc>>,
    last_trouble: Option<DateTime<Utc>>,
}

impl QueuedEvents {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// Remembers that `uid`'s event was queued at `at` (the later time wins: a re-POST queued again).
    pub fn note(&self, uid: &str, at: DateTime<Utc>) {
        let Ok(mut inner) = self.inner.lock() else { return };
        if inner.marks.len() >= CAPACITY && !inner.marks.contains_key(uid) {
            if let Some(oldest) = inner.marks.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
                inner.marks.remove(&oldest);
            }
        }
        let t = inner.marks.entry(uid.to_string()).or_insert(at);
        *t = (*t).max(at);
    }

    pub fn queued_at(&self, uid: &str) -> Option<DateTime<Utc>> {
        self.inner.lock().ok().and_then(|i| i.marks.get(uid).copied())
    }

    /// The event is stored: nothing to wait for any more.
    pub fn clear(&self, uid: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.marks.remove(uid);
        }
    }

    /// Data Storage queued or failed a write (or a read) at `at`.
    pub fn trouble(&self, at: DateTime<Utc>) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.last_trouble = Some(inner.last_trouble.map_or(at, |t| t.max(at)));
        }
    }

    pub fn step(&self, uid: &str, now: DateTime<Utc>) -> Step {
        let (queued, trouble) = match self.inner.lock() {
            Ok(i) => (i.marks.get(uid).copied(), i.last_trouble),
            Err(_) => (None, None),
        };
        next_step(queued, trouble, now, self.window)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.marks.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        format!("2026-01-01T{s}Z").parse().unwrap()
    }

    #[test]
    fn after_a_202_poll_until_the_window_has_passed_since_the_last_trouble() {
        let w = Duration::from_secs(600);
        let wait = |q: &str, r: &str| Step::Wait {
            queued_at: t(q),
            repost_at: t(r),
        };
        /// (case, queued at, last trouble, now, the step)
        type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a str, Step);
        let cases: Vec<Case> = vec![
            ("never queued", None, None, "10:00:00", Step::Post),
            ("never queued, trouble elsewhere", None, Some("10:00:00"), "10:00:01", Step::Post),
            ("just queued", Some("10:00:00"), None, "10:00:05", wait("10:00:00", "10:10:00")),
            (
                "window not yet over",
                Some("10:00:00"),
                Some("10:00:00"),
                "10:09:59",
                wait("10:00:00", "10:10:00"),
            ),
            ("window over", Some("10:00:00"), None, "10:10:00", Step::Post),
            (
                "writes still failing later",
                Some("10:00:00"),
                Some("10:08:00"),
                "10:12:00",
                wait("10:00:00", "10:18:00"),
            ),
            (
                "writes fine for a whole window",
                Some("10:00:00"),
                Some("10:08:00"),
                "10:18:00",
                Step::Post,
            ),
            (
                "trouble before the 202 does not count",
                Some("10:00:00"),
                Some("09:00:00"),
                "10:10:00",
                Step::Post,
            ),
        ];
        for (name, queued, trouble, now, want) in cases {
            assert_eq!(next_step(queued.map(t), trouble.map(t), t(now), w), want, "{name}");
        }
    }

    #[test]
    fn marks_keep_the_latest_time_and_clear_when_stored() {
        let q = QueuedEvents::new(Duration::from_secs(60));
        assert_eq!(q.step("u", t("10:00:00")), Step::Post);
        q.note("u", t("10:00:00"));
        q.note("u", t("09:00:00"));
        assert_eq!(q.queued_at("u"), Some(t("10:00:00")));
        q.trouble(t("10:00:30"));
        assert!(matches!(q.step("u", t("10:01:00")), Step::Wait { .. }));
        assert_eq!(q.step("u", t("10:01:30")), Step::Post);
        q.clear("u");
        assert!(q.is_empty());
    }
}
