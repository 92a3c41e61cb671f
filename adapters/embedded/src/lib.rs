//! Opens BAAS on a data directory or a database URL: wires the concrete adapters
