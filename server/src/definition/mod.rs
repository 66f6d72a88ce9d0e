//! VM definitions: scanning `<root>/<vm>/` directories safely.
