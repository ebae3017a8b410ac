//! `fwb-loadtest`: load scenarios for FileWallBall on goose.
//!
//! [`scenario`] reads the TOML profiles, [`seed`] makes the data through the public API, [`pacing`] runs goose
//! users on a schedule and records honest latency, [`workload`] is what the users do, [`monitor`] watches the
//! service, and [`run`] ties them together into a `summary.json` ([`fwb_reports::Summary`]).

pub mod content;
pub mod monitor;
pub mod pacing;
pub mod run;
pub mod scenario;
pub mod seed;
pub mod workload;
