//! Integration tests: each starts the real `unimsg` binary on
//! `127.0.0.1:0` and talks to it as clients do, through `unimsg-client`.

// All of this crate is test code, where a panic is how a failure is
// reported; clippy's `allow-unwrap-in-tests` covers `#[test]` functions
// and `#[cfg(test)]` modules only, not the helpers of a test crate.
#![allow(clippy::unwrap_used)]

mod admin;
mod admin_credentials;
mod alerts;
mod audit_auth;
mod audit_domain;
mod audit_gate;
mod audit_transport;
mod auth;
mod backup;
mod bad_input;
mod cli_admin;
mod cluster;
mod cors;
mod delivery;
mod durability;
mod first_start;
mod flow;
mod friends;
mod groups;
mod hardening;
mod harness;
mod hooks;
mod keys;
mod limits;
mod metrics;
mod openapi;
mod pipelined;
mod property;
mod qr;
mod receiver;
mod signed_admin;
mod support;
mod tls;
