//! Conversion of one call's JSON arguments to the tool's Cedar types.
//!
//! Conversion runs before evaluation, so a policy never receives a value of
//! the wrong type. Cedar skips a policy whose evaluation fails, so a `forbid`
//! that compared the string `"5000"` with a number would silently drop out.
//! The converted JSON is what Warden forwards, so the upstream receives the
//! values the policies decided on. Path arguments are the one exception:
//! policies see the normalised path and the upstream receives the caller's
//! original string, which it resolves itself.

use cedar_policy::{EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use serde_json::{Map, Number, Value};

use super::types::{ArgType, RecordType};

/// Maximum number of characters of a string value quoted in an error message.
const MAX_QUOTED_CHARS: usize = 64;

/// Cedar decimals carry exactly this many fraction digits.
const DECIMAL_FRACTION_DIGITS: usize = 4;

/// The arguments of one call in both of their converted forms.
pub(crate) struct ConvertedArguments {
    /// The Cedar record that policies see as `context.arguments`.
    pub(crate) record: RestrictedExpression,
    /// The JSON object that Warden forwards to the upstream.
    pub(crate) forwarded: Value,
    /// Normalised form of every path argument, for building path entities.
    pub(crate) paths: Vec<String>,
    /// Each path argument's location (`path`, `paths[0]`, `options.root`)
    /// and normalised value.
    pub(crate) located_paths: Vec<(String, String)>,
}

/// An argument that does not fit the tool's input schema.
#[derive(Debug, PartialEq)]
pub(crate) enum ArgumentError {
    /// A value that cannot be converted to the declared type.
    Mismatch {
        /// Location of the value, e.g. `options.limit` or `tags[2]`.
        location: String,
        /// Description of the declared type.
        expected: String,
        /// Description of the value that was passed.
        found: String,
    },
    /// A property that the schema does not declare.
    Undeclared {
        /// Location of the property.
        location: String,
        /// Names the schema declares at that level.
        declared: Vec<String>,
    },
    /// A required property that is absent or null.
    Missing {
        /// Location the property is missing from.
        location: String,
        /// Description of the declared type.
        expected: String,
    },
}

impl ArgumentError {
    /// Returns one sentence that names the argument, what the tool expects
    /// and what to do.
    pub(crate) fn message(&self, tool: &str) -> String {
        match self {
            ArgumentError::Mismatch {
                location,
                expected,
                found,
            } => format!(
                "argument \"{location}\" of tool {tool} must be {expected}, \
                 but the call passed {found}"
            ),
            ArgumentError::Undeclared { location, declared } => {
                let declared = if declared.is_empty() {
                    "none".to_owned()
                } else {
                    declared.join(", ")
                };
                format!(
                    "argument \"{location}\" is not declared in the inputSchema of tool {tool}; \
                     remove it (declared arguments at this level: {declared})"
                )
            }
            ArgumentError::Missing { location, expected } => format!(
                "required argument \"{location}\" of tool {tool} is missing; pass {expected}"
            ),
        }
    }

    /// Returns one sentence that names the body field, what the route's
    /// `body_schema` expects and what to do.
    pub(crate) fn body_message(&self, route: &str) -> String {
        match self {
            ArgumentError::Mismatch {
                location,
                expected,
                found,
            } => format!(
                "body field \"{location}\" of route {route} must be {expected}, \
                 but the request sent {found}"
            ),
            ArgumentError::Undeclared { location, declared } => {
                let declared = if declared.is_empty() {
                    "none".to_owned()
                } else {
                    declared.join(", ")
                };
                format!(
                    "body field \"{location}\" is not declared in the body_schema of route {route}; \
                     remove it (declared fields at this level: {declared})"
                )
            }
            ArgumentError::Missing { location, expected } => format!(
                "required body field \"{location}\" of route {route} is missing; send {expected}"
            ),
        }
    }
}

/// Converts a call's arguments to the tool's argument record.
///
/// `arguments` is the `arguments` member of `tools/call`; `Null` stands for
/// an absent member and counts as an empty object.
pub(crate) fn convert_arguments(
    record: &RecordType,
    arguments: &Value,
    path_type: &EntityTypeName,
) -> Result<ConvertedArguments, ArgumentError> {
    let empty = Map::new();
    let object = match arguments {
        Value::Null => &empty,
        Value::Object(object) => object,
        other => {
            return Err(ArgumentError::Mismatch {
                location: "arguments".to_owned(),
                expected: "an object".to_owned(),
                found: describe_value(other),
            });
        }
    };
    let mut converter = Converter {
        path_type,
        paths: Vec::new(),
        located_paths: Vec::new(),
    };
    let (record, forwarded) = converter.record(record, object, "")?;
    Ok(ConvertedArguments {
        record,
        forwarded: Value::Object(forwarded),
        paths: converter.paths,
        located_paths: converter.located_paths,
    })
}

/// Returns the Cedar `decimal` literal for a number's decimal text, or
/// `None` when the text has more than 4 fraction digits, is out of the
/// decimal range or is not of the form `-?digits(.digits)?`.
pub(crate) fn decimal_literal(text: &str) -> Option<String> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    let fraction_valid = !unsigned.contains('.') || !fraction.is_empty();
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || !fraction_valid {
        return None;
    }
    if fraction.len() > DECIMAL_FRACTION_DIGITS {
        return None;
    }
    // Cedar stores a decimal as an i64 count of 1/10^4 units.
    let padded = format!("{fraction:0<DECIMAL_FRACTION_DIGITS$}");
    let units = whole
        .parse::<i128>()
        .ok()?
        .checked_mul(10_i128.pow(DECIMAL_FRACTION_DIGITS as u32))?
        .checked_add(padded.parse::<i128>().ok()?)?;
    let signed = if negative { -units } else { units };
    i64::try_from(signed).ok()?;
    let fraction = if fraction.is_empty() { "0" } else { fraction };
    let sign = if negative { "-" } else { "" };
    Some(format!("{sign}{whole}.{fraction}"))
}

