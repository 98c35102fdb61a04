//! The shapes of the table descriptions CreateTable and DescribeTable
//! answer, from which affinity learns partition keys ([`super::tables`]).
//! (Request bodies are read as they stream, by [`super::key`] within the
//! bounds of [`super::walk`].)
//!
//! Each is a borrowed serde type that names only the members a decision
//! needs; serde_json skips every other member without building anything.
//! Strings are borrowed from the body unless escapes had to be decoded.
//!
//! A member of the wrong shape must not fail anything: [`Member`] reads such
//! a member as "present, but not that", and what happens then is the
//! caller's rule. A member named twice makes the whole object unreadable
//! (serde's rule), which only means nothing is learned.

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// A member as the client libraries test it: absent, present but not a
/// `T` (`null` included), or a `T`. Reading it never fails the object
/// around it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Member<T> {
    #[default]
    Absent,
    Other,
    Is(T),
}

impl<T> Member<T> {
    pub fn get(self) -> Option<T> {
        match self {
            Member::Is(value) => Some(value),
            Member::Absent | Member::Other => None,
        }
    }

    pub fn as_ref(&self) -> Option<&T> {
        match self {
            Member::Is(value) => Some(value),
            Member::Absent | Member::Other => None,
        }
    }

    pub fn is_present(&self) -> bool {
        !matches!(self, Member::Absent)
    }
}

/// The member's JSON text is delimited first (which cannot fail inside a
/// document serde_json is reading), then read as `T` on its own, so that a
/// wrong shape stays within the member. Works with serde_json only, whose
/// deserializers know `RawValue`.
impl<'de, T: Deserialize<'de>> Deserialize<'de> for Member<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(d)?;
        Ok(serde_json::from_str(raw.get()).map_or(Member::Other, Member::Is))
    }
}

/// A JSON object read as `T`. Derived structs also accept a JSON array
/// (their members by position), which no DynamoDB body means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Obj<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Only<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Only<T> {
            type Value = Obj<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Obj)
            }
        }
        d.deserialize_map(Only(PhantomData))
    }
}

/// A JSON string, borrowed from the body unless escapes had to be decoded.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl Text<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A CreateTable answer (`TableDescription`) or a DescribeTable answer
/// (`Table`): which one the operation says.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TableAnswer<'a> {
    #[serde(rename = "TableDescription", borrow)]
    pub created: Option<&'a RawValue>,
    #[serde(rename = "Table", borrow)]
    pub described: Option<&'a RawValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TableDescription<'a> {
    #[serde(rename = "TableName", borrow)]
    pub table: Member<Text<'a>>,
    /// Elements read one by one as [`KeySchemaElement`]s, up to the first
    /// `HASH` one.
    #[serde(rename = "KeySchema", borrow)]
    pub key_schema: Member<Vec<&'a RawValue>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct KeySchemaElement<'a> {
    #[serde(rename = "AttributeName", borrow)]
    pub name: Member<Text<'a>>,
    #[serde(rename = "KeyType", borrow)]
    pub kind: Member<Text<'a>>,
}

/// Reads `text` as one object of shape `T`; `None` for anything else
/// (not JSON, not an object, trailing bytes, a member named twice).
pub fn object<'a, T: Deserialize<'a>>(text: &'a str) -> Option<T> {
    serde_json::from_str::<Obj<T>>(text).ok().map(|Obj(v)| v)
}
