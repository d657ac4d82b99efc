//! Packet access for both hooks. The LB stages (parse, NAT, reject) are
//! written once against [`Packet`]; `tc` implements it with the skb helpers,
//! XDP with `bpf_xdp_{load,store}_bytes` and checksums updated in software.
//!
//! Checksums in XDP: a frame from a NIC carries complete checksums, so an
//! incremental update (RFC 1624) is right. A veth peer that offloads its
//! transmit checksum hands over `CHECKSUM_PARTIAL` frames whose TCP/UDP field
//! holds only the pseudo-header sum; XDP cannot tell those apart, which is why
//! the skb path (tc) keeps the kernel helpers.

use core::ffi::c_void;
use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{
        BPF_F_MARK_MANGLED_0, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SKIP_NEIGH,
        BPF_FIB_LOOKUP_SRC, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_fib_lookup,
    },
    helpers::{
        bpf_fib_lookup, bpf_redirect, bpf_skb_change_tail, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
        bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    programs::{TcContext, XdpContext},
};

const AF_INET: u8 = 2;

/// Low bits of a checksum-replace `flags`: the size of the replaced field.
const CSUM_SIZE_MASK: u64 = 0xf;

/// What the LB stages need from a packet, whichever hook it came through.
/// Offsets count from the start of the Ethernet header.
pub trait Packet {
    /// Bytes on the wire (the frame's length).
    fn len(&self) -> u32;
    fn load<T: Copy>(&self, off: usize) -> Result<T, ()>;
    fn store<T: Copy>(&self, off: usize, v: &T) -> Result<(), ()>;
    /// Updates the IPv4 header checksum at `csum_off` for a 4-byte field that
    /// changes from `from` to `to` (memory order).
    fn l3_csum_replace(&self, csum_off: usize, from: u32, to: u32) -> Result<(), ()>;
    /// Updates a TCP/UDP checksum at `csum_off`; `flags` as for
    /// `bpf_l4_csum_replace` (size in the low bits, `BPF_F_PSEUDO_HDR`,
    /// `BPF_F_MARK_MANGLED_0`).
    fn l4_csum_replace(&self, csum_off: usize, from: u32, to: u32, flags: u64) -> Result<(), ()>;
    /// Opens `n` bytes between the Ethernet header and the IPv4 header. What
    /// lies in bytes `0..ETH_HDR_LEN + n` afterwards is unspecified: the caller
    /// writes a whole new Ethernet header and `n` bytes after it.
    fn grow_after_eth(&self, n: usize) -> Result<(), ()>;
    /// Cuts the frame to `len` bytes.
    fn truncate(&self, len: usize) -> Result<(), ()>;
    /// Arranges for the frame to leave through the interface it came in on
    /// (the verdict of [`crate::lb::verdict`] completes it).
    fn bounce(&self);
    /// The interface the packet came in on.
    fn ingress_ifindex(&self) -> u32;
    /// The context pointer helpers take.
    fn raw(&self) -> *mut c_void;
}

/// When the route to `daddr_be` leaves through the interface the packet came
/// in on (a backend on another node, behind the same uplink): the source
/// address the kernel would use on that route, as masquerading picks it.
/// `None` when the destination is reached some other way (a local pod) or
/// the lookup fails.
#[inline(always)]
pub fn source_towards<P: Packet>(pkt: &P, daddr_be: u32) -> Option<u32> {
    let ifindex = pkt.ingress_ifindex();
    // SAFETY: an all-zero `bpf_fib_lookup` is a valid (empty) request.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.ifindex = ifindex;
    params.__bindgen_anon_4.ipv4_dst = daddr_be;
    // SAFETY: the program's own context and a request of the size the
    // helper is told.
    let ret = unsafe {
        bpf_fib_lookup(
            pkt.raw().cast(),
            &mut params,
            size_of::<bpf_fib_lookup>() as i32,
            BPF_FIB_LOOKUP_SRC | BPF_FIB_LOOKUP_SKIP_NEIGH,
        )
    };
    if (ret != i64::from(BPF_FIB_LKUP_RET_SUCCESS) && ret != i64::from(BPF_FIB_LKUP_RET_NO_NEIGH))
        || params.ifindex != ifindex
    {
        return None;
    }
    // SAFETY: an IPv4 lookup fills the IPv4 member.
    Some(unsafe { params.__bindgen_anon_3.ipv4_src })
}

impl Packet for TcContext {
    #[inline(always)]
    fn len(&self) -> u32 {
        TcContext::len(self)
    }

    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Result<T, ()> {
        TcContext::load(self, off).map_err(|_| ())
    }

    #[inline(always)]
    fn store<T: Copy>(&self, off: usize, v: &T) -> Result<(), ()> {
        TcContext::store(self, off, v, 0).map_err(|_| ())
    }

    #[inline(always)]
    fn l3_csum_replace(&self, csum_off: usize, from: u32, to: u32) -> Result<(), ()> {
        TcContext::l3_csum_replace(self, csum_off, u64::from(from), u64::from(to), 4).map_err(|_| ())
    }

    #[inline(always)]
    fn l4_csum_replace(&self, csum_off: usize, from: u32, to: u32, flags: u64) -> Result<(), ()> {
        TcContext::l4_csum_replace(self, csum_off, u64::from(from), u64::from(to), flags).map_err(|_| ())
    }

