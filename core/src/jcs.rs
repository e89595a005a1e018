//! The JSON Canonicalization Scheme (RFC 8785): one byte form for one JSON value.
//!
//! Used wherever a hash must not depend on how a JSON value was written: pinned tool definitions
//! ([`crate::pins`]) and the audit log's records (the audit-sink hashes exactly these bytes).

use serde_json::Value;

/// The RFC 8785 canonical form of `value`: object members sorted by the UTF-16 code units of
/// their names (§3.2.3), no insignificant whitespace, strings escaped as ECMAScript's
/// `JSON.stringify` does (§3.2.2.2) and numbers written as ECMAScript writes an IEEE 754 double
/// (§3.2.2.3).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_value(&mut out, value);
    out
}

/// The significant digits and the decimal exponent of Rust's `{:e}` form `d[.ddd]e[-]x`.
fn scientific_digits(scientific: &str) -> (String, i32) {
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((scientific, "0"));
    let digits = mantissa.chars().filter(char::is_ascii_digit).collect();
    (digits, exponent.parse().unwrap_or(0))
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(out, number),
        Value::String(text) => write_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(members) => {
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            // §3.2.3: by UTF-16 code units, which differs from code-point (and UTF-8) order for
            // names with characters above U+FFFF next to ones in U+E000..U+FFFF.
            sorted.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (index, (name, member)) in sorted.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(out, name);
                out.push(':');
                write_value(out, member);
            }
            out.push('}');
        }
    }
}

/// §3.2.2.2: only `"`, `\` and the C0 controls are escaped; the two-character forms where
/// ECMAScript has them, else `\u00xx` in lowercase hex.
fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// §3.2.2.3: a JSON number is an IEEE 754 double, written as ECMAScript's
/// `Number.prototype.toString` writes it (ECMA-262 "Number::toString"). An integer beyond 2^53
/// is the double nearest to it, as any RFC 8785 implementation reads it.
fn write_number(out: &mut String, number: &serde_json::Number) {
    const EXACT: u64 = 1 << 53;
    if let Some(n) = number.as_u64()
        && n <= EXACT
    {
        out.push_str(&n.to_string());
        return;
    }
    if let Some(n) = number.as_i64()
        && n.unsigned_abs() <= EXACT
    {
        out.push_str(&n.to_string());
        return;
    }
    // serde_json holds only finite numbers.
    write_double(out, number.as_f64().unwrap_or(0.0));
}

fn write_double(out: &mut String, value: f64) {
    if value == 0.0 {
        out.push('0'); // -0 too
        return;
    }
    if value < 0.0 {
        out.push('-');
    }
    // Rust's `{:e}` writes the shortest digits that read back as the same double, as
    // ECMAScript requires: `d[.ddd]e[-]x`.
    let (mut digits, exponent) = scientific_digits(&format!("{:e}", value.abs()));
    // When the double lies exactly halfway between two shortest forms, ECMAScript takes the even
    // one; Rust may take the other. The exact expansion (at most 767 significant digits) shows it.
    let (exact, exact_exponent) = scientific_digits(&format!("{:.800e}", value.abs()));
    if exact_exponent == exponent && exact.len() > digits.len() {
        let (head, rest) = exact.split_at(digits.len());
        let tie = rest.starts_with('5') && rest[1..].bytes().all(|b| b == b'0');
        if tie
            && head
                .bytes()
                .last()
                .is_some_and(|d| (d - b'0').is_multiple_of(2))
        {
            digits = head.to_owned();
        }
    }
    let k = digits.len() as i32;
    // ECMAScript's n: the value is 0.d1d2…dk × 10^n.
    let n = exponent + 1;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let e = n - 1;
        out.push('e');
        out.push(if e < 0 { '-' } else { '+' });
        out.push_str(&e.unsigned_abs().to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn double(bits: u64) -> String {
        let mut out = String::new();
        write_double(&mut out, f64::from_bits(bits));
        out
    }

    #[test]
    fn numbers_are_written_as_ecmascript_writes_them() {
        // RFC 8785 Appendix B.
        for (bits, text) in [
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ] {
            assert_eq!(double(bits), text, "{bits:#018x}");
        }
    }

    #[test]
    fn json_numbers_of_every_kind() {
        let value: Value = serde_json::from_str("[0, -1, 1.5, 1e3, 10.0, 9007199254740993, -9007199254740993, 1E-7, 123456789012345678901234]").unwrap();
        assert_eq!(
            canonical_json(&value),
            "[0,-1,1.5,1000,10,9007199254740992,-9007199254740992,1e-7,1.2345678901234569e+23]"
        );
    }

    #[test]
    fn members_are_sorted_by_utf16_code_units() {
        // RFC 8785 §3.2.3's example: U+1F600 (surrogates D83D DE00) sorts before U+FB33.
        let value: Value = serde_json::from_str(
            r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#,
        )
        .unwrap();
        let canonical = canonical_json(&value);
        let order = [
            "Carriage Return",
            "One",
            "Control",
            "Latin Small Letter O With Diaeresis",
            "Euro Sign",
            "Emoji: Grinning Face",
            "Hebrew Letter Dalet With Dagesh",
        ]
        .map(|v| canonical.find(v).unwrap());
        assert!(order.is_sorted(), "{canonical}");
        assert!(canonical.starts_with("{\"\\r\":"), "{canonical}");
    }

    #[test]
    fn strings_escape_only_what_ecmascript_escapes() {
        let value = json!({"s": "\"\\\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f}\u{2028}é😀/"});
        assert_eq!(
            canonical_json(&value),
            "{\"s\":\"\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\u{7f}\u{2028}é😀/\"}"
        );
    }

    #[test]
    fn the_rfc_example_canonicalises_as_published() {
        // RFC 8785 §3.2.2's example input and output.
        let value: Value = serde_json::from_str(
            r#"{
              "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
              "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
              "literals": [null, true, false]
            }"#,
        )
        .unwrap();
        assert_eq!(
            canonical_json(&value),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }
}
