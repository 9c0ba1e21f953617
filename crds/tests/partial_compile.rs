//! The partial compile the operator serves from: broken Endpoints and ApiKeys are left out (and
//! say why) while the rest is served; only problems in the Project itself stop the
//! configuration.

use std::path::Path;

use sluice_crds::api::Project;
use sluice_crds::compile::{CompileOptions, GeneratedKeys, PartialCompile, compile_partially};
use sluice_crds::manifests::load_str;
use sluice_crds::objects::{Object, ObjectRef};

/// The objects of JSON (so YAML) documents separated by `---` lines.
fn objects(documents: &str) -> Vec<Object> {
    load_str(Path::new("fixture.yaml"), documents).expect("a valid fixture").objects
}

const FIXTURE: &str = r#"{"apiVersion":"sluice.dev/v1alpha1","kind":"Project","metadata":{"name":"p","namespace":"t"},"spec":{"slug":"p","defaultTier":"std"}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"ServiceTier","metadata":{"name":"std"},"spec":{}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"Provider","metadata":{"name":"sim","namespace":"sluice-system"},"spec":{"type":"simulated","models":[{"name":"m"}]}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"Provider","metadata":{"name":"broken","namespace":"t"},"spec":{"type":"openai","baseUrl":"https://x.example/v1","credentials":{"secretKeyRef":{"name":"missing","key":"k"}},"models":[{"name":"m"}]}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"Endpoint","metadata":{"name":"good","namespace":"t"},"spec":{"slug":"good","models":[{"name":"m","backends":[{"providerRef":{"name":"sim"},"model":"m"}]}]}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"Endpoint","metadata":{"name":"typo","namespace":"t"},"spec":{"slug":"typo","models":[{"name":"m","backends":[{"providerRef":{"name":"nope"},"model":"m"}]}]}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"Endpoint","metadata":{"name":"via-broken","namespace":"t"},"spec":{"slug":"via-broken","models":[{"name":"m","backends":[{"providerRef":{"name":"broken"},"model":"m"}]}]}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"ApiKey","metadata":{"name":"ok","namespace":"t"},"spec":{"secretRef":{"name":"ok-key"}}}
---
{"apiVersion":"v1","kind":"Secret","metadata":{"name":"ok-key","namespace":"t"},"stringData":{"key":"sl_p_0123456789abcdef0123456789"}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"ApiKey","metadata":{"name":"wants-typo","namespace":"t"},"spec":{"endpoints":["typo"],"secretRef":{"name":"ok2"}}}
---
{"apiVersion":"v1","kind":"Secret","metadata":{"name":"ok2","namespace":"t"},"stringData":{"key":"sl_p_abcdefabcdefabcdefabcdef00"}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"ApiKey","metadata":{"name":"pending","namespace":"t"},"spec":{}}"#;

const FOREIGN: &str = r#"{"apiVersion":"sluice.dev/v1alpha1","kind":"Provider","metadata":{"name":"far","namespace":"other"},"spec":{"type":"simulated","models":[{"name":"m"}]}}
---
{"apiVersion":"sluice.dev/v1alpha1","kind":"Endpoint","metadata":{"name":"foreign","namespace":"t"},"spec":{"slug":"foreign","models":[{"name":"m","backends":[{"providerRef":{"name":"far","namespace":"other"},"model":"m"}]}]}}"#;

fn project(objects: &[Object]) -> Project {
    objects
        .iter()
        .find_map(|o| match o {
            Object::Project(p) => Some(p.clone()),
            _ => None,
        })
        .expect("a project")
}

fn compile(objects: &[Object]) -> PartialCompile {
    let options = CompileOptions { generated_keys: GeneratedKeys::Operator, ..CompileOptions::default() };
    compile_partially(&project(objects), objects, &options)
}

fn problem(compiled: &PartialCompile, kind: &'static str, name: &str) -> String {
    compiled.problems[&ObjectRef { kind, namespace: Some("t".into()), name: name.into() }].join(" | ")
}

#[test]
fn broken_objects_are_left_out_and_the_rest_is_served() {
    let compiled = compile(&objects(FIXTURE));
    let config = compiled.config.clone().expect("a configuration");
    assert_eq!(config.endpoints.keys().collect::<Vec<_>>(), ["good"]);
    assert_eq!(config.keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["t/ok"]);
    assert_eq!(config.providers.keys().collect::<Vec<_>>(), ["sluice-system/sim"]);
    let left_out: Vec<String> = compiled.left_out.iter().map(ToString::to_string).collect();
    assert_eq!(left_out, ["ApiKey t/wants-typo", "Endpoint t/typo", "Endpoint t/via-broken"]);
    let typo = problem(&compiled, "Endpoint", "typo");
    assert!(typo.contains("no Provider \"nope\""), "{typo}");
    assert!(problem(&compiled, "Endpoint", "via-broken").contains("Provider t/broken is not usable"));
    assert!(problem(&compiled, "Provider", "broken").contains("no Secret \"missing\""));
    assert!(problem(&compiled, "ApiKey", "wants-typo").contains("spec.endpoints[0]"));
}

