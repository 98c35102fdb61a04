//! The shapes of the DynamoDB bodies affinity reads: requests that write
//! items, and the table descriptions CreateTable and DescribeTable answer.
//!
//! Each is a borrowed serde type that names only the members a decision
//! needs; serde_json skips every other member without building anything,
//! and keeps a member whose use depends on another one (an item's
//! attributes, before the table's key name is known) as its JSON text
//! (`&RawValue`) until it is needed. Strings are borrowed from the body
//! unless escapes had to be decoded.
//!
//! Bodies come from clients, so a member of the wrong shape must not cost
//! the request its affinity when the decision does not need it, nor fail
//! anything: [`Member`] reads such a member as "present, but not that".
//! What happens then is the caller's rule, written next to the rule it
//! serves ([`super::key()`], [`super::qualifies`], [`super::tables::learn`]).
//! A member named twice makes the whole object unreadable (serde's rule),
//! which only means normal routing.

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
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

/// Whether a string or an object has content (how the libraries test
/// `ConditionExpression`, `UpdateExpression`, `Expected`); any other value
/// is not read as one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonEmpty(pub bool);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Check;
        impl<'de> Visitor<'de> for Check {
            type Value = NonEmpty;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an object")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<NonEmpty, E> {
                Ok(NonEmpty(!s.is_empty()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NonEmpty, A::Error> {
                let mut any = false;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
                    any = true;
                }
                Ok(NonEmpty(any))
            }
        }
        d.deserialize_any(Check)
    }
}

/// An object's members in body order, each value as its JSON text: an
/// item's attributes, whose key attribute is known only once the table is.
/// Of members named twice the first counts, as in Alternator (rapidjson).
#[derive(Clone, Debug, Default)]
pub struct Members<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    /// The first member named `name`.
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Collect<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Collect<'a> {
            type Value = Members<'a>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'a>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some((Text(name), value)) = map.next_entry::<Text<'a>, &'a RawValue>()? {
                    members.push((name, value));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Collect(PhantomData))
    }
}

/// A partition key's AttributeValue when it is one affinity hashes: an
/// object of exactly one member, `S`, `N` or `B`, whose value is a string
/// (serde reads an externally tagged enum exactly so).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub enum KeyValue<'a> {
    S(#[serde(borrow)] Cow<'a, str>),
    N(#[serde(borrow)] Cow<'a, str>),
    B(#[serde(borrow)] Cow<'a, str>),
}

/// What PutItem, UpdateItem and DeleteItem bodies hold for affinity.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SingleWrite<'a> {
    #[serde(rename = "TableName", borrow)]
    pub table: Member<Text<'a>>,
    /// PutItem's key is in `Item`, the others' in `Key`: only one of them
    /// is read, as [`Members`].
    #[serde(rename = "Item", borrow)]
    pub item: Option<&'a RawValue>,
    #[serde(rename = "Key", borrow)]
    pub key: Option<&'a RawValue>,
    #[serde(rename = "ConditionExpression")]
    pub condition: Member<NonEmpty>,
    #[serde(rename = "Expected")]
    pub expected: Member<NonEmpty>,
    #[serde(rename = "UpdateExpression")]
    pub update: Member<NonEmpty>,
    #[serde(rename = "ReturnValues", borrow)]
    pub returns: Member<Text<'a>>,
    /// Read entry by entry as [`LegacyUpdate`]s, and only under `Rmw`.
    #[serde(rename = "AttributeUpdates", borrow)]
    pub legacy_updates: Member<Members<'a>>,
}

/// One entry of UpdateItem's legacy `AttributeUpdates`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LegacyUpdate<'a> {
    #[serde(rename = "Action", borrow)]
    pub action: Member<Text<'a>>,
    /// Present or not is all that counts, even `null`.
    #[serde(rename = "Value")]
    pub value: Member<IgnoredAny>,
}

/// A BatchWriteItem body: per table (a name may come twice), its writes,
/// read only for tables whose key name is known.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BatchWrite<'a> {
    #[serde(rename = "RequestItems", borrow)]
    pub requests: Member<Members<'a>>,
}

/// One write of a BatchWriteItem table's array.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WriteRequest<'a> {
    #[serde(rename = "PutRequest", borrow)]
    pub put: Member<Obj<Put<'a>>>,
    #[serde(rename = "DeleteRequest", borrow)]
    pub delete: Member<Obj<Delete<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Put<'a> {
    #[serde(rename = "Item", borrow)]
    pub item: Member<Members<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Delete<'a> {
    #[serde(rename = "Key", borrow)]
    pub key: Member<Members<'a>>,
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
