//! ibkr-mcp: an MCP server for the Interactive Brokers Web API (Client Portal Gateway).
//!
//! The typed client is generated at build time from IBKR's OpenAPI document after our patches
//! repair it ([`spec`], `build.rs`); [`ibkr`] holds the generated client and the hooks every
//! request passes through; [`mcp`] turns the allowlisted operations into MCP tools; [`http`] and
//! [`server`] serve them over streamable HTTP or stdio; [`cli`] is the command line.

#![forbid(unsafe_code)]

pub mod audit;
pub mod cli;
pub mod config;
pub mod error;
pub mod halt;
pub mod http;
pub mod ibkr;
pub mod live;
pub mod mcp;
pub mod policy;
pub mod server;
pub mod spec;
pub mod telemetry;
