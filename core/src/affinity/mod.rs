//! Key route affinity: the node ScyllaDB's Alternator client libraries send
//! a partition key's writes to, so that conditional writes (LWT) for one key
//! meet at one coordinator whether they come through this proxy or from an
//! application using those libraries.
//!
//! The algorithm follows the libraries' cross-language specification
//! (`feature-specs/key-route-affinity.md` and `query-plan.md` in
//! scylladb/alternator-client-python): hash the type-prefixed key value with
//! MurmurHash3, seed Go's `math/rand` with it, and draw a pick-and-remove
//! order over the canonically sorted list of discovered nodes. Health is
//! applied last, walking that order ([`choose()`]).
//!
//! A request's way through it, one module each:
//!
//! 1. [`op`]: the operation, from `X-Amz-Target`, and whether the request's
//!    (or the answer's) body is needed at all; [`body_limit`]: how large a
//!    body of it is held and read;
//! 2. [`gzip`]: a compressed body inflated a piece at a time (flate2),
//!    within a size and a ratio;
//! 3. [`read_key()`] (with [`qualify`] and [`Tables`], reading the body as it
//!    streams with serde_json, within the bounds of [`walk`]): the key
//!    hash(es) the body routes by;
//! 4. [`order()`]: the order the key gives a ring's nodes;
//! 5. [`choose()`]: the first healthy node of that order.
//!
//! [`tables`] also learns partition key names from table descriptions (the
//! shapes of [`body`]).
//!
//! Everything here is pure: [`crate::stream`] holds a write and streams its
//! body through [`read_key()`], and [`crate::routes`] keeps each scope's
//! [`ring()`] and picks the key's node from it with [`order()`] and
//! [`choose()`]. The helpers the steps share have modules of their own
//! ([`limits`], [`ring`](mod@ring), `base64`), so that no step imports its parent.

mod base64;
pub mod body;
pub mod choose;
pub mod go_rand;
mod go_rand_cooked;
pub mod gzip;
pub mod key;
pub mod limits;
pub mod murmur;
pub mod op;
pub mod order;
pub mod qualify;
pub mod ring;
pub mod tables;
pub mod walk;

pub use choose::{choose, NodeHealth};
pub use gzip::inflate_gzip;
pub use key::{key, key_hash, read_key, KeyHashes};
pub use limits::{body_limit, MAX_BODY_BYTES, MAX_ITEM_BODY_BYTES};
pub use op::{wants_request_body, wants_response_body, Op};
pub use order::{order, plan, preferred};
pub use ring::{canonical, ring};
pub use tables::{with_learned, Tables};

pub use crate::model::config::Mode;

#[cfg(test)]
mod vectors;
