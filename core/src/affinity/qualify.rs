//! Which single-item writes have affinity in each mode: the libraries'
//! table (`key-route-affinity.md`, "Operation eligibility"), so that a key's
//! writes through this proxy and through a client library meet at the same
//! node exactly when the libraries would route them by key.
//!
//! Under `Rmw` a write qualifies when it reads before writing (the ones
//! Alternator runs as LWT under `only_rmw_uses_lwt`):
//!
//! - PutItem, DeleteItem: a non-empty `ConditionExpression` or `Expected`,
//!   or `ReturnValues` other than `NONE`;
//! - UpdateItem: a non-empty `UpdateExpression`, `ConditionExpression` or
//!   `Expected`; `ReturnValues` `ALL_OLD`, `UPDATED_OLD` or `ALL_NEW`; or a
//!   legacy `AttributeUpdates` entry with `Action` `ADD`, or `DELETE` with a
//!   `Value`.
//!
//! Each of those members decides on its own ([`Sign`], [`Qualifies`]), so
//! the body reader ([`super::key`]) asks about each as it comes and stops
//! once one says yes. Under `AnyWrite` every single-item write qualifies;
//! BatchWriteItem has no conditions and is not decided here.

use super::op::Op;
use super::walk::{self, skip_members, Cap, Members, Name, Object, Skip, Text};
use crate::model::config::Mode;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// A member of a single-item write that can make it qualify under `Rmw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sign {
    Condition = 0,
    Expected,
    Update,
    Returns,
    LegacyUpdates,
}

impl Sign {
    pub const COUNT: usize = 5;

    /// The member named `name`, when it can make a write of `op` qualify
    /// under `mode`.
    pub fn of(mode: Mode, op: Op, name: &str) -> Option<Sign> {
        if mode != Mode::Rmw || !op.is_single_write() {
            return None;
        }
        match name {
            "ConditionExpression" => Some(Sign::Condition),
            "Expected" => Some(Sign::Expected),
            "ReturnValues" => Some(Sign::Returns),
            "UpdateExpression" if op == Op::UpdateItem => Some(Sign::Update),
            "AttributeUpdates" if op == Op::UpdateItem => Some(Sign::LegacyUpdates),
            _ => None,
        }
    }
}

/// Whether `ReturnValues` (a string, or `None` for another value) makes a
/// write of `op` qualify: for PutItem and DeleteItem anything but `NONE`,
/// even values DynamoDB refuses for them; for UpdateItem the ones that
/// return what was there.
pub fn returns_qualify(op: Op, returns: Option<&str>) -> bool {
    if op == Op::UpdateItem {
        matches!(returns, Some("ALL_OLD" | "UPDATED_OLD" | "ALL_NEW"))
    } else {
        returns.is_some_and(|r| r != "NONE")
    }
}

/// Whether a legacy `AttributeUpdates` entry reads the item first: `ADD`,
/// or `DELETE` of given values (a `Value` member, whatever it holds).
pub fn reads_first(action: Option<&str>, has_value: bool) -> bool {
    match action {
        Some("ADD") => true,
        Some("DELETE") => has_value,
        _ => false,
    }
}

/// The member `sign` names, read: whether it makes a write of `op`
/// qualify. The value is read whole.
pub struct Qualifies<'c> {
    cap: &'c mut Cap,
    op: Op,
    sign: Sign,
}

impl<'c> Qualifies<'c> {
    pub fn new(cap: &'c mut Cap, op: Op, sign: Sign) -> Qualifies<'c> {
        Qualifies { cap, op, sign }
    }
}

impl<'de> DeserializeSeed<'de> for Qualifies<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        let Qualifies { cap, op, sign } = self;
        match sign {
            Sign::Condition | Sign::Expected | Sign::Update => d.deserialize_any(NonEmpty(cap)),
            Sign::Returns => Text::new(cap, |returns| returns_qualify(op, returns)).deserialize(d),
            Sign::LegacyUpdates => Object(LegacyUpdates(cap)).deserialize(d),
        }
    }
}

/// Whether a value is a non-empty string or an object with a member (how
/// the client libraries test `ConditionExpression` and the like); read
/// whole either way.
struct NonEmpty<'c>(&'c mut Cap);

impl<'de> Visitor<'de> for NonEmpty<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<bool, E> {
        Ok(!s.is_empty())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        if map.next_key_seed(Name::new(self.0, |_| ()))?.is_none() {
            return Ok(false);
        }
        map.next_value_seed(Skip(self.0))?;
        skip_members(self.0, map)?;
        Ok(true)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        walk::skip_elements(self.0, seq)?;
        Ok(false)
    }

    walk::scalars_but_str!(|_this| false);
}

