//! The HTTP routes.

pub mod health;
pub mod hooks;
