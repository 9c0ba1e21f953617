//! JWT bearer authentication on the real binary: tokens signed by a test key (ES256 made here,
//! RS256 with the fixture key) get answers from the simulator beside the project's API keys;
//! each bad kind of token gets 401 with its own code; scopes from claims are enforced; rate
//! limits, usage and the access log are kept per subject, and metrics fold subjects into one
//! series; a JWKS rotation is picked up without a restart, from a rewritten Secret in the
//! manifest folder and from a JWKS URL (a loopback server whose keys change).

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use support::{Gateway, Manifests, Sim, apikey, client, eventually};

const ISSUER: &str = "https://idp.test";
const API_KEY: &str = "sl_acme_jwt_beside_000000001";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// An ES256 key made for the test, with its id.
struct EcKey {
    pair: EcdsaKeyPair,
    kid: String,
}

impl EcKey {
    fn new(kid: &str) -> Self {
        let pair = EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("key");
        Self { pair, kid: kid.to_owned() }
    }

    fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "use": "sig", "kid": self.kid, "x": b64(&point[1..33]), "y": b64(&point[33..65])})
    }

    fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let signature = self.pair.sign(&SystemRandom::new(), input.as_bytes()).expect("sign");
        format!("{input}.{}", b64(signature.as_ref()))
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(&json!({"alg": "ES256", "typ": "JWT", "kid": self.kid}), claims)
    }
}

/// The fixture RSA key (`tests/fixtures/jwt-rsa.pem`, made with openssl) and its JWK.
fn rsa_key() -> (RsaKeyPair, Value) {
    let pem = include_str!("fixtures/jwt-rsa.pem");
    let der = STANDARD.decode(pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>()).expect("pem");
    let pair = RsaKeyPair::from_pkcs8(&der).expect("pkcs8");
    (pair, serde_json::from_str(include_str!("fixtures/jwt-rsa.jwk.json")).expect("jwk"))
}

fn rsa_token(pair: &RsaKeyPair, claims: &Value) -> String {
    let input = format!("{}.{}", b64(br#"{"alg":"RS256","kid":"rsa-1"}"#), b64(claims.to_string().as_bytes()));
    let mut signature = vec![0; pair.public_modulus_len()];
    pair.sign(&signature::RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut signature).expect("sign");
    format!("{input}.{}", b64(&signature))
}

fn claims(subject: &str) -> Value {
    json!({"iss": ISSUER, "aud": ["sluice"], "sub": subject, "iat": now(), "exp": now() + 600, "scope": "openid inference"})
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// Tiers `free` and `two` (2 requests a minute), the simulator as Provider, Endpoint `chat`,
/// an API key, and Project `acme` taking tokens whose keys are in `jwks` (JWKS Secret
/// `acme-jwks` unless `url` is given).
fn tenant(sim: &str, jwks_source: &str) -> String {
    format!(
        r#"apiVersion: sluice.dev/v1alpha1
kind: ServiceTier
metadata: {{name: free}}
spec: {{}}
---
apiVersion: sluice.dev/v1alpha1
kind: ServiceTier
metadata: {{name: two}}
spec:
  limits: {{requestsPerMinute: 2}}
---
apiVersion: sluice.dev/v1alpha1
kind: Project
metadata: {{name: acme, namespace: acme}}
spec:
  slug: acme
  defaultTier: free
  jwt:
    issuer: {ISSUER}
    audiences: [sluice]
    algorithms: [ES256, RS256]
    clockSkewSeconds: 30
    tierClaim: tier
    jwks: {jwks_source}
---
apiVersion: sluice.dev/v1alpha1
kind: Provider
metadata: {{name: sim, namespace: acme}}
spec:
  type: openai
  baseUrl: {sim}
  models:
    - name: up
      capabilities: [chat]
      pricing: {{inputPerMillion: 1.0, outputPerMillion: 2.0}}
---
apiVersion: sluice.dev/v1alpha1
kind: Endpoint
metadata: {{name: chat, namespace: acme}}
spec:
  slug: chat
  models:
    - name: m
      backends: [{{providerRef: {{name: sim}}, model: up}}]
---
{}
"#,
        apikey("acme", "beside", API_KEY, "")
    )
}

fn jwks_secret(jwks: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: acme-jwks, namespace: acme}}\nstringData:\n  jwks.json: '{jwks}'\n"
    )
}

