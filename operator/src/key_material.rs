//! Generated API keys: the Secret that holds a key (the format is `sluice_crds::keys`), and the
//! rotation state machine (issue, rotate with a grace period, drop the previous key), pure over an injected clock.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use rand::Rng;
use sluice_crds::api::ApiKey;
use sluice_crds::compile::{PREVIOUS_KEY_EXPIRES_FIELD, PREVIOUS_KEY_FIELD};
pub use sluice_crds::keys::{generate_key, key_prefix};

use crate::labels::{ISSUED_AT_ANNOTATION, ROTATE_AT_ANNOTATION, ROTATED_AT_ANNOTATION};

/// Grace period of a rotation requested by annotation without `spec.rotation`.
pub const DEFAULT_GRACE: SignedDuration = SignedDuration::from_hours(24);
/// The data key of the current key in a generated Secret.
pub const KEY_FIELD: &str = "key";

/// The previous key during a rotation's grace period.
#[derive(Clone, PartialEq, Eq)]
pub struct PreviousKey {
    /// Key material.
    pub key: String,
    /// When it stops working.
    pub expires_at: Timestamp,
}

/// The contents of a generated key Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySecret {
    /// The current key.
    pub key: String,
    /// When the current key was issued.
    pub issued_at: Option<Timestamp>,
    /// When the current key replaced a previous one (a rotation); `None` for a first key. Never
    /// before `issued_at`: a rotation issues the key.
    pub rotated_at: Option<Timestamp>,
    /// The previous key, during a grace period.
    pub previous: Option<PreviousKey>,
}

impl std::fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySecret")
            .field("key", &"<redacted>")
            .field("issued_at", &self.issued_at)
            .field("rotated_at", &self.rotated_at)
            .field("previous_expires_at", &self.previous.as_ref().map(|p| p.expires_at))
            .finish()
    }
}

impl KeySecret {
    /// Reads a generated key Secret's data and annotations; `created` stands in for a missing
    /// issue time. `None` when it holds no usable key.
    pub fn parse(
        data: &BTreeMap<String, ByteString>,
        annotations: &BTreeMap<String, String>,
        created: Option<Timestamp>,
    ) -> Option<Self> {
        let text = |field: &str| data.get(field).and_then(|v| String::from_utf8(v.0.clone()).ok());
        let time = |value: Option<&String>| value.and_then(|v| v.trim().parse::<Timestamp>().ok());
        let key = text(KEY_FIELD).filter(|k| !k.trim().is_empty())?;
        let previous = match (text(PREVIOUS_KEY_FIELD), time(text(PREVIOUS_KEY_EXPIRES_FIELD).as_ref())) {
            (Some(key), Some(expires_at)) => Some(PreviousKey { key, expires_at }),
            _ => None,
        };
        let issued_at = time(annotations.get(ISSUED_AT_ANNOTATION)).or(created);
        Some(Self {
            key,
            issued_at,
            // Secrets written by earlier versions hold the request the key answered, which may
            // be older than the key: read as the time of the rotation, that is its issue.
            rotated_at: time(annotations.get(ROTATED_AT_ANNOTATION)).map(|at| issued_at.map_or(at, |i| at.max(i))),
            previous,
        })
    }

    /// The Secret's `data`.
    pub fn data(&self) -> BTreeMap<String, ByteString> {
        let mut data = BTreeMap::from([(KEY_FIELD.to_owned(), ByteString(self.key.clone().into_bytes()))]);
        if let Some(previous) = &self.previous {
            data.insert(PREVIOUS_KEY_FIELD.to_owned(), ByteString(previous.key.clone().into_bytes()));
            data.insert(
                PREVIOUS_KEY_EXPIRES_FIELD.to_owned(),
                ByteString(previous.expires_at.to_string().into_bytes()),
            );
        }
        data
    }

    /// The Secret's annotations that record issue and rotation times.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut annotations = BTreeMap::new();
        if let Some(at) = self.issued_at {
            annotations.insert(ISSUED_AT_ANNOTATION.to_owned(), at.to_string());
        }
        if let Some(at) = self.rotated_at {
            annotations.insert(ROTATED_AT_ANNOTATION.to_owned(), at.to_string());
        }
        annotations
    }
}

/// A request to rotate: `spec.rotation.requestedAt` or the `sluice.dev/rotate-at` annotation,
/// whichever is newer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationRequest {
    /// When rotation was requested (a future time schedules it).
    pub at: Timestamp,
    /// How long the previous key keeps working.
    pub grace: SignedDuration,
}

