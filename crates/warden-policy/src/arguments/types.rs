//! Translation of an MCP tool's `inputSchema` into Cedar argument types.
//!
//! The translation is done once per tool at load. Its result drives both the
//! generated Cedar schema (see [`ArgType::cedar_json`]) and the conversion
//! of each call's arguments (see `super::convert`).

use serde_json::{Map, Value, json};

/// Top-level argument names that are treated as file paths when a tool
/// does not list its path arguments explicitly.
pub(crate) const PATH_ARGUMENT_NAMES: &[&str] = &[
    "path",
    "paths",
    "file",
    "filename",
    "file_path",
    "filepath",
    "directory",
    "dir",
    "folder",
    "source",
    "destination",
    "root",
    "cwd",
];

/// The Cedar type of one argument value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ArgType {
    /// A string, optionally limited to the values of a JSON Schema `enum`.
    String { allowed: Option<Vec<String>> },
    /// A file path, passed to Cedar as a `Warden::Path` entity.
    Path,
    /// A JSON Schema `integer`, passed as a Cedar `Long`.
    Long,
    /// A JSON Schema `number`, passed as a Cedar `decimal`.
    Decimal,
    /// A JSON Schema `boolean`.
    Bool,
    /// A JSON Schema `array` with typed `items`, passed as a Cedar set.
    Set(Box<ArgType>),
    /// A JSON Schema `object` with `properties`, passed as a Cedar record.
    Record(RecordType),
}

/// The declared properties of a JSON Schema object.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RecordType {
    /// Declared properties in the order the schema lists them.
    pub(crate) fields: Vec<Field>,
}

/// One declared property of an object.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Field {
    /// Property name as the tool declares it.
    pub(crate) name: String,
    /// Whether the property is listed in the object's `required`.
    pub(crate) required: bool,
    /// Cedar type, or `None` when the property has no usable JSON Schema
    /// type. Such a property is forwarded unchanged and left out of the
    /// Cedar record, so a policy that reads it fails validation.
    pub(crate) kind: Option<ArgType>,
}

/// An operator's path argument list that does not fit the tool's schema.
#[derive(Debug, PartialEq)]
pub(crate) struct PathArgumentError {
    /// Argument name from the operator's list.
    pub(crate) argument: String,
    /// Description of the problem.
    pub(crate) problem: &'static str,
}

impl RecordType {
    /// Returns the declared field called `name`.
    pub(crate) fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|field| field.name == name)
    }
}

/// Translates a tool's `inputSchema` into the record type of its arguments.
///
/// `path_arguments` lists the top-level properties that hold file paths;
/// `None` selects them by name from [`PATH_ARGUMENT_NAMES`]. A schema with
/// no `properties` yields an empty record, so every argument is undeclared.
pub(crate) fn arguments_type(
    input_schema: &Value,
    path_arguments: Option<&[String]>,
) -> Result<RecordType, PathArgumentError> {
    let mut record = match input_schema.get("properties") {
        Some(Value::Object(properties)) => record_type(properties, input_schema),
        _ => RecordType::default(),
    };
    match path_arguments {
        Some(names) => {
            for name in names {
                let field = record
                    .fields
                    .iter_mut()
                    .find(|field| &field.name == name)
                    .ok_or_else(|| PathArgumentError {
                        argument: name.clone(),
                        problem: "is not a property of the tool's inputSchema",
                    })?;
                field.kind =
                    Some(
                        path_type(field.kind.as_ref()).ok_or_else(|| PathArgumentError {
                            argument: name.clone(),
                            problem: "is neither a string nor an array of strings",
                        })?,
                    );
            }
        }
        None => {
            for field in &mut record.fields {
                if PATH_ARGUMENT_NAMES.contains(&field.name.as_str())
                    && let Some(kind) = path_type(field.kind.as_ref())
                {
                    field.kind = Some(kind);
                }
            }
        }
    }
    Ok(record)
}

impl ArgType {
    /// Returns this type in Cedar's JSON schema format.
    pub(crate) fn cedar_json(&self) -> Value {
        match self {
            ArgType::String { .. } => json!({ "type": "String" }),
            ArgType::Path => json!({ "type": "Entity", "name": "Path" }),
            ArgType::Long => json!({ "type": "Long" }),
            ArgType::Decimal => json!({ "type": "Extension", "name": "decimal" }),
            ArgType::Bool => json!({ "type": "Boolean" }),
            ArgType::Set(element) => json!({ "type": "Set", "element": element.cedar_json() }),
            ArgType::Record(record) => record.cedar_json(),
        }
    }

