//! The applications of pywebtransport's examples guide, built on Tern and wire-compatible with the
//! originals, so a team can move a server from Python to Rust and keep its clients. Each module holds one
//! application's protocol, server and client; the binaries in `src/bin/` are thin command lines over them,
//! and `tests/` runs them end to end. See the README's "Example applications" section.

pub mod chat;
pub mod common;
pub mod echo;
pub mod file_transfer;
pub mod http_like;
pub mod microservice;
pub mod production;
pub mod streaming;
