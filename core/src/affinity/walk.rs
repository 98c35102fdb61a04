//! Walking a request body with serde_json as it streams, within bounds: the
//! affinity rules ([`super::key`], [`super::qualify`]) are serde seeds and
//! visitors that look at each member's name, deserialize only the members
//! they need, skip every other value, and stop serde_json as soon as they
//! can decide. Nothing of the body is kept but the hashes a rule returns.
//!
//! The text comes from a [`std::io::Read`] (Envoy's buffer a chunk at a
//! time, or the gzip inflater a piece at a time), read by
//! `serde_json::Deserializer::from_reader` through a [`BufReader`] of
//! [`PIECE`] bytes, since serde_json's reader takes its bytes one at a time.
//!
//! Bounds, whatever the text says:
//! - work: the rules and the skipping ([`Skip`]) look at [`MAX_ENTRIES`]
//!   members and array entries in all, junk counting as much as anything,
//!   nested in a skipped value or not; past it the read stops;
//! - nesting: serde_json's recursion limit ([`MAX_DEPTH`]); every object or
//!   array is entered through serde_json, which counts it before a visitor
//!   sees it, so the stack is bounded too;
//! - bytes: the source's (the body's size, the gzip caps); serde_json
//!   parses every byte it passes, skipped or not (a number beyond `f64`'s
//!   range, even in a skipped member, makes the body unusable);
//! - memory: the [`BufReader`]'s piece, serde_json's scratch buffer, the
//!   inflater's window, and a batch's hashes. serde_json reading from an
//!   `io::Read` cannot borrow from the text, so it copies every string a
//!   visitor is handed (each member name, and each string value looked at
//!   or skipped) whole into its scratch buffer before the visitor sees its
//!   length: the longest string of a body is what that buffer grows to, and
//!   only the body's size caps it (1 MiB for a single-item write, 16 MiB
//!   for a batch, inflated; [`super::body_limit`]). [`MAX_TEXT`] is the
//!   longest string a rule uses, not what serde_json buffers.
//!
//! A bound reached is [`Halt::Unread`], which the caller counts; text that
//! is not JSON where the reader went is [`Halt::Unusable`]. What comes after
//! the point where a rule decided is not read, and so not judged.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;
use std::fmt;
use std::io::{self, BufReader, Read};

/// The visit methods of the values that are neither objects nor arrays
/// (serde_json's `deserialize_any` gives no others), each giving `$give`
/// with `$this` bound to the visitor.
macro_rules! scalars_but_str {
    (|$this:ident| $give:expr) => {
        fn visit_bool<E: ::serde::de::Error>(
            self,
            _: bool,
        ) -> ::std::result::Result<Self::Value, E> {
            let $this = self;
            Ok($give)
        }

        fn visit_i64<E: ::serde::de::Error>(self, _: i64) -> ::std::result::Result<Self::Value, E> {
            let $this = self;
            Ok($give)
        }

        fn visit_u64<E: ::serde::de::Error>(self, _: u64) -> ::std::result::Result<Self::Value, E> {
            let $this = self;
            Ok($give)
        }

        fn visit_f64<E: ::serde::de::Error>(self, _: f64) -> ::std::result::Result<Self::Value, E> {
            let $this = self;
            Ok($give)
        }

        fn visit_unit<E: ::serde::de::Error>(self) -> ::std::result::Result<Self::Value, E> {
            let $this = self;
            Ok($give)
        }
    };
}

/// The same, strings included.
macro_rules! scalars {
    (|$this:ident| $give:expr) => {
        fn visit_str<E: ::serde::de::Error>(
            self,
            _: &str,
        ) -> ::std::result::Result<Self::Value, E> {
            let $this = self;
            Ok($give)
        }

        $crate::affinity::walk::scalars_but_str!(|$this| $give);
    };
}
pub(crate) use {scalars, scalars_but_str};

/// Longest string a rule uses (names compared, values hashed): longer than
/// any name or key value a rule needs (DynamoDB: table names 255 bytes, key
/// attribute names 255, partition key values 2048, i.e. 2732 in base64). A
/// longer one counts as no match.
pub const MAX_TEXT: usize = 4096;

