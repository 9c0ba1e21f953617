//! Reads Sluice objects from a folder (or file) of YAML or JSON manifests, as `kubectl apply -f`
//! would take it, so a standalone gateway runs the same declarations as a cluster.
//!
//! Sluice kinds are checked against their CRD schema (the same rules the API server applies) and
//! then parsed strictly; Secrets are decoded and ConfigMaps read (Providers' credentials and CA
//! bundles); other Kubernetes kinds are skipped with a warning.
//! Errors name the file, the document (1-based) and its first line.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde_json::Value;

use crate::api::API_VERSION;
use crate::config::{CONFIG_API_VERSION, CONFIG_KIND, GatewayConfig};
use crate::objects::{ConfigMapData, Object, SecretData};
use crate::schema_validation;

/// Where a document came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The file.
    pub file: PathBuf,
    /// 1-based index of the document in the file.
    pub document: usize,
    /// 1-based line where the document starts.
    pub line: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.document == 0 {
            write!(f, "{}", self.file.display())
        } else {
            write!(f, "{} (document {}, line {})", self.file.display(), self.document, self.line)
        }
    }
}

/// A problem with one document, or with reading a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// Where.
    pub source: Source,
    /// What, in words.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}

/// Every problem found while loading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem{} in the manifests:", self.0.len(), if self.0.len() == 1 { "" } else { "s" })?;
        for error in &self.0 {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// What a folder of manifests holds.
#[derive(Clone, Debug, Default)]
pub struct Manifests {
    /// Sluice objects, Secrets and ConfigMaps, in file and document order.
    pub objects: Vec<Object>,
    /// Already-compiled configurations found among the documents.
    pub compiled: Vec<GatewayConfig>,
    /// Documents skipped, with why (other Kubernetes kinds).
    pub warnings: Vec<LoadError>,
}

/// Reads every `.yaml`, `.yml` and `.json` file in `path` (not its subfolders, like
/// `kubectl apply -f DIR`), in name order, or the single file `path`.
pub fn load_path(path: &Path) -> Result<Manifests, LoadErrors> {
    let whole = Source { file: path.to_owned(), document: 0, line: 0 };
    let files = if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| single(&whole, format!("cannot read folder: {e}")))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_owned()]
    };
    let mut manifests = Manifests::default();
    let mut errors = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => load_text(&file, &text, &mut manifests, &mut errors),
            Err(e) => errors.push(LoadError {
                source: Source { file: file.clone(), document: 0, line: 0 },
                message: format!("cannot read file: {e}"),
            }),
        }
    }
    if errors.is_empty() { Ok(manifests) } else { Err(LoadErrors(errors)) }
}

/// Reads the documents of one file's text (named `file` in messages).
pub fn load_str(file: &Path, text: &str) -> Result<Manifests, LoadErrors> {
    let mut manifests = Manifests::default();
    let mut errors = Vec::new();
    load_text(file, text, &mut manifests, &mut errors);
    if errors.is_empty() { Ok(manifests) } else { Err(LoadErrors(errors)) }
}

fn single(source: &Source, message: String) -> LoadErrors {
    LoadErrors(vec![LoadError { source: source.clone(), message }])
}

/// Splits YAML text at document markers (`---` at the start of a line), keeping where each starts.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut documents = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let marker = line.starts_with("---") && line[3..].chars().next().is_none_or(char::is_whitespace);
        if marker || line == "..." {
            documents.push((start, std::mem::take(&mut current)));
            start = i + 2;
            // `--- {inline}` keeps content after the marker.
            if marker && line.len() > 3 {
                current.push_str(&line[3..]);
                current.push('\n');
                start = i + 1;
            }
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    documents.push((start, current));
    documents
}

/// Parses one YAML document. The node budget is raised from serde-saphyr's default (250,000) so a
/// Secret holding 50,000 keys loads; the alias and anchor limits that stop "billion laughs"
/// documents stay as they are.
fn parse_yaml(text: &str) -> Result<Value, serde_saphyr::Error> {
    let mut options = serde_saphyr::Options::default();
    if let Some(budget) = options.budget.as_mut() {
        budget.max_nodes = 20_000_000;
        budget.max_events = 40_000_000;
    }
    serde_saphyr::from_str_with_options(text, options)
}