/// The rotation an ApiKey asks for. An annotation that is not RFC 3339 is an error for its
/// conditions.
pub fn rotation_request(apikey: &ApiKey) -> Result<Option<RotationRequest>, String> {
    let grace = apikey
        .spec
        .rotation
        .as_ref()
        .map_or(DEFAULT_GRACE, |r| SignedDuration::from_secs(i64::from(r.grace_period_seconds)));
    let from_spec = apikey.spec.rotation.as_ref().map(|r| r.requested_at.0);
    let from_annotation = match apikey.metadata.annotations.as_ref().and_then(|a| a.get(ROTATE_AT_ANNOTATION)) {
        None => None,
        Some(value) => Some(value.trim().parse::<Timestamp>().map_err(|_| {
            format!("annotation {ROTATE_AT_ANNOTATION} is {value:?}, not an RFC 3339 time like 2026-01-02T15:04:05Z")
        })?),
    };
    Ok(from_spec.max(from_annotation).map(|at| RotationRequest { at, grace }))
}

/// What to do next with a generated key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No key yet: issue one.
    Issue,
    /// A rotation is due.
    Rotate(RotationRequest),
    /// The previous key's grace period is over: remove it.
    DropPrevious,
    /// Nothing to do; look again at this time (a scheduled rotation or the end of a grace period).
    Wait(Option<Timestamp>),
}

/// Decides the next step for a key Secret (`None`: not there yet) under `request` at `now`.
pub fn next_step(current: Option<&KeySecret>, request: Option<RotationRequest>, now: Timestamp) -> Step {
    let Some(current) = current else { return Step::Issue };
    if let Some(previous) = &current.previous
        && previous.expires_at <= now
    {
        return Step::DropPrevious;
    }
    let answered = current.rotated_at.max(current.issued_at);
    let mut wake = current.previous.as_ref().map(|p| p.expires_at);
    if let Some(request) = request
        && answered.is_none_or(|answered| request.at > answered)
    {
        if request.at <= now {
            return Step::Rotate(request);
        }
        wake = Some(wake.map_or(request.at, |w| w.min(request.at)));
    }
    Step::Wait(wake)
}

