//! The forms a configuration value is read in: [`Key`] (present or not),
//! [`Given`] (the expected form, or whatever JSON stood there) and
//! [`Members`] (an object's members in order, duplicates kept). They are
//! what lets every refusal be made after reading, by code that can quote
//! the value; the document and every key group use them.

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::fmt;
use std::marker::PhantomData;

/// A key's value; `None` when the key is absent. A plain `Option` would
/// also take an explicit `null` for "absent", and `null` is refused like
/// any other value of the wrong kind.
pub(super) struct Key<T>(pub(super) Option<Given<T>>);

impl<T> Default for Key<T> {
    fn default() -> Self {
        Key(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Key<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Given::deserialize(deserializer).map(|given| Key(Some(given)))
    }
}

/// A value in the expected form, or else the JSON that was there, kept so
/// that the refusal can quote it. Deserializing it never fails, which is
/// what lets a refusal say more than serde's "invalid type".
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Given<T> {
    Expected(T),
    Other(Value),
}

/// The value as JSON, for the "got ..." of a refusal. A value in the
/// expected form can be refused too (a number out of range, a string that
/// is not a valid name), so both forms are shown.
impl<T: Clone + Into<Value>> fmt::Display for Given<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Given::Expected(value) => fmt::Display::fmt(&value.clone().into(), f),
            Given::Other(value) => fmt::Display::fmt(value, f),
        }
    }
}

/// An object's members in document order, duplicates included: serde's
/// maps keep one value per name, and a datacenter, table or scope member
/// named twice must be refused rather than half-ignored.
pub(super) struct Members<T>(pub(super) Vec<(String, T)>);

impl<T> Members<T> {
    /// The value of `name`; duplicates are refused before this is asked.
    pub(super) fn get(&self, name: &str) -> Option<&T> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub(super) fn first_duplicate(&self) -> Option<&str> {
        self.0.iter().enumerate().find_map(|(i, (name, _))| {
            self.0
                .iter()
                .skip(i + 1)
                .any(|(other, _)| other == name)
                .then_some(name.as_str())
        })
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Members<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for MembersVisitor<T> {
            type Value = Members<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<T>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(MembersVisitor(PhantomData))
    }
}
