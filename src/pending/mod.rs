//! Outstanding requests: what was forwarded to which resource, until when.
//!
//! This is what lets the proxy keep RFC 6120's promise (every get/set gets exactly one
//! answer): a reply is accepted only from the resource the request went to, for the id it
//! carried and the requester who sent it; what is never answered is timed out.
//!
//! Built for a table of hundreds of thousands of entries, where a probe of a table of
//! whole entries is a cache miss, often two. One structure per file:
//!
//! - `table`: [`PendingTable`], requests in slots of a dense array numbered by the hold
//!   number the shim keeps their stanza under, found through an index of slot numbers by
//!   hash; the limits it keeps them within ([`Limits`]).
//! - `request`: [`Request`], one outstanding request as the router sees it.
//! - `text`: the inline string a request's key and a user's address are kept in.
//! - `users`: counts per user and per device, for the per-user and per-requester limits.
//! - `tally`: counts per domain, for the per-domain limit.
//! - `deadlines`: deadline queues in arrival order, one per timeout in force.

mod deadlines;
mod request;
mod table;
mod tally;
mod text;
mod users;

pub use request::{Method, Request, Shape};
pub use table::{Limits, Mismatch, PendingTable, Refusal};
