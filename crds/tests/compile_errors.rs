//! Each class of bad input gets its own precise error, naming the object and the field; every
//! problem is reported at once; and the output is deterministic.

use std::path::Path;

use sluice_crds::compile::{CompileOptions, compile};
use sluice_crds::manifests::load_str;

const MINIMAL: &str = include_str!("fixtures/minimal.yaml");

/// The minimal tenant with `extra` documents appended (or replacing `replace` with `with`).
fn variant(replace: &str, with: &str, extra: &str) -> String {
    assert!(replace.is_empty() || MINIMAL.contains(replace), "fixture has no {replace:?}");
    let mut text = if replace.is_empty() { MINIMAL.to_owned() } else { MINIMAL.replacen(replace, with, 1) };
    if !extra.is_empty() {
        text.push_str("\n---\n");
        text.push_str(extra);
    }
    text
}

fn compile_errors(text: &str) -> Vec<String> {
    let manifests = load_str(Path::new("test.yaml"), text).expect("documents load");
    match compile(&manifests.objects, &CompileOptions::default()) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

fn load_errors(text: &str) -> Vec<String> {
    match load_str(Path::new("test.yaml"), text) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn the_fixture_itself_is_valid() {
    assert_eq!(compile_errors(MINIMAL), Vec::<String>::new());
}

#[test]
fn missing_provider_reference() {
    let text = variant("providerRef: {name: deepseek}", "providerRef: {name: qwen}", "");
    assert_eq!(
        compile_errors(&text),
        [
            "Endpoint team-a/chat: spec.models[0].backends[0].providerRef: no Provider \"qwen\" in namespace team-a or sluice-system"
        ]
    );
}

#[test]
fn missing_upstream_model_lists_what_the_provider_offers() {
    let text = variant("model: deepseek-chat", "model: deepseek-chatt", "");
    assert_eq!(
        compile_errors(&text),
        [
            "Endpoint team-a/chat: spec.models[0].backends[0].model: Provider sluice-system/deepseek offers no model \"deepseek-chatt\" (it offers: deepseek-chat)"
        ]
    );
}

#[test]
fn missing_tier_secret_and_endpoint_are_all_reported_at_once() {
    let text = variant("defaultTier: basic", "defaultTier: gold", "")
        .replace("key: token}", "key: apikey}")
        .replace("secretRef: {name: app-key}", "secretRef: {name: app-key}\n  endpoints: [chatt]");
    assert_eq!(
        compile_errors(&text),
        [
            "ApiKey team-a/app: spec.endpoints[0]: no Endpoint with slug \"chatt\" in namespace team-a",
            "Project team-a/team-a: spec.defaultTier: no ServiceTier \"gold\"",
            "Provider sluice-system/deepseek: spec.credentials.secretKeyRef: Secret sluice-system/upstream has no key \"apikey\"",
        ]
    );
}

#[test]
fn duplicate_endpoint_slug() {
    let second = "apiVersion: sluice.dev/v1alpha1\nkind: Endpoint\nmetadata: {name: chat-two, namespace: team-a}\nspec:\n  slug: chat\n  models:\n    - name: other\n      backends: [{providerRef: {name: deepseek}, model: deepseek-chat}]\n";
    assert_eq!(
        compile_errors(&variant("", "", second)),
        ["Endpoint team-a/chat-two: spec.slug: \"chat\" is already used by Endpoint team-a/chat"]
    );
}

#[test]
fn duplicate_project_slug_across_namespaces() {
    let second = "apiVersion: sluice.dev/v1alpha1\nkind: Project\nmetadata: {name: other, namespace: team-b}\nspec: {slug: team-a, defaultTier: basic}\n";
    assert_eq!(
        compile_errors(&variant("", "", second)),
        ["Project team-b/other: spec.slug: \"team-a\" is already used by Project team-a/team-a"]
    );
}

#[test]
fn alias_colliding_with_a_model_name() {
    let extra_models = "    - name: chat-latest\n      backends: [{providerRef: {name: deepseek}, model: deepseek-chat}]\n    - name: other\n      aliases: [{name: chat}]\n      backends: [{providerRef: {name: deepseek}, model: deepseek-chat}]\n";
    let text = variant(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {name: app-key",
        &format!("{extra_models}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: app-key"),
        "",
    );
    assert_eq!(
        compile_errors(&text),
        [
            "Endpoint team-a/chat: spec.models[1].name: \"chat-latest\" is already the name of spec.models[0].aliases[0] (an alias)",
            "Endpoint team-a/chat: spec.models[2].aliases[0].name: \"chat\" is already the name of spec.models[0] (a model)",
        ]
    );
}

#[test]
fn bad_cidr() {
    let text = variant(
        "secretRef: {name: app-key}",
        "secretRef: {name: app-key}\n  allowedCidrs: [10.0.0.0/8, 10.0.0.0/33]",
        "",
    );
    assert_eq!(
        compile_errors(&text),
        ["ApiKey team-a/app: spec.allowedCidrs[1]: \"10.0.0.0/33\" is not a CIDR (like 10.0.0.0/8 or 2001:db8::/32)"]
    );
}

#[test]
fn unknown_field_names_file_document_and_path() {
    let text = variant("  slug: chat\n", "  slug: chat\n  retries: 3\n", "");
    assert_eq!(load_errors(&text), ["test.yaml (document 5, line 28): Endpoint chat: spec.retries: unknown field"]);
}

#[test]
fn wrong_enum_value() {
    let text = variant("type: openai", "type: openia", "");
    assert_eq!(
        load_errors(&text),
        [
            "test.yaml (document 4, line 17): Provider deepseek: spec.type: Unsupported value: \"openia\": supported values: \"openai\", \"anthropic\", \"gemini\", \"simulated\""
        ]
    );
}

#[test]
fn out_of_range_value_and_bad_pattern() {
    let text = variant("model: deepseek-chat", "model: deepseek-chat\n          weight: 5000", "")
        .replace("slug: chat", "slug: Chat_1");
    assert_eq!(
        load_errors(&text),
        [
            "test.yaml (document 5, line 28): Endpoint chat: spec.models[0].backends[0].weight: Invalid value: 5000: must be less than or equal to 1000",
            "test.yaml (document 5, line 28): Endpoint chat: spec.slug: Invalid value: \"Chat_1\": should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
        ]
    );
}

#[test]
fn missing_required_field() {
    let text = variant("spec: {slug: team-a, defaultTier: basic}", "spec: {slug: team-a}", "");
    assert_eq!(
        load_errors(&text),
        ["test.yaml (document 2, line 7): Project team-a: spec.defaultTier: Required value"]
    );
}

#[test]
fn reserved_endpoint_slug() {
    let text = variant("  slug: chat\n", "  slug: v1\n", "");
    assert_eq!(compile_errors(&text), ["Endpoint team-a/chat: spec.slug: \"v1\" is reserved for project-level APIs"]);
    let text = variant("  slug: chat\n", "  slug: console\n", "");
    assert_eq!(compile_errors(&text), ["Endpoint team-a/chat: spec.slug: \"console\" is reserved for the web console"]);
}

#[test]
fn unknown_sluice_kind_and_version() {
    let text = variant(
        "",
        "",
        "apiVersion: sluice.dev/v1alpha1\nkind: Route\nmetadata: {name: x}\nspec: {}\n---\napiVersion: sluice.dev/v2\nkind: Project\nmetadata: {name: x}\nspec: {}\n",
    );
    let errors = load_errors(&text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].starts_with("test.yaml (document 8, line 52): unknown kind Route in sluice.dev"),
        "{}",
        errors[0]
    );
    assert!(errors[1].contains("Project: unknown apiVersion sluice.dev/v2"), "{}", errors[1]);
}

#[test]
fn other_kubernetes_kinds_are_skipped_with_a_warning() {
    let text = variant("", "", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n");
    let manifests = load_str(Path::new("test.yaml"), &text).expect("loads");
    assert_eq!(manifests.warnings.len(), 1);
    assert_eq!(
        manifests.warnings[0].to_string(),
        "test.yaml (document 8, line 52): skipped apps/v1 Deployment: not a Sluice kind, a Secret or a ConfigMap"
    );
}

#[test]
fn apikey_without_key_material_in_standalone_mode() {
    let text = variant("  secretRef: {name: app-key}\n", "  scopes: [inference]\n", "");
    let errors = compile_errors(&text);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("ApiKey team-a/app: spec.secretRef: required here"), "{}", errors[0]);
}

#[test]
fn weak_and_shared_key_material() {
    let short = variant("key: sl_team-a_0123456789abcdef", "key: short", "");
    assert_eq!(
        compile_errors(&short),
        ["ApiKey team-a/app: spec.secretRef: Secret team-a/app-key key \"key\": shorter than 16 characters"]
    );
    let twin = "apiVersion: sluice.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: twin, namespace: team-a}\nspec: {secretRef: {name: app-key}}\n";
    assert_eq!(
        compile_errors(&variant("", "", twin)),
        ["ApiKey team-a/twin: spec.secretRef: the same key material is already used by ApiKey team-a/app"]
    );
}

#[test]
fn orphan_endpoint_without_project() {
    let orphan = "apiVersion: sluice.dev/v1alpha1\nkind: Endpoint\nmetadata: {name: lost, namespace: team-z}\nspec:\n  slug: lost\n  models: [{name: m, backends: [{providerRef: {name: deepseek}, model: deepseek-chat}]}]\n";
    let errors = compile_errors(&variant("", "", orphan));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("Endpoint team-z/lost: metadata.namespace: no Project in namespace team-z"),
        "{}",
        errors[0]
    );
}

#[test]
fn provider_from_a_foreign_namespace_is_refused() {
    let text = variant("providerRef: {name: deepseek}", "providerRef: {name: deepseek, namespace: team-b}", "");
    assert_eq!(
        compile_errors(&text),
        [
            "Endpoint team-a/chat: spec.models[0].backends[0].providerRef: namespace team-b is neither this object's namespace (team-a) nor the shared namespace (sluice-system)"
        ]
    );
}

#[test]
fn output_is_deterministic_whatever_the_input_order() {
    let manifests = load_str(Path::new("test.yaml"), MINIMAL).expect("loads");
    let first = compile(&manifests.objects, &CompileOptions::default()).expect("compiles");
    let mut reversed = manifests.objects.clone();
    reversed.reverse();
    let second = compile(&reversed, &CompileOptions::default()).expect("compiles");
    let bytes = |configs: &[sluice_crds::config::GatewayConfig]| {
        configs.iter().map(|c| c.to_canonical_json().expect("json")).collect::<Vec<_>>()
    };
    assert_eq!(bytes(&first), bytes(&second));
    assert_eq!(first[0].content_hash().expect("hash"), second[0].content_hash().expect("hash"));
    assert!(first[0].content_hash().expect("hash").starts_with("sha256:"));

    let changed = load_str(Path::new("test.yaml"), &MINIMAL.replace("spec: {}", "spec: {priority: 5}")).expect("loads");
    let third = compile(&changed.objects, &CompileOptions::default()).expect("compiles");
    assert_ne!(first[0].content_hash().expect("hash"), third[0].content_hash().expect("hash"));
}

#[test]
fn compiled_config_round_trips_and_rejects_unknown_fields() {
    let manifests = load_str(Path::new("test.yaml"), MINIMAL).expect("loads");
    let config = compile(&manifests.objects, &CompileOptions::default()).expect("compiles").remove(0);
    let json = config.to_canonical_json().expect("json");
    let back: sluice_crds::config::GatewayConfig = serde_json::from_slice(&json).expect("parses");
    assert_eq!(back, config);
    let mut value: serde_json::Value = serde_json::from_slice(&json).expect("json");
    value["endpoints"]["chat"]["retries"] = 3.into();
    let error = serde_json::from_value::<sluice_crds::config::GatewayConfig>(value).expect_err("strict");
    assert!(error.to_string().contains("unknown field `retries`"), "{error}");
    assert!(!format!("{config:?}").contains("sk-upstream-secret-value"), "credentials leak through Debug");
}

#[test]
fn endpoint_defaults_compile_into_the_config() {
    let text = variant(
        "  slug: chat\n",
        "  slug: chat\n  apis: [chatCompletions]\n  defaultModel: chat-latest\n  defaultParameters: {temperature: 0.2, max_tokens: 512, stop: [\"END\"]}\n",
        "",
    );
    let manifests = load_str(Path::new("test.yaml"), &text).expect("loads");
    let config = compile(&manifests.objects, &CompileOptions::default()).expect("compiles").remove(0);
    let endpoint = &config.endpoints["chat"];
    assert_eq!(endpoint.default_model.as_deref(), Some("chat-latest"));
    assert_eq!(
        serde_json::to_value(&endpoint.default_parameters).expect("json"),
        serde_json::json!({"max_tokens": 512, "stop": ["END"], "temperature": 0.2})
    );
    use sluice_crds::api::ApiKind::{ChatCompletions, Gemini, Messages, Responses};
    assert_eq!(endpoint.apis, [ChatCompletions, Messages, Responses, Gemini], "a list from before the new values");
    assert!(config.validate().is_ok());
}

#[test]
fn endpoint_defaults_name_an_endpoint_model_and_request_parameters() {
    let text = variant(
        "  slug: chat\n",
        "  slug: chat\n  limits: {maxTokens: 100}\n  defaultModel: nope\n  defaultParameters: {temperature: 0.2, max_tokens: 512, model: chat, tools: [{type: function}]}\n",
        "",
    );
    assert_eq!(
        compile_errors(&text),
        [
            "Endpoint team-a/chat: spec.defaultModel: \"nope\" is not a model or alias of this Endpoint (it has: chat, chat-latest)",
            "Endpoint team-a/chat: spec.defaultParameters.max_tokens: 512 is above spec.limits.maxTokens (100): every request relying on it would be refused",
            "Endpoint team-a/chat: spec.defaultParameters.model: the model a request gets is spec.defaultModel",
            "Endpoint team-a/chat: spec.defaultParameters.tools: must be a number, string, boolean or a list of those",
        ]
    );
}

#[test]
fn a_config_whose_default_model_is_gone_is_invalid() {
    let manifests = load_str(Path::new("test.yaml"), MINIMAL).expect("loads");
    let mut config = compile(&manifests.objects, &CompileOptions::default()).expect("compiles").remove(0);
    let endpoint = config.endpoints.get_mut("chat").expect("endpoint");
    endpoint.default_model = Some("gone".into());
    endpoint.default_parameters.insert("stream".into(), true.into());
    assert_eq!(
        config.validate(),
        Err(vec![
            "endpoints.chat.defaultModel: no model or alias \"gone\"".to_owned(),
            "endpoints.chat.defaultParameters.stream: part of the request itself, not a parameter".to_owned(),
        ])
    );
}

#[test]
fn content_policies_compile_with_their_defaults_resolved() {
    let text = variant(
        "  slug: chat\n",
        "  slug: chat\n  redaction: {restore: true}\n  contentRules: {blocked: [project falcon], patterns: ['(?i)\\bsecret\\b'], promptInjection: true}\n",
        "",
    );
    let manifests = load_str(Path::new("test.yaml"), &text).expect("loads");
    let config = compile(&manifests.objects, &CompileOptions::default()).expect("compiles").remove(0);
    let endpoint = &config.endpoints["chat"];
    let redaction = endpoint.redaction.as_ref().expect("redaction");
    assert_eq!(redaction.kinds, sluice_crds::api::RedactionKind::ALL, "absent kinds: every kind");
    assert!(redaction.restore);
    let rules = endpoint.content_rules.as_ref().expect("rules");
    assert_eq!(rules.mode, sluice_crds::api::ContentRuleMode::Enforce, "enforce unless told");
    assert_eq!((rules.blocked.len(), rules.patterns.len(), rules.prompt_injection), (1, 1, true));
    assert!(config.validate().is_ok());
    let json = config.to_canonical_json().expect("json");
    let back: sluice_crds::config::GatewayConfig = serde_json::from_slice(&json).expect("parses");
    assert_eq!(back, config);

    let text = variant("  slug: chat\n", "  slug: chat\n  redaction: {kinds: [email, ssn]}\n", "");
    let errors = load_errors(&text);
    assert!(errors.iter().any(|e| e.contains("ssn")), "{errors:?}");
}

#[test]
fn content_rule_patterns_are_checked_at_compile_time_naming_endpoint_and_field() {
    let text = variant(
        "  slug: chat\n",
        "  slug: chat\n  contentRules: {mode: dryRun, blocked: ['  '], patterns: ['ok', '(unclosed', 'x*']}\n",
        "",
    );
    let errors = compile_errors(&text);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_eq!(
        errors[0],
        "Endpoint team-a/chat: spec.contentRules.blocked[0]: an empty phrase would match every request"
    );
    assert!(
        errors[1].starts_with("Endpoint team-a/chat: spec.contentRules.patterns[1]: not a valid regular expression: "),
        "{}",
        errors[1]
    );
    assert_eq!(
        errors[2],
        "Endpoint team-a/chat: spec.contentRules.patterns[2]: matches the empty text, so every request"
    );
    let empty = variant("  slug: chat\n", "  slug: chat\n  contentRules: {mode: enforce}\n", "");
    assert_eq!(
        compile_errors(&empty),
        ["Endpoint team-a/chat: spec.contentRules: no rule: set blocked, patterns or promptInjection"]
    );

    // A configuration written by hand is checked again when loaded.
    let manifests = load_str(Path::new("test.yaml"), MINIMAL).expect("loads");
    let mut config = compile(&manifests.objects, &CompileOptions::default()).expect("compiles").remove(0);
    config.endpoints.get_mut("chat").expect("endpoint").content_rules = Some(sluice_crds::config::ContentRulesConfig {
        mode: sluice_crds::api::ContentRuleMode::Enforce,
        blocked: Vec::new(),
        patterns: vec!["[z-a]".into()],
        prompt_injection: false,
    });
    let problems = config.validate().expect_err("invalid pattern");
    assert!(
        problems[0].starts_with("endpoints.chat.contentRules.patterns[0]: not a valid regular expression"),
        "{problems:?}"
    );
}

#[test]
fn a_minted_key_compiles_from_its_hash_alone_and_keeps_the_previous_one_until_its_expiry() {
    let current = "a".repeat(64);
    let previous = "b".repeat(64);
    let expired = "c".repeat(64);
    let minted = |prev: &str, until: &str| {
        format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: minted, namespace: team-a}}\n\
spec: {{keyHash: {{sha256: {current}, prefix: sl_team-a_Ab, previous: {{sha256: {prev}, expiresAt: \"{until}\"}}}}}}\n"
        )
    };
    let now: jiff::Timestamp = "2026-12-02T12:00:00Z".parse().expect("time");
    let options = CompileOptions { now: Some(now), ..CompileOptions::default() };
    let hashes = |text: &str| {
        let manifests = load_str(Path::new("test.yaml"), text).expect("loads");
        let config = compile(&manifests.objects, &options).expect("compiles").remove(0);
        let key = config.keys.iter().find(|k| k.id == "team-a/minted").expect("compiled").clone();
        key.hashes.into_iter().map(|h| (h.sha256, h.expires_at.is_some())).collect::<Vec<_>>()
    };
    let live = variant("", "", &minted(&previous, "2026-12-03T00:00:00Z"));
    assert_eq!(hashes(&live), [(current.clone(), false), (previous, true)], "no Secret needed, even standalone");
    let over = variant("", "", &minted(&expired, "2026-12-01T00:00:00Z"));
    assert_eq!(hashes(&over), [(current.clone(), false)], "a previous key past its expiry is dropped");

    let both = variant(
        "",
        "",
        &format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: ApiKey\nmetadata: {{name: minted, namespace: team-a}}\n\
spec: {{secretRef: {{name: app-key}}, keyHash: {{sha256: {current}}}}}\n"
        ),
    );
    let errors = compile_errors(&both);
    assert!(
        errors.iter().any(|e| e.starts_with("ApiKey team-a/minted: spec.keyHash: excludes spec.secretRef")),
        "{errors:?}"
    );
    let bad = variant(
        "",
        "",
        "apiVersion: sluice.dev/v1alpha1\nkind: ApiKey\nmetadata: {name: minted, namespace: team-a}\nspec: {keyHash: {sha256: ABC}}\n",
    );
    let errors = load_errors(&bad);
    assert!(
        errors.iter().any(|e| e.contains("spec.keyHash.sha256")),
        "the schema refuses a malformed hash: {errors:?}"
    );
}

/// The minimal Project taking JWTs whose keys are in `jwks` (`source` names where they are).
fn with_jwt(source: &str, secret_data: &str) -> String {
    let jwt = format!(
        "spec:\n  slug: team-a\n  defaultTier: basic\n  jwt: {{issuer: https://idp.test, audiences: [sluice], jwks: {source}}}"
    );
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: jwks, namespace: team-a}}\nstringData:\n  jwks.json: '{secret_data}'\n"
    );
    variant("spec: {slug: team-a, defaultTier: basic}", &jwt, &secret)
}

