//! User partitions: discovery from the GPT, mounting, hotplug, removal.
