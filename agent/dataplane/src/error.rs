use thiserror::Error;

/// What went wrong, and to what, while driving the dataplane.
#[derive(Debug, Error)]
pub enum Error {
    #[error("loading the embedded eBPF object")]
    LoadObject(#[source] aya::EbpfError),
    #[error("eBPF program {name} is missing from the object")]
    MissingProgram { name: &'static str },
    #[error("eBPF map {name} is missing from the object")]
    MissingMap { name: &'static str },
    #[error("eBPF program {name}: {action}")]
    Program {
        name: &'static str,
        action: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {action}")]
    Map {
        name: &'static str,
        action: String,
        #[source]
        source: aya::maps::MapError,
    },
}
