//! Local filesystem operations (filled in by the fs work).
