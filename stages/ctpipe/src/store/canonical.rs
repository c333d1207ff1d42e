//! Canonical JSON: one byte string per logical value, so equal configs hash equally.
//!
//! Rules: object keys sorted by their UTF-8 bytes; no white space; integers written as integers;
//! floats written in Rust's shortest round-trip scientific form (`1e-4`, `5e-1`, `8e1`), with
//! `-0.0` folded into `0e0`; strings escaped as serde_json escapes them. NaN and infinities have
//! no JSON form and are rejected. Integers and floats stay distinct (`80` is not `8e1`): configs
//! are typed before they are canonicalised, so a field always has one kind of number.

use anyhow::{bail, Result};
use serde_json::Value;

/// The canonical text of a JSON value.
pub fn canonical_json(value: &Value) -> Result<String> {
    let mut out = String::new();
    write_value(value, &mut out)?;
    Ok(out)
}

/// The canonical form of a float (see the module comment).
pub fn canonical_float(f: f64) -> Result<String> {
    if !f.is_finite() {
        bail!("{f} has no canonical JSON form: configs must hold finite numbers");
    }
    if f == 0.0 {
        return Ok("0e0".to_string());
    }
    Ok(format!("{f:e}"))
}

fn write_value(value: &Value, out: &mut String) -> Result<()> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                let f = n.as_f64().expect("a JSON number is i64, u64 or f64");
                out.push_str(&canonical_float(f)?);
            }
        }
        Value::String(s) => out.push_str(&serde_json::to_string(s)?),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k)?);
                out.push(':');
                write_value(&map[k], out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_matter() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":[1,2]}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":[1,2],"y":2},"b":1}"#).unwrap();
        assert_eq!(canonical_json(&a).unwrap(), canonical_json(&b).unwrap());
        assert_eq!(canonical_json(&a).unwrap(), r#"{"a":{"x":[1,2],"y":2},"b":1}"#);
    }

    #[test]
    fn floats_have_one_spelling() {
        // The same f64 spelled three ways in the source text is one canonical string.
        let a: Value = serde_json::from_str(r#"{"lr":0.0001}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"lr":1e-4}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"lr":1.0E-4}"#).unwrap();
        let ca = canonical_json(&a).unwrap();
        assert_eq!(ca, r#"{"lr":1e-4}"#);
        assert_eq!(ca, canonical_json(&b).unwrap());
        assert_eq!(ca, canonical_json(&c).unwrap());
        assert_eq!(canonical_json(&json!(80.0)).unwrap(), "8e1");
        assert_eq!(canonical_json(&json!(-0.0)).unwrap(), "0e0");
        assert_eq!(canonical_json(&json!(0.821)).unwrap(), "8.21e-1");
        assert_eq!(canonical_json(&json!(80)).unwrap(), "80");
    }

    #[test]
    fn any_value_change_changes_the_text() {
        let base = json!({"a": 1, "b": [0.5, "x"], "c": true});
        let variants = [
            json!({"a": 2, "b": [0.5, "x"], "c": true}),
            json!({"a": 1, "b": [0.5000001, "x"], "c": true}),
            json!({"a": 1, "b": ["x", 0.5], "c": true}),
            json!({"a": 1, "b": [0.5, "y"], "c": true}),
            json!({"a": 1, "b": [0.5, "x"], "c": false}),
            json!({"a": 1, "b": [0.5, "x"], "c": true, "d": null}),
            json!({"a": 1.0, "b": [0.5, "x"], "c": true}),
        ];
        let base = canonical_json(&base).unwrap();
        for v in variants {
            assert_ne!(canonical_json(&v).unwrap(), base, "{v}");
        }
    }

    #[test]
    fn non_finite_is_rejected() {
        assert!(canonical_float(f64::NAN).is_err());
        assert!(canonical_float(f64::INFINITY).is_err());
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(canonical_json(&json!({"k\"": "a\nb"})).unwrap(), r#"{"k\"":"a\nb"}"#);
    }
}
