//! `mock-ai`: the fake AI provider (being written).

fn main() {}
