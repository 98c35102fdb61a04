//! A pull reader of JSON text that arrives in pieces: a request body read
//! from Envoy a chunk at a time, or inflated a piece at a time. The
//! affinity rules ([`super::key`]) walk it member by member, decode only the
//! strings they compare or hash, skip every other value, and stop as soon
//! as they can decide; nothing of the text is kept.
//!
//! Bounded by construction, whatever the text says:
//! - memory: the source's current piece, and one decoded string of at most
//!   [`MAX_TEXT`] bytes (a longer one is scanned to its end but not kept);
//!   a skipped value keeps nothing, whatever it holds;
//! - nesting: [`MAX_DEPTH`] levels (serde_json's default; DynamoDB itself
//!   allows 32 levels of documents, 64 of JSON), checked before recursing;
//! - work: the rules may look at [`MAX_ENTRIES`] members and array
//!   entries in all (junk counts as much as anything); a value they skip
//!   costs time by the byte only, and the source bounds the bytes.
//!
//! A bound reached is [`Halt::Unread`], which the caller counts; text that
//! is not JSON where the reader went is [`Halt::Unusable`]. What comes
//! after the point where a rule decided is not read, and so not judged.

/// Longest string decoded: longer than any name or key value a rule needs
/// (DynamoDB: table names 255 bytes, key attribute names 255, partition
/// key values 2048, i.e. 2732 in base64).
pub const MAX_TEXT: usize = 4096;

/// Most members and array entries the rules of one read may look at.
pub const MAX_ENTRIES: usize = 10_000;

/// Deepest nesting of objects and arrays read or skipped.
pub const MAX_DEPTH: usize = 128;

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

/// Where the text comes from, a piece at a time.
pub trait Source {
    /// Copies the next bytes of the text into `out` (as many as it has at
    /// hand, at most `out.len()`): how many; 0 at the end of the text.
    fn read(&mut self, out: &mut [u8]) -> Result<usize>;
}

impl Source for &[u8] {
    fn read(&mut self, out: &mut [u8]) -> Result<usize> {
        let n = out.len().min(self.len());
        if let (Some(to), Some(from)) = (out.get_mut(..n), self.get(..n)) {
            to.copy_from_slice(from);
        }
        *self = self.get(n..).unwrap_or_default();
        Ok(n)
    }
}

/// How much text the reader takes from its source at a time.
pub const PIECE: usize = 16 * 1024;

/// What a value is, by its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Object,
    Array,
    String,
    /// A number, `true`, `false` or `null` (or not JSON: skipping it tells).
    Scalar,
}

/// What [`Reader::string`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Text {
    /// A string, decoded: [`Reader::text`] holds it (valid UTF-8).
    Kept,
    /// A string longer than [`MAX_TEXT`] bytes, read past but not kept.
    TooLong,
    /// Another kind of value, skipped.
    NotString,
}

pub struct Reader<S> {
    src: S,
    /// The piece of text at hand: `buf[at..len]` is not read yet.
    buf: Vec<u8>,
    at: usize,
    len: usize,
    /// Members and array entries the rules may still look at.
    budget: usize,
    /// Objects and arrays the rules are inside.
    depth: usize,
    /// The last string decoded by [`Reader::member`] or [`Reader::string`].
    text: Vec<u8>,
    /// Whether `text` holds all of it.
    fits: bool,
}

impl<S: Source> Reader<S> {
    pub fn new(src: S) -> Reader<S> {
        Reader {
            src,
            buf: vec![0; PIECE],
            at: 0,
            len: 0,
            budget: MAX_ENTRIES,
            depth: 0,
            text: Vec::new(),
            fits: false,
        }
    }

    /// Members and array entries looked at so far.
    pub fn looked_at(&self) -> usize {
        MAX_ENTRIES - self.budget
    }

    /// The string last decoded, when it fit in [`MAX_TEXT`] bytes.
    pub fn text(&self) -> Option<&[u8]> {
        self.fits.then_some(self.text.as_slice())
    }

    /// The same, as text.
    pub fn text_str(&self) -> Option<&str> {
        // Kept strings were checked to be UTF-8.
        std::str::from_utf8(self.text()?).ok()
    }

    /// The text at hand not read yet, taking the next piece from the source
    /// when it is all read; empty at the end of the text.
    #[inline]
    fn piece(&mut self) -> Result<&[u8]> {
        if self.at >= self.len {
            self.at = 0;
            self.len = self.src.read(&mut self.buf)?.min(self.buf.len());
        }
        Ok(self.buf.get(self.at..self.len).unwrap_or_default())
    }