/// Applies `step` to the Secret's contents (a fresh key from `rng` for Issue and Rotate).
pub fn apply_step(
    step: &Step,
    current: Option<&KeySecret>,
    slug: &str,
    now: Timestamp,
    rng: &mut impl Rng,
) -> Option<KeySecret> {
    match step {
        Step::Issue => Some(KeySecret {
            key: generate_key(slug, rng),
            // A key issued now already answers any rotation requested until now (its issue time
            // is after the request); it replaced nothing, so it was not rotated.
            issued_at: Some(now),
            rotated_at: None,
            previous: None,
        }),
        Step::Rotate(request) => {
            let current = current?;
            let previous = (request.grace > SignedDuration::ZERO)
                .then(|| now.checked_add(request.grace).ok())
                .flatten()
                .map(|expires_at| PreviousKey { key: current.key.clone(), expires_at });
            Some(KeySecret { key: generate_key(slug, rng), issued_at: Some(now), rotated_at: Some(now), previous })
        }
        Step::DropPrevious => current.map(|c| KeySecret { previous: None, ..c.clone() }),
        Step::Wait(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("a timestamp")
    }

    fn rng() -> rand::rngs::StdRng {
        rand::SeedableRng::seed_from_u64(7)
    }

    #[test]
    fn a_missing_key_is_issued_and_answers_past_requests() {
        let now = t("2026-03-01T00:00:00Z");
        let request = RotationRequest { at: t("2026-02-01T00:00:00Z"), grace: DEFAULT_GRACE };
        assert_eq!(next_step(None, Some(request), now), Step::Issue);
        let issued = apply_step(&Step::Issue, None, "p", now, &mut rng()).expect("a key");
        assert_eq!(issued.issued_at, Some(now));
        assert_eq!(issued.rotated_at, None, "a first key replaced nothing");
        assert_eq!(next_step(Some(&issued), Some(request), now + SignedDuration::from_hours(1)), Step::Wait(None));
    }

    #[test]
    fn rotation_keeps_the_old_key_for_the_grace_period_then_drops_it() {
        let issued_at = t("2026-03-01T00:00:00Z");
        let mut rng = rng();
        let first = apply_step(&Step::Issue, None, "p", issued_at, &mut rng).expect("a key");
        assert_eq!(next_step(Some(&first), None, issued_at), Step::Wait(None));

        let request = RotationRequest { at: t("2026-03-02T00:00:00Z"), grace: SignedDuration::from_hours(2) };
        let now = t("2026-03-02T00:00:05Z");
        let step = next_step(Some(&first), Some(request), now);
        assert_eq!(step, Step::Rotate(request));
        let rotated = apply_step(&step, Some(&first), "p", now, &mut rng).expect("rotated");
        assert_ne!(rotated.key, first.key);
        let previous = rotated.previous.as_ref().expect("previous key kept");
        assert_eq!(previous.key, first.key);
        assert_eq!(previous.expires_at, now + SignedDuration::from_hours(2));
        assert_eq!((rotated.issued_at, rotated.rotated_at), (Some(now), Some(now)), "rotated when issued");

        // The same request is not answered twice; the controller wakes at the end of the grace.
        assert_eq!(next_step(Some(&rotated), Some(request), now), Step::Wait(Some(previous.expires_at)));
        let later = previous.expires_at;
        assert_eq!(next_step(Some(&rotated), Some(request), later), Step::DropPrevious);
        let dropped = apply_step(&Step::DropPrevious, Some(&rotated), "p", later, &mut rng).expect("kept");
        assert_eq!((dropped.key.as_str(), dropped.previous.is_none()), (rotated.key.as_str(), true));
        assert_eq!(next_step(Some(&dropped), Some(request), later), Step::Wait(None));
    }

    #[test]
    fn a_future_request_is_scheduled_and_zero_grace_keeps_no_previous_key() {
        let now = t("2026-03-01T00:00:00Z");
        let current = apply_step(&Step::Issue, None, "p", now, &mut rng()).expect("a key");
        let request = RotationRequest { at: t("2026-03-05T00:00:00Z"), grace: SignedDuration::ZERO };
        assert_eq!(next_step(Some(&current), Some(request), now), Step::Wait(Some(request.at)));
        let step = next_step(Some(&current), Some(request), request.at);
        let rotated = apply_step(&step, Some(&current), "p", request.at, &mut rng()).expect("rotated");
        assert!(rotated.previous.is_none());
    }

    #[test]
    fn the_secret_round_trips_through_data_and_annotations() {
        let now = t("2026-03-01T00:00:00Z");
        let secret = KeySecret {
            key: "sl_p_current0000000000000000000000".into(),
            issued_at: Some(now),
            rotated_at: Some(now),
            previous: Some(PreviousKey { key: "sl_p_old".into(), expires_at: t("2026-03-02T00:00:00Z") }),
        };
        let parsed = KeySecret::parse(&secret.data(), &secret.annotations(), None).expect("parses");
        assert_eq!(parsed, secret);
        assert_eq!(secret.data()[PREVIOUS_KEY_EXPIRES_FIELD].0, b"2026-03-02T00:00:00Z");
        assert!(!format!("{secret:?}").contains("current"), "Debug never shows key material");

        // Written by an earlier version: the request answered, older than the key.
        let mut annotations = secret.annotations();
        annotations.insert(ROTATED_AT_ANNOTATION.to_owned(), "2026-02-01T00:00:00Z".to_owned());
        let parsed = KeySecret::parse(&secret.data(), &annotations, None).expect("parses");
        assert_eq!(parsed.rotated_at, Some(now), "never before its issue");
    }

    #[test]
    fn the_newest_of_spec_and_annotation_wins() {
        let mut apikey = ApiKey::new("k", serde_json::from_value(serde_json::json!({})).expect("spec"));
        assert_eq!(rotation_request(&apikey), Ok(None));
        apikey.spec.rotation = Some(
            serde_json::from_value(
                serde_json::json!({"requestedAt": "2026-01-01T00:00:00Z", "gracePeriodSeconds": 60}),
            )
            .expect("rotation"),
        );
        apikey.metadata.annotations =
            Some(BTreeMap::from([(ROTATE_AT_ANNOTATION.to_owned(), "2026-02-01T00:00:00Z".to_owned())]));
        let request = rotation_request(&apikey).expect("valid").expect("requested");
        assert_eq!((request.at, request.grace), (t("2026-02-01T00:00:00Z"), SignedDuration::from_secs(60)));
        apikey.metadata.annotations = Some(BTreeMap::from([(ROTATE_AT_ANNOTATION.to_owned(), "soon".to_owned())]));
        assert!(rotation_request(&apikey).expect_err("invalid").contains("RFC 3339"));
    }
}
