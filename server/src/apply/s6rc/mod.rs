//! The `s6-rc` applier: one compiled database of VM services, swapped atomically.
