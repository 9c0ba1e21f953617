//! JSON Web Key Sets (RFC 7517): the public keys a project's JWTs are checked with. A JWKS
//! document is read here and every key checked for what the gateway can verify with, so the
//! compiler (a JWKS Secret) and the gateway (a JWKS URL) accept exactly the same documents.
//! Symmetric (`oct`) keys are refused outright: a shared secret next to public keys is how
//! algorithm-confusion attacks start.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::api::JwtAlgorithm;

/// Most keys a JWKS may hold.
pub const MAX_KEYS: usize = 100;
/// Largest JWKS document read (a fetched one is cut off past this).
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_BYTES: usize = 256;
/// Largest RSA modulus accepted, in bytes (8192 bits).
const MAX_RSA_BYTES: usize = 1024;

/// A public key the gateway can check signatures with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Jwk {
    /// Key type.
    pub kty: KeyType,
    /// Key id, matched against a token's `kid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The only algorithm this key checks, when the JWKS names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<JwtAlgorithm>,
    /// Curve of an EC or OKP key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<Curve>,
    /// RSA modulus (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA exponent (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// EC x coordinate, or the Ed25519 public key (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// EC y coordinate (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

/// A key type the gateway verifies with.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// RSA (RS*, PS*).
    #[serde(rename = "RSA")]
    Rsa,
    /// Elliptic curve (ES256, ES384).
    #[serde(rename = "EC")]
    Ec,
    /// Octet key pair (EdDSA with Ed25519).
    #[serde(rename = "OKP")]
    Okp,
}

/// A curve the gateway verifies with.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256 (ES256).
    #[serde(rename = "P-256")]
    P256,
    /// NIST P-384 (ES384).
    #[serde(rename = "P-384")]
    P384,
    /// Ed25519 (EdDSA).
    Ed25519,
}

impl Jwk {
    /// Whether this key may check a signature made with `alg`: the algorithm fits the key's
    /// type and curve, and is the key's own `alg` when it names one.
    pub fn fits(&self, alg: JwtAlgorithm) -> bool {
        use JwtAlgorithm as A;
        let by_type = match (self.kty, self.crv) {
            (KeyType::Rsa, _) => matches!(alg, A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512),
            (KeyType::Ec, Some(Curve::P256)) => alg == A::ES256,
            (KeyType::Ec, Some(Curve::P384)) => alg == A::ES384,
            (KeyType::Okp, Some(Curve::Ed25519)) => alg == A::EdDSA,
            _ => false,
        };
        by_type && self.alg.is_none_or(|own| own == alg)
    }

    /// The decoded bytes of a base64url parameter (empty when absent or not base64url; a key
    /// that [`parse`] returned has every parameter it needs, well formed).
    pub fn bytes(value: Option<&str>) -> Vec<u8> {
        value.and_then(decode_base64url).unwrap_or_default()
    }
}

/// Decodes unpadded base64url (JWK parameters and JWT segments).
pub fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// The usable keys of a JWKS document, and why others were left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Jwks {
    /// Keys to verify with.
    pub keys: Vec<Jwk>,
    /// Keys skipped (encryption keys, unsupported types or curves), each with why.
    pub skipped: Vec<String>,
}

