//! Names from configuration and from the network (datacenters, tables,
//! answers) shown in log lines and errors as JSON string literals, so that
//! a stray quote, newline or control character cannot forge or split a line.

use std::fmt;

/// Displays a string as a JSON string literal, escaped by `serde_json`.
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self.0) {
            Ok(literal) => f.write_str(&literal),
            // Serializing a str cannot fail; Debug escapes too.
            Err(_) => write!(f, "{:?}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn escapes_what_could_break_a_log_line() {
        assert_eq!(Quoted("dc1").to_string(), r#""dc1""#);
        assert_eq!(
            Quoted("a\"b\\c\nd\u{1}").to_string(),
            r#""a\"b\\c\nd\u0001""#
        );
        assert_eq!(Quoted("é").to_string(), "\"é\"");
    }
}
