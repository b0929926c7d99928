//! Scanning (work in progress).