    #[inline(always)]
    fn grow_after_eth(&self, n: usize) -> Result<(), ()> {
        self.adjust_room(n as i32, BPF_ADJ_ROOM_MAC, 0).map_err(|_| ())
    }

    #[inline(always)]
    fn truncate(&self, len: usize) -> Result<(), ()> {
        // SAFETY: `self.skb.skb` is the program's own context pointer.
        if unsafe { bpf_skb_change_tail(self.skb.skb, len as u32, 0) } != 0 {
            return Err(());
        }
        Ok(())
    }

    #[inline(always)]
    fn bounce(&self) {
        // SAFETY: reading the ingress interface index from our own context,
        // and a plain helper call (flags 0: egress of that interface).
        unsafe {
            let ifindex = (*self.skb.skb).ifindex;
            bpf_redirect(ifindex, 0);
        }
    }

    // On tc ingress the device the packet is on is `ifindex`; the skb's
    // `ingress_ifindex` would name the first device of a redirected packet.
    #[allow(clippy::misnamed_getters)]
    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        // SAFETY: reading a field of our own context (on tc ingress, the
        // device the packet arrived on).
        unsafe { (*self.skb.skb).ifindex }
    }

    #[inline(always)]
    fn raw(&self) -> *mut c_void {
        self.skb.skb.cast()
    }
}

impl Packet for XdpContext {
    #[inline(always)]
    fn len(&self) -> u32 {
        (self.data_end() - self.data()) as u32
    }

    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Result<T, ()> {
        let mut v = MaybeUninit::<T>::uninit();
        // SAFETY: the helper writes exactly `size_of::<T>()` bytes or fails.
        let ret = unsafe { bpf_xdp_load_bytes(self.ctx, off as u32, v.as_mut_ptr().cast(), size_of::<T>() as u32) };
        if ret != 0 {
            return Err(());
        }
        // SAFETY: fully written by the helper above.
        Ok(unsafe { v.assume_init() })
    }

    #[inline(always)]
    fn store<T: Copy>(&self, off: usize, v: &T) -> Result<(), ()> {
        // SAFETY: the helper only reads `size_of::<T>()` bytes from `v`.
        let ret = unsafe {
            bpf_xdp_store_bytes(self.ctx, off as u32, (v as *const T).cast_mut().cast(), size_of::<T>() as u32)
        };
        if ret != 0 {
            return Err(());
        }
        Ok(())
    }

    #[inline(always)]
    fn l3_csum_replace(&self, csum_off: usize, from: u32, to: u32) -> Result<(), ()> {
        let old: u16 = self.load(csum_off)?;
        self.store(csum_off, &csum_replace(old, from, to, 4))
    }

    #[inline(always)]
    fn l4_csum_replace(&self, csum_off: usize, from: u32, to: u32, flags: u64) -> Result<(), ()> {
        let old: u16 = self.load(csum_off)?;
        let mangled_0 = flags & u64::from(BPF_F_MARK_MANGLED_0) != 0;
        if mangled_0 && old == 0 {
            // A UDP datagram without a checksum keeps having none.
            return Ok(());
        }
        let mut new = csum_replace(old, from, to, flags & CSUM_SIZE_MASK);
        if mangled_0 && new == 0 {
            new = 0xffff;
        }
        self.store(csum_off, &new)
    }

    #[inline(always)]
    fn grow_after_eth(&self, n: usize) -> Result<(), ()> {
        // Room in front of the frame: the old Ethernet header moves back by
        // `n`, so the IPv4 header lands at `ETH_HDR_LEN + n`, as with tc.
        // SAFETY: the program's own context pointer.
        if unsafe { bpf_xdp_adjust_head(self.ctx, -(n as i32)) } != 0 {
            return Err(());
        }
        Ok(())
    }

    #[inline(always)]
    fn truncate(&self, len: usize) -> Result<(), ()> {
        let delta = len as i32 - Packet::len(self) as i32;
        // SAFETY: the program's own context pointer.
        if unsafe { bpf_xdp_adjust_tail(self.ctx, delta) } != 0 {
            return Err(());
        }
        Ok(())
    }

    #[inline(always)]
    fn bounce(&self) {
        // XDP_TX, returned by the verdict, sends the frame back out.
    }

    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        XdpContext::ingress_ifindex(self) as u32
    }

    #[inline(always)]
    fn raw(&self) -> *mut c_void {
        self.ctx.cast()
    }
}

/// RFC 1624 incremental update of a complete one's-complement checksum
/// (`HC' = ~(~HC + ~m + m')`) for a 2- or 4-byte field. Values are in memory
/// order, like the checksum itself, so byte order cancels out (RFC 1071).
#[inline(always)]
fn csum_replace(csum: u16, from: u32, to: u32, size: u64) -> u16 {
    let mut sum = u32::from(!csum);
    if size == 4 {
        let nfrom = !from;
        sum += (nfrom & 0xffff) + (nfrom >> 16) + (to & 0xffff) + (to >> 16);
    } else {
        sum += u32::from(!(from as u16)) + (to & 0xffff);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