/// UpdateItem's legacy `AttributeUpdates`: entry by entry until one reads
/// first; the rest is skipped.
struct LegacyUpdates<'c>(&'c mut Cap);

impl<'de> Members<'de> for LegacyUpdates<'_> {
    type Value = bool;

    fn cap(&mut self) -> &mut Cap {
        self.0
    }

    fn members<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let cap = self.0;
        while map.next_key_seed(Name::new(cap, |_| ()))?.is_some() {
            if map.next_value_seed(Object(LegacyUpdate(cap)))? {
                skip_members(cap, map)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn other(self) -> bool {
        false
    }
}

/// One `AttributeUpdates` entry: whether it reads first.
struct LegacyUpdate<'c>(&'c mut Cap);

impl<'de> Members<'de> for LegacyUpdate<'_> {
    type Value = bool;

    fn cap(&mut self) -> &mut Cap {
        self.0
    }

    fn members<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let cap = self.0;
        let (mut action, mut action_seen, mut has_value) = (Action::Other, false, false);
        loop {
            let sort = |name: Option<&str>| match name {
                Some("Action") if !action_seen => Some(true),
                Some("Value") => Some(false),
                _ => None,
            };
            let Some(which) = map.next_key_seed(Name::new(cap, sort))? else {
                break;
            };
            match which {
                Some(true) => {
                    action_seen = true;
                    let read = |name: Option<&str>| match name {
                        Some("ADD") => Action::Add,
                        Some("DELETE") => Action::Delete,
                        _ => Action::Other,
                    };
                    action = map.next_value_seed(Text::new(cap, read))?;
                }
                Some(false) => {
                    has_value = true;
                    map.next_value_seed(Skip(cap))?;
                }
                None => map.next_value_seed(Skip(cap))?,
            }
        }
        Ok(reads_first(action.name(), has_value))
    }

    fn other(self) -> bool {
        false
    }
}

#[derive(Clone, Copy)]
enum Action {
    Add,
    Delete,
    Other,
}

