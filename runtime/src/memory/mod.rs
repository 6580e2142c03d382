//! Memory: the zones of the one limit and their report.

pub mod report;
