//! The command line of `sdm-server gateway`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use sdm_gateway::AuditPolicy;

use super::StandaloneConfig;

/// Environment variable the gateway token may be given in (keeps it out of `ps`).
pub const GATEWAY_TOKEN_ENV: &str = "SDM_GATEWAY_TOKEN";

/// `sdm-server gateway`: a gateway with no database, attached to control planes. `Debug` hides
/// the token.
#[derive(Clone, Args)]
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
    /// What to do when the audit trail cannot be written.
    #[command(flatten)]
    pub audit: AuditArgs,
    /// Directory that keeps the audit trail while no control plane takes it (created 0700; one
    /// per gateway process). Default: $STATE_DIRECTORY/audit-spool under systemd, else
    /// $XDG_STATE_HOME (or ~/.local/state)/sdm/gateway-audit-spool.
    #[arg(long, value_name = "DIR", env = "SDM_AUDIT_SPOOL")]
    pub audit_spool: Option<PathBuf>,
    /// Bound on the audit spool: bytes, or a number with K, M or G (binary units); when it is
    /// full, new connections are refused until a control plane takes the spooled events.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "1G")]
    pub audit_spool_max: u64,
    /// At SIGTERM, how long open connections may run on before they are closed with the
    /// protocol's message (seconds, or a number with s, m or h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10")]
    pub drain_timeout: Duration,
    /// At start, how long to keep asking while no control plane answers before giving up with
    /// exit 1 (seconds, or a number with s, m or h). A refusal (bad token, tags) exits at once.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "120")]
    pub register_timeout: Duration,
    /// The diagnostics listener.
    #[command(flatten)]
    pub diag: crate::diag::DiagArgs,
}

/// A size: bytes, or a number with K, M or G (1024-based), e.g. `512M`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let shift = match unit.trim_end_matches(['B', 'b', 'i']) {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        _ => {
            return Err(format!(
                "{text:?} is not a size (bytes, or a number with K, M or G)"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (bytes, or a number with K, M or G)"))?;
    n.checked_mul(1 << shift)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is out of range"))
}

/// What a gateway does when its audit trail cannot be written (`sdm-server serve` and
/// `sdm-server gateway`).
#[derive(Debug, Clone, Copy, Args)]
pub struct AuditArgs {
    /// Keep serving when the audit trail cannot be written (disk full, store or control plane
    /// down), losing the events that do not fit in memory. UNSAFE: connections and statements
    /// then go unrecorded. Default: refuse new connections, and close open ones after
    /// --audit-grace, until the trail is written again.
    #[arg(long)]
    pub audit_fail_open: bool,
    /// How long open connections are kept while the audit trail cannot be written: seconds, or
    /// a number with s, m or h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10")]
    pub audit_grace: Duration,
}

impl AuditArgs {
    /// The policy these arguments describe.
    pub fn policy(self) -> AuditPolicy {
        AuditPolicy {
            fail_open: self.audit_fail_open,
            grace: self.audit_grace,
        }
    }
}

/// A duration: seconds, or a number with a unit (`300`, `300s`, `5m`, `1h`, `7d`).
pub use sdm_proto::duration::parse as parse_duration;

impl std::fmt::Debug for GatewayArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayArgs")
            .field("control_planes", &self.control_planes)
            .field(
                "gateway_token",
                &self.gateway_token.as_ref().map(|_| "<redacted>"),
            )
            .field("gateway_token_file", &self.gateway_token_file)
            .field("listen", &self.listen)
            .field("public_addr", &self.public_addr)
            .field("tags", &self.tags)
            .field("audit", &self.audit)
            .field("audit_spool", &self.audit_spool)
            .field("audit_spool_max", &self.audit_spool_max)
            .field("drain_timeout", &self.drain_timeout)
            .field("register_timeout", &self.register_timeout)
            .field("diag", &self.diag)
            .finish()
    }
}

/// Gateway tags: `key=value` or a bare `key`.
fn parse_tag_list(text: &str) -> Result<BTreeMap<String, String>, sdm_proto::tags::TagError> {
    sdm_proto::tags::parse(text, sdm_proto::tags::TagForm::PairsOrNames)
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
            .listen(self.listen)
            .audit_policy(self.audit.policy())
            .audit_spool_max(self.audit_spool_max)
            .drain(self.drain_timeout)
            .register_timeout(self.register_timeout);
        if let Some(dir) = self.audit_spool {
            config = config.audit_spool(dir);
        }
        if let Some(addr) = self.public_addr {
            config = config.public_addr(addr);
        }
        if let Some(tags) = self.tags {
            config = config.tags(tags);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: GatewayArgs,
    }

    #[test]
    fn size_forms() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64K").unwrap(), 64 * 1024);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        for bad in ["", "G", "0", "1T", "-1", "1.5G", "99999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn duration_forms() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "d", "5w", "-1h", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn several_control_planes_tags_and_no_token_in_debug_output() {
        let cli = Cli::try_parse_from([
            "gw",
            "--control-plane",
            "https://a:1,https://b:2",
            "--control-plane",
            "https://c:3",
            "--gateway-token",
            "sdm_gw_secretsecret",
            "--tags",
            "eu,zone=a",
        ])
        .unwrap();
        assert_eq!(
            cli.args.control_planes,
            ["https://a:1", "https://b:2", "https://c:3"]
        );
        assert_eq!(
            cli.args.tags.as_ref().unwrap(),
            &BTreeMap::from([("eu".into(), String::new()), ("zone".into(), "a".into())])
        );
        assert!(!format!("{:?}", cli.args).contains("secretsecret"));
        let config = cli.args.into_config().unwrap();
        assert!(!format!("{config:?}").contains("secretsecret"));
    }

    #[test]
    fn a_token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "sdm_gw_fromfile\n").unwrap();
        let cli =
            Cli::try_parse_from(["gw", "--gateway-token-file", path.to_str().unwrap()]).unwrap();
        assert!(cli.args.into_config().is_ok());
        let missing = Cli::try_parse_from(["gw"]).unwrap();
        if std::env::var_os(GATEWAY_TOKEN_ENV).is_none() {
            assert!(
                missing
                    .args
                    .into_config()
                    .unwrap_err()
                    .contains("no gateway token")
            );
        }
    }

    #[test]
    fn start_up_waits_120_s_for_a_control_plane_unless_told_otherwise() {
        let cli = Cli::try_parse_from(["gw", "--gateway-token", "sdm_gw_x"]).unwrap();
        assert_eq!(cli.args.register_timeout, Duration::from_secs(120));
        assert_eq!(
            cli.args.register_timeout,
            super::super::DEFAULT_REGISTER_TIMEOUT
        );
        let cli = Cli::try_parse_from(["gw", "--register-timeout", "3s"]).unwrap();
        assert_eq!(cli.args.register_timeout, Duration::from_secs(3));
    }
}
