//! The BAAS chunk store on a local (or shared) filesystem directory
