//! The HTTP routes.

pub mod events;
pub mod health;
pub mod hooks;
