//! `vsync-kv`: a Redis-protocol (RESP2) key-value server whose data set is
//! a replicated state machine on vsync.
//!
//! Layout: [`resp`] frames requests and encodes replies; [`command`] turns
//! them into typed requests with Redis' error texts; [`machine`] is the
//! replicated data set and its deterministic write commands; [`backend`]
//! is what the server needs from replication, and [`replica`] provides it
//! with a `vsync_rsm::Replica`; [`server`] serves RESP connections;
//! [`http`] serves `/metrics` and `/status`; [`metrics`] counts; [`cli`]
//! is the command line and [`demo`] the guided tour.
#![forbid(unsafe_code)]

pub mod backend;
pub mod cli;
pub mod command;
pub mod config;
pub mod demo;
pub mod http;
pub mod machine;
pub mod metrics;
pub mod replica;
pub mod resp;
pub mod server;
pub mod transaction;
