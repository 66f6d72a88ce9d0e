//! The `none` applier: catalog only.
