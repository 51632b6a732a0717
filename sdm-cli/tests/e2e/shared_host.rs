//! The agent on a host it shares with others: its tunnels answer only the OS user running it
//! (another user is refused and told why; `--allow-other-users` is the opt-out), and nobody on
//! the host can lock it out by failing token checks from the same address.

use std::time::Duration;

use sdm_core::{ErrorKind, Session};
use sdm_proto::{Token, TokenKind};
use serde_json::Value;

use crate::support::{
    Fixture, free_port, pg_resource, psql_as, psql_as_os_user, psql_on, psql_on_as_os_user,
};

/// A second OS user of this host, or `None` (with a note) when the tests cannot play one.
fn stranger() -> Option<sdm_testkit::OsUser> {
    match sdm_testkit::other_os_user() {
        Ok(Some(user)) => Some(user),
        Ok(None) => {
            eprintln!(
                "note: skipped: playing a second OS user needs root (CI runs the tests as root)"
            );
            None
        }
        Err(e) => panic!("cannot find or create a second OS user: {e}"),
    }
}

/// The row of `sdm status --json` for `name`.
fn row<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row for {name}: {status:#}"))
}

#[test]
fn tunnels_serve_only_their_os_user_unless_opened_for_all() {
    let Some(stranger) = stranger() else {
        return;
    };
    let fx = Fixture::start();
    let auto_port = free_port();
    pg_resource(&fx, "pg-auto", Some(auto_port));
    pg_resource(&fx, "pg-mine", None);
    pg_resource(&fx, "pg-shared", None);
    let token = fx.account_with("etl", &["pg-auto", "pg-mine", "pg-shared"]);
    fx.block_on(fx.admin.set_auto_connect(true)).unwrap();

    // A login that auto-connects, and a plain `sdm connect`.
    let sdm = fx.sdm();
    let out = sdm.login(&token);
    assert!(!out.stderr.contains("every OS user"), "{out:#?}");
    let mine = sdm.run(&["connect", "pg-mine", "--json"]);
    assert!(mine.stderr.is_empty(), "{mine:#?}");
    let mine = u16::try_from(mine.json()["port"].as_u64().unwrap()).unwrap();

    for (name, port) in [("pg-auto", auto_port), ("pg-mine", mine)] {
        // The owner gets through, as any local client of the tunnel did before.
        let (code, stdout, stderr) = psql_as(port, "etl", None, "SELECT 'owner ' || 'in'");
        assert_eq!((code, stdout.as_str()), (0, "owner in"), "{name}: {stderr}");
        // Another OS user of the host is refused, and psql says why.
        let (code, stdout, stderr) =
            psql_as_os_user(&stranger, port, "etl", "SELECT 'stranger ' || 'in'");
        assert!(!stdout.contains("stranger in"), "{name}: {stdout}");
        assert_ne!(code, 0, "{name}: {stdout} {stderr}");
        assert!(
            stderr.contains(&format!(
                "sdm: the tunnel to \"{name}\" serves only the OS user that opened it"
            )) && stderr.contains(&format!("uid {}", stranger.uid)),
            "{name}: {stderr}"
        );
    }

    // One opened for everybody, with a warning.
    let shared = sdm.run(&["connect", "pg-shared", "--allow-other-users", "--json"]);
    assert_eq!(shared.json()["owner_only"], false, "{shared:#?}");
    assert!(
        shared
            .stderr
            .starts_with("warning: every OS user on this machine can use the tunnel to pg-shared"),
        "{shared:#?}"
    );
    let shared = u16::try_from(shared.json()["port"].as_u64().unwrap()).unwrap();
    // The tunnel opened for everybody lets the stranger in.
    let (code, stdout, stderr) =
        psql_as_os_user(&stranger, shared, "etl", "SELECT 'stranger ' || 'in'");
    assert_eq!((code, stdout.as_str()), (0, "stranger in"), "{stderr}");

    // `sdm status --json` tells which tunnel is which.
    let status = sdm.run(&["status", "--json"]).json();
    for (name, owner_only) in [("pg-auto", true), ("pg-mine", true), ("pg-shared", false)] {
        let r = row(&status, name);
        assert_eq!(r["status"], "connected", "{r:#}");
        assert_eq!(r["owner_only"], owner_only, "{r:#}");
    }
    // The agent's log names each refusal.
    let log = std::fs::read_to_string(sdm.home.join("agent.log")).unwrap();
    for name in ["pg-auto", "pg-mine"] {
        assert!(
            log.lines().any(
                |l| l.contains("refused a local connection from another OS user")
                    && l.contains(&format!("resource={name}"))
                    && l.contains(&format!("uid {}", stranger.uid))
            ),
            "{log}"
        );
    }
}

