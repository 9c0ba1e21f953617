//! Generated response-signing secrets: the Secret a Project with `spec.signing` and no
//! `secretName` signs with, and its rotation (a new secret every `rotationDays`, the previous one
//! signing too for `graceHours`, then dropped), pure over an injected clock. The Project
//! controller writes what [`next`] decides before it compiles.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::ByteString;
use rand::Rng;
use sluice_crds::api::{DEFAULT_SIGNING_GRACE_HOURS, DEFAULT_SIGNING_ROTATION_DAYS, SigningSpec};
use sluice_crds::compile::{PREVIOUS_SIGNING_EXPIRES_FIELD, PREVIOUS_SIGNING_SECRET_FIELD, SIGNING_SECRET_FIELD};

use crate::labels::ISSUED_AT_ANNOTATION;

/// Random bytes of a generated secret (written as 64 hex digits).
pub const SECRET_BYTES: usize = 32;

/// The contents of a generated signing Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret {
    /// The secret that signs now.
    pub secret: String,
    /// When it was generated.
    pub issued_at: Timestamp,
    /// The one it replaced, and when that stops signing (a rotation's grace period).
    pub previous: Option<(String, Timestamp)>,
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningSecret")
            .field("secret", &"<redacted>")
            .field("issued_at", &self.issued_at)
            .field("previous_expires_at", &self.previous.as_ref().map(|p| p.1))
            .finish()
    }
}

impl SigningSecret {
    /// Reads a generated Secret's data and annotations; `created` stands in for a missing issue
    /// time. `None` when it holds no secret.
    pub fn parse(
        data: &BTreeMap<String, ByteString>,
        annotations: &BTreeMap<String, String>,
        created: Option<Timestamp>,
    ) -> Option<Self> {
        let text = |field: &str| data.get(field).and_then(|v| String::from_utf8(v.0.clone()).ok());
        let secret = text(SIGNING_SECRET_FIELD).filter(|s| !s.trim().is_empty())?;
        let issued_at = annotations.get(ISSUED_AT_ANNOTATION).and_then(|t| t.parse().ok()).or(created)?;
        let expires = text(PREVIOUS_SIGNING_EXPIRES_FIELD).and_then(|t| t.trim().parse::<Timestamp>().ok());
        let previous = text(PREVIOUS_SIGNING_SECRET_FIELD).zip(expires);
        Some(Self { secret, issued_at, previous })
    }

    /// The Secret's data.
    pub fn data(&self) -> BTreeMap<String, ByteString> {
        let mut data = BTreeMap::new();
        data.insert(SIGNING_SECRET_FIELD.to_owned(), ByteString(self.secret.clone().into_bytes()));
        if let Some((previous, expires)) = &self.previous {
            data.insert(PREVIOUS_SIGNING_SECRET_FIELD.to_owned(), ByteString(previous.clone().into_bytes()));
            data.insert(PREVIOUS_SIGNING_EXPIRES_FIELD.to_owned(), ByteString(expires.to_string().into_bytes()));
        }
        data
    }

    /// The Secret's annotations.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(ISSUED_AT_ANNOTATION.to_owned(), self.issued_at.to_string())])
    }
}

/// A new secret from a CSPRNG: 32 bytes as 64 hex digits.
pub fn generate(rng: &mut impl Rng) -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rng.fill(&mut bytes);
    hex::encode(bytes)
}

/// What to do with a Project's generated signing Secret.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing now; look again at this instant (a rotation or a grace period's end), if any.
    Keep(Option<Timestamp>),
    /// Write this, then look again at the instant it names, if any.
    Write(SigningSecret, Option<Timestamp>),
}

/// Rotation every `rotationDays` (none for 0), grace `graceHours`, from the spec's defaults.
pub fn schedule(spec: &SigningSpec) -> (Option<SignedDuration>, SignedDuration) {
    let days = spec.rotation_days.unwrap_or(DEFAULT_SIGNING_ROTATION_DAYS);
    let hours = spec.grace_hours.unwrap_or(DEFAULT_SIGNING_GRACE_HOURS);
    let rotation = (days > 0).then(|| SignedDuration::from_hours(i64::from(days) * 24));
    (rotation, SignedDuration::from_hours(i64::from(hours)))
}

