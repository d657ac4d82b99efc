//! The eBPF object: load, attach, test-run.

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        CgroupAttachMode, CgroupSockAddr, SchedClassifier, TcAttachType, TestRun, TestRunOptions, TestRunResult, Xdp,
        XdpMode,
        cgroup_sock_addr::CgroupSockAddrLinkId,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};
use waggle_ebpf_common::{lb, names};

use crate::{
    Error,
    maps::{AffinityMap, BackendMap, ConntrackTable, CounterTable, MaglevMap, ReasonTable, RevNatMap, ServiceMap},
};

/// Pin file name prefix of the tc LB program's links (`<prefix><iface>`).
const LB_LINK_PREFIX: &str = "link_tc_lb_ingress_";
/// Pin file name prefix of the XDP LB program's links (`<prefix><iface>`).
const XDP_LINK_PREFIX: &str = "link_xdp_lb_";
/// Pin file name prefix of the socket LB programs' links (`<prefix><program>`).
const SOCK_LINK_PREFIX: &str = "link_cgroup_";

/// Built by `build.rs` (aya-build) from `ebpf/programs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/waggle-ebpf-programs"));

/// Which way through a link a tc program sees packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcDirection {
    Ingress,
    Egress,
}

impl From<TcDirection> for TcAttachType {
    fn from(dir: TcDirection) -> Self {
        match dir {
            TcDirection::Ingress => TcAttachType::Ingress,
            TcDirection::Egress => TcAttachType::Egress,
        }
    }
}

/// The loaded eBPF object. Dropping it detaches every program it attached.
///
/// Interfaces are named in the network namespace of the calling thread, so a
/// caller that drives another namespace enters it before calling.
pub struct Dataplane {
    ebpf: Ebpf,
    lb: LbMaps,
    /// Where LB maps and links are pinned, if anywhere.
    pin_dir: Option<PathBuf>,
    /// Attachments that outlive this process (closing them detaches
    /// nothing), by interface.
    pinned_links: std::collections::BTreeMap<String, PinnedLink>,
    /// Socket-level LB attachments (program, link), see [`Self::attach_sock_lb`].
    sock_links: Vec<(&'static str, CgroupSockAddrLinkId)>,
    /// XDP LB attachments that outlive this process, by interface.
    xdp_pinned: std::collections::BTreeMap<String, PinnedLink>,
    /// Socket-level LB attachments that outlive this process.
    sock_pinned: Vec<PinnedLink>,
}

/// Capacities of the LB maps (agent flags). A pinned map keeps the capacity
/// it was created with; loading with different ones is an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LbCapacity {
    /// Frontends (ClusterIP, externalIP, NodePort × node address, per port).
    pub services: u32,
    pub backends: u32,
    /// Maglev rows: one per Service port (two with a Local traffic policy).
    pub maglev_rows: u32,
    pub conntrack: u32,
    pub affinity: u32,
}

impl Default for LbCapacity {
    fn default() -> Self {
        Self { services: 65_536, backends: 65_536, maglev_rows: 1024, conntrack: 262_144, affinity: 65_536 }
    }
}

/// How to load the object.
#[derive(Clone, Debug, Default)]
pub struct LoadConfig {
    /// bpffs directory for the LB maps (the agent uses `/sys/fs/bpf/waggle`).
    /// Maps already pinned there are reused as they are, contents included.
    /// `None`: unpinned maps that die with the [`Dataplane`].
    pub pin_dir: Option<PathBuf>,
    pub capacity: LbCapacity,
}

/// The LB maps, owned by their typed wrappers.
#[derive(Debug)]
pub struct LbMaps {
    pub services: ServiceMap,
    pub backends: BackendMap,
    pub maglev: MaglevMap,
    pub rev_nat: RevNatMap,
    pub affinity: AffinityMap,
    pub conntrack: ConntrackTable,
    pub reasons: ReasonTable,
}

impl LbMaps {
    /// The writers the LB reconciler drives.
    pub fn writers(&mut self) -> crate::lb::LbWriters<'_> {
        crate::lb::LbWriters {
            services: &mut self.services,
            backends: &mut self.backends,
            maglev: &mut self.maglev,
            rev_nat: &mut self.rev_nat,
            affinity: &mut self.affinity,
        }
    }
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane").finish_non_exhaustive()
    }
}

