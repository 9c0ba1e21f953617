//! Status conditions (`Ready`, `ReferencesResolved`, `Degraded`) built the way Kubernetes users
//! expect: `lastTransitionTime` moves only when the status flips, messages name what is wrong.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The object serves (or is served) as declared.
pub const READY: &str = "Ready";
/// Everything the object references exists and fits.
pub const REFERENCES_RESOLVED: &str = "ReferencesResolved";
/// The object works, but with part of it left out or missing.
pub const DEGRADED: &str = "Degraded";

/// Longest condition message; longer lists are cut with a count of what was left out.
pub const MAX_MESSAGE: usize = 2048;

/// One condition as a reconciler decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Condition type.
    pub type_: &'static str,
    /// True or False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl Verdict {
    /// A condition that holds.
    pub fn yes(type_: &'static str, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self { type_, status: true, reason: reason.into(), message: message.into() }
    }

    /// A condition that does not hold.
    pub fn no(type_: &'static str, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self { type_, status: false, reason: reason.into(), message: message.into() }
    }
}

/// Turns verdicts into conditions, keeping each `lastTransitionTime` from `previous` when the
/// status did not change.
pub fn conditions(
    verdicts: &[Verdict],
    previous: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    verdicts
        .iter()
        .map(|verdict| {
            let status = if verdict.status { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|c| c.type_ == verdict.type_ && c.status == status)
                .map_or(Time(now), |c| c.last_transition_time.clone());
            Condition {
                type_: verdict.type_.to_owned(),
                status: status.to_owned(),
                reason: verdict.reason.clone(),
                message: truncate(&verdict.message),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// Joins problems into one message, cutting at [`MAX_MESSAGE`] with a count of the rest.
pub fn join_problems<S: AsRef<str>>(problems: &[S]) -> String {
    let mut message = String::new();
    for (i, problem) in problems.iter().enumerate() {
        let problem = problem.as_ref();
        if message.len() + problem.len() + 2 > MAX_MESSAGE - 32 {
            message.push_str(&format!("; and {} more", problems.len() - i));
            break;
        }
        if i > 0 {
            message.push_str("; ");
        }
        message.push_str(problem);
    }
    message
}

fn truncate(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE - 3;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

/// The `status` value of condition `type_`, if present.
pub fn status_of<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions.iter().find(|c| c.type_ == type_).map(|c| c.status.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().expect("time");
        let t1: Timestamp = "2026-01-02T00:00:00Z".parse().expect("time");
        let first = conditions(&[Verdict::no(READY, "Pending", "waiting")], &[], Some(1), t0);
        let same = conditions(&[Verdict::no(READY, "StillPending", "still")], &first, Some(2), t1);
        assert_eq!(same[0].last_transition_time, Time(t0));
        assert_eq!((same[0].reason.as_str(), same[0].observed_generation), ("StillPending", Some(2)));
        let flipped = conditions(&[Verdict::yes(READY, "Serving", "ok")], &same, Some(2), t1);
        assert_eq!(flipped[0].last_transition_time, Time(t1));
        assert_eq!(status_of(&flipped, READY), Some("True"));
    }

    #[test]
    fn long_problem_lists_are_cut_with_a_count() {
        let problems: Vec<String> = (0..500).map(|i| format!("problem number {i}")).collect();
        let message = join_problems(&problems);
        assert!(message.len() <= MAX_MESSAGE);
        assert!(message.starts_with("problem number 0; problem number 1"));
        assert!(message.contains("more"));
    }
}