/// Reads a JWKS document. Fails on a document that is not a JWKS, a symmetric (`oct`) key, a
/// malformed key of a supported type, or a set with no usable key at all.
pub fn parse(document: &[u8]) -> Result<Jwks, String> {
    if document.len() > MAX_DOCUMENT_BYTES {
        return Err(format!("the JWKS is larger than {MAX_DOCUMENT_BYTES} bytes"));
    }
    let value: Value = serde_json::from_slice(document).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
    let keys = value
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the JWKS has no \"keys\" list (expected {\"keys\": [...]})")?;
    if keys.len() > MAX_KEYS {
        return Err(format!("the JWKS has {} keys; at most {MAX_KEYS} are read", keys.len()));
    }
    let mut jwks = Jwks::default();
    for (index, key) in keys.iter().enumerate() {
        let object = key.as_object().ok_or_else(|| format!("key {index} is not an object"))?;
        let name = match object.get("kid").and_then(Value::as_str) {
            Some(kid) => format!("key {index} (kid {kid:?})"),
            None => format!("key {index}"),
        };
        match read_key(object) {
            Ok(Some(jwk)) => jwks.keys.push(jwk),
            Ok(None) => {}
            Err(Skip::Ignored(why)) => jwks.skipped.push(format!("{name}: {why}")),
            Err(Skip::Invalid(why)) => return Err(format!("{name}: {why}")),
        }
    }
    if jwks.keys.is_empty() {
        let why = if jwks.skipped.is_empty() { String::new() } else { format!(" ({})", jwks.skipped.join("; ")) };
        return Err(format!("the JWKS has no RSA, P-256, P-384 or Ed25519 signing key{why}"));
    }
    Ok(jwks)
}

enum Skip {
    /// Not for the gateway, harmless: left out.
    Ignored(String),
    /// Wrong: the whole document is refused.
    Invalid(String),
}

