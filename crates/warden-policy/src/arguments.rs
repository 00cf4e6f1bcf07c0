//! Tool arguments: their Cedar types, taken from each tool's MCP
//! `inputSchema`, and the conversion of a call's JSON arguments to them.

pub(crate) mod convert;
pub(crate) mod types;
