//! Which DynamoDB operation a request is, from its `X-Amz-Target` header,
//! and therefore whether the filter needs to see its body (or its answer's).
//!
//! The header is read on every request when affinity is on, so this is a
//! byte comparison with no allocation; the body is buffered only for the
//! few operations that can have affinity, and answers only for the two that
//! describe a table's key.

use crate::model::config::Mode;

/// What every DynamoDB JSON-protocol target starts with (the API version).
pub const TARGET_PREFIX: &[u8] = b"DynamoDB_20120810.";

/// The operations affinity cares about; everything else is [`Op::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    PutItem,
    UpdateItem,
    DeleteItem,
    BatchWriteItem,
    /// Its answer's `TableDescription.KeySchema` names the partition key.
    CreateTable,
    /// Its answer's `Table.KeySchema` names the partition key.
    DescribeTable,
    Other,
}

impl Op {
    /// Every value, for tests and fuzzing that must cover each operation.
    pub const ALL: [Op; 7] = [
        Op::PutItem,
        Op::UpdateItem,
        Op::DeleteItem,
        Op::BatchWriteItem,
        Op::CreateTable,
        Op::DescribeTable,
        Op::Other,
    ];

    /// The operation named by an `X-Amz-Target` value. Exact and
    /// case-sensitive, as DynamoDB and Alternator match it: anything else
    /// (another API version, surrounding spaces, a missing header passed as
    /// empty) is [`Op::Other`], which has no affinity.
    pub fn from_target(target: &[u8]) -> Op {
        let Some(name) = target.strip_prefix(TARGET_PREFIX) else {
            return Op::Other;
        };
        match name {
            b"PutItem" => Op::PutItem,
            b"UpdateItem" => Op::UpdateItem,
            b"DeleteItem" => Op::DeleteItem,
            b"BatchWriteItem" => Op::BatchWriteItem,
            b"CreateTable" => Op::CreateTable,
            b"DescribeTable" => Op::DescribeTable,
            _ => Op::Other,
        }
    }

    /// PutItem, UpdateItem or DeleteItem: one item, one partition key.
    pub fn is_single_write(self) -> bool {
        matches!(self, Op::PutItem | Op::UpdateItem | Op::DeleteItem)
    }
}

/// Whether the request body must be buffered to decide the node: single-item
/// writes in either affinity mode (whether an RMW write qualifies depends on
/// its body), BatchWriteItem only under `AnyWrite` (the libraries never give
/// it affinity under RMW).
pub fn wants_request_body(mode: Mode, op: Op) -> bool {
    match mode {
        Mode::None => false,
        Mode::Rmw => op.is_single_write(),
        Mode::AnyWrite => op.is_single_write() || op == Op::BatchWriteItem,
    }
}

/// Whether the answer must be buffered to learn a table's partition key
/// (only when affinity is on: with it off nothing is learned, as the
/// libraries do no metadata discovery then).
pub fn wants_response_body(mode: Mode, op: Op) -> bool {
    mode != Mode::None && matches!(op, Op::CreateTable | Op::DescribeTable)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn targets_name_operations_exactly() {
        for (target, op) in [
            (&b"DynamoDB_20120810.PutItem"[..], Op::PutItem),
            (b"DynamoDB_20120810.UpdateItem", Op::UpdateItem),
            (b"DynamoDB_20120810.DeleteItem", Op::DeleteItem),
            (b"DynamoDB_20120810.BatchWriteItem", Op::BatchWriteItem),
            (b"DynamoDB_20120810.CreateTable", Op::CreateTable),
            (b"DynamoDB_20120810.DescribeTable", Op::DescribeTable),
            (b"DynamoDB_20120810.GetItem", Op::Other),
            (b"DynamoDB_20120810.TransactWriteItems", Op::Other),
            (b"DynamoDB_20120810.putitem", Op::Other),
            (b"DynamoDB_20120810.PutItem ", Op::Other),
            (b" DynamoDB_20120810.PutItem", Op::Other),
            (b"DynamoDB_20111205.PutItem", Op::Other),
            (b"DynamoDBStreams_20120810.PutItem", Op::Other),
            (b"DynamoDB_20120810.", Op::Other),
            (b"PutItem", Op::Other),
            (b"", Op::Other),
            (b"DynamoDB_20120810.PutItem\xff", Op::Other),
        ] {
            assert_eq!(Op::from_target(target), op, "{target:?}");
        }
    }

    #[test]
    fn which_bodies_are_buffered() {
        for op in Op::ALL {
            assert!(!wants_request_body(Mode::None, op));
            assert!(!wants_response_body(Mode::None, op));
            let single = op.is_single_write();
            assert_eq!(wants_request_body(Mode::Rmw, op), single, "{op:?}");
            assert_eq!(
                wants_request_body(Mode::AnyWrite, op),
                single || op == Op::BatchWriteItem,
                "{op:?}"
            );
            let describes = matches!(op, Op::CreateTable | Op::DescribeTable);
            assert_eq!(wants_response_body(Mode::Rmw, op), describes);
            assert_eq!(wants_response_body(Mode::AnyWrite, op), describes);
        }
    }
}
