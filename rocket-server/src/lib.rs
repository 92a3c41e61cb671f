//! The BAAS REST API and web UI on Rocket
