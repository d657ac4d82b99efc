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
    #[error("eBPF map {name} is full ({capacity} entries): raise its capacity flag")]
    MapFull { name: &'static str, capacity: u32 },
    #[error("eBPF map {name}: a row of {got} slots, the layout holds {want}")]
    RowSize { name: &'static str, got: usize, want: usize },
    #[error("pinned eBPF map {path}: {problem}; remove the pin (or raise/lower the flag to match) to start afresh")]
    PinnedMapMismatch { path: std::path::PathBuf, problem: String },
    #[error("creating the pin directory {path}")]
    PinDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the cgroup v2 directory {path}")]
    Cgroup {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("eBPF link: {action}")]
    Link {
        action: String,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("pinning an eBPF link at {path}")]
    LinkPin {
        path: std::path::PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("eBPF map {name}: {action}")]
    Map {
        name: &'static str,
        action: String,
        #[source]
        source: aya::maps::MapError,
    },
}
