//! ibkr-mcp: an MCP server for the Interactive Brokers Web API (Client Portal Gateway).
//!
//! The typed client is generated at build time from IBKR's OpenAPI document after our patches
//! repair it ([`spec`], `build.rs`); [`ibkr`] holds the generated client; [`cli`] the command
//! line.

#![forbid(unsafe_code)]

pub mod cli;
pub mod ibkr;
pub mod spec;
