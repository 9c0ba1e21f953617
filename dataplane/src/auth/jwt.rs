//! JWT bearer tokens: a pure check of a compact JWS against a project's settings and key set,
//! in the order that leaks least: the shape, the algorithm (on the project's list and fitting
//! the key's type, so an RSA key never checks an HMAC or ECDSA signature and `none` never
//! passes), the key (by `kid`, or the only fitting key when the token names none), the
//! signature, and only then the claims (`exp`, `nbf`, `iat` within the clock skew, `iss`,
//! `aud`, the subject). Keys named inside the token (`jku`, `x5u`, `jwk`) are never used.
//! Every refusal is a [`TokenError`] whose code says why and whose message never echoes the
//! token.

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm};
use serde_json::{Map, Value};
use sluice_crds::api::{JwtAlgorithm, Scope};
use sluice_crds::config::{Jwk, JwtConfig};
use sluice_crds::jwks::{Curve, KeyType, decode_base64url};

/// Longest token read: far more than any identity provider issues, little enough to parse.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest subject kept (it becomes a key id in logs, usage and limit keys).
pub const MAX_SUBJECT_BYTES: usize = 256;

/// Why a bearer token was refused. Each has its own error `code` (all are 401).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS with a JSON header and payload.
    #[error("the token is not a well-formed JWT ({0})")]
    Malformed(&'static str),
    /// `alg` is not on the project's list, or does not fit the key.
    #[error("the token's algorithm {0} is not accepted")]
    AlgorithmNotAllowed(&'static str),
    /// No key of the project's set has the token's `kid` (or, without one, exactly one fits).
    #[error("{0}")]
    KeyUnknown(&'static str),
    /// The signature does not verify.
    #[error("the token's signature does not verify")]
    SignatureInvalid,
    /// `exp` has passed (beyond the skew).
    #[error("the token has expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the skew).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `aud` names none of the project's audiences.
    #[error("the token's audience is not accepted here")]
    AudienceInvalid,
    /// `iss` is not the project's issuer.
    #[error("the token's issuer is not accepted here")]
    IssuerInvalid,
    /// A required claim is missing or of the wrong type.
    #[error("the token's claims are invalid ({0})")]
    ClaimsInvalid(&'static str),
}

impl TokenError {
    /// The OpenAI error `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "token_malformed",
            Self::AlgorithmNotAllowed(_) => "token_algorithm_not_allowed",
            Self::KeyUnknown(_) => "token_key_unknown",
            Self::SignatureInvalid => "token_signature_invalid",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::AudienceInvalid => "token_audience_invalid",
            Self::IssuerInvalid => "token_issuer_invalid",
            Self::ClaimsInvalid(_) => "token_claims_invalid",
        }
    }

    /// What the error message says.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// Whether a credential is shaped like a JWT (three base64url segments): API keys have no dots,
/// so this tells them apart before anything is decoded.
pub fn looks_like_jwt(credential: &[u8]) -> bool {
    // An API key (every request's credential, most of the time) stops at the first test.
    credential.contains(&b'.')
        && credential.iter().filter(|b| **b == b'.').count() == 2
        && credential.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// One key of a project's set, decoded once.
#[derive(Debug)]
struct VerifyingKey {
    jwk: Jwk,
    material: Material,
}

#[derive(Debug)]
enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed EC point or an Ed25519 public key.
    Point(Vec<u8>),
}

/// A project's verification keys.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// The keys of a checked JWKS ([`sluice_crds::jwks::parse`]).
    pub fn new(jwks: &[Jwk]) -> Self {
        let keys = jwks
            .iter()
            .map(|jwk| {
                let material = match jwk.kty {
                    KeyType::Rsa => Material::Rsa { n: Jwk::bytes(jwk.n.as_deref()), e: Jwk::bytes(jwk.e.as_deref()) },
                    KeyType::Ec => {
                        let mut point = vec![0x04];
                        point.extend(Jwk::bytes(jwk.x.as_deref()));
                        point.extend(Jwk::bytes(jwk.y.as_deref()));
                        Material::Point(point)
                    }
                    KeyType::Okp => Material::Point(Jwk::bytes(jwk.x.as_deref())),
                };
                VerifyingKey { jwk: jwk.clone(), material }
            })
            .collect();
        Self { keys }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no key (a JWKS URL not fetched yet).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key has this id.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.jwk.kid.as_deref() == Some(kid))
    }
}

