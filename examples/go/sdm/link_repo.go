//go:build !sdm_pkgconfig

package sdm

// By default the package builds against this repository: the header in include/ and libsdm
// from the release build in target/release (cargo build --release -p sdm-ffi), found at run
// time through an rpath. Build with -tags sdm_pkgconfig to use an installed libsdm instead.

/*
#cgo CFLAGS: -I${SRCDIR}/../../../include
#cgo LDFLAGS: -L${SRCDIR}/../../../target/release -Wl,-rpath,${SRCDIR}/../../../target/release -lsdm
*/
import "C"
