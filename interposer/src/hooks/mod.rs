//! The interposed symbols. Each hook calls the real function and tells the tracking core
//! (`crate::track`) what happened; none of them knows how tracking works.

pub mod dl;
pub mod exit;
pub mod malloc;
pub mod mmap;
pub mod real;
pub mod sandbox;
pub mod thread;