/// Most members and array entries one read may look at, those of skipped
/// values included: junk costs the same wherever it is, so a body of
/// millions of tiny members stops after this many. (serde_json's own
/// skipping, `deserialize_ignored_any`, neither counts them nor limits
/// nesting, so skipped values go through [`Skip`] instead.) A real write
/// looks at far fewer before it is decided; one whose items hold larger
/// lists or maps ahead of what decides it routes normally, counted as not
/// read.
pub const MAX_ENTRIES: usize = 10_000;

/// Deepest nesting of objects and arrays read: serde_json's recursion limit
/// of 128 lets 127 of them nest (DynamoDB itself allows 32 levels of
/// documents).
pub const MAX_DEPTH: usize = 127;

/// How much text is taken from the source at a time.
pub const PIECE: usize = 16 * 1024;

/// Which bound stopped a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// More bytes than the body may have (inflated, or by the gzip ratio).
    Size,
    /// More than [`MAX_ENTRIES`] members and array entries looked at.
    Entries,
    /// Nesting deeper than [`MAX_DEPTH`].
    Depth,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Limit::Size => "the body is larger than its limit",
            Limit::Entries => "more members and array entries than the limit",
            Limit::Depth => "nested deeper than the limit",
        })
    }
}

/// So that a source can say which bound its bytes reached through
/// `io::Read` ([`Limit::io_error`]); serde_json hands its I/O errors back
/// unchanged.
impl std::error::Error for Limit {}

impl Limit {
    /// The error a source returns when its text reaches this bound.
    pub fn io_error(self) -> io::Error {
        io::Error::other(self)
    }
}

/// Why a read ended without a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Halt {
    /// Not JSON where the reader went (or a source that is not what it
    /// says, such as corrupt gzip): no affinity, like any unusable body.
    Unusable,
    /// A bound was reached first: the body was not read to a decision.
    Unread(Limit),
}

pub type Result<T> = std::result::Result<T, Halt>;

/// serde_json reading a source through a [`BufReader`].
pub type Json<R> = serde_json::Deserializer<serde_json::de::IoRead<BufReader<R>>>;

/// The members and array entries one read may still look at.
#[derive(Debug)]
pub struct Cap {
    left: usize,
    reached: bool,
}

impl Cap {
    fn new() -> Cap {
        Cap {
            left: MAX_ENTRIES,
            reached: false,
        }
    }

    /// Members and array entries looked at so far.
    pub fn looked_at(&self) -> usize {
        MAX_ENTRIES - self.left
    }

    /// Counts one member or array entry; past [`MAX_ENTRIES`], the error
    /// that stops the read (which [`read`] turns into
    /// [`Limit::Entries`]).
    pub fn count<E: de::Error>(&mut self) -> std::result::Result<(), E> {
        match self.left.checked_sub(1) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => {
                self.reached = true;
                Err(stopped())
            }
        }
    }
}

/// What the visitors of one read share: the [`Cap`], and what a rule
/// decided before the end of the body.
#[derive(Debug)]
pub struct Walk<T> {
    pub cap: Cap,
    decided: Option<T>,
}

impl<T> Walk<T> {
    /// Records what the read gives, and returns the error that stops
    /// serde_json right there: [`read`] gives the value instead.
    pub fn decide<E: de::Error>(&mut self, value: T) -> E {
        self.decided = Some(value);
        stopped()
    }
}

/// The error visitors return to stop serde_json (a rule decided, or the
/// cap was reached): serde has no other way out of a visitor, and only
/// [`read`], which knows why, looks at it.
fn stopped<E: de::Error>() -> E {
    E::custom("stopped")
}

/// Reads the text of `src` with serde_json: `top` reads the value (with a
/// seed of the rule), which nothing but whitespace may follow, unless a rule
/// decided before its end ([`Walk::decide`]).
pub fn read<R: Read, T>(
    src: R,
    top: impl FnOnce(&mut Walk<T>, &mut Json<R>) -> serde_json::Result<T>,
) -> Result<T> {
    let mut walk = Walk {
        cap: Cap::new(),
        decided: None,
    };
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(PIECE, src));
    let got = top(&mut walk, &mut de).and_then(|value| de.end().map(|()| value));
    if let Some(value) = walk.decided {
        return Ok(value);
    }
    if walk.cap.reached {
        return Err(Halt::Unread(Limit::Entries));
    }
    got.map_err(halt)
}

