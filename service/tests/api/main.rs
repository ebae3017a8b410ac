//! Integration tests: the real application on a real port, on the embedded backend.

mod audit;
mod auth;
mod backends;
mod content;
mod faults;
mod files;
mod fsck;
mod helpers;
mod hostile;
mod limits;
mod matrix;
mod ops;
mod profile;
mod search;
mod shares;
mod thumbnails;
mod upload;
mod users;
