//! How much of a finite address space the library takes (`RLIMIT_AS`, `ulimit -v`).
//!
//! Our tables reserve address space up front (`MAP_NORESERVE`: not resident, but counted by
//! the limit), most of it the stack store's. Under a limit every byte we reserve is a byte
//! the host cannot map, so without OFFHEAP_MAX_STACKS the store is sized to a share of the
//! room the limit leaves at start-up, and tracking does not start where even the smallest
//! store would take too much of it.

use crate::config;
use crate::state::State;
use offheap_core::stack::store::Store;

/// Without OFFHEAP_MAX_STACKS, the stack store may reserve at most this fraction (1/N) of the
/// room a finite RLIMIT_AS leaves at start-up. The default store reserves ~112 MiB of address
/// space: not resident, but counted by the limit, so under `ulimit -v` a host lost that much
/// of what it could map (a host that mallocs until refused got 79 of 192 MiB at 200 MB). At
/// 1/16 the store holds ~29,000 stacks at 200 MB; the default fits from ~1.8 GiB of room.
const STORE_SHARE_OF_ROOM: u64 = 16;

/// Under a finite RLIMIT_AS, tracking starts only if the store and the state take at most
/// 1/N of the room left: at the tightest limits a library that started anyway left the host
/// too little for its own first malloc (plain needs 2.5 MiB; at 9 MiB the host got ENOMEM).
const START_SHARE_OF_ROOM: u64 = 4;

/// What start-up maps beyond the store and the state: our allocator's first chunk, module
/// discovery, the first thread's caches and side stack (2,312 KiB more address space than an
/// inert library with a 1,024-stack store, of which ~450 KiB are the store).
const START_BEYOND_STATE: usize = 2 << 20;

/// A finite address-space limit and the room it leaves at start-up.
#[derive(Clone, Copy)]
pub struct AddressRoom {
    /// The soft RLIMIT_AS in bytes.
    pub limit: u64,
    /// The limit less the address space mapped now (the host's, our image's).
    pub room: u64,
}

/// The soft RLIMIT_AS, when finite, and the room it leaves now.
pub fn address_room() -> Option<AddressRoom> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut rl) };
    if got != 0 || rl.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    let mut mapped = 0u64;
    let mut seen = 0usize;
    crate::stack::bounds::for_each_mapping(|lo, hi, _| {
        mapped += hi.saturating_sub(lo) as u64;
        seen += 1;
        true
    });
    // No mapping read (no /proc): the room is unknown, and taken as none, so that tracking
    // does not start under a limit it may leave the host no room in.
    let room = if seen == 0 {
        0
    } else {
        rl.rlim_cur.saturating_sub(mapped)
    };
    Some(AddressRoom {
        limit: rl.rlim_cur,
        room,
    })
}

/// How many stacks the store holds: OFFHEAP_MAX_STACKS when set, else the default, cut to
/// [`STORE_SHARE_OF_ROOM`] of the room an address-space limit leaves.
pub fn stack_capacity(asked: Option<usize>, room: Option<AddressRoom>) -> usize {
    match (asked, room) {
        (Some(n), _) => n,
        (None, None) => config::DEFAULT_MAX_STACKS,
        (None, Some(r)) => Store::capacity_within(
            usize::try_from(r.room / STORE_SHARE_OF_ROOM).unwrap_or(usize::MAX),
            config::DEFAULT_MAX_STACKS,
        ),
    }
}

/// Without OFFHEAP_MAX_STACKS under a finite RLIMIT_AS: why tracking must not start (what it
/// would take against the room left), or None.
pub fn too_little_room(
    asked: Option<usize>,
    capacity: usize,
    room: Option<AddressRoom>,
) -> Option<String> {
    let room = room.filter(|_| asked.is_none())?;
    let need = Store::reserved_bytes(capacity) + core::mem::size_of::<State>() + START_BEYOND_STATE;
    (need as u64 > room.room / START_SHARE_OF_ROOM).then(|| {
        format!(
            "RLIMIT_AS leaves {} KiB of address space, and tracking would take {} KiB of it (a \
             quarter at most may be ours)",
            room.room >> 10,
            need >> 10
        )
    })
}