    /// Marks `n` bytes of [`Reader::piece`] as read.
    #[inline]
    fn consume(&mut self, n: usize) {
        self.at = self.at.saturating_add(n).min(self.len);
    }

    /// The next byte, not consumed (`None` at the end).
    #[inline]
    fn peek_raw(&mut self) -> Result<Option<u8>> {
        Ok(self.piece()?.first().copied())
    }

    /// The next byte, consumed; the end of the text is an error here.
    fn next_raw(&mut self) -> Result<u8> {
        let b = self.peek_raw()?.ok_or(Halt::Unusable)?;
        self.consume(1);
        Ok(b)
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Result<Option<u8>> {
        loop {
            let piece = self.piece()?;
            let blank = piece
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                .count();
            let next = piece.get(blank).copied();
            self.consume(blank);
            if next.is_some() || blank == 0 {
                return Ok(next);
            }
        }
    }

    /// Consumes `byte` (after whitespace), or fails.
    fn expect(&mut self, byte: u8) -> Result<()> {
        if self.peek()? != Some(byte) {
            return Err(Halt::Unusable);
        }
        self.consume(1);
        Ok(())
    }

    /// What the next value is; nothing consumed.
    pub fn kind(&mut self) -> Result<Kind> {
        Ok(match self.peek()? {
            Some(b'{') => Kind::Object,
            Some(b'[') => Kind::Array,
            Some(b'"') => Kind::String,
            _ => Kind::Scalar,
        })
    }

    fn enter(&mut self) -> Result<()> {
        if self.depth >= MAX_DEPTH {
            return Err(Halt::Unread(Limit::Depth));
        }
        self.depth += 1;
        self.consume(1);
        Ok(())
    }

    /// Enters the next value if it is an object (true); otherwise leaves it
    /// for the caller to skip or refuse (false).
    pub fn enter_object(&mut self) -> Result<bool> {
        if self.peek()? != Some(b'{') {
            return Ok(false);
        }
        self.enter()?;
        Ok(true)
    }

    /// Enters the next value if it is an array (true).
    pub fn enter_array(&mut self) -> Result<bool> {
        if self.peek()? != Some(b'[') {
            return Ok(false);
        }
        self.enter()?;
        Ok(true)
    }

    /// The separator before an entry, or the end of the container (false).
    fn next_entry(&mut self, first: &mut bool, close: u8) -> Result<bool> {
        let was_first = std::mem::replace(first, false);
        match self.peek()? {
            Some(b) if b == close => {
                self.consume(1);
                self.depth = self.depth.saturating_sub(1);
                Ok(false)
            }
            Some(b',') if !was_first => {
                self.consume(1);
                Ok(true)
            }
            Some(_) if was_first => Ok(true),
            _ => Err(Halt::Unusable),
        }
    }

    fn count(&mut self) -> Result<()> {
        self.budget = self
            .budget
            .checked_sub(1)
            .ok_or(Halt::Unread(Limit::Entries))?;
        Ok(())
    }

    /// The next member of an entered object: true with its name decoded
    /// ([`Reader::text`]) and the reader at its value, which the caller
    /// must read or skip; false at the object's end. `first` starts true
    /// for each object. Counts against [`MAX_ENTRIES`].
    pub fn member(&mut self, first: &mut bool) -> Result<bool> {
        if !self.next_entry(first, b'}')? {
            return Ok(false);
        }
        self.count()?;
        self.expect(b'"')?;
        self.fits = self.string_body()?;
        self.expect(b':')?;
        Ok(true)
    }

    /// The next entry of an entered array: true with the reader at it;
    /// false at the array's end. Counts against [`MAX_ENTRIES`].
    pub fn element(&mut self, first: &mut bool) -> Result<bool> {
        if !self.next_entry(first, b']')? {
            return Ok(false);
        }
        self.count()?;
        Ok(true)
    }

    /// Reads the next value as a string: decoded into [`Reader::text`]
    /// when it fits; any other value is skipped.
    pub fn string(&mut self) -> Result<Text> {
        if self.peek()? != Some(b'"') {
            self.skip()?;
            self.fits = false;
            return Ok(Text::NotString);
        }
        self.consume(1);
        self.fits = self.string_body()?;
        Ok(if self.fits { Text::Kept } else { Text::TooLong })
    }

    /// Whether the next value is a non-empty string or an object with a
    /// member (how the client libraries test `ConditionExpression` and
    /// the like); read either way.
    pub fn non_empty(&mut self) -> Result<bool> {
        match self.peek()? {
            Some(b'"') => {
                self.consume(1);
                let empty = self.peek_raw()? == Some(b'"');
                self.skip_from(State::Str(false), Open::NONE)?;
                Ok(!empty)
            }
            Some(b'{') => {
                self.enter()?;
                let empty = self.peek()? == Some(b'}');
                self.skip_members(true)?;
                Ok(!empty)
            }
            _ => {
                self.skip()?;
                Ok(false)
            }
        }
    }

    /// Skips the rest of an entered object, through its `}`, without
    /// looking at its members (`first`: none was read yet).
    pub fn skip_members(&mut self, first: bool) -> Result<()> {
        let state = if first {
            State::KeyOrClose
        } else {
            State::After
        };
        self.skip_from(state, Open::OBJECT)?;
        self.depth = self.depth.saturating_sub(1);
        Ok(())
    }

    /// Skips the rest of an entered array, through its `]`.
    pub fn skip_elements(&mut self, first: bool) -> Result<()> {
        let state = if first {
            State::ValueOrClose
        } else {
            State::After
        };
        self.skip_from(state, Open::ARRAY)?;
        self.depth = self.depth.saturating_sub(1);
        Ok(())
    }

    /// Skips the next value, checking that it is JSON.
    pub fn skip(&mut self) -> Result<()> {
        self.skip_from(State::Value, Open::NONE)
    }

    /// Only whitespace follows the value read.
    pub fn end(&mut self) -> Result<()> {
        match self.peek()? {
            None => Ok(()),
            Some(_) => Err(Halt::Unusable),
        }
    }

    /// Runs the skipping machine ([`Skip`]) from `state`, inside `open`,
    /// over the text until the value (or the container `open` is) ends.
    fn skip_from(&mut self, state: State, open: Open) -> Result<()> {
        // The containers the rules entered, besides the one `open` is.
        let outer = self.depth.saturating_sub(open.depth);
        let mut skip = Skip {
            state,
            open,
            room: MAX_DEPTH.saturating_sub(outer),
        };
        loop {
            let piece = self.piece()?;
            if piece.is_empty() {
                return skip.at_end();
            }
            let (used, done) = skip.run(piece)?;
            self.consume(used);
            if done {
                return Ok(());
            }
        }
    }

    /// The rest of a string whose opening quote is consumed, through its
    /// closing quote, decoded into `text`: true when it fits whole.
    fn string_body(&mut self) -> Result<bool> {
        let mut fits = true;
        self.text.clear();
        loop {
            let piece = self.piece()?;
            let plain = piece
                .iter()
                .take_while(|&&b| b != b'"' && b != b'\\' && b >= 0x20)
                .count();
            let stop = piece.get(plain).copied();
            if fits {
                let run = self.buf.get(self.at..self.at + plain).unwrap_or_default();
                fits = push(&mut self.text, run);
            }
            self.consume(plain);
            match stop {
                None if plain == 0 => return Err(Halt::Unusable),
                None => continue,
                Some(b'"') => {
                    self.consume(1);
                    if fits && std::str::from_utf8(&self.text).is_err() {
                        return Err(Halt::Unusable);
                    }
                    return Ok(fits);
                }
                Some(b'\\') => {
                    self.consume(1);
                    let c = self.escape(fits)?;
                    if let Some(c) = c {
                        let mut utf8 = [0u8; 4];
                        fits = push(&mut self.text, c.encode_utf8(&mut utf8).as_bytes());
                    }
                }
                // A control character: not allowed unescaped in a string.
                Some(_) => return Err(Halt::Unusable),
            }
        }
    }

    /// One escape after its backslash; the character when `decode`.
    /// Surrogates must pair only when decoded (the text is then used).
    fn escape(&mut self, decode: bool) -> Result<Option<char>> {
        let c = match self.next_raw()? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                if !decode {
                    return Ok(None);
                }
                match unit {
                    0xD800..=0xDBFF => {
                        if self.next_raw()? != b'\\' || self.next_raw()? != b'u' {
                            return Err(Halt::Unusable);
                        }
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(Halt::Unusable);
                        }
                        let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                        char::from_u32(code).ok_or(Halt::Unusable)?
                    }
                    _ => char::from_u32(unit).ok_or(Halt::Unusable)?,
                }
            }
            _ => return Err(Halt::Unusable),
        };
        Ok(decode.then_some(c))
    }

    fn hex4(&mut self) -> Result<u32> {
        let mut unit = 0;
        for _ in 0..4 {
            let digit = char::from(self.next_raw()?)
                .to_digit(16)
                .ok_or(Halt::Unusable)?;
            unit = unit << 4 | digit;
        }
        Ok(unit)
    }
}