const EC_KEY: &str = r#"{"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "x": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE", "y": "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI"}]}"#;

#[test]
fn jwt_keys_from_a_secret_compile_into_the_project() {
    let text = with_jwt("{secretRef: {name: jwks}}", EC_KEY);
    let manifests = load_str(Path::new("test.yaml"), &text).expect("documents load");
    let configs = compile(&manifests.objects, &CompileOptions::default()).expect("compiles");
    let jwt = configs[0].project.jwt.as_ref().expect("jwt");
    assert_eq!(jwt.algorithms, [sluice_crds::api::JwtAlgorithm::RS256, sluice_crds::api::JwtAlgorithm::ES256]);
    assert_eq!((jwt.clock_skew_seconds, jwt.subject_claim.as_str(), jwt.scopes_claim.as_str()), (60, "sub", "scope"));
    match &jwt.jwks {
        sluice_crds::config::JwksConfig::Keys(keys) => assert_eq!(keys[0].kid.as_deref(), Some("k1")),
        other => panic!("expected keys, got {other:?}"),
    }
    let json = serde_json::to_string(&configs[0]).expect("json");
    let back: sluice_crds::config::GatewayConfig = serde_json::from_str(&json).expect("reads back");
    assert_eq!(back, configs[0]);
}

#[test]
fn jwt_problems_name_the_field() {
    let problems = |source: &str, data: &str| compile_errors(&with_jwt(source, data));
    assert_eq!(
        problems("{secretRef: {name: nope}}", EC_KEY),
        ["Project team-a/team-a: spec.jwt.jwks.secretRef: no Secret \"nope\" in namespace team-a"]
    );
    let oct = problems("{secretRef: {name: jwks}}", r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#);
    assert!(oct.len() == 1 && oct[0].contains("spec.jwt.jwks.secretRef: key 0: symmetric"), "{oct:?}");
    assert_eq!(
        problems("{url: \"http://idp.example/jwks\"}", EC_KEY),
        [
            "Project team-a/team-a: spec.jwt.jwks.url: \"http://idp.example/jwks\": plain http is accepted only to a loopback address"
        ]
    );
    assert!(problems("{url: \"http://127.0.0.1:9/jwks\"}", EC_KEY).is_empty());
    assert!(problems("{url: \"https://idp.example/jwks\"}", EC_KEY).is_empty());
    let mismatch = with_jwt("{secretRef: {name: jwks}}", EC_KEY)
        .replace("audiences: [sluice]", "audiences: [sluice], algorithms: [RS256]");
    assert_eq!(
        compile_errors(&mismatch),
        ["Project team-a/team-a: spec.jwt.jwks.secretRef: no key of the JWKS fits any of spec.jwt.algorithms"]
    );
    let hmac = with_jwt("{secretRef: {name: jwks}}", EC_KEY)
        .replace("audiences: [sluice]", "audiences: [sluice], algorithms: [HS256]");
    assert!(!load_errors(&hmac).is_empty(), "HS256 is not an accepted algorithm");
}
