//! omirr's persisted index (work in progress).