/// The containers a [`Skip`] is inside: innermost in bit 0 of `kinds`, 1
/// for an object.
#[derive(Clone, Copy, Debug)]
struct Open {
    kinds: u128,
    depth: usize,
}

impl Open {
    const NONE: Open = Open { kinds: 0, depth: 0 };
    const OBJECT: Open = Open { kinds: 1, depth: 1 };
    const ARRAY: Open = Open { kinds: 0, depth: 1 };

    fn in_object(self) -> bool {
        self.kinds & 1 == 1
    }
}

/// Where a [`Skip`] is in the grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// A value must come.
    Value,
    /// After `[`: a value or `]`.
    ValueOrClose,
    /// After `{`: a member's name or `}`.
    KeyOrClose,
    /// After `,` in an object: a member's name.
    Key,
    /// After a member's name.
    Colon,
    /// After a value: `,` or the container's end.
    After,
    /// In a string (true: a member's name).
    Str(bool),
    Escape(bool),
    /// In a `\u` escape, with this many hex digits to come.
    Hex(bool, u8),
    Num(Num),
    /// In `true`, `false` or `null`, with these bytes to come.
    Lit(&'static [u8]),
}

/// Where a number is in its grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

impl Num {
    /// Whether the number may end here.
    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::Exp)
    }
}

