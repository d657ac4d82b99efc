//! The eBPF object: load, attach, test-run.

use aya::{
    Ebpf,
    programs::{SchedClassifier, TcAttachType, TestRun as _, TestRunOptions, TestRunResult, Xdp, XdpMode},
};
use waggle_ebpf_common::names;

use crate::{Error, maps::CounterTable};

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
        let ebpf = Ebpf::load(OBJECT).map_err(Error::LoadObject)?;
        Ok(Self { ebpf })
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
        let name = names::XDP_COUNT;
        let prog = self.xdp(name)?;
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat;
        prog.test_run(opts).map_err(|source| Error::Program {
            name,
            action: format!("test-running on a {}-byte frame", frame.len()),
            source,
        })
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
