//! The agent's limit on open files: each tunnelled connection takes two descriptors (the local
//! socket and the one to the gateway), so the common default soft limit of 1,024 caps an agent
//! at about 500 connections while the hard limit usually allows far more.

/// Raises the soft limit on open files to the hard limit and logs what it did; a failure is
/// logged and otherwise ignored (the agent works within the old limit).
pub fn raise_to_hard_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(error = %e, "cannot read the open-file limit");
        return;
    }
    if limit.rlim_cur >= limit.rlim_max {
        return;
    }
    let (from, to) = (limit.rlim_cur, limit.rlim_max);
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit only reads the struct it is given, which lives for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        tracing::info!("raised the open-file limit from {from} to {to} (the hard limit)");
    } else {
        let e = std::io::Error::last_os_error();
        tracing::warn!(error = %e, "cannot raise the open-file limit from {from} to {to}");
    }
}
