//! The consensus core: a pure, deterministic Raft. (Being built: see issue 3.)