/// What one byte did.
enum Step {
    /// Read; go on.
    Eat,
    /// The skipped value ended with this byte (read).
    EndsWith,
    /// The skipped value ended before this byte (not read).
    EndsBefore,
}

/// Skips a value at byte speed, checking JSON's grammar as it goes: one
/// state and a bit per open container, whatever the value holds; strings
/// are checked for escapes and control characters (not decoded), numbers
/// and literals by their grammar.
struct Skip {
    state: State,
    open: Open,
    /// How many containers may be open at once (within [`MAX_DEPTH`] with
    /// those the rules entered).
    room: usize,
}

fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

impl Skip {
    /// Runs over `piece`: how many bytes it read, and whether the value
    /// ended.
    #[inline]
    fn run(&mut self, piece: &[u8]) -> Result<(usize, bool)> {
        let mut i = 0;
        while let Some(rest) = piece.get(i..).filter(|r| !r.is_empty()) {
            // Runs that need no state change: string contents, digits.
            let run = match self.state {
                State::Str(_) => rest
                    .iter()
                    .take_while(|&&b| b != b'"' && b != b'\\' && b >= 0x20)
                    .count(),
                State::Num(Num::Int | Num::Frac | Num::Exp) => {
                    rest.iter().take_while(|b| b.is_ascii_digit()).count()
                }
                _ => 0,
            };
            i += run;
            let Some(&b) = piece.get(i) else {
                break;
            };
            match self.byte(b)? {
                Step::Eat => i += 1,
                Step::EndsWith => return Ok((i + 1, true)),
                Step::EndsBefore => return Ok((i, true)),
            }
        }
        Ok((piece.len(), false))
    }

    /// The text ended: fine only for a number at the top.
    fn at_end(&self) -> Result<()> {
        match self.state {
            State::Num(n) if n.complete() && self.open.depth == 0 => Ok(()),
            _ => Err(Halt::Unusable),
        }
    }

    fn push(&mut self, object: bool) -> Result<()> {
        if self.open.depth >= self.room {
            return Err(Halt::Unread(Limit::Depth));
        }
        self.open.kinds = self.open.kinds << 1 | u128::from(object);
        self.open.depth += 1;
        Ok(())
    }

    /// Closes the innermost container, which must be of that kind; the
    /// container is a value that ended.
    fn pop(&mut self, object: bool) -> Result<Step> {
        if self.open.depth == 0 || self.open.in_object() != object {
            return Err(Halt::Unusable);
        }
        self.open.kinds >>= 1;
        self.open.depth -= 1;
        Ok(self.value_ended())
    }

