//! Compact CFI rules behind a per-thread direct-mapped cache: the hot half of the unwinder.
//!
//! Almost every x86_64 frame's unwind rule has the same shape: CFA = RSP or RBP + offset,
//! return address at CFA-8, RBP either untouched or saved at CFA+k. Such a rule fits in one
//! u64, so after the first time a return address is seen its frame costs a cache probe and
//! two bounded loads. Rules of any other shape (DWARF expressions, unusual return-address
//! rules) are marked `Other` and that one frame is handed to framehop; addresses without CFI
//! (Go code) are marked `NoCfi` and the walk continues along frame pointers.
//!
//! Misses evaluate the FDE with gimli over the image's own `.eh_frame_hdr` search table.

use gimli::{
    BaseAddresses, CfaRule, EhFrame, EhFrameHdr, EndianSlice, LittleEndian, ParsedEhFrameHdr,
    RegisterRule, UnwindContext, UnwindSection, X86_64,
};

pub type Slice = EndianSlice<'static, LittleEndian>;

/// One image's CFI, in its own (file) address space: runtime address = svma + base.
pub struct ModuleCfi {
    pub lo: u64,
    pub hi: u64,
    pub base: u64,
    hdr: ParsedEhFrameHdr<Slice>,
    eh_frame: EhFrame<Slice>,
    bases: BaseAddresses,
}

impl ModuleCfi {
    /// `hdr`/`eh` are the live sections; `*_svma` their addresses in the image.
    pub fn new(
        text: (u64, u64),
        base: u64,
        hdr: &'static [u8],
        hdr_svma: u64,
        eh: &'static [u8],
        eh_svma: u64,
        text_svma: u64,
    ) -> Option<ModuleCfi> {
        let bases = BaseAddresses::default()
            .set_eh_frame_hdr(hdr_svma)
            .set_eh_frame(eh_svma)
            .set_text(text_svma);
        let parsed = EhFrameHdr::new(hdr, LittleEndian).parse(&bases, 8).ok()?;
        parsed.table()?;
        let mut eh_frame = EhFrame::new(eh, LittleEndian);
        eh_frame.set_address_size(8);
        Some(ModuleCfi {
            lo: text.0,
            hi: text.1,
            base,
            hdr: parsed,
            eh_frame,
            bases,
        })
    }
}

/// A rule packed in a u64: tag in the low 2 bits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Rule {
    /// Not a compact rule: unwind this frame with framehop.
    Other,
    /// No CFI covers the address (Go code, hand-written assembly): use frame pointers.
    NoCfi,
    /// The return address is undefined: the outermost frame.
    End,
    /// CFA = (RBP if `from_bp` else RSP) + `cfa_off`; RA at CFA-8; RBP at CFA+`bp_off`
    /// (0 = unchanged).
    Frame {
        from_bp: bool,
        cfa_off: i32,
        bp_off: i16,
    },
}

impl Rule {
    fn pack(self) -> u64 {
        match self {
            Rule::Other => 0,
            Rule::NoCfi => 1,
            Rule::End => 2,
            Rule::Frame {
                from_bp,
                cfa_off,
                bp_off,
            } => {
                3 | (from_bp as u64) << 2
                    | (bp_off as u16 as u64) << 16
                    | (cfa_off as u32 as u64) << 32
            }
        }
    }

    /// The common case, decoded without a jump table: `Some((from_bp, cfa_off, bp_off))`.
    #[inline(always)]
    pub fn frame(v: u64) -> Option<(bool, i32, i16)> {
        if v & 3 == 3 {
            Some((v & 4 != 0, (v >> 32) as u32 as i32, (v >> 16) as u16 as i16))
        } else {
            None
        }
    }

    #[inline(always)]
    pub fn unpack(v: u64) -> Rule {
        match v & 3 {
            0 => Rule::Other,
            1 => Rule::NoCfi,
            2 => Rule::End,
            _ => Rule::Frame {
                from_bp: v & 4 != 0,
                bp_off: (v >> 16) as u16 as i16,
                cfa_off: (v >> 32) as u32 as i32,
            },
        }
    }
}

