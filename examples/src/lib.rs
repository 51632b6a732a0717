//! Examples live in `rust/`, `c/`, `go/` and `python/`.
