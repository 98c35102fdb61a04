//! A small JSON reader for the few documents the filter reads: its
//! configuration, `/localnodes` answers, and (for key route affinity) the
//! DynamoDB requests and table descriptions that pass through.
//!
//! Why not serde_json: it was the largest single dependency of the `.wasm`
//! (about 23 KB of 232 KB, plus the serde machinery), and the filter needs
//! none of its typed decoding. This reader builds a plain tree, keeps numbers
//! as their source text (DynamoDB numbers are decimal strings anyway, and
//! configuration integers must not pass through a float), limits nesting so
//! hostile input cannot exhaust the stack, and reports the byte offset of the
//! first problem. Duplicate object keys are kept in order; callers that care
//! (configuration) check for them.

use std::fmt;

/// Deepest nesting accepted. `/localnodes` is one level, configuration two
/// or three, DynamoDB requests well under 32 (DynamoDB itself caps nested
/// attributes at 32 levels).
pub const MAX_DEPTH: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number exactly as written (already checked against JSON's grammar).
    Number(String),
    String(String),
    Array(Vec<Json>),
    /// Members in document order, duplicates included.
    Object(Vec<(String, Json)>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset of the problem in the input.
    pub offset: usize,
    pub problem: &'static str,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.problem, self.offset)
    }
}

impl std::error::Error for JsonError {}

/// Parses one JSON document; only whitespace may follow it.
pub fn parse(input: &[u8]) -> Result<Json, JsonError> {
    let mut r = Reader { input, pos: 0 };
    r.skip_ws();
    let value = r.value(0)?;
    r.skip_ws();
    if r.pos < input.len() {
        return Err(r.error("unexpected content after the JSON value"));
    }
    Ok(value)
}

impl Json {
    /// The first member named `key`, if this is an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a non-negative integer, if it is one written without a
    /// fraction or exponent and fits in 64 bits.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Number(text) => text.parse().ok(),
            _ => None,
        }
    }

    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

/// Writes the value back as compact JSON (used to quote bad values in
/// error messages).
impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Number(n) => f.write_str(n),
            Json::String(s) => write_string(f, s),
            Json::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Json::Object(members) => {
                f.write_str("{")?;
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write_string(f, k)?;
                    write!(f, ":{v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// Shows a string in double quotes with JSON escapes, for messages that
/// quote untrusted text. `{:?}` would do the same but pulls Unicode tables
/// of several kilobytes into the `.wasm`.
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_string(f, self.0)
    }
}

