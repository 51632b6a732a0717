//! Without server binaries, the error says what to install. A test binary of its own: it
//! changes the environment, which no other test may observe.

use sdm_testkit::{PgCluster, PgConfig};

#[test]
fn missing_binaries_are_reported_with_the_fix() {
    // SAFETY: this is the only test in this process, so no other thread reads the environment.
    unsafe { std::env::set_var("PG_BINDIR", "/nonexistent/sdm-pg-bin") };
    assert!(!PgCluster::available());
    let err = PgCluster::start(PgConfig::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/sdm-pg-bin/initdb not found: install postgresql (apt-get install postgresql) or set PG_BINDIR to the directory holding initdb and postgres"
    );
}