    /// Returns a short description of the expected value for messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            ArgType::String { allowed: None } => "a string".to_owned(),
            ArgType::String {
                allowed: Some(values),
            } => format!("one of the strings {}", values.join(", ")),
            ArgType::Path => "a file path string".to_owned(),
            ArgType::Long => "an integer".to_owned(),
            ArgType::Decimal => "a number with at most 4 fraction digits".to_owned(),
            ArgType::Bool => "a boolean".to_owned(),
            ArgType::Set(element) => format!("an array of {}", element.describe_plural()),
            ArgType::Record(_) => "an object".to_owned(),
        }
    }

    fn describe_plural(&self) -> String {
        match self {
            ArgType::String { .. } => "strings".to_owned(),
            ArgType::Path => "file path strings".to_owned(),
            ArgType::Long => "integers".to_owned(),
            ArgType::Decimal => "numbers".to_owned(),
            ArgType::Bool => "booleans".to_owned(),
            ArgType::Set(_) => "arrays".to_owned(),
            ArgType::Record(_) => "objects".to_owned(),
        }
    }
}

impl RecordType {
    /// Returns this record in Cedar's JSON schema format. Properties without
    /// a usable type are left out.
    pub(crate) fn cedar_json(&self) -> Value {
        let mut attributes = Map::new();
        for field in &self.fields {
            let Some(kind) = &field.kind else { continue };
            let mut attribute = kind.cedar_json();
            if !field.required
                && let Value::Object(map) = &mut attribute
            {
                map.insert("required".to_owned(), Value::Bool(false));
            }
            attributes.insert(field.name.clone(), attribute);
        }
        json!({ "type": "Record", "attributes": attributes })
    }
}

fn record_type(properties: &Map<String, Value>, object_schema: &Value) -> RecordType {
    let required: Vec<&str> = object_schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let fields = properties
        .iter()
        .map(|(name, schema)| Field {
            name: name.clone(),
            required: required.contains(&name.as_str()),
            kind: arg_type(schema),
        })
        .collect();
    RecordType { fields }
}

/// Translates one property schema. Returns `None` for a schema without a
/// single usable `type`: `anyOf`, `oneOf`, type lists, `{}`, `null`, an
/// array without typed `items` and an object without `properties`.
fn arg_type(schema: &Value) -> Option<ArgType> {
    let Some(type_name) = schema.get("type") else {
        return string_enum(schema);
    };
    match type_name.as_str()? {
        "string" => Some(string_enum(schema).unwrap_or(ArgType::String { allowed: None })),
        "integer" => Some(ArgType::Long),
        "number" => Some(ArgType::Decimal),
        "boolean" => Some(ArgType::Bool),
        "array" => {
            let items = schema.get("items")?;
            Some(ArgType::Set(Box::new(arg_type(items)?)))
        }
        "object" => match schema.get("properties") {
            Some(Value::Object(properties)) => {
                Some(ArgType::Record(record_type(properties, schema)))
            }
            _ => None,
        },
        _ => None,
    }
}

/// Returns a string type limited to the schema's `enum` when every value
/// of that `enum` is a string.
fn string_enum(schema: &Value) -> Option<ArgType> {
    let values = schema.get("enum")?.as_array()?;
    let allowed: Option<Vec<String>> = values
        .iter()
        .map(|value| value.as_str().map(str::to_owned))
        .collect();
    allowed.map(|allowed| ArgType::String {
        allowed: Some(allowed),
    })
}

