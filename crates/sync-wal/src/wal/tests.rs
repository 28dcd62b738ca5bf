//! Unit tests of the handle.
