//! The HTTP edge: routes, extractors, the error envelope and the middleware stack.

pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod middleware;
pub mod recent;
pub mod router;
pub mod serve;
pub mod state;