fn load_text(file: &Path, text: &str, manifests: &mut Manifests, errors: &mut Vec<LoadError>) {
    // JSON files (a compiled GatewayConfig of 50,000 keys, say) are read as JSON: faster, and
    // without a YAML parser's node budget.
    if file.extension().is_some_and(|e| e == "json") {
        let source = Source { file: file.to_owned(), document: 1, line: 1 };
        // A compiled configuration is parsed straight into its type: going through a generic
        // JSON value first would hold the whole document twice (50,000 keys: 100 MB more).
        #[derive(serde::Deserialize)]
        struct Head {
            #[serde(rename = "apiVersion")]
            api_version: Option<String>,
            kind: Option<String>,
        }
        if let Ok(Head { api_version: Some(version), kind: Some(kind) }) = serde_json::from_str::<Head>(text)
            && version == CONFIG_API_VERSION
            && kind == CONFIG_KIND
        {
            match serde_json::from_str::<GatewayConfig>(text) {
                Ok(config) => manifests.compiled.push(config),
                Err(e) => errors.push(LoadError {
                    source: Source { line: e.line(), ..source },
                    message: format!("{CONFIG_KIND}: {e}"),
                }),
            }
            return;
        }
        match serde_json::from_str::<Value>(text) {
            Ok(value) => load_value(value, &source, manifests, errors),
            Err(e) => errors.push(LoadError {
                source: Source { line: e.line(), ..source },
                message: format!("not valid JSON: {e}"),
            }),
        }
        return;
    }
    let mut index = 0;
    for (line, body) in split_documents(text) {
        if body.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
            continue;
        }
        index += 1;
        let source = Source { file: file.to_owned(), document: index, line };
        let value: Value = match parse_yaml(&body) {
            Ok(value) => value,
            Err(_) => {
                // Parse again padded with the lines before the document, so the parser's
                // message carries the file's line numbers. Only on failure: padding every
                // document makes a file of many documents quadratic to read.
                let padded = format!("{}{body}", "\n".repeat(line - 1));
                let message = parse_yaml(&padded).err().map_or_else(String::new, |e| e.to_string());
                errors.push(LoadError { source, message: format!("not valid YAML: {message}") });
                continue;
            }
        };
        load_value(value, &source, manifests, errors);
    }
}

fn load_value(value: Value, source: &Source, manifests: &mut Manifests, errors: &mut Vec<LoadError>) {
    let mut fail = |message: String| errors.push(LoadError { source: source.clone(), message });
    if value.is_null() {
        return;
    }
    let Some(map) = value.as_object() else {
        fail("a manifest must be a mapping with apiVersion and kind".into());
        return;
    };
    let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_owned();
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
    if api_version.is_empty() || kind.is_empty() {
        fail("apiVersion and kind are required".into());
        return;
    }
    let group = api_version.split_once('/').map_or("", |(group, _)| group);
    match (group, kind.as_str()) {
        ("", "List") => {
            for item in map.get("items").and_then(Value::as_array).into_iter().flatten() {
                load_value(item.clone(), source, manifests, errors);
            }
        }
        ("", "Secret") => match serde_json::from_value::<Secret>(value) {
            Ok(secret) => manifests.objects.push(Object::Secret(SecretData::from(&secret))),
            Err(e) => fail(format!("Secret: {e}")),
        },
        ("", "ConfigMap") => match serde_json::from_value::<ConfigMap>(value) {
            Ok(config_map) => manifests.objects.push(Object::ConfigMap(ConfigMapData::from(&config_map))),
            Err(e) => fail(format!("ConfigMap: {e}")),
        },
        ("sluice.dev", CONFIG_KIND) if api_version == CONFIG_API_VERSION => {
            match serde_json::from_value::<GatewayConfig>(value) {
                Ok(config) => manifests.compiled.push(config),
                Err(e) => fail(format!("{CONFIG_KIND}: {e}")),
            }
        }
        ("sluice.dev", _) => match load_sluice_object(&api_version, &kind, value) {
            Ok(object) => manifests.objects.push(object),
            Err(problems) => {
                for problem in problems {
                    fail(problem);
                }
            }
        },
        _ => manifests.warnings.push(LoadError {
            source: source.clone(),
            message: format!("skipped {api_version} {kind}: not a Sluice kind, a Secret or a ConfigMap"),
        }),
    }
}

/// The `spec` schema of each Sluice kind, taken from the CRDs this crate generates.
static SPEC_SCHEMAS: LazyLock<BTreeMap<String, Value>> = LazyLock::new(|| {
    crate::crd_manifests::all()
        .into_iter()
        .filter_map(|(_, crd)| {
            let kind = crd.spec.names.kind.clone();
            let schema = crd.spec.versions.first()?.schema.as_ref()?.open_api_v3_schema.as_ref()?;
            let spec = serde_json::to_value(schema).ok()?.get("properties")?.get("spec")?.clone();
            Some((kind, spec))
        })
        .collect()
});

