//! `hookfleet-worker` (being written).

fn main() {}
