//! Starting the agent in the background (`sdm listen --daemon`, and `sdm login` when no agent
//! runs): a detached `sdm listen` in a session of its own, returning once it answers.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::{AgentClient, QUICK};
use crate::exit::CliError;
use crate::home::{HOME_ENV_VAR, Home};
use crate::protocol::{AgentInfo, Reply, Request};

/// Bound on the agent becoming ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Variables the background agent must not inherit: tokens reach it over the socket only, and
/// the API URL override travels with each login.
const SCRUBBED_ENV: [&str; 3] = ["SDM_ADMIN_TOKEN", "SDM_SERVICE_TOKEN", "SDM_API_URL"];

/// The running agent's answer to a ping, or `None` when no agent answers.
pub fn ping(home: &Home) -> Result<Option<AgentInfo>, CliError> {
    let Some(mut client) = AgentClient::try_connect(home)? else {
        return Ok(None);
    };
    match client.request(Request::Ping, QUICK)? {
        Reply::Agent(info) => Ok(Some(info)),
        other => Err(CliError::agent(format!(
            "the sdm agent answered a ping with {other:?}"
        ))),
    }
}

/// Starts a background agent for `home` (`sdm listen` with `listen_args`) unless one answers
/// already; returns the running agent's details once it answers. The agent's standard error
/// goes to `SDM_HOME/agent.log`.
pub fn ensure_running(home: &Home, listen_args: &[String]) -> Result<(AgentInfo, bool), CliError> {
    if let Some(info) = ping(home)? {
        return Ok((info, false));
    }
    home.ensure()?;
    let exe = std::env::current_exe()
        .map_err(|e| CliError::agent(format!("cannot find the sdm executable: {e}")))?;
    let log = home
        .open_log()
        .map_err(|e| CliError::agent(format!("cannot open {}: {e}", home.log_file().display())))?;
    let mut command = Command::new(exe);
    command
        .arg("listen")
        .args(listen_args)
        .env(HOME_ENV_VAR, home.dir())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for name in SCRUBBED_ENV {
        command.env_remove(name);
    }
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            // A session of its own: no controlling terminal, no SIGHUP or SIGINT from ours.
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| CliError::agent(format!("cannot start the sdm agent: {e}")))?;
    let deadline = Instant::now() + START_TIMEOUT;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(info) = ping(home)? {
            return Ok((info, true));
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Another `sdm login` may have started one at the same moment.
            if let Some(info) = ping(home)? {
                return Ok((info, false));
            }
            let why = home
                .last_log_line()
                .map_or_else(String::new, |l| format!(": {l}"));
            return Err(CliError::agent(format!(
                "the sdm agent exited ({status}) before it was ready{why} (log: {})",
                home.log_file().display()
            )));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(CliError::agent(format!(
                "the sdm agent did not become ready within {} s (log: {})",
                START_TIMEOUT.as_secs(),
                home.log_file().display()
            )));
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
