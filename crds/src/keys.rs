//! The format of Sluice API keys, shared by everything that mints them: the operator (into a
//! Secret), the gateway's management API and `kubectl sluice` (both store only the hash).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rand::Rng;
use rand::distr::Alphanumeric;

use crate::api::{HashedKey, PreviousHashedKey};
use crate::config::hash_key;

/// Base62 characters of randomness in a generated key: 43 x log2(62) = 256 bits, as much
/// entropy as 32 random bytes.
pub const RANDOM_CHARS: usize = 43;
/// Characters of a key shown in `status.keyPrefix`.
pub const PREFIX_CHARS: usize = 12;
/// Shortest key whose prefix is shown: shorter (bring-your-own) keys would give away too much.
pub const MIN_LENGTH_FOR_PREFIX: usize = 40;

/// A new key for project `slug`: `sl_<slug>_<43 base62 characters>`, from a CSPRNG.
pub fn generate_key(slug: &str, rng: &mut impl Rng) -> String {
    let random: String = rng.sample_iter(Alphanumeric).take(RANDOM_CHARS).map(char::from).collect();
    format!("sl_{slug}_{random}")
}

/// What `status.keyPrefix` shows of a key: its first 12 characters, only for keys long enough
/// that the rest stays secret.
pub fn key_prefix(material: &str) -> Option<String> {
    let material = material.trim();
    (material.len() >= MIN_LENGTH_FOR_PREFIX && material.is_ascii()).then(|| material[..PREFIX_CHARS].to_owned())
}

/// Mints a key for project `slug`: the plaintext, to show once, and the `spec.keyHash` that
/// stores it. `replacing` is the hash being rotated away, kept working until `grace_until`.
pub fn mint(
    slug: &str,
    now: Timestamp,
    replacing: Option<(&HashedKey, Timestamp)>,
    rng: &mut impl Rng,
) -> (String, HashedKey) {
    let key = generate_key(slug, rng);
    let previous = replacing.filter(|(_, until)| *until > now).map(|(old, until)| PreviousHashedKey {
        sha256: old.sha256.clone(),
        prefix: old.prefix.clone(),
        expires_at: Time(until),
    });
    let hashed =
        HashedKey { sha256: hash_key(key.as_bytes()), prefix: key_prefix(&key), issued_at: Some(Time(now)), previous };
    (key, hashed)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn generated_keys_have_the_format_and_256_bits() {
        let mut rng = rand::rng();
        let key = generate_key("team-a", &mut rng);
        let random = key.strip_prefix("sl_team-a_").expect("prefix");
        assert_eq!(random.len(), RANDOM_CHARS);
        assert!(random.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!((RANDOM_CHARS as f64) * 62f64.log2() >= 256.0);
        // Distinct keys, and every base62 character shows up across a few thousand draws.
        let keys: std::collections::HashSet<String> = (0..2000).map(|_| generate_key("p", &mut rng)).collect();
        assert_eq!(keys.len(), 2000);
        let chars: std::collections::HashSet<char> =
            keys.iter().flat_map(|k| k[5..].chars().collect::<Vec<_>>()).collect();
        assert_eq!(chars.len(), 62);
    }

    #[test]
    fn the_prefix_shows_twelve_characters_of_long_keys_only() {
        let key = generate_key("team-a", &mut rand::rngs::StdRng::seed_from_u64(7));
        assert_eq!(key_prefix(&key).as_deref(), Some(&key[..12]));
        assert!(key_prefix(&key).expect("prefix").starts_with("sl_team-a_"));
        assert_eq!(key_prefix("short-but-valid-key-material"), None);
    }

    #[test]
    fn a_minted_key_is_stored_as_its_hash_and_a_rotation_keeps_the_old_one_for_its_grace() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let now = t("2026-12-02T10:00:00Z");
        let (key, hashed) = mint("demo", now, None, &mut rng);
        assert_eq!(hashed.sha256, hash_key(key.as_bytes()));
        assert_eq!(hashed.prefix.as_deref(), Some(&key[..PREFIX_CHARS]));
        assert!(hashed.previous.is_none());
        assert!(!serde_json::to_string(&hashed).expect("json").contains(&key[PREFIX_CHARS..]), "no plaintext");

        let until = t("2026-12-03T10:00:00Z");
        let (second, rotated) = mint("demo", now, Some((&hashed, until)), &mut rng);
        assert_ne!(second, key);
        let previous = rotated.previous.expect("previous kept");
        assert_eq!((previous.sha256, previous.expires_at.0), (hashed.sha256.clone(), until));
        let (_, no_grace) = mint("demo", now, Some((&hashed, now)), &mut rng);
        assert!(no_grace.previous.is_none(), "a grace of zero keeps nothing");
    }
}
