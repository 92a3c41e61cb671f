//! In-memory fakes of every BAAS storage port, for tests and conformance