/// What a verified token says about its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The subject claim's value.
    pub subject: String,
    /// Sluice scopes from the scopes claim (or the project's default ones).
    pub scopes: Vec<Scope>,
    /// The tier claim's value, when the project reads one and the token has it.
    pub tier: Option<String>,
    /// `exp`, seconds since the epoch.
    pub expires_at: i64,
}

/// Checks `token` against the project's settings and keys at `now` (seconds since the epoch).
pub fn verify(token: &[u8], config: &JwtConfig, keys: &KeySet, now: i64) -> Result<Verified, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("too long"));
    }
    let text = std::str::from_utf8(token).map_err(|_| TokenError::Malformed("not ASCII"))?;
    let mut parts = text.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("not three segments"));
    };
    let header = json_object(header_b64).ok_or(TokenError::Malformed("the header is not a base64url JSON object"))?;
    let alg_name = header.get("alg").and_then(Value::as_str).ok_or(TokenError::Malformed("the header has no alg"))?;
    if header.contains_key("crit") {
        return Err(TokenError::Malformed("critical header extensions are not supported"));
    }
    let alg = JwtAlgorithm::from_name(alg_name)
        .filter(|alg| config.algorithms.contains(alg))
        .ok_or(TokenError::AlgorithmNotAllowed(shown_alg(alg_name)))?;
    let key = choose_key(keys, header.get("kid").map(|kid| kid.as_str().ok_or(())), alg)?;
    let signature = decode_base64url(signature_b64).ok_or(TokenError::Malformed("the signature is not base64url"))?;
    let signed = &text.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    if !signature_verifies(key, alg, signed, &signature) {
        return Err(TokenError::SignatureInvalid);
    }
    let claims = json_object(payload_b64).ok_or(TokenError::Malformed("the payload is not a base64url JSON object"))?;
    check_claims(&claims, config, now)
}

/// The `alg` as a message may show it: a known name, never client text.
fn shown_alg(name: &str) -> &'static str {
    const KNOWN: [&str; 14] = [
        "none", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
        "ES512", "EdDSA",
    ];
    KNOWN.into_iter().find(|known| known.eq_ignore_ascii_case(name)).unwrap_or("(unknown)")
}

fn json_object(segment: &str) -> Option<Map<String, Value>> {
    match serde_json::from_slice(&decode_base64url(segment)?).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// The key that checks a token naming `kid` (or none) and signed with `alg`.
fn choose_key<'k>(
    keys: &'k KeySet,
    kid: Option<Result<&str, ()>>,
    alg: JwtAlgorithm,
) -> Result<&'k VerifyingKey, TokenError> {
    if keys.is_empty() {
        return Err(TokenError::KeyUnknown("the project's signing keys are not loaded yet"));
    }
    match kid {
        Some(Err(())) => Err(TokenError::Malformed("kid is not a string")),
        Some(Ok(kid)) => {
            let mut named = keys.keys.iter().filter(|k| k.jwk.kid.as_deref() == Some(kid)).peekable();
            if named.peek().is_none() {
                return Err(TokenError::KeyUnknown("no key of the project has the token's kid"));
            }
            named.find(|k| k.jwk.fits(alg)).ok_or(TokenError::AlgorithmNotAllowed(alg.as_str()))
        }
        None => {
            let mut fitting = keys.keys.iter().filter(|k| k.jwk.fits(alg));
            match (fitting.next(), fitting.next()) {
                (Some(only), None) => Ok(only),
                (None, _) => Err(TokenError::KeyUnknown("no key of the project verifies the token's algorithm")),
                (Some(_), Some(_)) => Err(TokenError::KeyUnknown(
                    "the token names no kid and several of the project's keys could sign it",
                )),
            }
        }
    }
}

