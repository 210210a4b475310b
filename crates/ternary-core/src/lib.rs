//! `ternary-core`: see the crate README and docs/ (work in progress).
