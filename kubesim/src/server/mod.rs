//! The HTTP API server: path routing, verbs, status codes, content negotiation, request
//! accounting and fault injection in front of the [`Store`](crate::store::Store).
//!
//! `routes` builds the router and runs the filter chain, `handlers` serves the verbs, `request`
//! holds the parsed request and its context, `respond` the response helpers, `state` the shared
//! state; `watch`, `table` and `discovery` serve watches, Table output and discovery.

pub mod discovery;
mod handlers;
mod render_cache;
mod request;
mod respond;
mod routes;
mod state;
pub mod table;
pub mod watch;

pub use crate::respond::json_response;
pub use request::{selectors, Ctx, Query, Target, Wants};
pub use respond::error_response;
pub use routes::{api, router};
pub use state::{AppState, PodRequest, PodSubresourceHandler};
