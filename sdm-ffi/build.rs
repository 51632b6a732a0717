//! Gives libsdm.so a versioned SONAME, `libsdm.so.<major>`, so programs record
//! `NEEDED libsdm.so.0` and an installed `libsdm.so.0.y.z` can be replaced by a compatible one.
//! scripts/install-libsdm.sh installs the file under that name with the `.so.<major>` and `.so`
//! links; scripts/suites/10-c-and-go.sh checks the SONAME with `readelf -d`.
//!
//! Linux only: the one platform libsdm is built and tested on (other ELF systems would take
//! the same flag; macOS has install names instead).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" {
        let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets the version");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libsdm.so.{major}");
    }
}