/// Leases this short are renewed every second, so a renewal refused while the source is
/// throttled shows at once.
const LEASE: Duration = Duration::from_secs(2);
/// Failed checks sent at most to get a limit to answer (the limits are 10 and 60).
const MAX_FLOOD: usize = 200;

/// A token of this installation with a random id: unknown to the server.
fn forged(fx: &Fixture, real: &Token) -> String {
    Token::generate(TokenKind::Service, &fx.api_url, real.ca_fingerprint)
        .unwrap()
        .encode()
}

/// Someone else on the host guessing the secret of `real`: its id, a random secret.
fn guessed(real: &Token) -> String {
    let mut guess = real.clone();
    guess.secret = Token::generate(TokenKind::Service, &real.api_url, real.ca_fingerprint)
        .unwrap()
        .secret;
    guess.encode()
}

/// Fails token checks from 127.0.0.1 with tokens from `make` until an answer contains
/// `marker` (at most [`MAX_FLOOD`] tries); returns that answer.
fn fail_until(fx: &Fixture, make: impl Fn() -> String, marker: &str) -> sdm_core::Error {
    for _ in 0..MAX_FLOOD {
        let err = fx.block_on(Session::login(&make())).unwrap_err();
        if err.message().contains(marker) {
            return err;
        }
        assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err:?}");
    }
    panic!("{MAX_FLOOD} failed token checks from one address never got {marker:?}");
}

/// Someone on the host fails token checks until 127.0.0.1 is throttled; returns the answer
/// that said so.
fn throttle_the_host(fx: &Fixture, real: &Token) -> sdm_core::Error {
    fail_until(fx, || forged(fx, real), "too many failed token checks from")
}

#[test]
fn failed_token_checks_from_the_same_host_do_not_lock_the_job_out() {
    let fx = Fixture::start_with(|b| b.lease_ttl(LEASE));
    pg_resource(&fx, "pg-early", None);
    pg_resource(&fx, "pg-late", None);
    let token = fx.account_with("etl", &["pg-early", "pg-late"]);
    let real = Token::parse(&token).unwrap();

    // The job: logged in, one tunnel open and used.
    let job = fx.sdm();
    job.login(&token);
    let early = job.run(&["connect", "pg-early", "--json"]).json();
    let early = u16::try_from(early["port"].as_u64().unwrap()).unwrap();
    let (code, stdout, stderr) = psql_as(early, "etl", None, "SELECT 'before'");
    assert_eq!((code, stdout.as_str()), (0, "before"), "{stderr}");

    // Someone on the same host fails token checks until the address is throttled.
    let refusal = throttle_the_host(&fx, &real);

    // The job's valid token is still accepted from the same address: it lists, connects…
    let status = job.run(&["status", "--json"]);
    assert_eq!(row(&status.json(), "pg-early")["status"], "connected");
    let late = job.run(&["connect", "pg-late", "--json"]).json();
    let late = u16::try_from(late["port"].as_u64().unwrap()).unwrap();
    let (code, stdout, stderr) = psql_as(late, "etl", None, "SELECT 'late'");
    assert_eq!((code, stdout.as_str()), (0, "late"), "{stderr}");

    // Guesses of the secret of the job's own token get that token id throttled too.
    let guesses = fail_until(
        &fx,
        || guessed(&real),
        "too many failed checks of this token",
    );
    for e in [&refusal, &guesses] {
        assert_eq!(e.kind(), ErrorKind::ApiUnreachable, "{e:?}");
        assert!(
            e.retryable() && e.message().contains("not a revocation"),
            "{e:?}"
        );
    }

    // With both the address and its token id throttled, the agent renews its leases: once the
    // lease the first tunnel started with has expired, a new connection through it still works.
    throttle_the_host(&fx, &real);
    std::thread::sleep(LEASE * 3);
    throttle_the_host(&fx, &real);
    let (code, stdout, stderr) = psql_as(early, "etl", None, "SELECT 'after'");
    assert_eq!((code, stdout.as_str()), (0, "after"), "{stderr}");
    let status = job.run(&["status", "--json"]).json();
    for name in ["pg-early", "pg-late"] {
        assert_eq!(row(&status, name)["status"], "connected", "{status:#}");
    }
    let log = std::fs::read_to_string(job.home.join("agent.log")).unwrap();
    assert!(!log.contains("tunnel closed"), "{log}");
}

