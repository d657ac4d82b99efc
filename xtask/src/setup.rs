//! `cargo xtask setup`: everything the project needs on a fresh machine of
//! this kind (Debian bookworm, root, rustup with stable). Each step checks
//! first and does nothing when its part is already there, so a second run is
//! quick.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::util::{exec, output, step, succeeds};

/// Debian packages: runtime (containerd, runc, CNI plugins, busybox for
/// images; docker-registry and skopeo for the local registry image pulls are
/// tested against), build (protoc for tonic, libclang + system RocksDB for the
/// store), and the peers and tools tests and benchmarks drive.
const PACKAGES: &[&str] = &[
    "busybox-static",
    "bpftool",
    "containerd",
    "containernetworking-plugins",
    "docker-registry",
    "etcd-client",
    "etcd-server",
    "iperf3",
    "iproute2",
    "iptables",
    "jq",
    "libclang-dev",
    "libgflags-dev",
    "liblz4-dev",
    "libprotobuf-dev",
    "librocksdb-dev",
    "libsnappy-dev",
    "libzstd-dev",
    "nftables",
    "podman",
    "protobuf-compiler",
    "runc",
    "skopeo",
    "tcpdump",
];

/// bpf-linker built against the LLVM inside the nightly toolchain (see
/// ENVIRONMENT.md: a plain `cargo install bpf-linker` wants a system LLVM).
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Where the LLVM prefix for bpf-linker's build lives (symlinks only).
const LLVM_PREFIX: &str = "/var/tmp/waggle-llvm";

pub fn run() -> anyhow::Result<()> {
    if !waggle_tests::is_root() {
        bail!("cargo xtask setup installs packages and mounts bpffs: run it as root");
    }
    step("apt packages", apt_packages)?;
    step("nightly", nightly)?;
    step("rust-src", rust_src)?;
    step("bpf-linker", bpf_linker)?;
    step("bpffs", bpffs)?;
    step("python client", python_client)?;
    step("nextest", nextest)?;
    Ok(())
}

fn apt_packages() -> anyhow::Result<String> {
    let installed =
        output(Command::new("dpkg-query").arg("-W").arg("-f=${Package} ${db:Status-Abbrev}\n").args(PACKAGES))
            .or_else(|_| {
                // dpkg-query exits 1 when some package is unknown; its stdout still
                // lists the known ones.
                let out = Command::new("dpkg-query")
                    .arg("-W")
                    .arg("-f=${Package} ${db:Status-Abbrev}\n")
                    .args(PACKAGES)
                    .output()?;
                anyhow::Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            })?;
    let present: BTreeSet<&str> = installed
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, status)| status.starts_with("ii"))
        .map(|(pkg, _)| pkg)
        .collect();
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !present.contains(p)).collect();
    if missing.is_empty() {
        return Ok(format!("all {} present", PACKAGES.len()));
    }
    exec(Command::new("apt-get").args(["update", "-qq"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
    exec(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(format!("installed {}", missing.join(" ")))
}

fn rustup() -> Command {
    let mut cmd = Command::new("rustup");
    // Whatever toolchain runs xtask must not leak into rustup's choices.
    cmd.env_remove("RUSTUP_TOOLCHAIN").env_remove("CARGO").env_remove("RUSTC");
    cmd
}

fn nightly() -> anyhow::Result<String> {
    let list = output(rustup().args(["toolchain", "list"]))?;
    if list.lines().any(|l| l.starts_with("nightly-")) {
        return Ok("present".into());
    }
    exec(rustup().args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    Ok("installed nightly (minimal profile)".into())
}

fn rust_src() -> anyhow::Result<String> {
    let installed = output(rustup().args(["component", "list", "--installed", "--toolchain", "nightly"]))?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok("present".into());
    }
    exec(rustup().args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    Ok("installed rust-src for nightly".into())
}

fn bpf_linker() -> anyhow::Result<String> {
    // `--version` also proves the LLVM library it was linked against (inside
    // the nightly toolchain) is still there: a nightly update breaks it.
    if let Ok(version) = output(Command::new(bpf_linker_path()).arg("--version"))
        && version.contains(BPF_LINKER_VERSION)
    {
        return Ok(format!("present ({})", version.trim()));
    }
    let sysroot = PathBuf::from(output(rustup().args(["run", "nightly", "rustc", "--print", "sysroot"]))?.trim());
    let verbose = output(rustup().args(["run", "nightly", "rustc", "-vV"]))?;
    let major = llvm_major(&verbose).context("reading the nightly's LLVM version")?;
    let libllvm = find_libllvm(&sysroot.join("lib"))?;
    let prefix_lib = Path::new(LLVM_PREFIX).join("lib");
    let _ = fs::remove_dir_all(LLVM_PREFIX);
    fs::create_dir_all(&prefix_lib)?;
    let file_name = libllvm.file_name().context("libLLVM has no file name")?;
    symlink(&libllvm, prefix_lib.join("libLLVM.so"))?;
    symlink(&libllvm, prefix_lib.join(file_name))?;
    exec(
        rustup()
            .args(["run", "stable", "cargo", "install", "--locked", "--force", "--no-default-features"])
            .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
            .arg("--features")
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env_remove("CARGO_TARGET_DIR"),
    )?;
    Ok(format!("built bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major}"))
}

fn bpf_linker_path() -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    cargo_home.join("bin").join("bpf-linker")
}

fn llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv.lines().find_map(|l| l.strip_prefix("LLVM version: "))?.split('.').next()?.trim().parse().ok()
}

/// The versioned shared library (e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`).
fn find_libllvm(lib: &Path) -> anyhow::Result<PathBuf> {
    let entries = fs::read_dir(lib).with_context(|| format!("listing {}", lib.display()))?;
    entries
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM.so.")))
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))
}

fn bpffs() -> anyhow::Result<String> {
    let mounts = fs::read_to_string("/proc/mounts")?;
    if mounts.lines().any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf ")) {
        return Ok("mounted".into());
    }
    fs::create_dir_all("/sys/fs/bpf")?;
    exec(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    Ok("mounted /sys/fs/bpf".into())
}

/// The Python `kubernetes` client (from PyPI) the black-box tests drive, in
/// a venv of its own so the system Python stays untouched.
pub const PYTHON_VENV: &str = "/var/tmp/waggle-venv";
const PYTHON_KUBERNETES: &str = "kubernetes==33.1.0";

fn python_client() -> anyhow::Result<String> {
    let python = Path::new(PYTHON_VENV).join("bin").join("python");
    if succeeds(
        Command::new(&python).args(["-c", "import kubernetes, sys; sys.exit(kubernetes.__version__ != '33.1.0')"]),
    ) {
        return Ok("present".into());
    }
    if !python.exists() {
        exec(Command::new("python3").args(["-m", "venv", PYTHON_VENV]))?;
    }
    exec(Command::new(&python).args(["-m", "pip", "install", "--quiet", PYTHON_KUBERNETES]))?;
    Ok(format!("installed {PYTHON_KUBERNETES} in {PYTHON_VENV}"))
}

fn nextest() -> anyhow::Result<String> {
    if succeeds(Command::new("cargo").args(["nextest", "--version"])) {
        Ok("present".into())
    } else {
        Ok("absent: tests will run with cargo test".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_llvm_major_from_rustc_verbose_version() {
        let vv = "rustc 1.97.0-nightly\nhost: x86_64-unknown-linux-gnu\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major(vv), Some(22));
        assert_eq!(llvm_major("rustc 1.95.0"), None);
    }
}