const SECRET_SOURCE: &str = "{secretRef: {name: acme-jwks}}";

async fn chat(gateway: &Gateway, credential: &str) -> reqwest::Response {
    let body = json!({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "Say hello"}]});
    client()
        .post(gateway.url("/acme/chat/v1/chat/completions"))
        .bearer_auth(credential)
        .json(&body)
        .send()
        .await
        .expect("request")
}

/// The status and error code of an answer (`None` for a success).
async fn outcome(response: reqwest::Response) -> (u16, Option<String>) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("json");
    if status == 200 {
        assert_eq!(body["object"], "chat.completion", "{body}");
        return (200, None);
    }
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    (status, body["error"]["code"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn signed_tokens_pass_beside_api_keys_and_each_bad_kind_fails_with_its_code() {
    let sim = Sim::start(Sim::fast()).await;
    let key = EcKey::new("ec-1");
    let (rsa, rsa_jwk) = rsa_key();
    let manifests = Manifests::new();
    manifests.write("acme.yaml", &manifests_with_secret(&sim, &jwks(&[key.jwk(), rsa_jwk.clone()])));
    let gateway = Gateway::start(Some(manifests.path()), &[]);

    assert_eq!(outcome(chat(&gateway, &key.sign(&claims("alice"))).await).await, (200, None), "ES256");
    assert_eq!(outcome(chat(&gateway, &rsa_token(&rsa, &claims("alice"))).await).await, (200, None), "RS256");
    assert_eq!(outcome(chat(&gateway, API_KEY).await).await, (200, None), "the API key works beside tokens");

    let with = |field: &str, value: Value| {
        let mut claims = claims("alice");
        claims[field] = value;
        key.sign(&claims)
    };
    let body = b64(claims("alice").to_string().as_bytes());
    // HS256 with the RSA public key's bytes as the HMAC secret: the classic confusion attack.
    let hs_input = format!("{}.{body}", b64(br#"{"alg":"HS256","kid":"rsa-1"}"#));
    let hmac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, rsa_jwk.to_string().as_bytes());
    let confused = format!("{hs_input}.{}", b64(aws_lc_rs::hmac::sign(&hmac_key, hs_input.as_bytes()).as_ref()));
    let bad = [
        ("expired", with("exp", json!(now() - 120)), "token_expired"),
        ("not yet valid", with("nbf", json!(now() + 600)), "token_not_yet_valid"),
        ("wrong audience", with("aud", json!("someone-else")), "token_audience_invalid"),
        ("wrong issuer", with("iss", json!("https://evil.test")), "token_issuer_invalid"),
        ("signed by another key", EcKey::new("ec-1").sign(&claims("alice")), "token_signature_invalid"),
        ("unknown kid", EcKey::new("ec-9").sign(&claims("alice")), "token_key_unknown"),
        ("alg none", format!("{}.{body}.", b64(br#"{"alg":"none"}"#)), "token_algorithm_not_allowed"),
        ("HS256 with the RSA key", confused, "token_algorithm_not_allowed"),
        (
            "ES384 not allowed",
            key.sign_with_header(&json!({"alg": "ES384", "kid": "ec-1"}), &claims("alice")),
            "token_algorithm_not_allowed",
        ),
        ("malformed", format!("{}.{body}.c2ln", b64(b"not json")), "token_malformed"),
    ];
    for (what, token, code) in bad {
        let response = chat(&gateway, &token).await;
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let error: Value = serde_json::from_str(&text).expect("json");
        assert_eq!((status, error["error"]["code"].as_str()), (401, Some(code)), "{what}: {text}");
        assert!(!text.contains(&token), "{what}: the token is echoed");
    }

    // Scopes come from the claim: a models.read token lists models but may not call them.
    let mut reader = claims("carol");
    reader["scope"] = json!(["models.read"]);
    let reader = key.sign(&reader);
    let refused = chat(&gateway, &reader).await;
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "scope_insufficient");
    let models = client().get(gateway.url("/acme/chat/v1/models")).bearer_auth(&reader).send().await.expect("models");
    assert_eq!(models.status(), 200);
}

fn manifests_with_secret(sim: &Sim, jwks: &str) -> String {
    format!("{}---\n{}", tenant(&sim.base_url(), SECRET_SOURCE), jwks_secret(jwks))
}

#[tokio::test]
async fn limits_usage_and_logs_are_kept_per_subject() {
    let sim = Sim::start(Sim::fast()).await;
    let key = EcKey::new("ec-1");
    let manifests = Manifests::new();
    manifests.write("acme.yaml", &manifests_with_secret(&sim, &jwks(&[key.jwk()])));
    let gateway = Gateway::start(Some(manifests.path()), &[]);
    let token = |subject: &str| {
        let mut claims = claims(subject);
        claims["tier"] = json!("two");
        claims["scope"] = json!("inference usage.read");
        key.sign(&claims)
    };

    let (alice, bob) = (token("alice"), token("bob"));
    for _ in 0..2 {
        assert_eq!(outcome(chat(&gateway, &alice).await).await, (200, None));
    }
    let limited = chat(&gateway, &alice).await;
    assert_eq!(limited.status(), 429, "alice's third request in a minute under tier two");
    let first = chat(&gateway, &bob).await;
    let request_id = first.headers()["x-request-id"].to_str().expect("id").to_owned();
    assert_eq!(outcome(first).await, (200, None), "bob has counters of his own");
    assert_eq!(gateway.access_line(&request_id)["fields"]["key"], "jwt:bob");

    // Usage per subject; a token without the tier claim runs under the default tier.
    let mut plain = claims("dave");
    plain["tier"] = json!("no-such-tier");
    for _ in 0..3 {
        assert_eq!(outcome(chat(&gateway, &key.sign(&plain)).await).await, (200, None), "tier free");
    }
    let report: Value = client()
        .get(gateway.url("/acme/v1/usage"))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("usage")
        .json()
        .await
        .expect("json");
    let by_key: Vec<(String, u64)> = report["by_key"]
        .as_array()
        .expect("by_key")
        .iter()
        .map(|row| (row["key_id"].as_str().expect("id").to_owned(), row["requests"].as_u64().expect("n")))
        .collect();
    assert_eq!(by_key, [("jwt:alice".to_owned(), 2), ("jwt:bob".to_owned(), 1), ("jwt:dave".to_owned(), 3)]);

    // Metrics: one series for every subject together.
    let metrics =
        client().get(gateway.admin_url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains(r#"sluice_key_requests_total{project="acme",key_id="jwt"} 6"#), "{metrics}");
    assert!(!metrics.contains("jwt:alice"), "a subject became a label");
}

#[tokio::test]
async fn a_rewritten_jwks_secret_rotates_keys_without_a_restart() {
    let sim = Sim::start(Sim::fast()).await;
    let (old, new) = (EcKey::new("2024"), EcKey::new("2025"));
    let manifests = Manifests::new();
    manifests.write("acme.yaml", &manifests_with_secret(&sim, &jwks(&[old.jwk()])));
    let mut gateway = Gateway::start(Some(manifests.path()), &[]);
    let pid = gateway.pid();
    let (old_token, new_token) = (old.sign(&claims("alice")), new.sign(&claims("alice")));
    assert_eq!(outcome(chat(&gateway, &old_token).await).await, (200, None));
    assert_eq!(outcome(chat(&gateway, &new_token).await).await, (401, Some("token_key_unknown".into())));

    manifests.write("acme.yaml", &manifests_with_secret(&sim, &jwks(&[new.jwk()])));
    let rotated =
        eventually(Duration::from_secs(15), || async { chat(&gateway, &new_token).await.status() == 200 }).await;
    assert!(rotated.is_some(), "the new key was not picked up:\n{}", gateway.log_text());
    assert_eq!(outcome(chat(&gateway, &old_token).await).await, (401, Some("token_key_unknown".into())));
    assert_eq!(outcome(chat(&gateway, API_KEY).await).await, (200, None));
    assert!(gateway.running() && gateway.pid() == pid, "the gateway restarted");

    // A JWKS that does not compile is refused and the last good configuration kept.
    manifests.write("acme.yaml", &manifests_with_secret(&sim, r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#));
    let refused = eventually(Duration::from_secs(15), || async { gateway.log_text().contains("symmetric") });
    assert!(refused.await.is_some(), "no compile problem logged:\n{}", gateway.log_text());
    assert!(gateway.log_text().contains("spec.jwt.jwks.secretRef"), "{}", gateway.log_text());
    assert_eq!(outcome(chat(&gateway, &new_token).await).await, (200, None));
}

/// A loopback JWKS server whose document the test changes (`None`: it answers 500).
async fn jwks_server(document: Arc<Mutex<Option<String>>>) -> String {
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let document = document.lock().expect("lock").clone();
            async move {
                match document {
                    Some(text) => (axum::http::StatusCode::OK, text),
                    None => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "down".to_owned()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{addr}/jwks.json")
}

#[tokio::test]
async fn a_jwks_url_rotation_is_picked_up_without_a_restart() {
    let sim = Sim::start(Sim::fast()).await;
    let (first, second) = (EcKey::new("a"), EcKey::new("b"));
    let document = Arc::new(Mutex::new(Some(jwks(&[first.jwk()]))));
    let url = jwks_server(document.clone()).await;
    let manifests = Manifests::new();
    // An hour between refreshes: only a token naming the new kid can make the gateway look.
    let source = format!("{{url: \"{url}\", refreshSeconds: 3600}}");
    manifests.write("acme.yaml", &tenant(&sim.base_url(), &source));
    let mut gateway = Gateway::start(Some(manifests.path()), &[]);
    let pid = gateway.pid();

    let (first_token, second_token) = (first.sign(&claims("alice")), second.sign(&claims("alice")));
    let fetched = eventually(Duration::from_secs(10), || async { chat(&gateway, &first_token).await.status() == 200 });
    assert!(fetched.await.is_some(), "the first key set was not fetched:\n{}", gateway.log_text());

    *document.lock().expect("lock") = Some(jwks(&[second.jwk()]));
    let rotated = eventually(Duration::from_secs(10), || async { chat(&gateway, &second_token).await.status() == 200 });
    assert!(rotated.await.is_some(), "the new kid was not fetched:\n{}", gateway.log_text());
    assert_eq!(outcome(chat(&gateway, &first_token).await).await, (401, Some("token_key_unknown".into())));
    assert!(gateway.running() && gateway.pid() == pid, "the gateway restarted");

    // The server fails: a kid miss triggers no fetch within the cooldown, and the last good
    // set keeps serving.
    *document.lock().expect("lock") = None;
    assert_eq!(outcome(chat(&gateway, &EcKey::new("c").sign(&claims("x"))).await).await.0, 401);
    assert_eq!(outcome(chat(&gateway, &second_token).await).await, (200, None));
}

#[tokio::test]
async fn a_failing_jwks_url_keeps_the_last_good_keys() {
    let sim = Sim::start(Sim::fast()).await;
    let key = EcKey::new("a");
    let document = Arc::new(Mutex::new(Some(jwks(&[key.jwk()]))));
    let url = jwks_server(document.clone()).await;
    let manifests = Manifests::new();
    manifests.write("acme.yaml", &tenant(&sim.base_url(), &format!("{{url: \"{url}\", refreshSeconds: 1}}")));
    let gateway = Gateway::start(Some(manifests.path()), &[]);
    let token = key.sign(&claims("alice"));
    let fetched = eventually(Duration::from_secs(10), || async { chat(&gateway, &token).await.status() == 200 });
    assert!(fetched.await.is_some(), "the key set was not fetched:\n{}", gateway.log_text());

    *document.lock().expect("lock") = None;
    let failed = eventually(Duration::from_secs(10), || async { gateway.log_text().contains("JWKS fetch failed") });
    assert!(failed.await.is_some(), "no failed fetch logged:\n{}", gateway.log_text());
    assert!(gateway.log_text().contains("status 500"), "{}", gateway.log_text());
    assert_eq!(outcome(chat(&gateway, &token).await).await, (200, None), "the last good set serves");
}
