//! Client library for vm-catalogd.
