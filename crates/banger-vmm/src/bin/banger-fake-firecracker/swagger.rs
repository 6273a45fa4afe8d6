//! A validator for the subset of Swagger 2.0 the Firecracker spec uses,
//! shared by the fake Firecracker and banger-vmm's schema tests.
//!
//! It is deliberately strict:
//! * Every schema keyword it meets must be one it implements (`type`,
//!   `properties`, `required`, `additionalProperties`, `enum`, `minimum`,
//!   `maximum`, `items`, `$ref`) or a pure annotation (`description`,
//!   `default`, `format`, `example`, `readOnly`, `title`). Anything else is a
//!   validation error, so a newer spec cannot be "passed" by ignoring it.
//! * Objects are closed when [`Spec::closed_objects`] is set (the default):
//!   properties the schema does not name are refused unless the schema says
//!   `additionalProperties`. Firecracker deserializes its request bodies with
//!   serde's `deny_unknown_fields`, so an unknown field is a 400 there too.
//! * `integer` means a JSON number without a fraction or exponent part.
//!
//! The spec is given as JSON (the YAML file converted by the caller), so the
//! fake needs no YAML parser.

use serde_json::Value;

const ANNOTATIONS: &[&str] = &[
    "description",
    "default",
    "format",
    "example",
    "readOnly",
    "title",
];
const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "minimum",
    "maximum",
    "items",
    "$ref",
];

/// A parsed Swagger 2.0 document.
#[derive(Debug, Clone)]
pub struct Spec {
    root: Value,
    /// Refuse properties a schema does not name (see the module docs).
    pub closed_objects: bool,
}

/// One operation found for a method and a concrete path.
#[derive(Debug, Clone)]
pub struct Operation<'a> {
    /// The path template it matched, e.g. `/drives/{drive_id}`.
    pub template: String,
    /// The operation object (`summary`, `parameters`, `responses`, ...).
    pub op: &'a Value,
    /// Path parameters: (name, value from the concrete path).
    pub path_params: Vec<(String, String)>,
    /// The `in: body` parameter's schema and whether it is required.
    pub body: Option<(&'a Value, bool)>,
}

impl Spec {
    pub fn new(root: Value) -> Self {
        Spec {
            root,
            closed_objects: true,
        }
    }

    pub fn definition(&self, name: &str) -> Option<&Value> {
        self.root.get("definitions")?.get(name)
    }

    /// Validate `value` against `#/definitions/<name>`.
    pub fn validate_definition(&self, name: &str, value: &Value) -> Result<(), String> {
        let schema = self
            .definition(name)
            .ok_or_else(|| format!("the spec has no definition {name:?}"))?;
        self.validate(schema, value, name)
    }