fn write_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn error(&self, problem: &'static str) -> JsonError {
        JsonError {
            offset: self.pos,
            problem,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek();
        if b.is_some() {
            self.pos += 1;
        }
        b
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect_word(&mut self, word: &[u8], value: Json) -> Result<Json, JsonError> {
        let end = self.pos + word.len();
        if self.input.get(self.pos..end) == Some(word) {
            self.pos = end;
            Ok(value)
        } else {
            Err(self.error("invalid literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, JsonError> {
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'n') => self.expect_word(b"null", Json::Null),
            Some(b't') => self.expect_word(b"true", Json::Bool(true)),
            Some(b'f') => self.expect_word(b"false", Json::Bool(false)),
            Some(b'"') => self.string().map(Json::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => self.array(depth + 1),
            Some(b'{') => self.object(depth + 1),
            Some(_) => Err(self.error("expected a JSON value")),
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Json::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.next() {
                Some(b',') => continue,
                Some(b']') => return Ok(Json::Array(items)),
                _ => return Err(self.error("expected ',' or ']' in an array")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.pos += 1; // '{'
        let mut members = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Json::Object(members));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key in an object"));
            }
            let key = self.string()?;
            self.skip_ws();
            if self.next() != Some(b':') {
                return Err(self.error("expected ':' after an object key"));
            }
            self.skip_ws();
            let value = self.value(depth)?;
            members.push((key, value));
            self.skip_ws();
            match self.next() {
                Some(b',') => continue,
                Some(b'}') => return Ok(Json::Object(members)),
                _ => return Err(self.error("expected ',' or '}' in an object")),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<Json, JsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.error("invalid number: no digit after '.'"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("invalid number: no digit in the exponent"));
            }
        }
        let text = self.input.get(start..self.pos).unwrap_or_default();
        // Only ASCII digits, signs, '.', 'e' were consumed.
        Ok(Json::Number(String::from_utf8_lossy(text).into_owned()))
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let mut n = 0u32;
        for _ in 0..4 {
            let digit = match self.next() {
                Some(b @ b'0'..=b'9') => b - b'0',
                Some(b @ b'a'..=b'f') => b - b'a' + 10,
                Some(b @ b'A'..=b'F') => b - b'A' + 10,
                _ => return Err(self.error("invalid \\u escape")),
            };
            n = n * 16 + u32::from(digit);
        }
        Ok(n)
    }

    /// Reads a string starting at its opening quote.
    fn string(&mut self) -> Result<String, JsonError> {
        self.pos += 1; // '"'
        let mut out = Vec::new();
        loop {
            // Copy the run of plain bytes at once.
            let run_start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.extend_from_slice(self.input.get(run_start..self.pos).unwrap_or_default());
            match self.next() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => self.escape(&mut out)?,
                Some(_) => {
                    self.pos -= 1;
                    return Err(self.error("control character in a string"));
                }
            }
        }
        String::from_utf8(out).map_err(|_| self.error("string is not valid UTF-8"))
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), JsonError> {
        let simple = match self.next() {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                let c = self.unicode_escape()?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                return Ok(());
            }
            _ => return Err(self.error("invalid escape in a string")),
        };
        out.push(simple);
        Ok(())
    }

    /// After `\u`: one code point, joining a surrogate pair.
    fn unicode_escape(&mut self) -> Result<char, JsonError> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if self.next() != Some(b'\\') || self.next() != Some(b'u') {
                    return Err(self.error("unpaired surrogate in a \\u escape"));
                }
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error("unpaired surrogate in a \\u escape"));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error("unpaired surrogate in a \\u escape")),
            n => n,
        };
        char::from_u32(code).ok_or_else(|| self.error("invalid \\u escape"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn ok(text: &str) -> Json {
        parse(text.as_bytes()).unwrap()
    }

    fn bad(text: &str) -> JsonError {
        parse(text.as_bytes()).unwrap_err()
    }

    /// The same tree serde_json builds, for a differential check.
    fn from_serde(v: &serde_json::Value) -> Json {
        match v {
            serde_json::Value::Null => Json::Null,
            serde_json::Value::Bool(b) => Json::Bool(*b),
            serde_json::Value::Number(n) => Json::Number(n.to_string()),
            serde_json::Value::String(s) => Json::String(s.clone()),
            serde_json::Value::Array(a) => Json::Array(a.iter().map(from_serde).collect()),
            serde_json::Value::Object(o) => {
                Json::Object(o.iter().map(|(k, v)| (k.clone(), from_serde(v))).collect())
            }
        }
    }

    #[test]
    fn reads_every_kind_of_value() {
        let v = ok(r#" {"a": [1, -2.5e3, true, false, null], "b": {"c": "d"}} "#);
        assert_eq!(
            v,
            Json::Object(vec![
                (
                    "a".into(),
                    Json::Array(vec![
                        Json::Number("1".into()),
                        Json::Number("-2.5e3".into()),
                        Json::Bool(true),
                        Json::Bool(false),
                        Json::Null,
                    ])
                ),
                (
                    "b".into(),
                    Json::Object(vec![("c".into(), Json::String("d".into()))])
                ),
            ])
        );
        assert_eq!(
            v.get("b").and_then(|b| b.get("c")).and_then(Json::as_str),
            Some("d")
        );
        assert_eq!(v.get("zz"), None);
    }

    #[test]
    fn decodes_escapes_and_surrogate_pairs() {
        assert_eq!(
            ok(r#""a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00""#),
            Json::String("a\"b\\c/d\u{8}\u{c}\n\r\té😀".into())
        );
        assert_eq!(ok("\"é😀\""), Json::String("é😀".into()));
    }

    #[test]
    fn keeps_numbers_as_written_and_reads_u64_exactly() {
        assert_eq!(ok("18446744073709551615").as_u64(), Some(u64::MAX));
        assert_eq!(ok("18446744073709551616").as_u64(), None);
        assert_eq!(ok("1.0").as_u64(), None);
        assert_eq!(ok("-1").as_u64(), None);
        assert_eq!(ok("1e3"), Json::Number("1e3".into()));
        assert_eq!(ok("\"5\"").as_u64(), None);
    }

    #[test]
    fn refuses_what_json_does_not_allow_with_the_offset() {
        for text in [
            "",
            " ",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "[1 2]",
            "{\"a\" 1}",
            "{a:1}",
            "'a'",
            "\"abc",
            "\"a\u{1}b\"",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800\\u0041\"",
            "tru",
            "nul",
            "[1] x",
            "NaN",
        ] {
            assert!(parse(text.as_bytes()).is_err(), "accepted {text:?}");
        }
        assert_eq!(bad("[1,]").offset, 3);
        assert_eq!(
            bad("[1] x").problem,
            "unexpected content after the JSON value"
        );
        assert!(parse(b"\"\xff\"").is_err());
    }

    #[test]
    fn limits_nesting() {
        let deep_ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(deep_ok.as_bytes()).is_ok());
        let too_deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(bad(&too_deep).problem, "nested too deeply");
        let hostile = "{\"a\":".repeat(100_000);
        assert_eq!(bad(&hostile).problem, "nested too deeply");
    }

    #[test]
    fn display_writes_json_that_reads_back_the_same() {
        let v = ok(r#"{"k\"\n":["\u0001x",1.5,{"z":null}],"t":true}"#);
        let text = v.to_string();
        assert_eq!(ok(&text), v);
        assert_eq!(ok("[1, 2]").to_string(), "[1,2]");
    }

    #[test]
    fn agrees_with_serde_json_on_documents_it_accepts() {
        for text in [
            r#"["127.0.0.1", "::1", "10.0.0.2"]"#,
            r#"{"seeds": ["10.0.0.1"], "port": 8000, "x": {"y": [true, null, -0.5E-2]}}"#,
            r#"{"TableName":"t","Item":{"pk":{"S":"a\u0000b"},"n":{"N":"12.50"}}}"#,
            "[]",
            "{}",
            "\"\\u2028\"",
        ] {
            let ours = ok(text);
            let theirs: serde_json::Value = serde_json::from_str(text).unwrap();
            // serde_json normalises numbers and sorts keys; compare numbers
            // by value and members by key.
            assert_eq!(normalise(&ours), normalise(&from_serde(&theirs)), "{text}");
        }
    }

    fn normalise(v: &Json) -> Json {
        match v {
            Json::Number(n) => Json::Number(format!("{}", n.parse::<f64>().unwrap())),
            Json::Array(a) => Json::Array(a.iter().map(normalise).collect()),
            Json::Object(o) => {
                let mut members: Vec<_> =
                    o.iter().map(|(k, v)| (k.clone(), normalise(v))).collect();
                members.sort_by(|a, b| a.0.cmp(&b.0));
                Json::Object(members)
            }
            other => other.clone(),
        }
    }
}