struct Converter<'a> {
    path_type: &'a EntityTypeName,
    paths: Vec<String>,
    located_paths: Vec<(String, String)>,
}

impl Converter<'_> {
    fn record(
        &mut self,
        record: &RecordType,
        object: &Map<String, Value>,
        prefix: &str,
    ) -> Result<(RestrictedExpression, Map<String, Value>), ArgumentError> {
        for name in object.keys() {
            if record.field(name).is_none() {
                return Err(ArgumentError::Undeclared {
                    location: join_location(prefix, name),
                    declared: record.fields.iter().map(|f| f.name.clone()).collect(),
                });
            }
        }
        let mut attributes = Vec::with_capacity(record.fields.len());
        let mut forwarded = Map::with_capacity(object.len());
        for field in &record.fields {
            let location = join_location(prefix, &field.name);
            // A null optional argument counts as absent and is not forwarded,
            // so the upstream never receives a value that no policy saw.
            let value = object.get(&field.name).filter(|value| !value.is_null());
            let Some(value) = value else {
                if field.required {
                    return Err(ArgumentError::Missing {
                        location,
                        expected: field
                            .kind
                            .as_ref()
                            .map_or_else(|| "a value".to_owned(), ArgType::describe),
                    });
                }
                continue;
            };
            match &field.kind {
                Some(kind) => {
                    let (expression, converted) = self.value(kind, value, &location)?;
                    attributes.push((field.name.clone(), expression));
                    forwarded.insert(field.name.clone(), converted);
                }
                None => {
                    forwarded.insert(field.name.clone(), value.clone());
                }
            }
        }
        let expression = RestrictedExpression::new_record(attributes).map_err(|error| {
            ArgumentError::Mismatch {
                location: if prefix.is_empty() {
                    "arguments".to_owned()
                } else {
                    prefix.to_owned()
                },
                expected: "an object with distinct property names".to_owned(),
                found: error.to_string(),
            }
        })?;
        Ok((expression, forwarded))
    }

    fn value(
        &mut self,
        kind: &ArgType,
        value: &Value,
        location: &str,
    ) -> Result<(RestrictedExpression, Value), ArgumentError> {
        let mismatch = || ArgumentError::Mismatch {
            location: location.to_owned(),
            expected: kind.describe(),
            found: describe_value(value),
        };
        match kind {
            ArgType::String { allowed } => {
                let text = value.as_str().ok_or_else(mismatch)?;
                if let Some(allowed) = allowed
                    && !allowed.iter().any(|candidate| candidate == text)
                {
                    return Err(mismatch());
                }
                Ok((
                    RestrictedExpression::new_string(text.to_owned()),
                    value.clone(),
                ))
            }
            ArgType::Path => {
                let text = value.as_str().ok_or_else(mismatch)?;
                let total: usize = self.paths.iter().map(String::len).sum::<usize>() + text.len();
                if total > warden_core::path::MAX_TOTAL_PATH_BYTES {
                    return Err(ArgumentError::Mismatch {
                        location: location.to_owned(),
                        expected: format!(
                            "paths of at most {} bytes in all in one call",
                            warden_core::path::MAX_TOTAL_PATH_BYTES
                        ),
                        found: format!("{total} bytes so far"),
                    });
                }
                if let Some(expected) = warden_core::path::check_limits(text) {
                    return Err(ArgumentError::Mismatch {
                        location: location.to_owned(),
                        expected,
                        found: "a longer path".to_owned(),
                    });
                }
                let normalised = warden_core::path::normalize(text);
                let uid = EntityUid::from_type_name_and_id(
                    self.path_type.clone(),
                    EntityId::new(&normalised),
                );
                self.located_paths
                    .push((location.to_owned(), normalised.clone()));
                self.paths.push(normalised);
                Ok((RestrictedExpression::new_entity_uid(uid), value.clone()))
            }
            ArgType::Long => {
                let number = to_long(value).ok_or_else(mismatch)?;
                Ok((RestrictedExpression::new_long(number), Value::from(number)))
            }
            ArgType::Decimal => {
                let (literal, forwarded) = to_decimal(value).ok_or_else(mismatch)?;
                Ok((RestrictedExpression::new_decimal(literal), forwarded))
            }
            ArgType::Bool => {
                let flag = match value {
                    Value::Bool(flag) => *flag,
                    Value::String(text) if text == "true" => true,
                    Value::String(text) if text == "false" => false,
                    _ => return Err(mismatch()),
                };
                Ok((RestrictedExpression::new_bool(flag), Value::Bool(flag)))
            }
            ArgType::Set(element) => {
                let items = value.as_array().ok_or_else(mismatch)?;
                let mut expressions = Vec::with_capacity(items.len());
                let mut forwarded = Vec::with_capacity(items.len());
                for (index, item) in items.iter().enumerate() {
                    let item_location = format!("{location}[{index}]");
                    let (expression, converted) = self.value(element, item, &item_location)?;
                    expressions.push(expression);
                    forwarded.push(converted);
                }
                Ok((
                    RestrictedExpression::new_set(expressions),
                    Value::Array(forwarded),
                ))
            }
            ArgType::Record(record) => {
                let object = value.as_object().ok_or_else(mismatch)?;
                let (expression, forwarded) = self.record(record, object, location)?;
                Ok((expression, Value::Object(forwarded)))
            }
        }
    }
}

