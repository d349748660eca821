//! nmr: a private npm registry whose permissions come from GitHub.
//!
//! The real npm client publishes and installs `@scope/*` packages through
//! nmr; unscoped packages are redirected to an upstream registry. See
//! ARCHITECTURE.md for the map of modules and the path of a request.

pub mod auth;
pub mod cmd;
pub mod config;
pub mod conn;
pub mod documents;
pub mod error;
pub mod github;
pub mod http;
pub mod limits;
pub mod login;
pub mod manifest;
pub mod migrate;
pub mod name;
pub mod oidc;
pub mod packument;
pub mod registry;
pub mod request;
pub mod route;
pub mod server;
pub mod shared;
pub mod storage;
pub mod store;
pub mod tokens;
pub mod verify;
pub mod workers;
