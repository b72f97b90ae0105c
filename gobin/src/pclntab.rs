//! A small parser for Go's `.gopclntab` (Go 1.18+ layout), the symbol source of last resort.
//!
//! Binaries built with `-ldflags=-s -w` have neither DWARF nor a symbol table, but the Go
//! runtime needs its pc→function table for tracebacks, so it is always there. We read function
//! names and, from the `pcfile`/`pcln` tables, file and line. Every read is bounds-checked: a
//! corrupt table yields `None`, never a panic.
//!
//! Layout (runtime/symtab.go, `pcHeader`): magic u32, 2 pad bytes, minLC u8, ptrSize u8, then
//! ptrSize-wide words nfunc, nfiles, textStart, funcnameOffset, cuOffset, filetabOffset,
//! pctabOffset, pclnOffset. `functab` (at pclnOffset) holds nfunc+1 pairs of u32
//! (entryoff from textStart, funcoff from functab start). A `_func` starts with entryOff u32,
//! nameOff i32, args i32, deferreturn u32, pcsp u32, pcfile u32, pcln u32, npcdata u32,
//! cuOffset u32.

/// Go 1.18 and 1.19.
pub const MAGIC_118: u32 = 0xffff_fff0;
/// Go 1.20 and later.
pub const MAGIC_120: u32 = 0xffff_fff1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFunc {
    pub name: String,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Function entry (file virtual address).
    pub entry: u64,
}

/// A parsed table borrowing nothing: the section bytes are owned so a module cache can keep it.
#[derive(Debug)]
pub struct Pclntab {
    data: Vec<u8>,
    min_lc: u64,
    nfunc: usize,
    text_start: u64,
    funcname: usize,
    cu: usize,
    filetab: usize,
    pctab: usize,
    functab: usize,
}

