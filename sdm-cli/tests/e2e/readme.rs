//! Documentation cannot drift from the binary: every flag `sdm … --help` lists is named in
//! sdm-cli/README.md.

use std::path::Path;

#[test]
fn every_flag_the_binary_takes_is_in_its_readme() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let flags = sdm_testkit::help::flags(Path::new(env!("CARGO_BIN_EXE_sdm"))).unwrap();
    assert!(flags.len() > 20, "{flags:?}");
    let missing: Vec<String> = flags
        .iter()
        .filter(|f| !readme.contains(&f.flag))
        .map(|f| format!("sdm {} {}", f.command, f.flag))
        .collect();
    assert!(
        missing.is_empty(),
        "sdm-cli/README.md does not name: {missing:#?}"
    );
}