    /// Find the operation for `method` on the concrete `path`.
    pub fn operation(&self, method: &str, path: &str) -> Option<Operation<'_>> {
        let paths = self.root.get("paths")?.as_object()?;
        let want: Vec<&str> = path.split('/').collect();
        for (template, item) in paths {
            let segs: Vec<&str> = template.split('/').collect();
            if segs.len() != want.len() {
                continue;
            }
            let mut params = Vec::new();
            let matched = segs.iter().zip(&want).all(|(t, w)| {
                match t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                    Some(name) if !w.is_empty() => {
                        params.push((name.to_string(), w.to_string()));
                        true
                    }
                    Some(_) => false,
                    None => t == w,
                }
            });
            if !matched {
                continue;
            }
            let op = item.get(method.to_ascii_lowercase())?;
            let body = op
                .get("parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|p| p.get("in").and_then(Value::as_str) == Some("body"))
                .and_then(|p| {
                    let required = p.get("required").and_then(Value::as_bool).unwrap_or(false);
                    p.get("schema").map(|s| (s, required))
                });
            return Some(Operation {
                template: template.clone(),
                op,
                path_params: params,
                body,
            });
        }
        None
    }

    /// Validate a whole request: the operation exists, a required body is
    /// present, the body matches its schema, and a body field named like a
    /// path parameter carries the same value (Firecracker refuses
    /// `PUT /drives/a` with `"drive_id": "b"`).
    pub fn validate_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(), String> {
        let op = self
            .operation(method, path)
            .ok_or_else(|| format!("no operation {method} {path} in the spec"))?;
        match (op.body, body) {
            (Some((_, true)), None) => {
                return Err(format!("{method} {}: the body is required", op.template));
            }
            (Some((schema, _)), Some(b)) => self.validate(schema, b, "body")?,
            (None, Some(_)) => {
                return Err(format!("{method} {}: takes no body", op.template));
            }
            (Some((_, false)), None) | (None, None) => {}
        }
        if let Some(b) = body {
            for (name, value) in &op.path_params {
                if let Some(field) = b.get(name)
                    && field.as_str() != Some(value.as_str())
                {
                    return Err(format!(
                        "body.{name} is {field}, but the path says {value:?}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Validate `value` against `schema`; `at` names the position for errors
    /// (`body.drives[0].path_on_host`).
    pub fn validate(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let schema_obj = schema
            .as_object()
            .ok_or_else(|| format!("{at}: schema is not an object: {schema}"))?;
        if let Some(r) = schema_obj.get("$ref") {
            // Swagger 2.0: siblings of $ref are ignored.
            let r = r.as_str().unwrap_or_default();
            let name = r
                .strip_prefix("#/definitions/")
                .ok_or_else(|| format!("{at}: unsupported $ref {r:?}"))?;
            let target = self
                .definition(name)
                .ok_or_else(|| format!("{at}: $ref to missing definition {name:?}"))?;
            return self.validate(target, value, at);
        }
        for key in schema_obj.keys() {
            if !KEYWORDS.contains(&key.as_str()) && !ANNOTATIONS.contains(&key.as_str()) {
                return Err(format!(
                    "{at}: schema keyword {key:?} is not understood by this validator"
                ));
            }
        }
        if let Some(t) = schema_obj.get("type") {
            let t = t.as_str().unwrap_or_default();
            let ok = match t {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "boolean" => value.is_boolean(),
                "number" => value.is_number(),
                "integer" => value.is_i64() || value.is_u64(),
                other => return Err(format!("{at}: schema type {other:?} is not understood")),
            };
            if !ok {
                return Err(format!("{at}: expected {t}, got {value}"));
            }
        }
        if let Some(allowed) = schema_obj.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Err(format!("{at}: {value} is not one of [{}]", list.join(", ")));
        }
        if let Some(n) = value.as_f64() {
            if let Some(min) = schema_obj.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                return Err(format!("{at}: {value} is below the minimum {min}"));
            }
            if let Some(max) = schema_obj.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                return Err(format!("{at}: {value} is above the maximum {max}"));
            }
        }
        if let (Some(items), Some(arr)) = (schema_obj.get("items"), value.as_array()) {
            for (i, v) in arr.iter().enumerate() {
                self.validate(items, v, &format!("{at}[{i}]"))?;
            }
        }
        if let Some(obj) = value.as_object() {
            let props = schema_obj.get("properties").and_then(Value::as_object);
            if let Some(required) = schema_obj.get("required").and_then(Value::as_array) {
                for r in required.iter().filter_map(Value::as_str) {
                    if !obj.contains_key(r) {
                        return Err(format!("{at}: required field {r:?} is missing"));
                    }
                }
            }
            let extra = schema_obj.get("additionalProperties");
            for (k, v) in obj {
                let here = format!("{at}.{k}");
                match (props.and_then(|p| p.get(k)), extra) {
                    (Some(s), _) => self.validate(s, v, &here)?,
                    (None, Some(Value::Bool(true))) => {}
                    (None, Some(Value::Bool(false))) => {
                        return Err(format!("{at}: field {k:?} is not allowed"));
                    }
                    (None, Some(s)) => self.validate(s, v, &here)?,
                    (None, None) if self.closed_objects => {
                        return Err(format!(
                            "{at}: unknown field {k:?} (the schema names no such property)"
                        ));
                    }
                    (None, None) => {}
                }
            }
        }
        Ok(())
    }
}