/// `sdm connect --unix-socket`, `--same-user-only`, and `sdm login --unix-socket` as the
/// session's default: the socket lives in a directory only the agent's user can enter, psql
/// reaches it through libpq's socket-directory convention, and another OS user is refused on
/// both kinds of tunnel while a tunnel opened for everybody lets them in (the control).
#[test]
fn unix_socket_and_same_user_only_tunnels_from_the_cli() {
    let Some(stranger) = stranger() else {
        return;
    };
    let fx = Fixture::start();
    for name in ["pg-sock", "pg-tcp", "pg-default", "pg-open"] {
        pg_resource(&fx, name, None);
    }
    let token = fx.account_with("etl", &["pg-sock", "pg-tcp", "pg-default", "pg-open"]);
    let sdm = fx.sdm();
    sdm.login(&token);

    // --unix-socket: the address is a path, there is no port, only the owner gets in.
    let sock = sdm.run(&["connect", "pg-sock", "--unix-socket", "--json"]);
    assert!(sock.stderr.is_empty(), "{sock:#?}");
    let info = sock.json();
    let path = std::path::PathBuf::from(info["local_address"].as_str().unwrap());
    assert_eq!(info["port"], Value::Null, "{info:#}");
    assert_eq!(info["owner_only"], true, "{info:#}");
    assert_eq!(path.file_name().unwrap(), ".s.PGSQL.5432");
    let dir = path.parent().unwrap().to_str().unwrap().to_owned();
    let (code, stdout, stderr) = psql_on(&dir, 5432, "etl", "SELECT 'owner ' || 'in'");
    assert_eq!((code, stdout.as_str()), (0, "owner in"), "{stderr}");
    let (code, stdout, stderr) =
        psql_on_as_os_user(&stranger, &dir, 5432, "etl", "SELECT 'stranger ' || 'in'");
    assert!(
        code != 0 && !stdout.contains("stranger in"),
        "{stdout} {stderr}"
    );
    assert!(stderr.contains("Permission denied"), "{stderr}");
    let human = sdm.run(&["connect", "pg-sock", "--tcp"]);
    assert!(
        human.stderr.contains("listens on a Unix socket"),
        "asking for the other kind is an error: {human:#?}"
    );

    // --same-user-only on TCP (the default, spelled out): the stranger is refused and told why.
    let tcp = sdm.run(&["connect", "pg-tcp", "--same-user-only", "--json"]);
    let port = u16::try_from(tcp.json()["port"].as_u64().unwrap()).unwrap();
    let (code, _, stderr) = psql_as_os_user(&stranger, port, "etl", "SELECT 'stranger ' || 'in'");
    assert_ne!(code, 0);
    assert!(
        stderr.contains("serves only the OS user that opened it"),
        "{stderr}"
    );
    let conflict = sdm.run(&[
        "connect",
        "pg-open",
        "--same-user-only",
        "--allow-other-users",
    ]);
    assert_ne!(conflict.code, 0, "{conflict:#?}");

    // The control: a tunnel opened for everybody lets the same stranger in.
    let open = sdm.run(&["connect", "pg-open", "--allow-other-users", "--json"]);
    let port = u16::try_from(open.json()["port"].as_u64().unwrap()).unwrap();
    let (code, stdout, stderr) =
        psql_as_os_user(&stranger, port, "etl", "SELECT 'stranger ' || 'in'");
    assert_eq!((code, stdout.as_str()), (0, "stranger in"), "{stderr}");

    // The status table shows the socket's tunnel as connected, without a port.
    let status = sdm.run(&["status", "--json"]).json();
    let r = row(&status, "pg-sock");
    assert_eq!(r["status"], "connected", "{r:#}");
    assert_eq!(r["local_address"], path.to_str().unwrap(), "{r:#}");

    // Disconnecting removes the socket and its directory.
    sdm.run(&["disconnect", "pg-sock"]).ok();
    assert!(!std::path::Path::new(&dir).exists(), "{dir} is left behind");

    // `sdm login --unix-socket`: sockets become the session's default; --tcp still asks for a port.
    sdm.run_env(
        &["login", "--unix-socket"],
        &[("SDM_SERVICE_TOKEN", &token)],
    )
    .ok();
    let by_default = sdm.run(&["connect", "pg-default", "--json"]).json();
    assert_eq!(by_default["port"], Value::Null, "{by_default:#}");
    assert!(
        by_default["local_address"]
            .as_str()
            .unwrap()
            .ends_with("/.s.PGSQL.5432"),
        "{by_default:#}"
    );
    let tcp_again = sdm.run(&["connect", "pg-tcp", "--tcp", "--json"]).json();
    assert!(tcp_again["port"].as_u64().is_some(), "{tcp_again:#}");
}
