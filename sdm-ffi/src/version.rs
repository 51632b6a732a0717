//! The library version, as macros and at run time.

use std::ffi::c_char;

/// Major version of the header (`SDM_VERSION_MAJOR`); compare with `sdm_version()` at run time.
pub const SDM_VERSION_MAJOR: u32 = 0;
/// Minor version of the header.
pub const SDM_VERSION_MINOR: u32 = 1;
/// Patch version of the header.
pub const SDM_VERSION_PATCH: u32 = 0;

/// The version of the loaded libsdm as `"MAJOR.MINOR.PATCH"` (e.g. `"0.1.0"`), which may differ
/// from the `SDM_VERSION_*` macros of the header a program was compiled with.
///
/// Ownership: a static string; never free it. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn sdm_version() -> *const c_char {
    const VERSION: &std::ffi::CStr = match std::ffi::CStr::from_bytes_with_nul(
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
    ) {
        Ok(v) => v,
        Err(_) => c"unknown",
    };
    VERSION.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macros_match_the_crate_version() {
        assert_eq!(
            SDM_VERSION_MAJOR.to_string(),
            env!("CARGO_PKG_VERSION_MAJOR")
        );
        assert_eq!(
            SDM_VERSION_MINOR.to_string(),
            env!("CARGO_PKG_VERSION_MINOR")
        );
        assert_eq!(
            SDM_VERSION_PATCH.to_string(),
            env!("CARGO_PKG_VERSION_PATCH")
        );
        let v = unsafe { std::ffi::CStr::from_ptr(sdm_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