/// Why serde_json stopped, when no rule or cap stopped it: a source's
/// bound, its recursion limit, or text that is not JSON.
fn halt(e: serde_json::Error) -> Halt {
    match e.classify() {
        Category::Io => {
            let e = io::Error::from(e);
            match e.get_ref().and_then(|inner| inner.downcast_ref::<Limit>()) {
                Some(&limit) => Halt::Unread(limit),
                None => Halt::Unusable,
            }
        }
        Category::Syntax if depth_reached(&e) => Halt::Unread(Limit::Depth),
        Category::Syntax | Category::Data | Category::Eof => Halt::Unusable,
    }
}

/// Whether serde_json stopped at its recursion limit. Its error has no
/// code to test, only its message; a test pins the message, so that a
/// serde_json that words it otherwise fails there rather than counting such
/// bodies as unusable.
fn depth_reached(e: &serde_json::Error) -> bool {
    e.to_string().starts_with("recursion limit exceeded")
}

/// `s`, when a rule may use it ([`MAX_TEXT`]).
fn usable(s: &str) -> Option<&str> {
    (s.len() <= MAX_TEXT).then_some(s)
}

/// Skips a value of any kind, counting the members and array entries in
/// it.
pub struct Skip<'c>(pub &'c mut Cap);

impl<'de> DeserializeSeed<'de> for Skip<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        // Not deserialize_ignored_any: serde_json skips without counting
        // entries or nesting there, keeping a byte per level.
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<(), A::Error> {
        skip_members(self.0, map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<(), A::Error> {
        skip_elements(self.0, seq)
    }

    scalars!(|_self| ());
}

/// Skips the rest of an object's members, counting each.
pub fn skip_members<'de, A: MapAccess<'de>>(
    cap: &mut Cap,
    mut map: A,
) -> std::result::Result<(), A::Error> {
    while map.next_key_seed(Name::new(cap, |_| ()))?.is_some() {
        map.next_value_seed(Skip(cap))?;
    }
    Ok(())
}

/// Skips the rest of an array's entries, counting each.
pub fn skip_elements<'de, A: SeqAccess<'de>>(
    cap: &mut Cap,
    mut seq: A,
) -> std::result::Result<(), A::Error> {
    while seq.next_element_seed(Entry(Skip(&mut *cap)))?.is_some() {}
    Ok(())
}

/// A seed that counts what it looks at against a [`Cap`].
pub trait Counted {
    fn cap(&mut self) -> &mut Cap;
}

impl Counted for Skip<'_> {
    fn cap(&mut self) -> &mut Cap {
        self.0
    }
}

impl<'de, M: Members<'de>> Counted for Object<M> {
    fn cap(&mut self) -> &mut Cap {
        self.0.cap()
    }
}

/// An array entry: counted, then read by its seed. (serde_json calls the
/// seed only when there is an entry.)
pub struct Entry<S>(pub S);

impl<'de, S: Counted + DeserializeSeed<'de>> DeserializeSeed<'de> for Entry<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(
        mut self,
        d: D,
    ) -> std::result::Result<S::Value, D::Error> {
        self.0.cap().count()?;
        self.0.deserialize(d)
    }
}

/// A member's name: counted, then given to `sort` (`None` for a name longer
/// than [`MAX_TEXT`], which no rule looks for), whose answer is the seed's.
pub struct Name<'c, F> {
    cap: &'c mut Cap,
    sort: F,
}

impl<'c, F> Name<'c, F> {
    pub fn new<T>(cap: &'c mut Cap, sort: F) -> Name<'c, F>
    where
        F: FnOnce(Option<&str>) -> T,
    {
        Name { cap, sort }
    }
}

impl<'de, T, F: FnOnce(Option<&str>) -> T> DeserializeSeed<'de> for Name<'_, F> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<T, D::Error> {
        self.cap.count()?;
        d.deserialize_str(Sort(self.sort))
    }
}

