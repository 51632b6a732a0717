//! A MySQL datasource end to end: `sdm admin datasources add mysql` against a real server, a
//! real MariaDB behind it, and the job's `mariadb` client through `sdm connect` with no
//! password.

use std::process::Command;
use std::time::Duration;

use sdm_testkit::MariaDb;

use crate::support::{Fixture, eventually, free_port};

/// The job's `mariadb` client on the tunnel: any user name, no password; `extra` may name a
/// database.
fn mariadb(port: u16, extra: &[&str], sql: &str) -> (Option<i32>, String, String) {
    let out = Command::new("mariadb")
        .arg("--no-defaults")
        .args(["-h", "127.0.0.1", "-P"])
        .arg(port.to_string())
        .args(["-u", "etl", "--skip-ssl", "--batch", "--skip-column-names"])
        .args(extra)
        .arg("-e")
        .arg(sql)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_mysql_datasource_added_by_the_cli_is_reached_with_no_password_and_audited() {
    let db = MariaDb::start().unwrap();
    db.create_native_user("shop_rw", "Sh0p-secret", "shop")
        .unwrap();
    let fx = Fixture::start();
    let admin = fx.sdm();
    let admin_env = [("SDM_ADMIN_TOKEN", fx.admin_token.as_str())];
    let local = free_port();
    let added = admin
        .run_with(
            &[
                "admin",
                "datasources",
                "add",
                "mysql",
                "shop-db",
                "--hostname",
                "127.0.0.1",
                "--port",
                &db.port().to_string(),
                "--database",
                "shop",
                "--username",
                "shop_rw",
                "--password-stdin",
                "--port-override",
                &local.to_string(),
                "--json",
            ],
            &admin_env,
            Some("Sh0p-secret\n"),
        )
        .json();
    assert_eq!(added["kind"], "mysql");
    assert!(!added.to_string().contains("Sh0p-secret"), "{added}");

    let token = fx.account_with("etl-bot", &["shop-db"]);
    let job = fx.sdm();
    job.login(&token);
    assert_eq!(
        job.run(&["connect", "shop-db"]).ok(),
        format!("connected shop-db on 127.0.0.1:{local}\n")
    );
    let (code, stdout, stderr) = mariadb(
        local,
        &[],
        "SELECT DATABASE(), SUBSTRING_INDEX(CURRENT_USER(), '@', 1), 'audited-marker'",
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "shop\tshop_rw\taudited-marker\n");

    // A database the resource does not allow is refused at login, naming the resource.
    let (code, _, stderr) = mariadb(local, &["mysql"], "SELECT 1");
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("resource \"shop-db\" does not allow database \"mysql\""),
        "{stderr}"
    );

    // The audit trail holds the statement, and never the password.
    assert!(
        eventually(Duration::from_secs(20), || fx
            .audit_lines("shop-db")
            .iter()
            .any(|l| l.ends_with("'audited-marker'"))),
        "{:?}",
        fx.audit_lines("shop-db")
    );
    assert!(!fx.audit_lines("shop-db").concat().contains("Sh0p-secret"));
    // Nor anywhere in the server's data directory (the database file, keys, logs).
    let mut dirs = vec![fx.dir.path().join("data")];
    let mut files = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                files += 1;
                assert!(
                    !bytes.windows(11).any(|w| w == b"Sh0p-secret"),
                    "{} holds the password",
                    path.display()
                );
            }
        }
    }
    assert!(files > 0, "the data directory was read");

    // Suspended: the next connection is refused, and the client reads why.
    admin
        .run_env(&["admin", "services", "suspend", "etl-bot"], &admin_env)
        .ok();
    let (code, _, stderr) = mariadb(local, &[], "SELECT 'must not run'");
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("ERROR 1045")
            && stderr.contains("\"shop-db\": account etl-bot is suspended"),
        "{stderr}"
    );
}

#[test]
fn replication_is_refused_for_a_mysql_datasource() {
    let fx = Fixture::start();
    let admin = fx.sdm();
    let out = admin.run_env(
        &[
            "admin",
            "datasources",
            "add",
            "mysql",
            "m",
            "--hostname",
            "127.0.0.1",
            "--port",
            "3306",
            "--database",
            "d",
            "--username",
            "u",
            "--password",
            "p",
            "--allow-replication",
        ],
        &[("SDM_ADMIN_TOKEN", fx.admin_token.as_str())],
    );
    assert!(
        out.fails(2).contains("--allow-replication is for postgres"),
        "{out:#?}"
    );
}