impl Action {
    fn name(self) -> Option<&'static str> {
        match self {
            Action::Add => Some("ADD"),
            Action::Delete => Some("DELETE"),
            Action::Other => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::affinity::{key, Tables};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// Whether a write of `op` whose body has these members (an object's
    /// text) besides its table and key has affinity under `mode`.
    fn qualifies(op: Op, members: &str, mode: Mode) -> bool {
        let tables = Tables::new(&[("t".to_string(), "pk".to_string())]);
        let inner = members
            .trim()
            .strip_prefix('{')
            .unwrap()
            .strip_suffix('}')
            .unwrap();
        let sep = if inner.trim().is_empty() { "" } else { "," };
        // The key both ways: PutItem reads Item, the others Key.
        let body = format!(
            r#"{{"TableName":"t","Item":{{"pk":{{"S":"a"}}}},"Key":{{"pk":{{"S":"a"}}}}{sep}{inner}}}"#
        );
        key(mode, op, body.as_bytes(), &tables).is_some()
    }

    fn rmw(op: Op, body: &str) -> bool {
        qualifies(op, body, Mode::Rmw)
    }

    /// issue6.md 2.2, PutItem and DeleteItem rows (the same rule).
    #[test]
    fn put_and_delete_under_rmw() {
        for op in [Op::PutItem, Op::DeleteItem] {
            assert!(!rmw(op, "{}"), "{op:?} plain");
            assert!(rmw(op, r#"{"ConditionExpression":"attribute_exists(pk)"}"#));
            assert!(!rmw(op, r#"{"ConditionExpression":""}"#));
            assert!(rmw(op, r#"{"Expected":{"a":{"Exists":false}}}"#));
            assert!(!rmw(op, r#"{"Expected":{}}"#));
            assert!(rmw(op, r#"{"ReturnValues":"ALL_OLD"}"#));
            // "Other than NONE": even values DynamoDB refuses for Put/Delete.
            assert!(rmw(op, r#"{"ReturnValues":"ALL_NEW"}"#));
            assert!(!rmw(op, r#"{"ReturnValues":"NONE"}"#));
            assert!(!rmw(op, r#"{"ReturnValues":null}"#));
            // UpdateItem's own members mean nothing here.
            assert!(!rmw(op, r#"{"UpdateExpression":"SET a = :v"}"#));
            assert!(!rmw(
                op,
                r#"{"AttributeUpdates":{"a":{"Action":"ADD","Value":{"N":"1"}}}}"#
            ));
            // Not required, and does not qualify by itself.
            assert!(!rmw(
                op,
                r#"{"ReturnValuesOnConditionCheckFailure":"ALL_OLD"}"#
            ));
            // Of a member named twice the first counts.
            assert!(!rmw(
                op,
                r#"{"ReturnValues":"NONE","ReturnValues":"ALL_OLD"}"#
            ));
            assert!(rmw(
                op,
                r#"{"ConditionExpression":"","Expected":{"a":{}},"ConditionExpression":""}"#
            ));
        }
    }

    /// issue6.md 2.2, UpdateItem row.
    #[test]
    fn update_under_rmw() {
        let u = |body: &str| rmw(Op::UpdateItem, body);
        assert!(!u("{}"));
        assert!(u(r#"{"UpdateExpression":"SET a = :v"}"#));
        assert!(u(r#"{"UpdateExpression":"REMOVE a"}"#));
        assert!(!u(r#"{"UpdateExpression":""}"#));
        assert!(u(r#"{"ConditionExpression":"a = :v"}"#));
        assert!(!u(r#"{"ConditionExpression":""}"#));
        assert!(u(r#"{"Expected":{"a":{"Exists":true}}}"#));
        assert!(!u(r#"{"Expected":{}}"#));
        for rv in ["ALL_OLD", "UPDATED_OLD", "ALL_NEW"] {
            assert!(u(&format!(r#"{{"ReturnValues":"{rv}"}}"#)), "{rv}");
        }
        for rv in ["NONE", "UPDATED_NEW", "", "all_old"] {
            assert!(!u(&format!(r#"{{"ReturnValues":"{rv}"}}"#)), "{rv}");
        }
        assert!(u(
            r#"{"AttributeUpdates":{"a":{"Action":"ADD","Value":{"N":"1"}}}}"#
        ));
        assert!(u(r#"{"AttributeUpdates":{"a":{"Action":"ADD"}}}"#));
        assert!(u(
            r#"{"AttributeUpdates":{"a":{"Action":"DELETE","Value":{"SS":["x"]}}}}"#
        ));
        assert!(u(
            r#"{"AttributeUpdates":{"a":{"Value":null,"Action":"DELETE"}}}"#
        ));
        assert!(!u(r#"{"AttributeUpdates":{"a":{"Action":"DELETE"}}}"#));
        assert!(!u(
            r#"{"AttributeUpdates":{"a":{"Action":"PUT","Value":{"N":"1"}}}}"#
        ));
        assert!(!u(r#"{"AttributeUpdates":{"a":{"Value":{"N":"1"}}}}"#));
        assert!(!u(r#"{"AttributeUpdates":{"a":{"Action":7,"Value":1}}}"#));
        assert!(!u(
            r#"{"AttributeUpdates":{"a":{"Action":"PUT","Action":"ADD"}}}"#
        ));
        assert!(u(
            r#"{"AttributeUpdates":{"a":{"Action":"PUT","Value":{"N":"1"}},"b":{"Action":"ADD","Value":{"N":"1"}}}}"#
        ));
        assert!(!u(r#"{"AttributeUpdates":{}}"#));
        // Values of other kinds do not count, but are read (and judged).
        for other in ["7", "null", "true", "[\"SET a = :v\"]", "{ }", "\"\""] {
            assert!(!u(&format!(r#"{{"UpdateExpression":{other}}}"#)), "{other}");
            assert!(
                !u(&format!(r#"{{"ConditionExpression":{other}}}"#)),
                "{other}"
            );
        }
        assert!(!u(r#"{"ConditionExpression":[1,}"#));
        assert!(!u(r#"{"AttributeUpdates":[]}"#));
        assert!(!u(r#"{"AttributeUpdates":{"a":"ADD"}}"#));
    }

    #[test]
    fn any_write_takes_every_single_item_write_and_none_takes_nothing() {
        for op in [Op::PutItem, Op::UpdateItem, Op::DeleteItem] {
            assert!(qualifies(op, "{}", Mode::AnyWrite));
            assert!(!qualifies(
                op,
                r#"{"ConditionExpression":"x","UpdateExpression":"SET a = :v"}"#,
                Mode::None
            ));
        }
        for op in [
            Op::BatchWriteItem,
            Op::CreateTable,
            Op::DescribeTable,
            Op::Other,
        ] {
            for mode in [Mode::None, Mode::Rmw, Mode::AnyWrite] {
                assert_eq!(Sign::of(mode, op, "ConditionExpression"), None);
                assert!(
                    !qualifies(op, r#"{"ConditionExpression":"x"}"#, mode),
                    "{op:?} {mode:?}"
                );
            }
        }
    }

    #[test]
    fn the_rules_by_themselves() {
        assert!(returns_qualify(Op::PutItem, Some("UPDATED_NEW")));
        assert!(!returns_qualify(Op::PutItem, None));
        assert!(!returns_qualify(Op::UpdateItem, Some("UPDATED_NEW")));
        assert!(reads_first(Some("ADD"), false));
        assert!(!reads_first(Some("DELETE"), false));
        assert!(!reads_first(None, true));
    }
}