/// Returns the path form of a string or string array type.
fn path_type(kind: Option<&ArgType>) -> Option<ArgType> {
    match kind? {
        ArgType::String { .. } | ArgType::Path => Some(ArgType::Path),
        ArgType::Set(element) => match element.as_ref() {
            ArgType::String { .. } | ArgType::Path => Some(ArgType::Set(Box::new(ArgType::Path))),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(schema: Value) -> RecordType {
        arguments_type(&schema, None).expect("schema translates")
    }

    fn kind_of<'a>(record: &'a RecordType, name: &str) -> Option<&'a ArgType> {
        record.field(name).expect("field exists").kind.as_ref()
    }

    #[test]
    fn arguments_type_maps_scalar_types() {
        let record = fields(json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "count": {"type": "integer"},
                "amount": {"type": "number"},
                "force": {"type": "boolean"},
                "mode": {"type": "string", "enum": ["fast", "slow"]}
            }
        }));
        assert_eq!(
            kind_of(&record, "name"),
            Some(&ArgType::String { allowed: None })
        );
        assert_eq!(kind_of(&record, "count"), Some(&ArgType::Long));
        assert_eq!(kind_of(&record, "amount"), Some(&ArgType::Decimal));
        assert_eq!(kind_of(&record, "force"), Some(&ArgType::Bool));
        assert_eq!(
            kind_of(&record, "mode"),
            Some(&ArgType::String {
                allowed: Some(vec!["fast".to_owned(), "slow".to_owned()])
            })
        );
    }

    #[test]
    fn arguments_type_maps_arrays_and_nested_objects() {
        let record = fields(json!({
            "type": "object",
            "properties": {
                "tags": {"type": "array", "items": {"type": "string"}},
                "options": {
                    "type": "object",
                    "properties": {"limit": {"type": "integer"}},
                    "required": ["limit"]
                }
            }
        }));
        assert_eq!(
            kind_of(&record, "tags"),
            Some(&ArgType::Set(Box::new(ArgType::String { allowed: None })))
        );
        let Some(ArgType::Record(options)) = kind_of(&record, "options") else {
            panic!("options is not a record");
        };
        let limit = options.field("limit").expect("limit is declared");
        assert!(limit.required);
        assert_eq!(limit.kind, Some(ArgType::Long));
    }

    #[test]
    fn arguments_type_leaves_out_unusable_types() {
        let record = fields(json!({
            "type": "object",
            "properties": {
                "any": {},
                "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                "list": {"type": ["string", "null"]},
                "loose": {"type": "array"},
                "free": {"type": "object"},
                "nothing": {"type": "null"}
            }
        }));
        for name in ["any", "either", "list", "loose", "free", "nothing"] {
            assert_eq!(kind_of(&record, name), None, "{name} should be left out");
        }
    }

    #[test]
    fn arguments_type_marks_required_fields() {
        let record = fields(json!({
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
            "required": ["a"]
        }));
        assert!(record.field("a").expect("a").required);
        assert!(!record.field("b").expect("b").required);
    }

    #[test]
    fn arguments_type_detects_path_names() {
        let record = fields(json!({
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "paths": {"type": "array", "items": {"type": "string"}},
                "source": {"type": "integer"},
                "content": {"type": "string"}
            }
        }));
        assert_eq!(kind_of(&record, "path"), Some(&ArgType::Path));
        assert_eq!(
            kind_of(&record, "paths"),
            Some(&ArgType::Set(Box::new(ArgType::Path)))
        );
        assert_eq!(kind_of(&record, "source"), Some(&ArgType::Long));
        assert_eq!(
            kind_of(&record, "content"),
            Some(&ArgType::String { allowed: None })
        );
    }

    #[test]
    fn arguments_type_uses_explicit_path_list() {
        let schema = json!({
            "type": "object",
            "properties": {"target": {"type": "string"}, "path": {"type": "string"}}
        });
        let names = vec!["target".to_owned()];
        let record = arguments_type(&schema, Some(&names)).expect("translates");
        assert_eq!(kind_of(&record, "target"), Some(&ArgType::Path));
        assert_eq!(
            kind_of(&record, "path"),
            Some(&ArgType::String { allowed: None })
        );
    }

    #[test]
    fn arguments_type_rejects_bad_explicit_path() {
        let schema = json!({
            "type": "object",
            "properties": {"count": {"type": "integer"}}
        });
        let missing = arguments_type(&schema, Some(&["target".to_owned()]));
        assert_eq!(
            missing.map(|_| ()).map_err(|error| error.argument),
            Err("target".to_owned())
        );
        let wrong_type = arguments_type(&schema, Some(&["count".to_owned()]));
        assert!(wrong_type.is_err());
    }

    #[test]
    fn cedar_json_marks_optional_attributes() {
        let record = fields(json!({
            "type": "object",
            "properties": {
                "a": {"type": "string"},
                "b": {"type": "number"},
                "c": {}
            },
            "required": ["a"]
        }));
        assert_eq!(
            record.cedar_json(),
            json!({
                "type": "Record",
                "attributes": {
                    "a": {"type": "String"},
                    "b": {"type": "Extension", "name": "decimal", "required": false}
                }
            })
        );
    }
}
