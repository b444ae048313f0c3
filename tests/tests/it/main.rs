//! shiplog's integration tests: one binary, one module per concern, each test on a
//! fresh database of a real PostgreSQL (see `shiplog_tests::TestDb`).

mod append;
mod architecture;
mod database_tls;
mod deploy;
mod docker;
mod fuzz;
mod immutability;
mod kubernetes;
mod lifecycle;
mod projections;
mod reading;
mod registry;
mod tamper;
