//! Examples for vsync (the KV server, counter and ledger arrive with their issues).
