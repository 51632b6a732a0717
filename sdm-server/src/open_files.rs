//! The process's limit on open files. Every API connection takes a file descriptor and every
//! gateway connection two, so the common default soft limit of 1,024 is reached long before the
//! listeners' own caps; the hard limit is what an administrator allows.

/// Below this, the log warns that the limit is low for a server.
const LOW: u64 = 8192;

/// Raises the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit, logs what it did,
/// and returns the soft limit now in effect (`None` if it cannot be read).
///
/// The `sdm-server` binary calls it at start (`serve` and `gateway`); a program that embeds the
/// server decides for its own process.
pub fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        let e = std::io::Error::last_os_error();
        tracing::warn!(error = %e, "cannot read the open-file limit");
        return None;
    }
    let (soft, hard) = (wide(limit.rlim_cur), wide(limit.rlim_max));
    let now = if soft >= hard {
        tracing::info!(
            limit = soft,
            "the open-file limit is {soft} (the hard limit)"
        );
        soft
    } else {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::info!(
                from = soft,
                to = hard,
                "raised the open-file limit from {soft} to {hard} (the hard limit)"
            );
            hard
        } else {
            let e = std::io::Error::last_os_error();
            tracing::warn!(
                error = %e,
                limit = soft,
                hard,
                "cannot raise the open-file limit from {soft} to the hard limit {hard}: {e}"
            );
            soft
        }
    };
    if now < LOW {
        tracing::warn!(
            limit = now,
            "the open-file limit is {now}: each API connection takes a file descriptor and each \
             gateway connection two, and connections beyond it wait; raise the hard limit \
             (LimitNOFILE= in a systemd unit, `ulimit -Hn` in a shell, --ulimit for a container)"
        );
    }
    Some(now)
}

/// `rlim_t` is 64 bits on the platforms sdm runs on; this keeps the conversion honest elsewhere.
#[allow(clippy::useless_conversion)]
fn wide(value: libc::rlim_t) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}
