//! User partitions: discovery from the GPT, mounting, hotplug, removal.

pub mod gpt;
pub mod gpt_image;
pub mod guid;