#[test]
fn project_problems_stop_the_configuration() {
    let mut objects = objects(FIXTURE);
    objects.retain(|o| !matches!(o, Object::ServiceTier(_)));
    let compiled = compile(&objects);
    assert!(compiled.config.is_none());
    let project_ref = ObjectRef { kind: "Project", namespace: Some("t".into()), name: "p".into() };
    assert!(compiled.problems[&project_ref].join("").contains("no ServiceTier \"std\""));
    assert!(compiled.left_out.is_empty(), "nothing is served, so nothing is left out of it");
}

#[test]
fn a_provider_in_a_foreign_namespace_is_refused_and_its_endpoint_left_out() {
    let compiled = compile(&objects(&format!("{FIXTURE}\n---\n{FOREIGN}")));
    let config = compiled.config.clone().expect("a configuration");
    assert!(!config.endpoints.contains_key("foreign"));
    assert!(!config.providers.contains_key("other/far"));
    assert!(compiled.left_out.contains(&ObjectRef {
        kind: "Endpoint",
        namespace: Some("t".into()),
        name: "foreign".into()
    }));
    assert_eq!(
        problem(&compiled, "Endpoint", "foreign"),
        "spec.models[0].backends[0].providerRef: namespace other is neither this object's namespace (t) nor the shared namespace (sluice-system)"
    );
}

#[test]
fn a_key_limited_to_a_left_out_endpoint_says_so_once() {
    let compiled = compile(&objects(FIXTURE));
    assert_eq!(
        compiled.problems[&ObjectRef { kind: "ApiKey", namespace: Some("t".into()), name: "wants-typo".into() }],
        ["spec.endpoints[0]: no Endpoint with slug \"typo\" in namespace t"]
    );
}

/// An Endpoint whose fallback backend and second model use a Provider that is gone.
const FALLBACK_GONE: &str = r#"{"apiVersion":"sluice.dev/v1alpha1","kind":"Endpoint","metadata":{"name":"mixed","namespace":"t"},"spec":{"slug":"mixed","models":[{"name":"m","aliases":[{"name":"m-alias"}],"backends":[{"providerRef":{"name":"sim"},"model":"m"},{"providerRef":{"name":"gone"},"model":"m","priority":1},{"providerRef":{"name":"broken"},"model":"m","priority":1}]},{"name":"only-gone","aliases":[{"name":"gone-alias"}],"backends":[{"providerRef":{"name":"gone"},"model":"m"}]}]}}"#;

#[test]
fn a_provider_that_is_gone_drops_only_its_backends() {
    let mut all = objects(FIXTURE);
    all.extend(objects(FALLBACK_GONE));
    let compiled = compile(&all);
    let config = compiled.config.as_ref().expect("a configuration");
    let endpoint = config.endpoints.get("mixed").expect("the Endpoint is served");
    let model = endpoint.models.get("m").expect("the model is served by the backend left");
    let providers: Vec<&str> = model.backends.iter().map(|b| b.provider.as_str()).collect();
    assert_eq!(providers, ["sluice-system/sim"]);
    assert!(!endpoint.models.contains_key("only-gone"), "a model with no backend left is not served");
    assert!(endpoint.aliases.contains_key("m-alias") && !endpoint.aliases.contains_key("gone-alias"));
    assert!(!config.providers.contains_key("t/broken"), "a broken Provider is not configured");
    let mixed = ObjectRef { kind: "Endpoint", namespace: Some("t".into()), name: "mixed".into() };
    assert!(!compiled.left_out.contains(&mixed));
    let problems = problem(&compiled, "Endpoint", "mixed");
    assert!(problems.contains("spec.models[0].backends[1].providerRef: no Provider \"gone\""), "{problems}");
    assert!(problems.contains("spec.models[0].backends[2].providerRef: Provider t/broken is not usable"), "{problems}");
    assert!(problems.contains("spec.models[1].backends[0].providerRef: no Provider \"gone\""), "{problems}");

    // Every backend gone: nothing of the Endpoint can be served, so it is left out.
    let typo = ObjectRef { kind: "Endpoint", namespace: Some("t".into()), name: "typo".into() };
    assert!(compiled.left_out.contains(&typo) && !config.endpoints.contains_key("typo"));
}