impl Pclntab {
    /// Parses the header. `text_fallback` is used when the header's textStart is 0, which is
    /// what a position-independent binary stores in the file (the field is relocated at load).
    pub fn parse(data: Vec<u8>, text_fallback: Option<u64>) -> Option<Pclntab> {
        let magic = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?);
        if magic != MAGIC_118 && magic != MAGIC_120 {
            return None;
        }
        let min_lc = *data.get(6)? as u64;
        let ptr_size = *data.get(7)? as usize;
        if ptr_size != 4 && ptr_size != 8 || min_lc == 0 {
            return None;
        }
        let word = |i: usize| -> Option<u64> {
            let off = 8 + i * ptr_size;
            let b = data.get(off..off + ptr_size)?;
            Some(if ptr_size == 8 {
                u64::from_le_bytes(b.try_into().ok()?)
            } else {
                u32::from_le_bytes(b.try_into().ok()?) as u64
            })
        };
        let nfunc = usize::try_from(word(0)?).ok()?;
        let mut text_start = word(2)?;
        if text_start == 0 {
            // Unknown text base (e.g. a stripped PIE): names would be silently wrong, so
            // the table is not used at all.
            text_start = text_fallback.filter(|&t| t != 0)?;
        }
        let t = Pclntab {
            min_lc,
            nfunc,
            text_start,
            funcname: usize::try_from(word(3)?).ok()?,
            cu: usize::try_from(word(4)?).ok()?,
            filetab: usize::try_from(word(5)?).ok()?,
            pctab: usize::try_from(word(6)?).ok()?,
            functab: usize::try_from(word(7)?).ok()?,
            data,
        };
        // The functab must fit, or nothing below can be trusted.
        let need = t
            .functab
            .checked_add(nfunc.checked_add(1)?.checked_mul(8)?)?;
        if need > t.data.len() {
            return None;
        }
        Some(t)
    }

    pub fn len(&self) -> usize {
        self.nfunc
    }

    fn u32_at(&self, off: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            self.data.get(off..off.checked_add(4)?)?.try_into().ok()?,
        ))
    }

    fn cstr_at(&self, off: usize) -> Option<String> {
        let rest = self.data.get(off..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    }

    /// (entryoff, funcoff) of functab entry `i`.
    fn entry(&self, i: usize) -> Option<(u32, u32)> {
        let off = self.functab.checked_add(i.checked_mul(8)?)?;
        Some((self.u32_at(off)?, self.u32_at(off + 4)?))
    }

    /// All function names with their entries, in address order.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every function: (entry address, name).
    pub fn functions(&self) -> impl Iterator<Item = (u64, String)> + '_ {
        (0..self.nfunc).filter_map(move |i| {
            let (entry, funcoff) = self.entry(i)?;
            let f = self.functab.checked_add(funcoff as usize)?;
            let name_off = self.u32_at(f + 4)? as usize;
            Some((
                self.text_start.wrapping_add(entry as u64),
                self.cstr_at(self.funcname.checked_add(name_off)?)?,
            ))
        })
    }

    /// Looks up a file virtual address (already adjusted to point into the call instruction).
    pub fn lookup(&self, addr: u64) -> Option<GoFunc> {
        let rel = addr.checked_sub(self.text_start)?;
        let rel = u32::try_from(rel).ok()?;
        // The last functab entry is the end of text.
        let (end, _) = self.entry(self.nfunc)?;
        if rel >= end {
            return None;
        }
        // Binary search for the last entry <= rel.
        let (mut lo, mut hi) = (0usize, self.nfunc);
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry(mid)?.0 <= rel {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let (entry_off, funcoff) = self.entry(lo)?;
        if entry_off > rel {
            return None;
        }
        let f = self.functab.checked_add(funcoff as usize)?;
        let name_off = self.u32_at(f + 4)? as usize;
        let name = self.cstr_at(self.funcname.checked_add(name_off)?)?;
        let entry = self.text_start + entry_off as u64;
        let pcfile = self.u32_at(f + 20)?;
        let pcln = self.u32_at(f + 24)?;
        let cu_off = self.u32_at(f + 32)?;
        let line = self
            .pcvalue(pcln, entry, addr)
            .and_then(|v| u32::try_from(v).ok());
        let file = self.pcvalue(pcfile, entry, addr).and_then(|fileno| {
            let idx = (cu_off as usize).checked_add(usize::try_from(fileno).ok()?)?;
            let foff = self.u32_at(self.cu.checked_add(idx.checked_mul(4)?)?)?;
            if foff == u32::MAX {
                return None;
            }
            self.cstr_at(self.filetab.checked_add(foff as usize)?)
        });
        Some(GoFunc {
            name,
            file,
            line,
            entry,
        })
    }

    /// Runs a pc-value table (runtime.pcvalue) up to `target`.
    fn pcvalue(&self, off: u32, entry: u64, target: u64) -> Option<i64> {
        if off == 0 {
            return None;
        }
        let mut p = self.pctab.checked_add(off as usize)?;
        let mut pc = entry;
        let mut val: i64 = -1;
        let mut first = true;
        // A sane table ends long before this; the cap guards against a corrupt loop.
        for _ in 0..1_000_000 {
            let (uvdelta, n) = self.varint(p)?;
            if uvdelta == 0 && !first {
                return None;
            }
            first = false;
            p += n;
            let delta = ((uvdelta >> 1) as i64) ^ -((uvdelta & 1) as i64);
            val = val.wrapping_add(delta);
            let (pcdelta, n) = self.varint(p)?;
            p += n;
            pc = pc.wrapping_add((pcdelta as u64).wrapping_mul(self.min_lc));
            if target < pc {
                return Some(val);
            }
        }
        None
    }

    fn varint(&self, mut p: usize) -> Option<(u32, usize)> {
        let mut v: u32 = 0;
        let mut shift = 0;
        let start = p;
        loop {
            let b = *self.data.get(p)?;
            p += 1;
            v |= ((b & 0x7f) as u32).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some((v, p - start));
            }
            shift += 7;
            if shift > 28 {
                return None;
            }
        }
    }
}
