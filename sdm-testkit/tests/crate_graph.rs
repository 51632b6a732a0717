//! The workspace's crate graph keeps its shape (see the layout table in README.md): read from
//! `cargo metadata`, so a dependency added in any Cargo.toml that breaks a rule fails here.
//!
//! - `sdm-proto` depends on no crate of ours;
//! - `sdm-gateway` (the data plane, which a standalone gateway runs with no database) pulls in
//!   no store, no database driver and no control-plane crate;
//! - the bindings (`sdm-ffi`, `sdm-py`) use `sdm-core` and nothing else of ours directly;
//! - no client (core, bindings, the `sdm` command, the API client) has a server crate among
//!   its normal dependencies, however indirect.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// The server side: never in a client's build.
const SERVER_CRATES: [&str; 3] = ["sdm-server", "sdm-control", "sdm-gateway"];
/// Clients of the control plane and the gateways.
const CLIENT_CRATES: [&str; 5] = ["sdm-core", "sdm-ffi", "sdm-py", "sdm-cli", "sdm-api-client"];
/// Stores and database drivers (the PostgreSQL wire format, `postgres-protocol`, is not one).
const DATABASE_CRATES: [&str; 5] = [
    "rusqlite",
    "tokio-postgres",
    "deadpool-postgres",
    "postgres",
    "libsqlite3-sys",
];

/// The workspace's packages by name, each with its direct normal (non-dev, non-build)
/// dependencies, by name, and the names of every package in the graph.
struct Graph {
    ours: BTreeSet<String>,
    normal: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    fn read() -> Graph {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--locked"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo metadata runs");
        assert!(
            out.status.success(),
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
        let name_of: BTreeMap<&str, &str> = meta["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
            .collect();
        let ours = meta["workspace_members"]
            .as_array()
            .expect("workspace_members")
            .iter()
            .map(|id| name_of[id.as_str().unwrap()].to_owned())
            .collect();
        let mut normal = BTreeMap::new();
        for node in meta["resolve"]["nodes"].as_array().expect("resolve.nodes") {
            let deps = node["deps"]
                .as_array()
                .expect("deps")
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .expect("dep_kinds")
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|d| name_of[d["pkg"].as_str().unwrap()].to_owned())
                .collect();
            normal.insert(name_of[node["id"].as_str().unwrap()].to_owned(), deps);
        }
        Graph { ours, normal }
    }

    fn direct(&self, package: &str) -> &BTreeSet<String> {
        self.normal
            .get(package)
            .unwrap_or_else(|| panic!("{package} is not in the workspace"))
    }

    /// Every package `package` needs to build and run, however indirectly.
    fn closure(&self, package: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![package.to_owned()];
        while let Some(next) = todo.pop() {
            for dep in self.direct(&next) {
                if seen.insert(dep.clone()) {
                    todo.push(dep.clone());
                }
            }
        }
        seen
    }

    fn ours_among<'a>(&self, names: impl IntoIterator<Item = &'a String>) -> Vec<&'a String> {
        names
            .into_iter()
            .filter(|n| self.ours.contains(*n))
            .collect()
    }
}

#[test]
fn the_protocol_crate_depends_on_nothing_of_ours() {
    let graph = Graph::read();
    let ours = graph.ours_among(graph.direct("sdm-proto"));
    assert!(ours.is_empty(), "sdm-proto depends on {ours:?}");
}

#[test]
fn the_gateway_needs_no_store_database_or_control_plane() {
    let graph = Graph::read();
    let closure = graph.closure("sdm-gateway");
    let forbidden: Vec<_> = closure
        .iter()
        .filter(|d| DATABASE_CRATES.contains(&d.as_str()) || SERVER_CRATES.contains(&d.as_str()))
        .collect();
    assert!(forbidden.is_empty(), "sdm-gateway pulls in {forbidden:?}");
    let ours: BTreeSet<_> = graph.ours_among(&closure).into_iter().collect();
    let allowed: BTreeSet<String> = ["sdm-proto", "sdm-relay"].map(String::from).into();
    assert!(
        ours.iter().all(|d| allowed.contains(*d)),
        "sdm-gateway may use sdm-proto and sdm-relay only, not {ours:?}"
    );
}

#[test]
fn the_bindings_use_the_core_only() {
    let graph = Graph::read();
    for binding in ["sdm-ffi", "sdm-py"] {
        let ours = graph.ours_among(graph.direct(binding));
        assert_eq!(
            ours,
            [&"sdm-core".to_owned()],
            "{binding} may depend on sdm-core only among our crates"
        );
    }
}

#[test]
fn no_client_builds_a_server_crate() {
    let graph = Graph::read();
    for client in CLIENT_CRATES {
        let closure = graph.closure(client);
        let server: Vec<_> = SERVER_CRATES
            .iter()
            .filter(|s| closure.contains(**s))
            .collect();
        assert!(server.is_empty(), "{client} depends on {server:?}");
    }
}

#[test]
fn every_crate_named_here_is_in_the_workspace() {
    let graph = Graph::read();
    for name in SERVER_CRATES
        .iter()
        .chain(&CLIENT_CRATES)
        .chain(&["sdm-proto"])
    {
        assert!(
            graph.ours.contains(*name),
            "{name} is not a workspace member"
        );
    }
}