fn load_sluice_object(api_version: &str, kind: &str, mut value: Value) -> Result<Object, Vec<String>> {
    let Some(schema) = SPEC_SCHEMAS.get(kind) else {
        let known: Vec<&str> = SPEC_SCHEMAS.keys().map(String::as_str).collect();
        return Err(vec![format!(
            "unknown kind {kind} in sluice.dev (known kinds: {}, {CONFIG_KIND})",
            known.join(", ")
        )]);
    };
    if api_version != API_VERSION {
        return Err(vec![format!("{kind}: unknown apiVersion {api_version}; this release reads {API_VERSION}")]);
    }
    let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let label = if name.is_empty() { kind.to_owned() } else { format!("{kind} {name}") };
    let mut problems = Vec::new();
    if name.is_empty() {
        problems.push(format!("{kind}: metadata.name: Required value"));
    }
    match value.get("spec") {
        None => problems.push(format!("{label}: spec: Required value")),
        Some(spec) => {
            for violation in schema_validation::validate(schema, spec) {
                problems.push(format!("{label}: spec.{}: {}", violation.path, violation.message));
            }
        }
    }
    if let Some(map) = value.as_object_mut() {
        // Status is written by the operator; `kubectl apply` ignores it too.
        map.remove("status");
        for field in map.keys() {
            if !matches!(field.as_str(), "apiVersion" | "kind" | "metadata" | "spec") {
                problems.push(format!("{label}: {field}: unknown field"));
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let parsed = match kind {
        "Project" => serde_json::from_value(value).map(Object::Project),
        "Endpoint" => serde_json::from_value(value).map(Object::Endpoint),
        "ApiKey" => serde_json::from_value(value).map(Object::ApiKey),
        "Provider" => serde_json::from_value(value).map(Object::Provider),
        "ServiceTier" => serde_json::from_value(value).map(|mut tier: crate::api::ServiceTier| {
            tier.metadata.namespace = None;
            Object::ServiceTier(tier)
        }),
        other => return Err(vec![format!("unknown kind {other} in sluice.dev")]),
    };
    parsed.map_err(|e| vec![format!("{label}: {e}")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_at_markers_with_their_first_line() {
        let docs = split_documents("a: 1\n---\nb: 2\n--- # comment\nc: |\n  ---x\n...\nd: 4\n");
        let starts: Vec<usize> = docs.iter().map(|(line, _)| *line).collect();
        assert_eq!(starts, [1, 3, 4, 8]);
        assert_eq!(docs[2].1, " # comment\nc: |\n  ---x\n");
    }

    #[test]
    fn yaml_syntax_errors_carry_the_file_line() {
        let errors = load_str(Path::new("f.yaml"), "a: 1\n---\nkind: [\n").expect_err("invalid");
        let last = errors.0.last().expect("an error");
        assert_eq!(last.source.document, 2);
        assert!(last.message.contains("line 3 column 7"), "the file's line, not the document's: {}", last.message);
    }

    #[test]
    fn large_documents_load_and_json_files_are_read_as_json() {
        let mut yaml = String::from("apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: ns}\nstringData:\n");
        for i in 0..130_000 {
            yaml.push_str(&format!("  k{i}: v{i}\n"));
        }
        let manifests = load_str(Path::new("big.yaml"), &yaml).expect("260,000 nodes load");
        assert_eq!(manifests.objects.len(), 1);
        let errors = load_str(Path::new("bad.json"), "{\n  \"kind\": ").expect_err("invalid");
        assert!(errors.0[0].message.starts_with("not valid JSON"), "{}", errors.0[0].message);
        assert_eq!(errors.0[0].source.line, 2);
    }

    #[test]
    fn secrets_merge_string_data_over_data() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: ns}\ndata: {a: YWFh, b: YmJi}\nstringData: {b: override}\n";
        let manifests = load_str(Path::new("f.yaml"), text).expect("loads");
        let Some(Object::Secret(secret)) = manifests.objects.first() else { panic!("a secret") };
        assert_eq!(secret.data["a"], b"aaa");
        assert_eq!(secret.data["b"], b"override");
        assert!(!format!("{secret:?}").contains("aaa"), "secret values leak through Debug");
    }
}
