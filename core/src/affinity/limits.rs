//! How large a write's body may be to be held and read for its key: past
//! these, a write routes as if affinity were off, and the node judges it.

use super::op::Op;

/// Largest BatchWriteItem body the filter holds and reads (announced, and
/// inflated for gzip bodies): Alternator's request limit. A larger one
/// routes normally and the node refuses it.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Largest PutItem, UpdateItem or DeleteItem body the filter holds and
/// reads (announced, and inflated): one item is at most 400 KB in DynamoDB,
/// so a larger body is not a plausible single-item write; it routes
/// normally, and the node judges it.
pub const MAX_ITEM_BODY_BYTES: usize = 1024 * 1024;

/// How large a body of `op` may be to be held and read for its key.
pub fn body_limit(op: Op) -> usize {
    if op == Op::BatchWriteItem {
        MAX_BODY_BYTES
    } else {
        MAX_ITEM_BODY_BYTES
    }
}
