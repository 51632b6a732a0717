//go:build sdm_pkgconfig

package sdm

// With -tags sdm_pkgconfig the package links the libsdm that pkg-config finds (installed by
// scripts/install-libsdm.sh PREFIX; set PKG_CONFIG_PATH=PREFIX/lib/pkgconfig when PREFIX is
// not a default location, and LD_LIBRARY_PATH or an rpath for the loader).

/*
#cgo pkg-config: sdm
*/
import "C"
