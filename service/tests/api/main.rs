//! Integration tests: the real application on a real port, on the embedded backend and on PostgreSQL + Redis
//! (`backends.rs` says how each test runs on both).

mod audit;
mod auth;
mod backends;
mod content;
mod faults;
mod files;
mod fsck;
mod helpers;
mod hostile;
mod instances;
mod limits;
mod matrix;
mod ops;
mod profile;
mod search;
mod shares;
mod thumbnails;
mod upload;
mod users;
