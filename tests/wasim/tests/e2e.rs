// The integration tests live in wagate's `tests/it/wasim.rs`; this target runs
// the same file against the wasim crate alone, so wasim can be tested while the
// root package is mid-change.
#[path = "../../it/wasim.rs"]
mod wasim_tests;
