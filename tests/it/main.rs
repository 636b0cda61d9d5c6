//! The one integration-test binary: every module below shares `support`.
mod wasim;