fn join_location(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Converts an integer, an integral float or a string of decimal digits.
fn to_long(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number
            .as_i64()
            .or_else(|| number.as_f64().and_then(integral_float)),
        Value::String(text) => {
            let digits = text.strip_prefix('-').unwrap_or(text);
            if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
                return None;
            }
            text.parse().ok()
        }
        _ => None,
    }
}

fn integral_float(float: f64) -> Option<i64> {
    // 2^63 is exactly representable, so the range check is exact.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if float.fract() == 0.0 && (-LIMIT..LIMIT).contains(&float) {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the value is integral and inside the i64 range"
        )]
        Some(float as i64)
    } else {
        None
    }
}

/// Converts a number or a string of decimal text to a Cedar decimal
/// literal and the JSON number to forward.
fn to_decimal(value: &Value) -> Option<(String, Value)> {
    match value {
        Value::Number(number) => {
            // serde_json prints floats in their shortest round-trip form
            // without an exponent, so the fraction digits are the real ones.
            let literal = decimal_literal(&number.to_string())?;
            Some((literal, value.clone()))
        }
        Value::String(text) => {
            let literal = decimal_literal(text)?;
            let number: Number = serde_json::from_str(text).ok()?;
            Some((literal, Value::Number(number)))
        }
        _ => None,
    }
}

