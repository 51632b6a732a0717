//! The command line of `sdm-server gateway`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use super::StandaloneConfig;
use crate::control::pinning::parse_tags;

/// Environment variable the gateway token may be given in (keeps it out of `ps`).
pub const GATEWAY_TOKEN_ENV: &str = "SDM_GATEWAY_TOKEN";

/// `sdm-server gateway`: a gateway with no database, attached to control planes.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Control plane URL (https://host:port); repeat, or separate with commas, to give several:
    /// the next is used when one fails. Default: the URL the gateway token carries.
    #[arg(long = "control-plane", value_name = "URL", value_delimiter = ',')]
    pub control_planes: Vec<String>,
    /// The gateway token (sdm_gw_…) from POST /v1/admin/gateways. Prefer the environment
    /// variable or --gateway-token-file, which other users cannot read in the process list.
    #[arg(long, value_name = "TOKEN", env = GATEWAY_TOKEN_ENV, hide_env_values = true)]
    pub gateway_token: Option<String>,
    /// Read the gateway token from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "gateway_token")]
    pub gateway_token_file: Option<PathBuf>,
    /// Address to listen on for clients.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8444")]
    pub listen: SocketAddr,
    /// Address clients reach this gateway at (host:port), when it differs from --listen; the
    /// gateway's certificate is issued for its host.
    #[arg(long, value_name = "HOST:PORT")]
    pub public_addr: Option<String>,
    /// Tags to serve under, e.g. `region=eu,zone=a` or `eu`; they must be among those the
    /// gateway token allows. Default: all of them.
    #[arg(long, value_name = "K=V,…", value_parser = parse_tag_list)]
    pub tags: Option<BTreeMap<String, String>>,
}

fn parse_tag_list(text: &str) -> Result<BTreeMap<String, String>, String> {
    parse_tags(text)
}

impl GatewayArgs {
    /// The configuration these arguments describe (reads the token file).
    pub fn into_config(self) -> Result<StandaloneConfig, String> {
        let token = match (&self.gateway_token, &self.gateway_token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the gateway token from {}: {e}", path.display()))?
                .trim()
                .to_owned(),
            (None, None) => {
                return Err(format!(
                    "no gateway token: give --gateway-token-file FILE, set {GATEWAY_TOKEN_ENV}, \
                     or pass --gateway-token; an admin creates one with POST /v1/admin/gateways"
                ));
            }
        };
        let mut config = StandaloneConfig::new(token)
            .control_planes(self.control_planes)
            .listen(self.listen);
        if let Some(addr) = self.public_addr {
            config = config.public_addr(addr);
        }
        if let Some(tags) = self.tags {
            config = config.tags(tags);
        }
        Ok(config)
    }
}