fn signature_verifies(key: &VerifyingKey, alg: JwtAlgorithm, message: &[u8], signature: &[u8]) -> bool {
    use JwtAlgorithm as A;
    let rsa = |params: &'static signature::RsaParameters| match &key.material {
        Material::Rsa { n, e } => RsaPublicKeyComponents { n, e }.verify(params, message, signature).is_ok(),
        Material::Point(_) => false,
    };
    let point = |algorithm: &'static dyn VerificationAlgorithm| match &key.material {
        Material::Point(point) => UnparsedPublicKey::new(algorithm, point).verify(message, signature).is_ok(),
        Material::Rsa { .. } => false,
    };
    // `choose_key` only hands over keys that fit `alg`; the type is checked again here so a
    // mismatch can never reach a verifier.
    match (alg, key.jwk.kty, key.jwk.crv) {
        (A::RS256, KeyType::Rsa, _) => rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
        (A::RS384, KeyType::Rsa, _) => rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
        (A::RS512, KeyType::Rsa, _) => rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
        (A::PS256, KeyType::Rsa, _) => rsa(&signature::RSA_PSS_2048_8192_SHA256),
        (A::PS384, KeyType::Rsa, _) => rsa(&signature::RSA_PSS_2048_8192_SHA384),
        (A::PS512, KeyType::Rsa, _) => rsa(&signature::RSA_PSS_2048_8192_SHA512),
        (A::ES256, KeyType::Ec, Some(Curve::P256)) => point(&signature::ECDSA_P256_SHA256_FIXED),
        (A::ES384, KeyType::Ec, Some(Curve::P384)) => point(&signature::ECDSA_P384_SHA384_FIXED),
        (A::EdDSA, KeyType::Okp, Some(Curve::Ed25519)) => point(&signature::ED25519),
        _ => false,
    }
}

/// A NumericDate claim: seconds since the epoch (fractions dropped).
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_i64()
            .or_else(|| value.as_f64().filter(|f| f.is_finite()).map(|f| f.floor() as i64))
            .map(Some)
            .ok_or(TokenError::ClaimsInvalid(match name {
                "exp" => "exp is not a number",
                "nbf" => "nbf is not a number",
                _ => "iat is not a number",
            })),
    }
}

fn check_claims(claims: &Map<String, Value>, config: &JwtConfig, now: i64) -> Result<Verified, TokenError> {
    let skew = i64::from(config.clock_skew_seconds);
    let expires_at = numeric_date(claims, "exp")?.ok_or(TokenError::ClaimsInvalid("no exp claim"))?;
    if now >= expires_at.saturating_add(skew) {
        return Err(TokenError::Expired);
    }
    for name in ["nbf", "iat"] {
        if numeric_date(claims, name)?.is_some_and(|at| at > now.saturating_add(skew)) {
            return Err(TokenError::NotYetValid);
        }
    }
    if claims.get("iss").and_then(Value::as_str) != Some(config.issuer.as_str()) {
        return Err(TokenError::IssuerInvalid);
    }
    let accepted = |aud: &Value| aud.as_str().is_some_and(|aud| config.audiences.iter().any(|a| a == aud));
    let audience_ok = match claims.get("aud") {
        Some(Value::Array(list)) => list.iter().any(accepted),
        Some(one) => accepted(one),
        None => false,
    };
    if !audience_ok {
        return Err(TokenError::AudienceInvalid);
    }
    let subject = claims
        .get(&config.subject_claim)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(TokenError::ClaimsInvalid("the subject claim is missing or not a string"))?;
    if subject.len() > MAX_SUBJECT_BYTES || subject.chars().any(char::is_control) {
        return Err(TokenError::ClaimsInvalid("the subject claim is too long or has control characters"));
    }
    let scopes = match claims.get(&config.scopes_claim) {
        None => config.default_scopes.clone(),
        Some(Value::String(text)) => sluice_scopes(text.split_ascii_whitespace()),
        Some(Value::Array(list)) => sluice_scopes(list.iter().filter_map(Value::as_str)),
        Some(_) => return Err(TokenError::ClaimsInvalid("the scopes claim is not a string or a list")),
    };
    let tier =
        config.tier_claim.as_ref().and_then(|claim| claims.get(claim)).and_then(Value::as_str).map(str::to_owned);
    Ok(Verified { subject: subject.to_owned(), scopes, tier, expires_at })
}

