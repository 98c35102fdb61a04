//! The filter's data types, apart from the algorithms that use them: every
//! other module imports these, and nothing here imports anything outside
//! `model`, so imports run one way.
//!
//! | type                                   | module        |
//! |----------------------------------------|---------------|
//! | a node address, and why a string is not one | [`address`] |
//! | which requests are the filter's, by `:authority` (`hosts`) | [`authority`] |
//! | an address range (`allowed_cidrs`)     | [`cidr`]      |
//! | the validated configuration            | [`config`]    |
//! | a node's health, and what a request said of it | [`health`] |
//! | the record every VM shares             | [`record`]    |
//! | sorted node lists and their union      | [`sorted`]    |
//! | names shown quoted in logs and errors  | [`quoted`]    |

pub mod address;
pub mod authority;
pub mod cidr;
pub mod config;
pub mod health;
pub mod quoted;
pub mod record;
pub mod sorted;

pub use address::{AddrError, NodeAddr};
pub use quoted::Quoted;
