//! `bitnet-model`: see the crate README and docs/ (work in progress).
