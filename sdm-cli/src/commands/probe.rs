//! `sdm probe TARGET`: one GET to a diagnostics listener, as a container's health check runs
//! it (the image has no curl). The agent's socket is not involved: this asks what a load
//! balancer or an orchestrator would.

use std::time::Duration;

use sdm_diag::ProbeError;

use crate::cli::ProbeArgs;
use crate::exit::{CliError, Exit};
use crate::render::outln;

/// How long the probe waits for the listener, connecting and answering each.
const TIMEOUT: Duration = Duration::from_secs(5);

pub fn probe(args: &ProbeArgs) -> Result<(), CliError> {
    match sdm_diag::probe(&args.target, TIMEOUT) {
        Ok(body) => {
            outln!("{body}");
            Ok(())
        }
        Err(e @ ProbeError::BadUrl(_)) => Err(CliError::new(Exit::Usage, e.to_string())),
        Err(e) => Err(CliError::new(Exit::Agent, e.to_string())),
    }
}