    /// A value ended with the byte just read.
    fn value_ended(&mut self) -> Step {
        if self.open.depth == 0 {
            return Step::EndsWith;
        }
        self.state = State::After;
        Step::Eat
    }

    fn byte(&mut self, b: u8) -> Result<Step> {
        let next = match self.state {
            State::Value | State::ValueOrClose => match b {
                b if is_blank(b) => self.state,
                b'{' => {
                    self.push(true)?;
                    State::KeyOrClose
                }
                b'[' => {
                    self.push(false)?;
                    State::ValueOrClose
                }
                b'"' => State::Str(false),
                b'-' => State::Num(Num::Minus),
                b'0' => State::Num(Num::Zero),
                b'1'..=b'9' => State::Num(Num::Int),
                b't' => State::Lit(b"rue"),
                b'f' => State::Lit(b"alse"),
                b'n' => State::Lit(b"ull"),
                b']' if self.state == State::ValueOrClose => return self.pop(false),
                _ => return Err(Halt::Unusable),
            },
            State::KeyOrClose | State::Key => match b {
                b if is_blank(b) => self.state,
                b'"' => State::Str(true),
                b'}' if self.state == State::KeyOrClose => return self.pop(true),
                _ => return Err(Halt::Unusable),
            },
            State::Colon => match b {
                b if is_blank(b) => State::Colon,
                b':' => State::Value,
                _ => return Err(Halt::Unusable),
            },
            State::After => match b {
                b if is_blank(b) => State::After,
                b',' if self.open.in_object() => State::Key,
                b',' => State::Value,
                b'}' => return self.pop(true),
                b']' => return self.pop(false),
                _ => return Err(Halt::Unusable),
            },
            State::Str(key) => match b {
                b'"' if key => State::Colon,
                b'"' => return Ok(self.value_ended()),
                b'\\' => State::Escape(key),
                // A control character: not allowed unescaped.
                _ => return Err(Halt::Unusable),
            },
            State::Escape(key) => match b {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => State::Str(key),
                b'u' => State::Hex(key, 4),
                _ => return Err(Halt::Unusable),
            },
            State::Hex(key, left) => match (b.is_ascii_hexdigit(), left) {
                (true, 1) => State::Str(key),
                (true, left) => State::Hex(key, left - 1),
                (false, _) => return Err(Halt::Unusable),
            },
            State::Num(n) => match (n, b) {
                (Num::Minus, b'0') => State::Num(Num::Zero),
                (Num::Minus, b'1'..=b'9') => State::Num(Num::Int),
                (Num::Int, b'0'..=b'9') => State::Num(Num::Int),
                (Num::Zero | Num::Int, b'.') => State::Num(Num::Dot),
                (Num::Dot | Num::Frac, b'0'..=b'9') => State::Num(Num::Frac),
                (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => State::Num(Num::E),
                (Num::E, b'+' | b'-') => State::Num(Num::ESign),
                (Num::E | Num::ESign | Num::Exp, b'0'..=b'9') => State::Num(Num::Exp),
                (n, b) if n.complete() => {
                    // The number ended before this byte, which comes next.
                    if self.open.depth == 0 {
                        return Ok(Step::EndsBefore);
                    }
                    self.state = State::After;
                    return self.byte(b);
                }
                _ => return Err(Halt::Unusable),
            },
            State::Lit(rest) => match rest.split_first() {
                Some((&want, rest)) if want == b => {
                    if rest.is_empty() {
                        return Ok(self.value_ended());
                    }
                    State::Lit(rest)
                }
                _ => return Err(Halt::Unusable),
            },
        };
        self.state = next;
        Ok(Step::Eat)
    }
}

/// Appends `bytes` if the text stays within [`MAX_TEXT`]; false (and the
/// text no longer whole) otherwise.
fn push(text: &mut Vec<u8>, bytes: &[u8]) -> bool {
    if text.len() + bytes.len() > MAX_TEXT {
        return false;
    }
    text.extend_from_slice(bytes);
    true
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// A source that hands out `step` bytes at a time, so that every token
    /// can fall across a piece boundary.
    pub struct Trickle<'a> {
        pub rest: &'a [u8],
        pub step: usize,
    }

