//! sdm client library.