/// A CA and a server certificate it signs for 127.0.0.1: (CA PEM, chain PEM, key PEM).
fn tls_material() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

#[test]
fn upstream_tls_verify_full_set_by_the_cli_encrypts_the_gateways_login() {
    let (ca, chain, key) = tls_material();
    let db = MariaDb::start_with_tls(&chain, &key).unwrap();
    db.create_native_user("shop_rw", "Sh0p-secret", "shop")
        .unwrap();
    let fx = Fixture::start();
    let ca_file = fx.dir.path().join("shop-ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let admin = fx.sdm();
    let admin_env = [("SDM_ADMIN_TOKEN", fx.admin_token.as_str())];
    let local = free_port();
    let port = db.port().to_string();
    let local_text = local.to_string();
    let add = |extra: &[&str]| {
        let mut args = vec![
            "admin",
            "datasources",
            "add",
            "mysql",
            "shop-tls",
            "--hostname",
            "127.0.0.1",
            "--port",
            &port,
            "--database",
            "shop",
            "--username",
            "shop_rw",
            "--password-stdin",
            "--port-override",
            &local_text,
        ];
        args.extend_from_slice(extra);
        admin.run_with(&args, &admin_env, Some("Sh0p-secret\n"))
    };
    // verify-full without a CA is refused before anything is stored.
    let refused = add(&["--upstream-tls", "verify-full"]);
    assert!(
        refused.fails(2).contains("needs --upstream-ca"),
        "{refused:#?}"
    );
    add(&[
        "--upstream-tls",
        "verify-full",
        "--upstream-ca",
        ca_file.to_str().unwrap(),
    ])
    .ok();

    let token = fx.account_with("etl-bot", &["shop-tls"]);
    let job = fx.sdm();
    job.login(&token);
    job.run(&["connect", "shop-tls"]).ok();
    let (code, stdout, stderr) = mariadb(
        local,
        &[],
        "SELECT VARIABLE_VALUE <> '' FROM information_schema.SESSION_STATUS \
         WHERE VARIABLE_NAME = 'Ssl_cipher'",
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "1\n", "the gateway's session is encrypted");
}

#[test]
fn suspending_the_account_ends_a_running_query_with_the_reason() {
    let db = MariaDb::start().unwrap();
    db.create_native_user("shop_rw", "Sh0p-secret", "shop")
        .unwrap();
    let fx = Fixture::start();
    let admin = fx.sdm();
    let admin_env = [("SDM_ADMIN_TOKEN", fx.admin_token.as_str())];
    let local = free_port();
    admin
        .run_with(
            &[
                "admin",
                "datasources",
                "add",
                "mysql",
                "shop-db",
                "--hostname",
                "127.0.0.1",
                "--port",
                &db.port().to_string(),
                "--database",
                "shop",
                "--username",
                "shop_rw",
                "--password-stdin",
                "--port-override",
                &local.to_string(),
            ],
            &admin_env,
            Some("Sh0p-secret\n"),
        )
        .ok();
    let token = fx.account_with("etl-bot", &["shop-db"]);
    let job = fx.sdm();
    job.login(&token);
    job.run(&["connect", "shop-db"]).ok();
    let sleeper = std::thread::spawn(move || mariadb(local, &[], "SELECT SLEEP(600) AS cut"));
    assert!(
        eventually(Duration::from_secs(60), || {
            db
            .sql("SELECT COUNT(*) FROM information_schema.processlist WHERE info = 'SELECT SLEEP(600) AS cut'")
            .is_ok_and(|n| n.trim() == "1")
        }),
        "the query never started"
    );
    admin
        .run_env(&["admin", "services", "suspend", "etl-bot"], &admin_env)
        .ok();
    let (code, _, stderr) = sleeper.join().unwrap();
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("ERROR 1927 (70100)")
            && stderr.contains("access to resource \"shop-db\" was revoked")
            && stderr.contains("suspended"),
        "{stderr}"
    );
}
