//! Applying actions (work in progress).
