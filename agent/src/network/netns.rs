//! Named network namespaces: a file bind-mounted over a thread's
//! `/proc/self/task/<tid>/ns/net`, as `ip netns add` does.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use super::NetworkError;

/// Creates a new network namespace pinned at `path`, with its loopback up.
pub fn create_netns(path: &Path) -> Result<(), NetworkError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|source| NetworkError::Io { what: format!("creating {}", dir.display()), source })?;
    }
    let target = path.to_path_buf();
    // unshare() changes the calling thread only: do it on a thread of its own
    // that ends right after, so no runtime thread is left in the new namespace.
    let joined = std::thread::spawn(move || -> Result<(), NetworkError> {
        File::create(&target)
            .map_err(|source| NetworkError::Io { what: format!("creating {}", target.display()), source })?;
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|errno| NetworkError::Sys { what: "unshare(CLONE_NEWNET)".into(), errno })?;
        let tid = nix::unistd::gettid();
        let source = PathBuf::from(format!("/proc/self/task/{tid}/ns/net"));
        mount(Some(&source), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|errno| NetworkError::Sys { what: format!("bind-mounting {}", target.display()), errno })?;
        loopback_up().map_err(|errno| NetworkError::Sys { what: "setting lo up".into(), errno })
    })
    .join();
    match joined {
        Ok(r) => r.inspect_err(|_| {
            let _ = delete_netns(path);
        }),
        Err(_) => Err(NetworkError::Config("the netns thread panicked".into())),
    }
}

/// Unmounts and removes the namespace file; a missing file is fine.
pub fn delete_netns(path: &Path) -> Result<(), NetworkError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(errno) => return Err(NetworkError::Sys { what: format!("unmounting {}", path.display()), errno }),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetworkError::Io { what: format!("removing {}", path.display()), source }),
    }
}

/// Runs `f` on a fresh thread inside the namespace at `path` (sockets made in
/// `f` stay in that namespace).
pub async fn enter_and_run<R: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, NetworkError> {
    let file =
        File::open(path).map_err(|source| NetworkError::Io { what: format!("opening {}", path.display()), source })?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let r = setns(&file, CloneFlags::CLONE_NEWNET)
            .map_err(|errno| NetworkError::Sys { what: "setns into the pod's network namespace".into(), errno })
            .map(|()| f());
        let _ = tx.send(r);
    });
    rx.await.map_err(|_| NetworkError::Config("the netns thread ended without an answer".into()))?
}

/// SIOCGIFFLAGS/SIOCSIFFLAGS on `lo` in the calling thread's namespace.
fn loopback_up() -> Result<(), nix::errno::Errno> {
    // SAFETY: plain socket(2); the descriptor is owned and closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: fd is a socket we own; OwnedFd closes it exactly once.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    use std::os::fd::AsRawFd as _;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags into req, which lives across the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: after SIOCGIFFLAGS the union holds ifru_flags.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads req, which lives across the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(())
}
