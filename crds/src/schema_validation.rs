//! Validates a document against a CRD's OpenAPI v3 schema the way the API server does on
//! `kubectl apply` (types, required fields, enums, patterns, bounds, unknown fields), so a folder
//! of manifests run without a cluster rejects exactly what a cluster would.
//!
//! CEL rules (`x-kubernetes-validations`) are not evaluated here; the compiler checks the
//! non-transition ones itself.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use regex::Regex;
use serde_json::{Map, Value};

/// One violation: the JSON path and the API server's style of message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// `spec.models[0].backends[1].weight`
    pub path: String,
    /// `Invalid value: 5000: must be less than or equal to 1000`
    pub message: String,
}

/// Checks `value` against `schema`; returns every violation found.
pub fn validate(schema: &Value, value: &Value) -> Vec<Violation> {
    let mut checker = Checker { violations: Vec::new() };
    checker.check(schema, value, &mut String::new());
    checker.violations
}

struct Checker {
    violations: Vec<Violation>,
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Compiled patterns, shared by every validation in the process.
fn pattern_matches(pattern: &str, text: &str) -> bool {
    static CACHE: Mutex<Option<HashMap<String, Option<Regex>>>> = Mutex::new(None);
    let mut guard = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    let cache = guard.get_or_insert_with(HashMap::new);
    let regex = cache.entry(pattern.to_owned()).or_insert_with(|| Regex::new(pattern).ok());
    // A pattern the regex engine cannot compile never comes from our own CRDs; accept rather than
    // reject everything.
    regex.as_ref().is_none_or(|r| r.is_match(text))
}

impl Checker {
    fn fail(&mut self, path: &str, message: String) {
        let path = if path.is_empty() { "<root>".to_owned() } else { path.to_owned() };
        self.violations.push(Violation { path, message });
    }

    fn check(&mut self, schema: &Value, value: &Value, path: &mut String) {
        let Some(schema) = schema.as_object() else { return };
        if value.is_null() {
            if schema.get("nullable").and_then(Value::as_bool) != Some(true) && schema.contains_key("type") {
                self.fail(path, "Invalid value: null: must not be null".into());
            }
            return;
        }
        if schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
            if !(value.is_string() || value.is_i64() || value.is_u64()) {
                self.fail(path, format!("Invalid value: {}: must be an integer or a string", describe(value)));
            }
            return;
        }
        if let Some(expected) = schema.get("type").and_then(Value::as_str) {
            let actual = type_name(value);
            let fits = actual == expected || (expected == "number" && actual == "integer");
            if !fits {
                self.fail(path, format!("Invalid value: {}: must be of type {expected}", describe(value)));
                return;
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            let supported: Vec<String> = options.iter().map(describe).collect();
            self.fail(
                path,
                format!("Unsupported value: {}: supported values: {}", describe(value), supported.join(", ")),
            );
        }
        match value {
            Value::Object(map) => self.check_object(schema, map, path),
            Value::Array(items) => self.check_array(schema, items, path),
            Value::String(text) => self.check_string(schema, text, path),
            Value::Number(number) => self.check_number(schema, number.as_f64().unwrap_or(f64::NAN), value, path),
            Value::Bool(_) | Value::Null => {}
        }
    }

    fn check_object(&mut self, schema: &Map<String, Value>, map: &Map<String, Value>, path: &mut String) {
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        let preserve = schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true);
        for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            if let Some(name) = required.as_str()
                && !map.contains_key(name)
            {
                let at = join(path, name);
                self.fail(&at, "Required value".into());
            }
        }
        for (name, child) in map {
            let len = path.len();
            push_field(path, name);
            match (properties.and_then(|p| p.get(name)), additional) {
                (Some(child_schema), _) => self.check(child_schema, child, path),
                (None, Some(Value::Object(_))) => self.check(additional.unwrap_or(&Value::Null), child, path),
                (None, Some(Value::Bool(true))) => {}
                (None, _)
                    if preserve || properties.is_none() && additional.is_none() && !schema.contains_key("type") => {}
                (None, _) => self.fail(path, "unknown field".into()),
            }
            path.truncate(len);
        }
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
            && map.len() as u64 > max
        {
            self.fail(path, format!("Too many: {}: must have at most {max} items", map.len()));
        }
    }

    fn check_array(&mut self, schema: &Map<String, Value>, items: &[Value], path: &mut String) {
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            self.fail(path, format!("Invalid value: {} items: should have at least {min} items", items.len()));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            self.fail(path, format!("Too many: {}: must have at most {max} items", items.len()));
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                self.check(item_schema, item, path);
                path.truncate(len);
            }
        }
    }

    fn check_string(&mut self, schema: &Map<String, Value>, text: &str, path: &str) {
        let length = text.chars().count() as u64;
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && length < min
        {
            self.fail(path, format!("Invalid value: {text:?}: should be at least {min} chars long"));
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && length > max
        {
            self.fail(path, format!("Too long: may not be more than {max} bytes"));
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
            && !pattern_matches(pattern, text)
        {
            self.fail(path, format!("Invalid value: {text:?}: should match '{pattern}'"));
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time") && text.parse::<jiff::Timestamp>().is_err()
        {
            self.fail(
                path,
                format!("Invalid value: {text:?}: must be an RFC 3339 date-time like 2026-01-31T00:00:00Z"),
            );
        }
    }

    fn check_number(&mut self, schema: &Map<String, Value>, number: f64, value: &Value, path: &str) {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && number < min
        {
            self.fail(path, format!("Invalid value: {}: must be greater than or equal to {min}", describe(value)));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && number > max
        {
            self.fail(path, format!("Invalid value: {}: must be less than or equal to {max}", describe(value)));
        }
    }
}

fn push_field(path: &mut String, name: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(name);
}

fn join(path: &str, name: &str) -> String {
    let mut joined = path.to_owned();
    push_field(&mut joined, name);
    joined
}
