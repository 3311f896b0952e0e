//! Canonical JSON: compact, object keys sorted (by bytes) at every level. Equal documents
//! give equal bytes whatever order their keys came in, so digests of claims and policies
//! are stable. DO NOT CHANGE the output: `jwthash` of callers without a JWT is its sha256,
//! and stored events carry it.

use serde_json::Value;

/// Appends `v`'s canonical form to `out`.
pub fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Writing a string or a number into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                write(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(x, out);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// `v`'s canonical form.
pub fn to_vec(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write(v, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_at_every_level_and_nothing_else_changes() {
        let a: Value = serde_json::from_str(
            r#"{"b": [1, {"z": "é\"", "a": null}], "a": {"y": 2.5, "x": true}}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"a": {"x": true, "y": 2.5}, "b": [1, {"a": null, "z": "é\""}]}"#,
        )
        .unwrap();
        let want = r#"{"a":{"x":true,"y":2.5},"b":[1,{"a":null,"z":"é\""}]}"#;
        assert_eq!(String::from_utf8(to_vec(&a)).unwrap(), want);
        assert_eq!(to_vec(&a), to_vec(&b));
    }
}