/// The Sluice scopes among a token's scope values (others are the identity provider's own).
fn sluice_scopes<'v>(values: impl Iterator<Item = &'v str>) -> Vec<Scope> {
    let all = [Scope::Inference, Scope::ModelsRead, Scope::UsageRead, Scope::Management];
    let mut scopes: Vec<Scope> = values.filter_map(|value| all.into_iter().find(|s| s.as_str() == value)).collect();
    scopes.sort();
    scopes.dedup();
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;
    use sluice_crds::config::JwksConfig;

    const NOW: i64 = 1_800_000_000;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn config(algorithms: &[JwtAlgorithm]) -> JwtConfig {
        JwtConfig {
            issuer: "https://idp.example".into(),
            audiences: vec!["sluice".into(), "other".into()],
            algorithms: algorithms.to_vec(),
            clock_skew_seconds: 60,
            scopes_claim: "scope".into(),
            default_scopes: vec![Scope::Inference],
            tier_claim: Some("tier".into()),
            subject_claim: "sub".into(),
            budget: None,
            jwks: JwksConfig::Keys(vec![]),
        }
    }

    fn claims() -> Value {
        json!({"iss": "https://idp.example", "aud": "sluice", "sub": "alice", "exp": NOW + 300, "iat": NOW})
    }

    /// A P-256 key pair with its JWK.
    struct Es256 {
        pair: EcdsaKeyPair,
        jwk: Jwk,
    }

    impl Es256 {
        fn new(kid: &str) -> Self {
            let pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("key");
            let point = pair.public_key().as_ref();
            let jwk = serde_json::from_value(json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..65])
            }))
            .expect("jwk");
            Self { pair, jwk }
        }

        fn sign(&self, header: Value, claims: &Value) -> String {
            let signing_input =
                format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
            let signature = self.pair.sign(&SystemRandom::new(), signing_input.as_bytes()).expect("sign");
            format!("{signing_input}.{}", b64(signature.as_ref()))
        }

        fn token(&self, claims: &Value) -> String {
            self.sign(json!({"alg": "ES256", "typ": "JWT", "kid": self.jwk.kid}), claims)
        }
    }

    /// The test RSA key of the black-box tests (made with openssl), with its JWK.
    fn rsa() -> (RsaKeyPair, Jwk) {
        let pem = include_str!("../../tests/fixtures/jwt-rsa.pem");
        let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(der).expect("pem");
        let pair = RsaKeyPair::from_pkcs8(&der).expect("pkcs8");
        let jwk = serde_json::from_str(include_str!("../../tests/fixtures/jwt-rsa.jwk.json")).expect("jwk");
        (pair, jwk)
    }

    fn check(token: &str, config: &JwtConfig, keys: &[Jwk]) -> Result<Verified, TokenError> {
        verify(token.as_bytes(), config, &KeySet::new(keys), NOW)
    }

    #[test]
    fn a_token_signed_by_a_project_key_passes_with_its_claims() {
        let key = Es256::new("k1");
        let mut claims = claims();
        claims["scope"] = json!("openid inference usage.read");
        claims["tier"] = json!("gold");
        claims["aud"] = json!(["someone", "other"]);
        let verified =
            check(&key.token(&claims), &config(&[JwtAlgorithm::ES256]), std::slice::from_ref(&key.jwk)).expect("valid");
        assert_eq!(verified.subject, "alice");
        assert_eq!(verified.scopes, [Scope::Inference, Scope::UsageRead]);
        assert_eq!(verified.tier.as_deref(), Some("gold"));
        assert_eq!(verified.expires_at, NOW + 300);

        claims["scope"] = json!(["management", "unknown"]);
        let verified =
            check(&key.token(&claims), &config(&[JwtAlgorithm::ES256]), std::slice::from_ref(&key.jwk)).expect("valid");
        assert_eq!(verified.scopes, [Scope::Management], "unknown values are ignored");
        claims.as_object_mut().expect("object").remove("scope");
        let verified =
            check(&key.token(&claims), &config(&[JwtAlgorithm::ES256]), std::slice::from_ref(&key.jwk)).expect("valid");
        assert_eq!(verified.scopes, [Scope::Inference], "the default scopes");
    }

    #[test]
    fn ed25519_and_rsa_tokens_pass_and_a_token_without_kid_uses_the_only_fitting_key() {
        let ed = Ed25519KeyPair::generate().expect("key");
        let jwk: Jwk =
            serde_json::from_value(json!({"kty": "OKP", "crv": "Ed25519", "x": b64(ed.public_key().as_ref())}))
                .expect("jwk");
        let input = format!("{}.{}", b64(br#"{"alg":"EdDSA"}"#), b64(claims().to_string().as_bytes()));
        let token = format!("{input}.{}", b64(ed.sign(input.as_bytes()).as_ref()));
        let es = Es256::new("other");
        check(&token, &config(&[JwtAlgorithm::EdDSA, JwtAlgorithm::ES256]), &[es.jwk.clone(), jwk.clone()])
            .expect("the only Ed25519 key verifies it");

        let (pair, rsa_jwk) = rsa();
        let input = format!("{}.{}", b64(br#"{"alg":"RS256","kid":"rsa-1"}"#), b64(claims().to_string().as_bytes()));
        let mut signature = vec![0; pair.public_modulus_len()];
        pair.sign(&signature::RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut signature).expect("sign");
        let token = format!("{input}.{}", b64(&signature));
        check(&token, &config(&[JwtAlgorithm::RS256]), &[rsa_jwk.clone(), jwk]).expect("RS256 verifies");
        assert_eq!(
            check(&token, &config(&[JwtAlgorithm::ES256]), &[rsa_jwk]).map_err(|e| e.code()),
            Err("token_algorithm_not_allowed"),
            "RS256 off the project's list"
        );
    }

    #[test]
    fn each_bad_token_is_refused_with_its_reason() {
        let key = Es256::new("k1");
        let jwks = [key.jwk.clone()];
        let config = config(&[JwtAlgorithm::ES256, JwtAlgorithm::RS256]);
        let refused = |token: &str| check(token, &config, &jwks).expect_err("refused").code();
        let with = |field: &str, value: Value| {
            let mut claims = claims();
            claims[field] = value;
            key.token(&claims)
        };
        assert_eq!(refused(&with("exp", json!(NOW - 61))), "token_expired");
        assert_eq!(refused(&with("nbf", json!(NOW + 61))), "token_not_yet_valid");
        assert_eq!(refused(&with("iat", json!(NOW + 3600))), "token_not_yet_valid");
        assert_eq!(refused(&with("aud", json!("someone-else"))), "token_audience_invalid");
        assert_eq!(refused(&with("aud", json!(["a", "b"]))), "token_audience_invalid");
        assert_eq!(refused(&with("iss", json!("https://evil.example"))), "token_issuer_invalid");
        assert_eq!(refused(&with("sub", json!(42))), "token_claims_invalid");
        let mut no_exp = claims();
        no_exp.as_object_mut().expect("object").remove("exp");
        assert_eq!(refused(&key.token(&no_exp)), "token_claims_invalid");

        // A valid token with one changed payload byte, or signed by another key with the same kid.
        let token = key.token(&claims());
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut payload = claims();
        payload["sub"] = json!("mallory");
        parts[1] = b64(payload.to_string().as_bytes());
        assert_eq!(refused(&parts.join(".")), "token_signature_invalid");
        assert_eq!(refused(&Es256::new("k1").token(&claims())), "token_signature_invalid");

        assert_eq!(refused(&Es256::new("k2").token(&claims())), "token_key_unknown");
        assert_eq!(refused("abc.def"), "token_malformed");
        assert_eq!(refused("e30.e30.e30"), "token_malformed", "a header without alg");
        assert_eq!(refused(&format!("{}.e30.", b64(b"not json"))), "token_malformed");
        let critical = key.sign(json!({"alg": "ES256", "kid": "k1", "crit": ["exp"]}), &claims());
        assert_eq!(refused(&critical), "token_malformed");
    }

    #[test]
    fn none_hmac_confusion_and_unlisted_algorithms_are_refused() {
        let key = Es256::new("k1");
        let config = config(&[JwtAlgorithm::ES256, JwtAlgorithm::RS256]);
        let body = b64(claims().to_string().as_bytes());
        let unsigned = format!("{}.{body}.", b64(br#"{"alg":"none","kid":"k1"}"#));
        let error = check(&unsigned, &config, std::slice::from_ref(&key.jwk)).expect_err("none");
        assert_eq!((error.code(), error.message().contains("none")), ("token_algorithm_not_allowed", true));

        // The classic confusion: HS256 with the RSA public key's bytes as the HMAC secret.
        let (_, rsa_jwk) = rsa();
        let secret = [Jwk::bytes(rsa_jwk.n.as_deref()), Jwk::bytes(rsa_jwk.e.as_deref())].concat();
        let input = format!("{}.{body}", b64(br#"{"alg":"HS256","kid":"rsa-1"}"#));
        let tag =
            aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret), input.as_bytes());
        let forged = format!("{input}.{}", b64(tag.as_ref()));
        assert_eq!(
            check(&forged, &config, std::slice::from_ref(&rsa_jwk)).expect_err("HS256").code(),
            "token_algorithm_not_allowed"
        );
        // Even an RS256-labelled token cannot pass an HMAC tag as an RSA signature.
        let input = format!("{}.{body}", b64(br#"{"alg":"RS256","kid":"rsa-1"}"#));
        let tag =
            aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret), input.as_bytes());
        let forged = format!("{input}.{}", b64(tag.as_ref()));
        assert_eq!(
            check(&forged, &config, std::slice::from_ref(&rsa_jwk)).expect_err("tag").code(),
            "token_signature_invalid"
        );

        // ES256 is allowed, but the kid names an RSA key: the algorithm does not fit it.
        let es_on_rsa = key.sign(json!({"alg": "ES256", "kid": "rsa-1"}), &claims());
        assert_eq!(check(&es_on_rsa, &config, &[rsa_jwk]).expect_err("misfit").code(), "token_algorithm_not_allowed");
        // A valid ES256 token, but the project only accepts RS256.
        let only_rsa = super::tests::config(&[JwtAlgorithm::RS256]);
        assert_eq!(
            check(&key.token(&claims()), &only_rsa, std::slice::from_ref(&key.jwk)).expect_err("unlisted").code(),
            "token_algorithm_not_allowed"
        );
    }

    #[test]
    fn clock_skew_is_honoured_both_ways() {
        let key = Es256::new("k1");
        let jwks = [key.jwk.clone()];
        let mut config = config(&[JwtAlgorithm::ES256]);
        let mut claims = claims();
        claims["exp"] = json!(NOW - 30);
        claims["nbf"] = json!(NOW + 30);
        let token = key.token(&claims);
        check(&token, &config, &jwks).expect("within 60 s of skew");
        config.clock_skew_seconds = 10;
        assert_eq!(check(&token, &config, &jwks).expect_err("past skew").code(), "token_expired");
        claims["exp"] = json!(NOW + 300);
        assert_eq!(check(&key.token(&claims), &config, &jwks).expect_err("nbf").code(), "token_not_yet_valid");
        claims["exp"] = json!(NOW as f64 + 5.5);
        claims["nbf"] = json!(NOW);
        check(&key.token(&claims), &config, &jwks).expect("fractional dates");
    }

    #[test]
    fn messages_never_echo_the_token() {
        let key = Es256::new("k1");
        let token = key.token(&json!({"iss": "x", "aud": "sluice", "sub": "s", "exp": NOW + 10}));
        let error = check(&token, &config(&[JwtAlgorithm::ES256]), std::slice::from_ref(&key.jwk)).expect_err("issuer");
        let message = crate::error::ApiError::TokenInvalid(error).to_string();
        assert!(!message.contains(&token) && !message.contains(token.split('.').nth(1).expect("payload")));
        assert!(looks_like_jwt(token.as_bytes()));
        assert!(!looks_like_jwt(b"sl_acme_full_000000000001"));
        assert!(!looks_like_jwt(b"a.b.c.d"));
    }
}