struct Sort<F>(F);

impl<'de, T, F: FnOnce(Option<&str>) -> T> Visitor<'de> for Sort<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<T, E> {
        Ok((self.0)(usable(s)))
    }
}

/// A value a rule reads as a string: `read` is given it (`None` for any
/// other value, skipped, or a string longer than [`MAX_TEXT`]).
pub struct Text<'c, F> {
    cap: &'c mut Cap,
    read: F,
}

impl<'c, F> Text<'c, F> {
    pub fn new<T>(cap: &'c mut Cap, read: F) -> Text<'c, F>
    where
        F: FnOnce(Option<&str>) -> T,
    {
        Text { cap, read }
    }
}

impl<'de, T, F: FnOnce(Option<&str>) -> T> DeserializeSeed<'de> for Text<'_, F> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<T, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T, F: FnOnce(Option<&str>) -> T> Visitor<'de> for Text<'_, F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<T, E> {
        Ok((self.read)(usable(s)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<T, A::Error> {
        skip_members(self.cap, map)?;
        Ok((self.read)(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<T, A::Error> {
        skip_elements(self.cap, seq)?;
        Ok((self.read)(None))
    }

    scalars_but_str!(|this| (this.read)(None));
}

/// What a rule reads from an object's members.
pub trait Members<'de> {
    type Value;

    /// The cap, to skip a value that is not an object.
    fn cap(&mut self) -> &mut Cap;

    /// Reads the object, from its first member.
    fn members<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Self::Value, A::Error>;

    /// What a value that is not an object gives, once skipped.
    fn other(self) -> Self::Value;
}

/// A value a rule reads as an object ([`Members`]); any other is skipped.
pub struct Object<M>(pub M);

impl<'de, M: Members<'de>> DeserializeSeed<'de> for Object<M> {
    type Value = M::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<M::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, M: Members<'de>> Visitor<'de> for Object<M> {
    type Value = M::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<M::Value, A::Error> {
        self.0.members(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, seq: A) -> std::result::Result<M::Value, A::Error> {
        skip_elements(self.0.cap(), seq)?;
        Ok(self.0.other())
    }

    scalars!(|this| this.0.other());
}

/// A body: an object, read by `M`; any other value is not one a rule reads
/// ([`Halt::Unusable`]).
pub struct Body<M>(pub M);

impl<'de, M: Members<'de>> DeserializeSeed<'de> for Body<M> {
    type Value = M::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<M::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, M: Members<'de>> Visitor<'de> for Body<M> {
    type Value = M::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<M::Value, A::Error> {
        self.0.members(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// Skips one value: how many members and entries it has.
    fn skip(text: &str) -> Result<usize> {
        read(text.as_bytes(), |walk, de| {
            Skip(&mut walk.cap).deserialize(&mut *de)?;
            Ok(walk.cap.looked_at())
        })
    }

    #[test]
    fn skipping_counts_every_member_and_entry() {
        assert_eq!(skip("1"), Ok(0));
        assert_eq!(skip(r#"{"a":[1,2,{"b":"c"}],"d":{}}"#), Ok(6));
        let members = |n: usize| format!("{{{}}}", vec![r#""":0"#; n].join(","));
        assert_eq!(skip(&members(MAX_ENTRIES)), Ok(MAX_ENTRIES));
        assert_eq!(
            skip(&members(MAX_ENTRIES + 1)),
            Err(Halt::Unread(Limit::Entries))
        );
        let nested = format!("[{}]", vec!["[0,0,0]"; MAX_ENTRIES / 4].join(","));
        assert_eq!(skip(&nested), Ok(MAX_ENTRIES));
        let over = format!("[{}]", vec!["[0,0,0]"; MAX_ENTRIES / 4 + 1].join(","));
        assert_eq!(skip(&over), Err(Halt::Unread(Limit::Entries)));
    }

    #[test]
    fn nesting_stops_at_serde_jsons_limit() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(skip(&nested(MAX_DEPTH)), Ok(MAX_DEPTH - 1));
        assert_eq!(
            skip(&nested(MAX_DEPTH + 1)),
            Err(Halt::Unread(Limit::Depth))
        );
        // Far deeper input stops at the limit too (no stack overflow).
        assert_eq!(skip(&nested(1_000_000)), Err(Halt::Unread(Limit::Depth)));
        let objects = |n: usize| "{\"a\":".repeat(n) + "1" + &"}".repeat(n);
        assert_eq!(skip(&objects(MAX_DEPTH)), Ok(MAX_DEPTH));
        assert_eq!(
            skip(&objects(MAX_DEPTH + 1)),
            Err(Halt::Unread(Limit::Depth))
        );
        // The message this depends on ([`depth_reached`]).
        let e = serde_json::from_str::<serde_json::Value>(&nested(200)).unwrap_err();
        assert!(depth_reached(&e), "{e}");
        let e = serde_json::from_str::<serde_json::Value>("[1,]").unwrap_err();
        assert!(!depth_reached(&e), "{e}");
    }

    #[test]
    fn text_that_is_not_json_is_unusable() {
        for good in [
            "{}",
            "[]",
            r#"{"a":[1,-2.5e+3,0,0.1,1E9,true,false,null,"x\"\\\/\b\f\n\r\t\u00e9"]}"#,
            r#" { "a" : { "b" : [ ] } , "c" : "" } "#,
            r#""\ud83d\ude00""#,
            "-0",
            "123 ",
            "\"é\"",
        ] {
            assert!(skip(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "{",
            "{]",
            "[}",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "[1,]",
            "[,1]",
            "[1 2]",
            "{,}",
            "{a:1}",
            "'a'",
            "tru",
            "True",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "\"a",
            "\"\\x\"",
            "\"\\u12\"",
            "\"a\nb\"",
            "{} {}",
            "[] x",
        ] {
            assert_eq!(skip(bad), Err(Halt::Unusable), "{bad:?}");
        }
        // Bytes that are not UTF-8 in a string.
        assert_eq!(read(&b"[\"\xff\"]"[..], top), Err(Halt::Unusable));
    }

    /// A source whose text ends in an I/O error.
    struct Failing<'a>(&'a [u8], io::Error);

    impl Read for Failing<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(io::Error::new(self.1.kind(), self.1.to_string()));
            }
            self.0.read(out)
        }
    }

    struct Capped<'a>(&'a [u8]);

    impl Read for Capped<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Err(Limit::Size.io_error());
            }
            self.0.read(out)
        }
    }

    fn top<R: Read>(walk: &mut Walk<()>, de: &mut Json<R>) -> serde_json::Result<()> {
        Skip(&mut walk.cap).deserialize(de)
    }

    #[test]
    fn a_source_says_which_bound_it_reached() {
        assert_eq!(read(Capped(b"[1,2"), top), Err(Halt::Unread(Limit::Size)));
        let other = io::Error::new(io::ErrorKind::InvalidData, "corrupt gzip");
        assert_eq!(read(Failing(b"[1,2", other), top), Err(Halt::Unusable));
        // A source past its bound after a whole value: the text may go
        // on, so the bound counts.
        assert_eq!(read(Capped(b"[1,2] "), top), Err(Halt::Unread(Limit::Size)));
    }

    #[test]
    fn strings_are_given_decoded_up_to_the_limit() {
        let text = |json: &str| {
            read(json.as_bytes(), |walk, de| {
                Text::new(&mut walk.cap, |s: Option<&str>| s.map(str::to_owned))
                    .deserialize(&mut *de)
            })
        };
        assert_eq!(
            text(r#""\u0068ello \ud83d\ude00""#),
            Ok(Some("hello 😀".to_string()))
        );
        assert_eq!(text(r#"{"a":"b"}"#), Ok(None));
        assert_eq!(text("7"), Ok(None));
        let at_limit = "a".repeat(MAX_TEXT);
        assert_eq!(text(&format!("\"{at_limit}\"")), Ok(Some(at_limit.clone())));
        assert_eq!(text(&format!("\"{at_limit}b\"")), Ok(None));
        // Lone surrogates are not text.
        assert_eq!(text(r#""\ud83d""#), Err(Halt::Unusable));
    }
}
