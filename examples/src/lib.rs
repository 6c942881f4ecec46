//! Examples for vsync (the KV server, counter and ledger arrive with their issues).

pub mod kv;
pub mod rsm;