fn read_key(object: &Map<String, Value>) -> Result<Option<Jwk>, Skip> {
    let text = |field: &str| -> Result<Option<String>, Skip> {
        match object.get(field) {
            None => Ok(None),
            Some(Value::String(value)) => Ok(Some(value.clone())),
            Some(_) => Err(Skip::Invalid(format!("{field:?} is not a string"))),
        }
    };
    if text("use")?.is_some_and(|usage| usage != "sig") {
        return Err(Skip::Ignored("not a signing key (\"use\" is not \"sig\")".into()));
    }
    let kty = match text("kty")?.as_deref() {
        Some("RSA") => KeyType::Rsa,
        Some("EC") => KeyType::Ec,
        Some("OKP") => KeyType::Okp,
        Some("oct") => {
            return Err(Skip::Invalid(
                "symmetric (\"oct\") keys are not accepted: HMAC-signed tokens are never verified".into(),
            ));
        }
        Some(other) => return Err(Skip::Ignored(format!("key type {other:?} is not supported"))),
        None => return Err(Skip::Invalid("no \"kty\"".into())),
    };
    let alg = match text("alg")? {
        None => None,
        Some(name) => match JwtAlgorithm::from_name(&name) {
            Some(alg) => Some(alg),
            None => return Err(Skip::Ignored(format!("algorithm {name:?} is not a supported signature algorithm"))),
        },
    };
    let crv = match (kty, text("crv")?.as_deref()) {
        (KeyType::Rsa, _) => None,
        (_, Some("P-256")) => Some(Curve::P256),
        (_, Some("P-384")) => Some(Curve::P384),
        (_, Some("Ed25519")) => Some(Curve::Ed25519),
        (_, Some(other)) => return Err(Skip::Ignored(format!("curve {other:?} is not supported"))),
        (_, None) => return Err(Skip::Invalid("no \"crv\"".into())),
    };
    let jwk = Jwk { kty, kid: text("kid")?, alg, crv, n: text("n")?, e: text("e")?, x: text("x")?, y: text("y")? };
    let param = |field: &str, value: &Option<String>| -> Result<Vec<u8>, Skip> {
        let value = value.as_deref().ok_or_else(|| Skip::Invalid(format!("no {field:?}")))?;
        decode_base64url(value).ok_or_else(|| Skip::Invalid(format!("{field:?} is not unpadded base64url")))
    };
    let sized = |field: &str, value: &Option<String>, size: usize| -> Result<(), Skip> {
        let bytes = param(field, value)?;
        if bytes.len() == size {
            Ok(())
        } else {
            Err(Skip::Invalid(format!("{field:?} is {} bytes; this curve's are {size}", bytes.len())))
        }
    };
    match (kty, crv) {
        (KeyType::Rsa, _) => {
            let n = param("n", &jwk.n)?;
            let significant = n.iter().skip_while(|b| **b == 0).count();
            if !(MIN_RSA_BYTES..=MAX_RSA_BYTES).contains(&significant) {
                return Err(Skip::Invalid(format!(
                    "RSA modulus of {} bits: 2048 to 8192 are accepted",
                    significant * 8
                )));
            }
            let e = param("e", &jwk.e)?;
            if e.is_empty() || e.len() > 8 {
                return Err(Skip::Invalid("\"e\" is not an RSA exponent".into()));
            }
        }
        (KeyType::Ec, Some(Curve::P256)) => {
            sized("x", &jwk.x, 32)?;
            sized("y", &jwk.y, 32)?;
        }
        (KeyType::Ec, Some(Curve::P384)) => {
            sized("x", &jwk.x, 48)?;
            sized("y", &jwk.y, 48)?;
        }
        (KeyType::Okp, Some(Curve::Ed25519)) => sized("x", &jwk.x, 32)?,
        (_, curve) => {
            return Err(Skip::Invalid(format!("curve {curve:?} does not go with key type {kty:?}")));
        }
    }
    if let Some(alg) = alg
        && !jwk.fits(alg)
    {
        return Err(Skip::Invalid(format!("algorithm {} does not go with this key's type", alg.as_str())));
    }
    Ok(Some(jwk))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn doc(keys: &[Value]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).expect("json")
    }

    #[test]
    fn usable_keys_are_read_and_others_skipped_with_why() {
        let ec = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "a", "x": b64(&[1; 32]), "y": b64(&[2; 32])});
        let ed = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": b64(&[3; 32])});
        let rsa = serde_json::json!({"kty": "RSA", "kid": "r", "n": b64(&[0xc5; 256]), "e": "AQAB", "x5c": ["..."]});
        let enc = serde_json::json!({"kty": "RSA", "use": "enc", "n": "AA", "e": "AQAB"});
        let p521 = serde_json::json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"});
        let jwks = parse(&doc(&[ec, ed, rsa, enc, p521])).expect("parses");
        assert_eq!(jwks.keys.len(), 3);
        assert_eq!(jwks.keys[0].kid.as_deref(), Some("a"));
        assert!(jwks.keys[0].fits(JwtAlgorithm::ES256) && !jwks.keys[0].fits(JwtAlgorithm::ES384));
        assert!(jwks.keys[1].fits(JwtAlgorithm::EdDSA) && !jwks.keys[1].fits(JwtAlgorithm::RS256));
        assert!(jwks.keys[2].fits(JwtAlgorithm::PS512) && !jwks.keys[2].fits(JwtAlgorithm::ES256));
        assert_eq!(jwks.skipped.len(), 2, "{:?}", jwks.skipped);
        assert!(jwks.skipped[1].contains("P-521"));
    }

    #[test]
    fn symmetric_and_malformed_keys_refuse_the_document() {
        let refused = |key: Value, needle: &str| {
            let error = parse(&doc(&[key])).expect_err("refused");
            assert!(error.contains(needle), "{error}");
        };
        refused(serde_json::json!({"kty": "oct", "k": "c2VjcmV0"}), "symmetric");
        refused(
            serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(&[1; 31]), "y": b64(&[2; 32])}),
            "\"x\" is 31",
        );
        refused(serde_json::json!({"kty": "RSA", "n": b64(&[0xc5; 128]), "e": "AQAB"}), "1024 bits");
        refused(serde_json::json!({"kty": "RSA", "n": "not base64!", "e": "AQAB"}), "base64url");
        refused(serde_json::json!({"kty": "OKP", "crv": "Ed25519", "alg": "ES256", "x": b64(&[3; 32])}), "ES256");
        refused(serde_json::json!({"kty": "RSA", "use": "enc", "n": "AA", "e": "AQAB"}), "no RSA, P-256");
        assert!(parse(b"{}").expect_err("no keys").contains("\"keys\""));
        assert!(parse(b"nope").expect_err("not json").contains("not JSON"));
    }
}
