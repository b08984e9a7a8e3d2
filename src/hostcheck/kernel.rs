//! The kernel: its version (glommio needs Linux 5.8 or later), the
//! `kernel.io_uring_disabled` sysctl (Linux 6.6+), and a real
//! `io_uring_setup` of a tiny ring, which is the only way to know that
//! neither a seccomp filter, a container policy nor the sysctl blocks it.

use super::sysfs::{read_line, unreadable};
use super::{Check, Status};

/// The oldest kernel glommio supports.
pub const MIN_KERNEL: (u32, u32) = (5, 8);

/// The kernel and io_uring checks.
pub fn checks() -> Vec<Check> {
    vec![version(), disabled_sysctl(), probe()]
}

/// Parse `6.18.44-fc-v669` into (6, 18).
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

fn version() -> Check {
    const PATH: &str = "/proc/sys/kernel/osrelease";
    let release = match read_line(PATH) {
        Ok(r) => r,
        Err(e) => return Check::new("kernel", Status::Skip, unreadable(PATH, &e)),
    };
    match parse_release(&release) {
        Some(v) if v >= MIN_KERNEL => {
            Check::new("kernel", Status::Pass, format!("Linux {release} (glommio needs {}.{}+)", MIN_KERNEL.0, MIN_KERNEL.1))
        }
        Some(_) => Check::new(
            "kernel",
            Status::Fail,
            format!("Linux {release} is older than {}.{}, which glommio needs", MIN_KERNEL.0, MIN_KERNEL.1),
        )
        .fix("upgrade the kernel (Debian 12 ships 6.1)"),
        None => Check::new("kernel", Status::Skip, format!("cannot parse the kernel release {release:?}")),
    }
}

fn disabled_sysctl() -> Check {
    const PATH: &str = "/proc/sys/kernel/io_uring_disabled";
    match read_line(PATH) {
        Ok(v) if v == "0" => Check::new("io_uring_sysctl", Status::Pass, "kernel.io_uring_disabled = 0 (io_uring allowed for every process)"),
        Ok(v) if v == "1" => Check::new(
            "io_uring_sysctl",
            Status::Warn,
            "kernel.io_uring_disabled = 1: only root and members of kernel.io_uring_group may create rings",
        )
        .fix("add the orderd user to the group in kernel.io_uring_group, or set kernel.io_uring_disabled = 0 (see the io_uring_setup line for this process)"),
        Ok(v) => Check::new("io_uring_sysctl", Status::Fail, format!("kernel.io_uring_disabled = {v}: io_uring is disabled for every process"))
            .fix("sysctl -w kernel.io_uring_disabled=0 (and persist it in /etc/sysctl.d/)"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Check::new("io_uring_sysctl", Status::Pass, "no kernel.io_uring_disabled on this kernel (before 6.6): no sysctl restricts io_uring")
        }
        Err(e) => Check::new("io_uring_sysctl", Status::Skip, unreadable(PATH, &e)),
    }
}

/// Create and close a 4-entry io_uring; `Ok(features)` or the errno.
pub fn try_io_uring_setup() -> Result<u32, std::io::Error> {
    // struct io_uring_params is 120 bytes of u32/u64 fields; zeroed means
    // "no flags". `features` is the sixth u32 (offset 20).
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup(2) reads and writes only the 120-byte
    // io_uring_params it is given, which `params` is (30 × u32, 4-aligned
    // as the struct's u32 fields need; its u64 fields are in
    // sq_off/cq_off, which the kernel writes with unaligned-safe copies
    // (copy_to_user)). The fd it returns is owned here and closed below.
    #[allow(unsafe_code)]
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is the descriptor just returned by io_uring_setup, owned
    // by nobody else; it is closed exactly once.
    #[allow(unsafe_code)]
    unsafe {
        libc::close(fd as libc::c_int);
    }
    Ok(params[5])
}

fn probe() -> Check {
    match try_io_uring_setup() {
        Ok(features) => Check::new(
            "io_uring_setup",
            Status::Pass,
            format!("created and closed a 4-entry io_uring (features 0x{features:x}): this process may use io_uring"),
        ),
        Err(e) => {
            let (why, fix) = match e.raw_os_error() {
                Some(libc::ENOSYS) => ("the kernel has no io_uring (built without CONFIG_IO_URING)", "run on a kernel with io_uring enabled"),
                Some(libc::EPERM) => (
                    "io_uring is refused to this process (kernel.io_uring_disabled, or a seccomp / container policy)",
                    "allow io_uring_setup, io_uring_enter and io_uring_register (no SystemCallFilter blocking them; Docker's default seccomp profile blocks io_uring) and check kernel.io_uring_disabled",
                ),
                Some(libc::ENOMEM) => ("the kernel refused the ring's memory", "raise RLIMIT_MEMLOCK (see the memlock line)"),
                _ => ("io_uring_setup failed", "check the kernel log (dmesg)"),
            };
            Check::new("io_uring_setup", Status::Fail, format!("{why}: {e}")).fix(fix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse() {
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(parse_release("junk"), None);
        assert!(parse_release("5.4.0").unwrap() < MIN_KERNEL);
    }
}
