//! Integration tests: each starts the real `unimsg` binary on
//! `127.0.0.1:0` and talks to it as clients do, through `unimsg-client`.

mod admin;
mod audit_auth;
mod audit_domain;
mod audit_gate;
mod audit_transport;
mod auth;
mod bad_input;
mod cli_admin;
mod cluster;
mod delivery;
mod durability;
mod flow;
mod friends;
mod groups;
mod hardening;
mod harness;
mod limits;
mod openapi;
mod property;
mod qr;
mod support;
