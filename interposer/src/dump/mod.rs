//! Dumps: copy the live tables (`snapshot`), add the kernel's view (`procfs`, `ledger`),
//! serialise and write atomically (`writer`, `files`; the rows come from `rows`), once
//! `headroom` says the process has room for it; the
//! `dumper` thread decides when, `control` lets `offheap snapshot|mark <pid>` ask for one, and
//! `exit` writes the last one as the process ends. Format: the `offheap-format` crate,
//! docs/dump-format.md.

pub mod control;
pub mod dumper;
pub mod exit;
pub mod files;
pub mod headroom;
pub mod ledger;
pub mod procfs;
pub mod rows;
pub mod snapshot;
pub mod writer;