impl Dataplane {
    /// Loads the object into the kernel: maps are created, programs are loaded
    /// (verified) when first attached or run.
    pub fn load() -> Result<Self, Error> {
        Self::load_with(&LoadConfig::default())
    }

    /// Loads the object with the LB maps sized by `config.capacity` and, when
    /// `config.pin_dir` is set, pinned there (or reused from there).
    pub fn load_with(config: &LoadConfig) -> Result<Self, Error> {
        let cap = config.capacity;
        let sizes = [
            (lb::names::SERVICES, cap.services),
            (lb::names::BACKENDS, cap.backends),
            (lb::names::MAGLEV, cap.maglev_rows),
            // One rev-NAT entry per frontend.
            (lb::names::REV_NAT, cap.services),
            (lb::names::CONNTRACK, cap.conntrack),
            (lb::names::AFFINITY, cap.affinity),
            // One entry per socket-balanced socket: as many as tracked flows.
            (lb::names::SOCK_REV_NAT, cap.conntrack),
        ];
        let mut loader = EbpfLoader::new();
        for (name, size) in sizes {
            loader.map_max_entries(name, size);
        }
        if let Some(dir) = &config.pin_dir {
            std::fs::create_dir_all(dir).map_err(|source| Error::PinDir { path: dir.clone(), source })?;
            remove_retired_pins(dir)?;
            for name in lb::names::PINNED {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader.load(OBJECT).map_err(Error::LoadObject)?;
        if let Some(dir) = &config.pin_dir {
            check_pinned_sizes(&ebpf, dir, &sizes)?;
        }
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(Error::MissingMap { name });
        let lb = LbMaps {
            services: ServiceMap::new(lb::names::SERVICES, take(lb::names::SERVICES)?)?,
            backends: BackendMap::new(lb::names::BACKENDS, take(lb::names::BACKENDS)?)?,
            maglev: MaglevMap::new(take(lb::names::MAGLEV)?)?,
            rev_nat: RevNatMap::new(lb::names::REV_NAT, take(lb::names::REV_NAT)?)?,
            affinity: AffinityMap::new(lb::names::AFFINITY, take(lb::names::AFFINITY)?)?,
            conntrack: ConntrackTable::new(lb::names::CONNTRACK, take(lb::names::CONNTRACK)?)?,
            reasons: ReasonTable::new(take(lb::names::REASONS)?)?,
        };
        Ok(Self {
            ebpf,
            lb,
            pin_dir: config.pin_dir.clone(),
            pinned_links: Default::default(),
            sock_links: Vec::new(),
            xdp_pinned: Default::default(),
            sock_pinned: Vec::new(),
        })
    }

    /// The LB maps.
    pub fn lb_maps(&mut self) -> &mut LbMaps {
        &mut self.lb
    }

    /// Attaches the Service load balancer to `iface`'s ingress (TCX): the host
    /// side of a pod veth, or a node interface for NodePort.
    pub fn attach_tc_lb(&mut self, iface: &str) -> Result<(), Error> {
        let name = lb::names::TC_LB;
        let prog = self.classifier(name)?;
        prog.attach(iface, TcAttachType::Ingress).map_err(|source| Error::Program {
            name,
            action: format!("attaching to {iface} (ingress)"),
            source,
        })?;
        tracing::info!(program = name, iface, "attached tc LB program");
        Ok(())
    }

    /// Attaches the Service load balancer to `iface`'s ingress (TCX) through a
    /// link pinned in the pin dir, so the program stays attached when this
    /// process dies. If a previous agent left a pinned link for `iface`, the
    /// new program replaces the old one in it atomically: no packet sees an
    /// interface without a program. Needs a [`LoadConfig::pin_dir`].
    pub fn attach_tc_lb_pinned(&mut self, iface: &str) -> Result<(), Error> {
        let name = lb::names::TC_LB;
        let dir = self.pin_dir.clone().ok_or_else(|| Error::PinnedMapMismatch {
            path: PathBuf::from(iface),
            problem: "pinned attachment without a pin dir".into(),
        })?;
        let path = dir.join(format!("{LB_LINK_PREFIX}{iface}"));
        let prog = self.classifier(name)?;
        let replaced = match PinnedLink::from_pin(&path) {
            Ok(old) => {
                let link: SchedClassifierLink = FdLink::from(old).try_into().map_err(|source| Error::Link {
                    action: format!("reusing the pinned link {}", path.display()),
                    source,
                })?;
                // The link is held by our fd now (or dead); re-pinned below.
                std::fs::remove_file(&path).map_err(|source| Error::PinDir { path: path.clone(), source })?;
                match prog.attach_to_link(link) {
                    Ok(id) => {
                        tracing::info!(program = name, iface, "replaced the tc LB program in its pinned link");
                        Some(id)
                    }
                    // The interface the link was made for is gone (a new
                    // one has its name): attach afresh.
                    Err(e) => {
                        tracing::info!(program = name, iface, error = %e, "pinned link is stale; attaching afresh");
                        None
                    }
                }
            }
            Err(_) => None,
        };
        let link_id = match replaced {
            Some(id) => id,
            None => prog.attach(iface, TcAttachType::Ingress).map_err(|source| Error::Program {
                name,
                action: format!("attaching to {iface} (ingress)"),
                source,
            })?,
        };
        let link = prog.take_link(link_id).map_err(|source| Error::Program {
            name,
            action: format!("taking the link on {iface}"),
            source,
        })?;
        let fd_link: FdLink = link
            .try_into()
            .map_err(|source| Error::Link { action: format!("TCX link on {iface} as an fd link"), source })?;
        let pinned = fd_link.pin(&path).map_err(|source| Error::LinkPin { path: path.clone(), source })?;
        self.pinned_links.insert(iface.to_owned(), pinned);
        tracing::info!(program = name, iface, pin = %path.display(), "attached tc LB program (pinned link)");
        Ok(())
    }

    /// Interfaces that have a pinned LB link in the pin dir, attached by this
    /// process or an earlier one.
    pub fn pinned_tc_lb_ifaces(&self) -> Result<Vec<String>, Error> {
        self.pins_with_prefix(LB_LINK_PREFIX)
    }

    /// What follows `prefix` in the names of the pin dir's entries.
    fn pins_with_prefix(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let Some(dir) = &self.pin_dir else { return Ok(Vec::new()) };
        let entries = std::fs::read_dir(dir).map_err(|source| Error::PinDir { path: dir.clone(), source })?;
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_prefix(prefix)).map(str::to_owned))
            .collect())
    }

    fn require_pin_dir(&self, what: &str) -> Result<PathBuf, Error> {
        self.pin_dir.clone().ok_or_else(|| Error::PinnedMapMismatch {
            path: PathBuf::from(what),
            problem: "pinned attachment without a pin dir".into(),
        })
    }

    /// Forgets the pinned LB link of an interface that no longer exists (the
    /// kernel detached it when the interface went).
    pub fn forget_tc_lb_pinned(&mut self, iface: &str) -> Result<(), Error> {
        self.pinned_links.remove(iface);
        let Some(dir) = &self.pin_dir else { return Ok(()) };
        let path = dir.join(format!("{LB_LINK_PREFIX}{iface}"));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::PinDir { path, source }),
        }
    }

    /// Whether this process attached (or adopted) the LB link on `iface`.
    pub fn has_tc_lb_pinned(&self, iface: &str) -> bool {
        self.pinned_links.contains_key(iface)
    }

    /// Attaches the socket-level LB programs (connect4, sendmsg4, recvmsg4,
    /// getpeername4) to the cgroup v2 directory `cgroup`: a process in it (or
    /// below it) that connects or sends to a frontend is connected to a
    /// backend directly, and no packet of that flow needs NAT. The tc/XDP
    /// programs still balance what these hooks cannot see (traffic from
    /// outside the cgroup or the node). Attached through BPF links, so other
    /// programs on the same cgroup keep running; detached when this
    /// [`Dataplane`] is dropped. Sockets already connected keep their
    /// backend after that: they hold its address, not the frontend's.
    pub fn attach_sock_lb(&mut self, cgroup: &Path) -> Result<(), Error> {
        let dir = std::fs::File::open(cgroup).map_err(|source| Error::Cgroup { path: cgroup.to_owned(), source })?;
        for name in lb::names::SOCK_LB {
            let prog = self.sock_program(name)?;
            // aya attaches through a BPF link, which the kernel always
            // treats as "allow multiple" and which refuses explicit flags.
            let link = prog.attach(&dir, CgroupAttachMode::Single).map_err(|source| Error::Program {
                name,
                action: format!("attaching to the cgroup {}", cgroup.display()),
                source,
            })?;
            self.sock_links.push((name, link));
        }
        tracing::info!(cgroup = %cgroup.display(), "attached socket-level LB programs");
        Ok(())
    }

    /// Detaches every socket-level LB program [`Self::attach_sock_lb`]
    /// attached; new connections from that cgroup go through the packet path
    /// again.
    pub fn detach_sock_lb(&mut self) -> Result<(), Error> {
        for (name, link) in std::mem::take(&mut self.sock_links) {
            let prog: &mut CgroupSockAddr =
                self.ebpf.program_mut(name).ok_or(Error::MissingProgram { name })?.try_into().map_err(|source| {
                    Error::Program { name, action: "expecting a cgroup sock_addr program".into(), source }
                })?;
            prog.detach(link).map_err(|source| Error::Program { name, action: "detaching".into(), source })?;
        }
        Ok(())
    }

    /// Attaches the socket-level LB programs to the cgroup v2 directory
    /// `cgroup` (see [`Self::attach_sock_lb`]) through links pinned in the pin
    /// dir, so they stay attached when this process dies. Links a previous
    /// process pinned (to this cgroup or another) are detached once the new
    /// ones are in place: for a moment both run, which is harmless (the
    /// second program sees a backend address, not a frontend, and lets it
    /// be), and no `connect()` goes unbalanced. Needs a
    /// [`LoadConfig::pin_dir`].
    pub fn attach_sock_lb_pinned(&mut self, cgroup: &Path) -> Result<(), Error> {
        let dir = self.require_pin_dir("socket LB")?;
        let cg = std::fs::File::open(cgroup).map_err(|source| Error::Cgroup { path: cgroup.to_owned(), source })?;
        let mut pinned = Vec::new();
        for name in lb::names::SOCK_LB {
            let path = dir.join(format!("{SOCK_LINK_PREFIX}{name}"));
            // Held (not pinned) until the new link is pinned in its place.
            let old = match PinnedLink::from_pin(&path) {
                Ok(old) => Some(old.unpin().map_err(|source| Error::PinDir { path: path.clone(), source })?),
                Err(_) => None,
            };
            let prog = self.sock_program(name)?;
            let link_id = prog.attach(&cg, CgroupAttachMode::Single).map_err(|source| Error::Program {
                name,
                action: format!("attaching to the cgroup {}", cgroup.display()),
                source,
            })?;
            let link = prog.take_link(link_id).map_err(|source| Error::Program {
                name,
                action: format!("taking the link on {}", cgroup.display()),
                source,
            })?;
            let fd_link: FdLink = link.try_into().map_err(|source| Error::Link {
                action: format!("cgroup link of {name} on {} as an fd link", cgroup.display()),
                source,
            })?;
            pinned.push(fd_link.pin(&path).map_err(|source| Error::LinkPin { path: path.clone(), source })?);
            drop(old);
        }
        self.sock_pinned = pinned;
        tracing::info!(cgroup = %cgroup.display(), pins = %dir.display(), "attached socket-level LB programs (pinned links)");
        Ok(())
    }

    /// Detaches the socket-level LB programs pinned in the pin dir, by this
    /// process or an earlier one; nothing pinned is not an error.
    pub fn detach_sock_lb_pinned(&mut self) -> Result<(), Error> {
        self.sock_pinned.clear();
        let Some(dir) = self.pin_dir.clone() else { return Ok(()) };
        for name in lb::names::SOCK_LB {
            let path = dir.join(format!("{SOCK_LINK_PREFIX}{name}"));
            if let Ok(link) = PinnedLink::from_pin(&path) {
                // Closing the last reference detaches the program.
                drop(link.unpin().map_err(|source| Error::PinDir { path: path.clone(), source })?);
                tracing::info!(program = name, "detached a pinned socket-level LB program");
            }
        }
        Ok(())
    }

    /// Whether socket-level LB links are pinned in the pin dir.
    pub fn sock_lb_pinned(&self) -> Result<bool, Error> {
        Ok(!self.pins_with_prefix(SOCK_LINK_PREFIX)?.is_empty())
    }

    /// Attaches the XDP LB program to the uplink `iface` (native mode, see
    /// [`Self::attach_xdp_lb`]) through a link pinned in the pin dir, so it
    /// stays when this process dies. A link a previous process pinned for
    /// `iface` gets the new program atomically. Needs a
    /// [`LoadConfig::pin_dir`].
    pub fn attach_xdp_lb_pinned(&mut self, iface: &str) -> Result<(), Error> {
        let name = lb::names::XDP_LB;
        let dir = self.require_pin_dir(iface)?;
        let path = dir.join(format!("{XDP_LINK_PREFIX}{iface}"));
        let prog = self.xdp(name)?;
        let replaced = match PinnedLink::from_pin(&path) {
            Ok(old) => {
                let link: XdpLink = FdLink::from(old).try_into().map_err(|source| Error::Link {
                    action: format!("reusing the pinned link {}", path.display()),
                    source,
                })?;
                std::fs::remove_file(&path).map_err(|source| Error::PinDir { path: path.clone(), source })?;
                match prog.attach_to_link(link) {
                    Ok(id) => {
                        tracing::info!(program = name, iface, "replaced the XDP LB program in its pinned link");
                        Some(id)
                    }
                    Err(e) => {
                        tracing::info!(program = name, iface, error = %e, "pinned XDP link is stale; attaching afresh");
                        None
                    }
                }
            }
            Err(_) => None,
        };
        let link_id = match replaced {
            Some(id) => id,
            None => prog.attach(iface, XdpMode::Driver).map_err(|source| Error::Program {
                name,
                action: format!("attaching to {iface} in native mode"),
                source,
            })?,
        };
        let link = prog.take_link(link_id).map_err(|source| Error::Program {
            name,
            action: format!("taking the link on {iface}"),
            source,
        })?;
        let fd_link: FdLink = link
            .try_into()
            .map_err(|source| Error::Link { action: format!("XDP link on {iface} as an fd link"), source })?;
        let pinned = fd_link.pin(&path).map_err(|source| Error::LinkPin { path: path.clone(), source })?;
        self.xdp_pinned.insert(iface.to_owned(), pinned);
        tracing::info!(program = name, iface, pin = %path.display(), "attached XDP LB program (pinned link)");
        Ok(())
    }

    /// Interfaces with a pinned XDP LB link in the pin dir.
    pub fn pinned_xdp_lb_ifaces(&self) -> Result<Vec<String>, Error> {
        self.pins_with_prefix(XDP_LINK_PREFIX)
    }

    /// Whether this process attached (or adopted) the XDP LB link on `iface`.
    pub fn has_xdp_lb_pinned(&self, iface: &str) -> bool {
        self.xdp_pinned.contains_key(iface)
    }

    /// Detaches the pinned XDP LB link of `iface` (if the interface still
    /// exists, the program leaves it) and removes its pin.
    pub fn detach_xdp_lb_pinned(&mut self, iface: &str) -> Result<(), Error> {
        self.xdp_pinned.remove(iface);
        let Some(dir) = &self.pin_dir else { return Ok(()) };
        let path = dir.join(format!("{XDP_LINK_PREFIX}{iface}"));
        match PinnedLink::from_pin(&path) {
            Ok(link) => {
                drop(link.unpin().map_err(|source| Error::PinDir { path: path.clone(), source })?);
                tracing::info!(program = lb::names::XDP_LB, iface, "detached the pinned XDP LB program");
            }
            // Not a link (any more): just the name to clear.
            Err(_) => match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(Error::PinDir { path, source }),
            },
        }
        Ok(())
    }

    /// Runs the LB program once on `frame` with BPF_PROG_TEST_RUN and returns
    /// its verdict and the frame as the program left it.
    pub fn test_run_tc_lb(&mut self, frame: &[u8]) -> Result<(TestRunResult, Vec<u8>), Error> {
        test_run(self.classifier(lb::names::TC_LB)?, lb::names::TC_LB, frame, 1, None)
    }

    /// Runs the LB program `repeat` times on `frame`; for per-packet cost.
    pub fn bench_tc_lb(&mut self, frame: &[u8], repeat: u32) -> Result<TestRunResult, Error> {
        Ok(test_run(self.classifier(lb::names::TC_LB)?, lb::names::TC_LB, frame, repeat, None)?.0)
    }

    /// Attaches the Service load balancer to the node uplink `iface` as XDP
    /// (native mode): NodePort, externalIP and LoadBalancer-IP flows from
    /// outside are balanced before the stack allocates an skb. Their replies
    /// leave through pod veths, where [`Self::attach_tc_lb`] translates them.
    pub fn attach_xdp_lb(&mut self, iface: &str) -> Result<(), Error> {
        let name = lb::names::XDP_LB;
        let prog = self.xdp(name)?;
        prog.attach(iface, XdpMode::Driver).map_err(|source| Error::Program {
            name,
            action: format!("attaching to {iface} in native mode"),
            source,
        })?;
        tracing::info!(program = name, iface, "attached XDP LB program");
        Ok(())
    }

    /// Runs the XDP LB program once on `frame` with BPF_PROG_TEST_RUN and
    /// returns its verdict and the frame as the program left it.
    pub fn test_run_xdp_lb(&mut self, frame: &[u8]) -> Result<(TestRunResult, Vec<u8>), Error> {
        self.test_run_xdp_lb_from(frame, 0)
    }

    /// As [`Self::test_run_xdp_lb`], as if `frame` arrived on interface
    /// `ingress_ifindex` of the calling thread's network namespace (0: none),
    /// so the program's route lookups start from there.
    pub fn test_run_xdp_lb_from(
        &mut self,
        frame: &[u8],
        ingress_ifindex: u32,
    ) -> Result<(TestRunResult, Vec<u8>), Error> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex; data_end must be the frame's length.
        let xdp_md: Vec<u8> =
            [0, frame.len() as u32, 0, ingress_ifindex, 0, 0].iter().flat_map(|w| w.to_ne_bytes()).collect();
        let ctx = (ingress_ifindex != 0).then_some(xdp_md.as_slice());
        test_run(self.xdp(lb::names::XDP_LB)?, lb::names::XDP_LB, frame, 1, ctx)
    }

    /// Runs the XDP LB program `repeat` times on `frame`; for per-packet cost.
    pub fn bench_xdp_lb(&mut self, frame: &[u8], repeat: u32) -> Result<TestRunResult, Error> {
        Ok(test_run(self.xdp(lb::names::XDP_LB)?, lb::names::XDP_LB, frame, repeat, None)?.0)
    }

    /// Attaches the counting XDP program to `iface` (native mode).
    pub fn attach_xdp_counter(&mut self, iface: &str) -> Result<(), Error> {
        let name = names::XDP_COUNT;
        let prog = self.xdp(name)?;
        prog.attach(iface, XdpMode::Driver).map_err(|source| Error::Program {
            name,
            action: format!("attaching to {iface} in native mode"),
            source,
        })?;
        tracing::info!(program = name, iface, "attached XDP program");
        Ok(())
    }

    /// Attaches the counting tc program to `iface` in direction `dir` (TCX).
    pub fn attach_tc_counter(&mut self, iface: &str, dir: TcDirection) -> Result<(), Error> {
        let name = names::TC_COUNT;
        let prog = self.classifier(name)?;
        prog.attach(iface, dir.into()).map_err(|source| Error::Program {
            name,
            action: format!("attaching to {iface} ({dir:?})"),
            source,
        })?;
        tracing::info!(program = name, iface, ?dir, "attached tc program");
        Ok(())
    }

    /// Runs the counting XDP program on `frame` `repeat` times with
    /// BPF_PROG_TEST_RUN, without any interface.
    pub fn test_run_xdp_counter(&mut self, frame: &[u8], repeat: u32) -> Result<TestRunResult, Error> {
        Ok(test_run(self.xdp(names::XDP_COUNT)?, names::XDP_COUNT, frame, repeat, None)?.0)
    }

    /// The counters of the XDP program.
    pub fn xdp_counters(&self) -> Result<CounterTable<'_>, Error> {
        CounterTable::new(&self.ebpf, names::XDP_COUNTERS)
    }

    /// The counters of the tc program.
    pub fn tc_counters(&self) -> Result<CounterTable<'_>, Error> {
        CounterTable::new(&self.ebpf, names::TC_COUNTERS)
    }

    fn xdp(&mut self, name: &'static str) -> Result<&mut Xdp, Error> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or(Error::MissingProgram { name })?
            .try_into()
            .map_err(|source| Error::Program { name, action: "expecting an XDP program".into(), source })?;
        if prog.fd().is_err() {
            prog.load().map_err(|source| Error::Program { name, action: "loading".into(), source })?;
        }
        Ok(prog)
    }

    fn sock_program(&mut self, name: &'static str) -> Result<&mut CgroupSockAddr, Error> {
        let prog: &mut CgroupSockAddr =
            self.ebpf.program_mut(name).ok_or(Error::MissingProgram { name })?.try_into().map_err(|source| {
                Error::Program { name, action: "expecting a cgroup sock_addr program".into(), source }
            })?;
        if prog.fd().is_err() {
            prog.load().map_err(|source| Error::Program { name, action: "loading".into(), source })?;
        }
        Ok(prog)
    }

    fn classifier(&mut self, name: &'static str) -> Result<&mut SchedClassifier, Error> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .ok_or(Error::MissingProgram { name })?
            .try_into()
            .map_err(|source| Error::Program { name, action: "expecting a tc program".into(), source })?;
        if prog.fd().is_err() {
            prog.load().map_err(|source| Error::Program { name, action: "loading".into(), source })?;
        }
        Ok(prog)
    }
}

