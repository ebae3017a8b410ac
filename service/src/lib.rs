//! FileWallBall: an HTTP file service — streaming upload, ranged download, metadata, users and API keys.
//!
//! The binary (`main.rs`) only parses the command line; everything lives here so tests can build the
//! same application in-process ([`startup::Application`]).

mod audit;
mod auth;
#[doc(hidden)]
pub mod bench;
mod blob;
mod cache;
pub mod config;
mod db;
mod domain;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod maintenance;
mod media;
mod ratelimit;
mod serve;
mod share_token;
pub mod startup;
mod state;
pub mod telemetry;

pub use config::Config;
pub use startup::Application;
