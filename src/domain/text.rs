//! U+0000 in text. PostgreSQL's `text` and `jsonb` cannot hold it (SQLite can), so a NUL
//! that reached storage would be a 201 on one backend and a failed write on the other. Every
//! text a client sends is checked here, before storage, the same on both backends: the
//! request is refused as `VALIDATION_ERROR` with the field named. Text from WhatsApp peers
//! cannot be refused (it would never stop being redelivered), so it is [`scrub`]bed.

use serde_json::Value;

use crate::error::{Error, Result};

fn refused(field: &str) -> Error {
    Error::InvalidRequest(format!(
        "{field} must not contain the NUL character (U+0000)"
    ))
}

/// Refuses a text holding U+0000, naming `field`.
pub fn no_nul(field: &str, value: &str) -> Result<()> {
    if value.contains('\0') {
        return Err(refused(field));
    }
    Ok(())
}

pub fn no_nul_opt(field: &str, value: Option<&str>) -> Result<()> {
    value.map_or(Ok(()), |v| no_nul(field, v))
}

pub fn no_nul_each(field: &str, values: &[String]) -> Result<()> {
    values.iter().try_for_each(|v| no_nul(field, v))
}

/// Refuses a JSON value with U+0000 in any string or object key, at any depth (iteratively:
/// a deep document cannot overflow the stack).
pub fn no_nul_json(field: &str, value: &Value) -> Result<()> {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) => no_nul(field, s)?,
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                for (k, v) in map {
                    no_nul(field, k)?;
                    stack.push(v);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    Ok(())
}

/// Text from a WhatsApp peer, made storable: each U+0000 becomes U+FFFD (the replacement
/// character), so the reader still sees that something was there.
pub fn scrub(s: String) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nul_at_any_depth() {
        assert!(no_nul("message", "fine").is_ok());
        let e = no_nul("message", "a\0b").unwrap_err();
        assert_eq!(e.code(), "VALIDATION_ERROR");
        assert!(e.to_string().starts_with("message "), "{e}");
        let deep = serde_json::json!({"a": [1, {"b": ["x", "y\u{0}"]}]});
        assert!(no_nul_json("payload", &deep).is_err());
        assert!(no_nul_json("payload", &serde_json::json!({"k\u{0}": 1})).is_err());
        assert!(no_nul_json("payload", &serde_json::json!({"a": [1, "\u{1}"]})).is_ok());
        assert_eq!(scrub("a\0b".into()), "a\u{FFFD}b");
    }
}