/// Describes a JSON value for an error message, quoting short scalars.
fn describe_value(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(flag) => format!("the boolean {flag}"),
        Value::Number(number) => format!("the number {number}"),
        Value::String(text) => {
            let quoted: String = text.chars().take(MAX_QUOTED_CHARS).collect();
            let ellipsis = if text.chars().count() > MAX_QUOTED_CHARS {
                "..."
            } else {
                ""
            };
            format!("the string {:?}{ellipsis}", quoted)
        }
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::types::arguments_type;
    use super::*;
    use serde_json::json;
    use std::str::FromStr;

    fn path_type() -> EntityTypeName {
        EntityTypeName::from_str("Warden::Path").expect("valid type name")
    }

    fn record(schema: Value) -> RecordType {
        arguments_type(&schema, None).expect("schema translates")
    }

    fn convert(schema: Value, arguments: Value) -> Result<ConvertedArguments, ArgumentError> {
        convert_arguments(&record(schema), &arguments, &path_type())
    }

    fn payment_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "amount": {"type": "integer"},
                "price": {"type": "number"},
                "confirm": {"type": "boolean"},
                "note": {"type": "string"}
            },
            "required": ["amount"]
        })
    }

    #[test]
    fn long_accepts_digit_string() {
        let converted = convert(payment_schema(), json!({"amount": "5000"})).expect("converts");
        assert_eq!(converted.forwarded, json!({"amount": 5000}));
    }

    #[test]
    fn long_accepts_integral_float() {
        let converted = convert(payment_schema(), json!({"amount": 5000.0})).expect("converts");
        assert_eq!(converted.forwarded, json!({"amount": 5000}));
    }

    #[test]
    fn long_rejects_fraction_and_text() {
        for bad in [
            json!(1.5),
            json!("12a"),
            json!("+5"),
            json!(""),
            json!(true),
        ] {
            let result = convert(payment_schema(), json!({"amount": bad}));
            assert!(
                matches!(result, Err(ArgumentError::Mismatch { .. })),
                "{bad} should not convert"
            );
        }
    }

    #[test]
    fn long_rejects_out_of_range() {
        let result = convert(payment_schema(), json!({"amount": u64::MAX}));
        assert!(matches!(result, Err(ArgumentError::Mismatch { .. })));
        let text = convert(payment_schema(), json!({"amount": "9223372036854775808"}));
        assert!(matches!(text, Err(ArgumentError::Mismatch { .. })));
    }

    #[test]
    fn bool_accepts_true_false_strings() {
        let converted =
            convert(payment_schema(), json!({"amount": 1, "confirm": "false"})).expect("converts");
        assert_eq!(converted.forwarded["confirm"], json!(false));
        let rejected = convert(payment_schema(), json!({"amount": 1, "confirm": "yes"}));
        assert!(rejected.is_err());
    }

    #[test]
    fn string_rejects_number() {
        let result = convert(payment_schema(), json!({"amount": 1, "note": 7}));
        assert_eq!(
            result.map(|_| ()),
            Err(ArgumentError::Mismatch {
                location: "note".to_owned(),
                expected: "a string".to_owned(),
                found: "the number 7".to_owned(),
            })
        );
    }

    #[test]
    fn decimal_literal_formats_and_limits() {
        assert_eq!(decimal_literal("12"), Some("12.0".to_owned()));
        assert_eq!(decimal_literal("12.5"), Some("12.5".to_owned()));
        assert_eq!(decimal_literal("-0.0001"), Some("-0.0001".to_owned()));
        assert_eq!(decimal_literal("0.00001"), None);
        assert_eq!(
            decimal_literal("922337203685477.5807"),
            Some("922337203685477.5807".to_owned())
        );
        assert_eq!(decimal_literal("922337203685477.5808"), None);
        assert_eq!(
            decimal_literal("-922337203685477.5808"),
            Some("-922337203685477.5808".to_owned())
        );
        for bad in ["", "-", "1.", ".5", "1e3", "1.2.3", " 1", "+1", "0x10"] {
            assert_eq!(decimal_literal(bad), None, "{bad:?} should not convert");
        }
    }

    #[test]
    fn decimal_accepts_number_and_string() {
        let converted = convert(payment_schema(), json!({"amount": 1, "price": 19.99}))
            .expect("number converts");
        assert_eq!(converted.forwarded["price"], json!(19.99));
        let from_text = convert(payment_schema(), json!({"amount": 1, "price": "19.99"}))
            .expect("string converts");
        assert_eq!(from_text.forwarded["price"], json!(19.99));
    }

    #[test]
    fn decimal_rejects_five_fraction_digits() {
        let result = convert(payment_schema(), json!({"amount": 1, "price": 0.12345}));
        assert_eq!(
            result.map(|_| ()),
            Err(ArgumentError::Mismatch {
                location: "price".to_owned(),
                expected: "a number with at most 4 fraction digits".to_owned(),
                found: "the number 0.12345".to_owned(),
            })
        );
    }

    #[test]
    fn undeclared_argument_is_rejected() {
        let result = convert(payment_schema(), json!({"amount": 1, "extra": 2}));
        assert!(matches!(
            result,
            Err(ArgumentError::Undeclared { ref location, .. }) if location == "extra"
        ));
    }

    #[test]
    fn missing_required_argument_is_rejected() {
        let result = convert(payment_schema(), json!({"note": "x"}));
        assert_eq!(
            result.map(|_| ()),
            Err(ArgumentError::Missing {
                location: "amount".to_owned(),
                expected: "an integer".to_owned(),
            })
        );
    }

    #[test]
    fn null_required_argument_is_missing() {
        let result = convert(payment_schema(), json!({"amount": null}));
        assert!(matches!(result, Err(ArgumentError::Missing { .. })));
    }

    #[test]
    fn null_optional_argument_is_dropped() {
        let converted =
            convert(payment_schema(), json!({"amount": 1, "note": null})).expect("converts");
        assert_eq!(converted.forwarded, json!({"amount": 1}));
    }

    #[test]
    fn absent_arguments_count_as_empty() {
        let schema = json!({"type": "object", "properties": {"q": {"type": "string"}}});
        let converted = convert(schema, Value::Null).expect("converts");
        assert_eq!(converted.forwarded, json!({}));
    }

    #[test]
    fn non_object_arguments_are_rejected() {
        let result = convert(payment_schema(), json!([1, 2]));
        assert!(matches!(
            result,
            Err(ArgumentError::Mismatch { ref location, .. }) if location == "arguments"
        ));
    }

    #[test]
    fn nested_errors_name_full_location() {
        let schema = json!({
            "type": "object",
            "properties": {
                "options": {
                    "type": "object",
                    "properties": {"limits": {"type": "array", "items": {"type": "integer"}}}
                }
            }
        });
        let result = convert(schema, json!({"options": {"limits": [1, "two"]}}));
        assert!(matches!(
            result,
            Err(ArgumentError::Mismatch { ref location, .. }) if location == "options.limits[1]"
        ));
    }

    #[test]
    fn nested_undeclared_property_is_rejected() {
        let schema = json!({
            "type": "object",
            "properties": {
                "options": {"type": "object", "properties": {"limit": {"type": "integer"}}}
            }
        });
        let result = convert(schema, json!({"options": {"limit": 1, "sneak": true}}));
        assert!(matches!(
            result,
            Err(ArgumentError::Undeclared { ref location, .. }) if location == "options.sneak"
        ));
    }

    #[test]
    fn enum_rejects_unlisted_value() {
        let schema = json!({
            "type": "object",
            "properties": {"mode": {"type": "string", "enum": ["fast", "slow"]}}
        });
        assert!(convert(schema.clone(), json!({"mode": "fast"})).is_ok());
        assert!(convert(schema, json!({"mode": "reckless"})).is_err());
    }

    #[test]
    fn untyped_argument_is_forwarded_unchanged() {
        let schema = json!({"type": "object", "properties": {"blob": {}}});
        let converted = convert(schema, json!({"blob": {"any": ["thing", 1]}})).expect("converts");
        assert_eq!(converted.forwarded, json!({"blob": {"any": ["thing", 1]}}));
    }

    #[test]
    fn paths_are_normalised_but_forwarded_as_given() {
        let schema = json!({
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "paths": {"type": "array", "items": {"type": "string"}}
            }
        });
        let converted = convert(
            schema,
            json!({"path": "/srv/data/../data/./a.txt", "paths": ["/tmp//x"]}),
        )
        .expect("converts");
        assert_eq!(converted.paths, vec!["/srv/data/a.txt", "/tmp/x"]);
        assert_eq!(
            converted.forwarded["path"],
            json!("/srv/data/../data/./a.txt")
        );
        assert_eq!(converted.forwarded["paths"], json!(["/tmp//x"]));
    }

    #[test]
    fn mismatch_message_names_argument_and_types() {
        let error = ArgumentError::Mismatch {
            location: "amount".to_owned(),
            expected: "an integer".to_owned(),
            found: "the string \"lots\"".to_owned(),
        };
        assert_eq!(
            error.message("pay__send"),
            "argument \"amount\" of tool pay__send must be an integer, \
             but the call passed the string \"lots\""
        );
    }
}