const SLOTS: usize = 2048;

/// How the deep part of a lookup (gimli evaluating an FDE) is run: the cdylib switches to a
/// stack of its own, because the caller's may be a 16 KiB thread or signal stack; tests run
/// it in place.
pub trait DeepCall {
    fn run<R>(f: impl FnOnce() -> R) -> R;
}

/// Run deep calls on the current stack.
pub struct InPlace;

impl DeepCall for InPlace {
    fn run<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

/// Per-thread rule cache plus the gimli evaluation context used on misses. Key and rule
/// share a 16-byte entry so a probe touches one cache line.
pub struct RuleCache {
    entries: [(u64, u64); SLOTS],
    generation: u64,
    ctx: Box<UnwindContext<usize>>,
}

impl RuleCache {
    pub fn new() -> Self {
        RuleCache {
            entries: [(0, 0); SLOTS],
            generation: 0,
            ctx: Box::new(UnwindContext::new()),
        }
    }

    /// The packed rule for the frame whose return address is `ra`; see `Rule::is_frame`.
    #[inline(always)]
    pub fn lookup_packed<D: DeepCall>(
        &mut self,
        modules: &[ModuleCfi],
        generation: u64,
        ra: u64,
    ) -> u64 {
        if self.generation != generation {
            self.entries = [(0, 0); SLOTS];
            self.generation = generation;
        }
        // 11 bits of hash: always below SLOTS.
        let i = (ra.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 53) as usize % SLOTS;
        if let Some(&(key, rule)) = self.entries.get(i) {
            if key == ra {
                return rule;
            }
        }
        // CFI evaluation is deep: run it on our own stack, not the (maybe tiny) caller's.
        let rule = D::run(|| self.compute(modules, ra)).pack();
        if let Some(e) = self.entries.get_mut(i) {
            *e = (ra, rule);
        }
        rule
    }

    #[cold]
    fn compute(&mut self, modules: &[ModuleCfi], ra: u64) -> Rule {
        let i = modules.partition_point(|m| m.lo <= ra);
        let Some(m) = i
            .checked_sub(1)
            .and_then(|i| modules.get(i))
            .filter(|m| ra < m.hi)
        else {
            return Rule::NoCfi;
        };
        // The call instruction is before the return address.
        let svma = ra.wrapping_sub(1).wrapping_sub(m.base);
        let Some(table) = m.hdr.table() else {
            return Rule::NoCfi;
        };
        let row = match table.unwind_info_for_address(
            &m.eh_frame,
            &m.bases,
            &mut self.ctx,
            svma,
            EhFrame::cie_from_offset,
        ) {
            Ok(row) => row,
            Err(gimli::Error::NoUnwindInfoForAddress) => return Rule::NoCfi,
            Err(_) => return Rule::Other,
        };
        match row.register(X86_64::RA) {
            Some(RegisterRule::Undefined) => return Rule::End,
            Some(RegisterRule::Offset(-8)) => {}
            _ => return Rule::Other,
        }
        let (from_bp, cfa_off) = match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } => {
                let from_bp = match *register {
                    r if r == X86_64::RSP => false,
                    r if r == X86_64::RBP => true,
                    _ => return Rule::Other,
                };
                match i32::try_from(*offset) {
                    Ok(o) => (from_bp, o),
                    Err(_) => return Rule::Other,
                }
            }
            _ => return Rule::Other,
        };
        let bp_off = match row.register(X86_64::RBP) {
            None | Some(RegisterRule::Undefined) | Some(RegisterRule::SameValue) => 0,
            Some(RegisterRule::Offset(o)) if o != 0 => match i16::try_from(o) {
                Ok(o) => o,
                Err(_) => return Rule::Other,
            },
            _ => return Rule::Other,
        };
        Rule::Frame {
            from_bp,
            cfa_off,
            bp_off,
        }
    }
}

impl Default for RuleCache {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests;
