//! Which single-item writes have affinity in each mode: the libraries'
//! table (`key-route-affinity.md`, "Operation eligibility"), so that a key's
//! writes through this proxy and through a client library meet at the same
//! node exactly when the libraries would route them by key.

use super::body::{object, LegacyUpdate, Member, NonEmpty, SingleWrite, Text};
use super::{Mode, Op};
use serde_json::value::RawValue;

/// A member that is a non-empty string or a non-empty object (how the
/// libraries test `ConditionExpression`, `UpdateExpression`, `Expected`).
fn non_empty(member: &Member<NonEmpty>) -> bool {
    matches!(member, Member::Is(NonEmpty(true)))
}

/// A legacy `AttributeUpdates` entry that reads the item first: `ADD`, or
/// `DELETE` of given values (a `Value` member, whatever it holds).
fn reads_first(update: &RawValue) -> bool {
    let Some(update) = object::<LegacyUpdate>(update.get()) else {
        return false;
    };
    match update.action.as_ref().map(Text::as_str) {
        Some("ADD") => true,
        Some("DELETE") => update.value.is_present(),
        _ => false,
    }
}

/// Whether a single-item write qualifies under `mode`. Under `Rmw` that is a
/// write that reads before writing (the ones Alternator runs as LWT under
/// `only_rmw_uses_lwt`):
///
/// - PutItem, DeleteItem: a non-empty `ConditionExpression` or `Expected`,
///   or `ReturnValues` other than `NONE`;
/// - UpdateItem: a non-empty `UpdateExpression`, `ConditionExpression` or
///   `Expected`; `ReturnValues` `ALL_OLD`, `UPDATED_OLD` or `ALL_NEW`; or a
///   legacy `AttributeUpdates` entry with `Action` `ADD`, or `DELETE` with a
///   `Value`.
///
/// Under `AnyWrite` every single-item write qualifies. BatchWriteItem is not
/// decided here (it has no conditions; see [`super::key()`]).
pub fn qualifies(op: Op, body: &SingleWrite, mode: Mode) -> bool {
    if !op.is_single_write() {
        return false;
    }
    match mode {
        Mode::None => false,
        Mode::AnyWrite => true,
        Mode::Rmw => {
            if non_empty(&body.condition) || non_empty(&body.expected) {
                return true;
            }
            let returns = body.returns.as_ref().map(Text::as_str);
            if op != Op::UpdateItem {
                return returns.is_some_and(|r| r != "NONE");
            }
            if non_empty(&body.update)
                || matches!(returns, Some("ALL_OLD" | "UPDATED_OLD" | "ALL_NEW"))
            {
                return true;
            }
            body.legacy_updates
                .as_ref()
                .is_some_and(|updates| updates.0.iter().any(|(_, u)| reads_first(u)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn j(s: &str) -> SingleWrite<'_> {
        object(s).unwrap()
    }

    fn rmw(op: Op, body: &str) -> bool {
        qualifies(op, &j(body), Mode::Rmw)
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
        assert!(!u(r#"{"AttributeUpdates":{"a":{"Action":"DELETE"}}}"#));
        assert!(!u(
            r#"{"AttributeUpdates":{"a":{"Action":"PUT","Value":{"N":"1"}}}}"#
        ));
        assert!(!u(r#"{"AttributeUpdates":{"a":{"Value":{"N":"1"}}}}"#));
        assert!(u(
            r#"{"AttributeUpdates":{"a":{"Action":"PUT","Value":{"N":"1"}},"b":{"Action":"ADD","Value":{"N":"1"}}}}"#
        ));
        assert!(!u(r#"{"AttributeUpdates":{}}"#));
        assert!(!u(r#"{"AttributeUpdates":[]}"#));
    }

    #[test]
    fn any_write_takes_every_single_item_write_and_none_takes_nothing() {
        for op in [Op::PutItem, Op::UpdateItem, Op::DeleteItem] {
            assert!(qualifies(op, &j("{}"), Mode::AnyWrite));
            assert!(!qualifies(
                op,
                &j(r#"{"ConditionExpression":"x","UpdateExpression":"SET a = :v"}"#),
                Mode::None
            ));
        }
        let conditional = j(r#"{"ConditionExpression":"x"}"#);
        for op in [
            Op::BatchWriteItem,
            Op::CreateTable,
            Op::DescribeTable,
            Op::Other,
        ] {
            for mode in [Mode::None, Mode::Rmw, Mode::AnyWrite] {
                assert!(!qualifies(op, &conditional, mode), "{op:?} {mode:?}");
            }
        }
    }
}
