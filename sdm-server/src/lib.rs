//! sdm server.