/// Decides the Secret's next state at `now`: a first secret, a rotation once `rotation` has
/// passed since the current one was issued (the current one then signs until `now + grace`),
/// dropping a previous secret whose grace is over, or nothing until the next of those instants.
pub fn next(
    current: Option<&SigningSecret>,
    rotation: Option<SignedDuration>,
    grace: SignedDuration,
    now: Timestamp,
    rng: &mut impl Rng,
) -> Next {
    let Some(current) = current else {
        let first = SigningSecret { secret: generate(rng), issued_at: now, previous: None };
        let wake = wake_of(&first, rotation);
        return Next::Write(first, wake);
    };
    let due = rotation.and_then(|r| current.issued_at.checked_add(r).ok());
    if due.is_some_and(|at| at <= now) {
        let previous = (grace > SignedDuration::ZERO)
            .then(|| now.checked_add(grace).ok().map(|until| (current.secret.clone(), until)))
            .flatten();
        let rotated = SigningSecret { secret: generate(rng), issued_at: now, previous };
        let wake = wake_of(&rotated, rotation);
        return Next::Write(rotated, wake);
    }
    if current.previous.as_ref().is_some_and(|(_, until)| *until <= now) {
        let kept = SigningSecret { previous: None, ..current.clone() };
        let wake = wake_of(&kept, rotation);
        return Next::Write(kept, wake);
    }
    Next::Keep(wake_of(current, rotation))
}

/// The next instant something is due: the rotation, or the previous secret's expiry.
fn wake_of(state: &SigningSecret, rotation: Option<SignedDuration>) -> Option<Timestamp> {
    let rotate = rotation.and_then(|r| state.issued_at.checked_add(r).ok());
    let expire = state.previous.as_ref().map(|p| p.1);
    match (rotate, expire) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn write(next: Next) -> (SigningSecret, Option<Timestamp>) {
        match next {
            Next::Write(state, wake) => (state, wake),
            Next::Keep(_) => panic!("expected a write"),
        }
    }

    #[test]
    fn a_first_secret_is_generated_and_rotates_with_a_grace_period() {
        let mut rng = rand::rng();
        let (rotation, grace) = schedule(&SigningSpec::default());
        assert_eq!((rotation, grace), (Some(SignedDuration::from_hours(720)), SignedDuration::from_hours(24)));
        let t0 = at("2026-01-01T00:00:00Z");
        let (first, wake) = write(next(None, rotation, grace, t0, &mut rng));
        assert_eq!(first.secret.len(), 64);
        assert!(first.secret.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!((first.issued_at, first.previous.clone(), wake), (t0, None, Some(at("2026-01-31T00:00:00Z"))));

        // Before the rotation is due: nothing, look again when it is.
        let t1 = at("2026-01-20T00:00:00Z");
        assert_eq!(next(Some(&first), rotation, grace, t1, &mut rng), Next::Keep(Some(at("2026-01-31T00:00:00Z"))));

        // Due: a new secret, the old one signing for the grace period.
        let t2 = at("2026-01-31T00:00:01Z");
        let (rotated, wake) = write(next(Some(&first), rotation, grace, t2, &mut rng));
        assert_ne!(rotated.secret, first.secret);
        assert_eq!(rotated.previous, Some((first.secret.clone(), at("2026-02-01T00:00:01Z"))));
        assert_eq!(wake, Some(at("2026-02-01T00:00:01Z")), "the grace period ends first");

        // Grace over: the previous one goes, the current one stays.
        let t3 = at("2026-02-01T00:00:02Z");
        let (kept, wake) = write(next(Some(&rotated), rotation, grace, t3, &mut rng));
        assert_eq!((kept.secret.clone(), kept.previous.clone()), (rotated.secret.clone(), None));
        assert_eq!(wake, Some(at("2026-03-02T00:00:01Z")));
    }

    #[test]
    fn rotation_zero_never_rotates_and_grace_zero_keeps_no_previous() {
        let mut rng = rand::rng();
        let spec = SigningSpec { rotation_days: Some(0), grace_hours: Some(0), ..SigningSpec::default() };
        let (rotation, grace) = schedule(&spec);
        assert_eq!(rotation, None);
        let (first, wake) = write(next(None, rotation, grace, at("2026-01-01T00:00:00Z"), &mut rng));
        assert_eq!(wake, None);
        assert_eq!(next(Some(&first), rotation, grace, at("2036-01-01T00:00:00Z"), &mut rng), Next::Keep(None));
        let (rotated, _) =
            write(next(Some(&first), Some(SignedDuration::from_hours(1)), grace, at("2026-01-02T00:00:00Z"), &mut rng));
        assert_eq!(rotated.previous, None, "no grace: the old secret stops at once");
    }

    #[test]
    fn the_secret_round_trips_through_its_data_and_annotations() {
        let state = SigningSecret {
            secret: "a".repeat(64),
            issued_at: at("2026-01-01T00:00:00Z"),
            previous: Some(("b".repeat(64), at("2026-01-02T00:00:00Z"))),
        };
        assert_eq!(SigningSecret::parse(&state.data(), &state.annotations(), None), Some(state.clone()));
        assert!(!format!("{state:?}").contains("aaaa"), "Debug never shows a secret");
        let created = at("2025-12-31T00:00:00Z");
        let parsed = SigningSecret::parse(&state.data(), &BTreeMap::new(), Some(created)).expect("parsed");
        assert_eq!(parsed.issued_at, created, "the creation time stands in for a missing annotation");
        assert_eq!(SigningSecret::parse(&BTreeMap::new(), &state.annotations(), None), None);
    }
}
