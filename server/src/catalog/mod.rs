//! The catalog: merging scanned sources into one immutable snapshot per
//! generation, diffs between generations, and the views the VMM reads.