/// Runs a packet program (tc or XDP) `repeat` times on `frame` with
/// BPF_PROG_TEST_RUN (and `ctx` as its context, if given): its verdict, its
/// per-run duration, and the frame as the last run left it.
fn test_run<P>(
    prog: &mut P,
    name: &'static str,
    frame: &[u8],
    repeat: u32,
    ctx: Option<&[u8]>,
) -> Result<(TestRunResult, Vec<u8>), Error>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.ctx_in = ctx;
    opts.repeat = repeat;
    let result = prog.test_run(opts).map_err(|source| Error::Program {
        name,
        action: format!("test-running {repeat} times on a {}-byte frame", frame.len()),
        source,
    })?;
    out.truncate(result.data_size_out as usize);
    Ok((result, out))
}

/// Removes the pins of map layouts no program reads any more
/// ([`lb::names::RETIRED`]), so an upgraded agent does not leave their
/// memory behind.
fn remove_retired_pins(dir: &Path) -> Result<(), Error> {
    for name in lb::names::RETIRED {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(map = name, pin = %path.display(), "removed the pin of a retired map layout"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::PinDir { path, source }),
        }
    }
    Ok(())
}

/// aya reuses a pinned map without comparing its shape with the object's:
/// a map pinned by an older build or with other capacities must be refused
/// here, or the program would index past its end.
fn check_pinned_sizes(ebpf: &Ebpf, dir: &Path, sizes: &[(&'static str, u32)]) -> Result<(), Error> {
    for &(name, want) in sizes {
        let map = ebpf.map(name).ok_or(Error::MissingMap { name })?;
        let data = match map {
            aya::maps::Map::HashMap(d) | aya::maps::Map::LruHashMap(d) | aya::maps::Map::Array(d) => d,
            _ => {
                return Err(Error::PinnedMapMismatch { path: dir.join(name), problem: "unexpected map type".into() });
            }
        };
        let info = data.info().map_err(|source| Error::Map { name, action: "reading its info".into(), source })?;
        if info.max_entries() != want {
            return Err(Error::PinnedMapMismatch {
                path: dir.join(name),
                problem: format!("holds {} entries, the configured capacity is {want}", info.max_entries()),
            });
        }
    }
    Ok(())
}

/// How many TCX programs are attached to `iface`'s ingress (in the calling
/// thread's network namespace).
pub fn tcx_ingress_programs(iface: &str) -> Result<usize, Error> {
    let (_, programs) = SchedClassifier::query_tcx(iface, TcAttachType::Ingress).map_err(|source| Error::Program {
        name: lb::names::TC_LB,
        action: format!("querying the TCX programs on {iface}"),
        source,
    })?;
    Ok(programs.len())
}