    impl Source for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> Result<usize> {
            let n = self.step.min(self.rest.len()).min(out.len());
            out[..n].copy_from_slice(&self.rest[..n]);
            self.rest = &self.rest[n..];
            Ok(n)
        }
    }

    /// Skips one value and checks the end, in pieces of every size.
    fn valid(text: &str) -> bool {
        let whole = {
            let mut r = Reader::new(text.as_bytes());
            r.skip().and_then(|()| r.end()).is_ok()
        };
        for step in 1..8 {
            let mut r = Reader::new(Trickle {
                rest: text.as_bytes(),
                step,
            });
            let pieces = r.skip().and_then(|()| r.end()).is_ok();
            assert_eq!(pieces, whole, "{text:?} in pieces of {step}");
        }
        whole
    }

    #[test]
    fn skipping_accepts_json_and_only_json() {
        for good in [
            "{}",
            "[]",
            r#"{"a":[1,-2.5e+3,0,0.1,1E9,true,false,null,"x\"\\\/\b\f\n\r\t\u00e9"]}"#,
            r#" { "a" : { "b" : [ ] } , "c" : "" } "#,
            r#""\ud83d\ude00""#,
            "-0",
            "123",
            "\"é\"",
        ] {
            assert!(valid(good), "{good}");
            // serde_json agrees.
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(good).is_ok());
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
            "{\"a\":1 \"b\":2}",
            "{a:1}",
            "'a'",
            "tru",
            "nul",
            "True",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "1e+",
            "+1",
            "0x10",
            "\"a",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u12g4\"",
            "\"a\nb\"",
            "{} {}",
            "[] x",
        ] {
            assert!(!valid(bad), "{bad:?}");
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(bad).is_err());
        }
    }

    #[test]
    fn strings_are_decoded_as_serde_json_decodes_them() {
        for text in [
            r#""plain""#,
            r#""\u0068ello""#,
            r#""tab\tquote\"slash\/back\\""#,
            r#""\ud83d\ude00 and é and 日本""#,
            r#""\u0000""#,
            r#""""#,
        ] {
            let want: String = serde_json::from_str(text).unwrap();
            for step in [1, 2, 3, 100] {
                let mut r = Reader::new(Trickle {
                    rest: text.as_bytes(),
                    step,
                });
                assert_eq!(r.string(), Ok(Text::Kept), "{text}");
                assert_eq!(r.text_str(), Some(want.as_str()), "{text} by {step}");
            }
        }
        // Lone surrogates are not text (serde_json refuses them too).
        for lone in [
            r#""\ud83d""#,
            r#""\ude00""#,
            r#""\ud83dx""#,
            r#""\ud83d\u0041""#,
        ] {
            let mut r = Reader::new(lone.as_bytes());
            assert_eq!(r.string(), Err(Halt::Unusable), "{lone}");
            assert!(serde_json::from_str::<String>(lone).is_err());
            // Skipped, they pass, as nothing reads them.
            assert!(valid(lone), "{lone}");
        }
        // Bytes that are not UTF-8, in a string that is kept.
        let mut r = Reader::new(&b"\"\xff\""[..]);
        assert_eq!(r.string(), Err(Halt::Unusable));
        // Not a string: skipped.
        let mut r = Reader::new(&b"[1,{\"a\":2}] "[..]);
        assert_eq!(r.string(), Ok(Text::NotString));
        assert_eq!(r.end(), Ok(()));
    }

    #[test]
    fn long_strings_are_read_past_but_not_kept() {
        let at_limit = format!("\"{}\"", "a".repeat(MAX_TEXT));
        let mut r = Reader::new(at_limit.as_bytes());
        assert_eq!(r.string(), Ok(Text::Kept));
        assert_eq!(r.text().map(<[u8]>::len), Some(MAX_TEXT));
        let over = format!("[\"{}\",\"b\"]", "a".repeat(MAX_TEXT + 1));
        let mut r = Reader::new(over.as_bytes());
        let mut first = true;
        assert!(r.enter_array().unwrap());
        assert!(r.element(&mut first).unwrap());
        assert_eq!(r.string(), Ok(Text::TooLong));
        assert_eq!(r.text(), None);
        assert!(r.element(&mut first).unwrap());
        assert_eq!(r.string(), Ok(Text::Kept));
        assert_eq!(r.text(), Some(&b"b"[..]));
        assert!(!r.element(&mut first).unwrap());
        assert_eq!(r.end(), Ok(()));
        // An escape that would cross the limit does not fit either.
        let escaped = format!("\"{}\\u00e9\"", "a".repeat(MAX_TEXT - 1));
        let mut r = Reader::new(escaped.as_bytes());
        assert_eq!(r.string(), Ok(Text::TooLong));
        // A kept string never grows the text past the limit.
        let huge = format!("\"{}\"", "a".repeat(10 * MAX_TEXT));
        let mut r = Reader::new(huge.as_bytes());
        assert_eq!(r.string(), Ok(Text::TooLong));
        assert!(r.text.capacity() <= 2 * MAX_TEXT, "{}", r.text.capacity());
    }

    #[test]
    fn members_and_entries_are_counted_and_capped() {
        let members = |n: usize| {
            let body: Vec<String> = (0..n).map(|_| r#""":0"#.to_string()).collect();
            format!("{{{}}}", body.join(","))
        };
        let read_all = |text: &str| {
            let mut r = Reader::new(text.as_bytes());
            assert!(r.enter_object()?);
            let mut first = true;
            while r.member(&mut first)? {
                r.skip()?;
            }
            r.end()?;
            Ok(r.looked_at())
        };
        assert_eq!(read_all(&members(MAX_ENTRIES)), Ok(MAX_ENTRIES));
        assert_eq!(
            read_all(&members(MAX_ENTRIES + 1)),
            Err(Halt::Unread(Limit::Entries))
        );
        // Array entries count the same; skipped values do not.
        let array = format!("[{}]", vec!["[0,0,0]"; MAX_ENTRIES].join(","));
        let mut r = Reader::new(array.as_bytes());
        assert!(r.enter_array().unwrap());
        let mut first = true;
        while r.element(&mut first).unwrap() {
            r.skip().unwrap();
        }
        assert_eq!(r.looked_at(), MAX_ENTRIES);
        let mut r = Reader::new(array.as_bytes());
        r.skip().unwrap();
        assert_eq!(r.looked_at(), 0);
    }

    #[test]
    fn nesting_is_capped_without_recursing_past_the_cap() {
        let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(valid(&nested(MAX_DEPTH)));
        let over = nested(MAX_DEPTH + 1);
        let mut r = Reader::new(over.as_bytes());
        assert_eq!(r.skip(), Err(Halt::Unread(Limit::Depth)));
        // Far deeper input stops at the cap too (no stack overflow).
        let deep = nested(1_000_000);
        let mut r = Reader::new(deep.as_bytes());
        assert_eq!(r.skip(), Err(Halt::Unread(Limit::Depth)));
        // Containers the rules enter count towards the same cap.
        let objects = "{\"a\":".repeat(MAX_DEPTH) + "1" + &"}".repeat(MAX_DEPTH);
        let mut r = Reader::new(objects.as_bytes());
        let mut first = true;
        assert!(r.enter_object().unwrap());
        assert!(r.member(&mut first).unwrap());
        r.skip().unwrap();
        let mut r = Reader::new(objects.as_bytes());
        for _ in 0..MAX_DEPTH {
            let mut first = true;
            assert!(r.enter_object().unwrap());
            assert!(r.member(&mut first).unwrap());
        }
        assert_eq!(r.skip(), Ok(()));
        let deeper = "{\"a\":".repeat(MAX_DEPTH + 1) + "1" + &"}".repeat(MAX_DEPTH + 1);
        let mut r = Reader::new(deeper.as_bytes());
        for _ in 0..MAX_DEPTH {
            let mut first = true;
            assert!(r.enter_object().unwrap());
            assert!(r.member(&mut first).unwrap());
        }
        assert_eq!(r.enter_object(), Err(Halt::Unread(Limit::Depth)));
    }

    #[test]
    fn non_empty_reads_strings_and_objects() {
        for (text, want) in [
            (r#""x""#, true),
            (r#""""#, false),
            (r#"{"a":{"b":1}}"#, true),
            ("{}", false),
            ("{ }", false),
            ("7", false),
            ("null", false),
            ("[1]", false),
        ] {
            let mut r = Reader::new(text.as_bytes());
            assert_eq!(r.non_empty(), Ok(want), "{text}");
            assert_eq!(r.end(), Ok(()), "{text}");
        }
        assert!(Reader::new(&b"{\"a\"}"[..]).non_empty().is_err());
    }
}
