//! The one place a core [`Error`] becomes a Python exception: a class per
//! remedy under `baas.BaasError`, carrying the server's (or the core's)
//! message and, for bad input, the offending field.

use baas_core::{Error, ErrorKind};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyDict;

create_exception!(
    baas,
    BaasError,
    PyException,
    "Every BAAS failure. `.field` names the offending input, when there is one."
);
create_exception!(
    baas,
    NotFound,
    BaasError,
    "The thing does not exist, or you may not know it does."
);
create_exception!(
    baas,
    Conflict,
    BaasError,
    "The request clashes with the current state (a duplicate, a thing in use)."
);
create_exception!(
    baas,
    InvalidInput,
    BaasError,
    "The request is malformed or out of range; fix the input."
);
create_exception!(
    baas,
    TooLarge,
    InvalidInput,
    "The request is larger than a limit or quota allows."
);
create_exception!(
    baas,
    Unauthenticated,
    BaasError,
    "No credential, or a bad or expired one."
);
create_exception!(
    baas,
    PermissionDenied,
    BaasError,
    "A known caller who may not do this."
);
create_exception!(
    baas,
    Unavailable,
    BaasError,
    "The server or a dependency is down or overloaded; retrying later may work."
);
create_exception!(
    baas,
    JobFailed,
    BaasError,
    "A job that was waited for failed or was cancelled; `.job` is its last state."
);

/// A core error on its way to Python (`From<Error> for PyErr` itself
/// cannot be written here: both types are foreign).
#[derive(Debug)]
pub struct PyBaasError(pub Error);

impl From<PyBaasError> for PyErr {
    fn from(e: PyBaasError) -> PyErr {
        let e = e.0;
        let msg = e.message().to_string();
        let err = match e.kind() {
            ErrorKind::NotFound => NotFound::new_err(msg),
            ErrorKind::Conflict => Conflict::new_err(msg),
            ErrorKind::Invalid => InvalidInput::new_err(msg),
            ErrorKind::TooLarge => TooLarge::new_err(msg),
            ErrorKind::Unauthenticated => Unauthenticated::new_err(msg),
            ErrorKind::Forbidden => PermissionDenied::new_err(msg),
            ErrorKind::Unavailable => Unavailable::new_err(msg),
            ErrorKind::Internal => BaasError::new_err(msg),
        };
        Python::with_gil(|py| {
            let _ = err.value(py).setattr("field", e.field());
            let _ = err.value(py).setattr("code", e.kind().code());
        });
        err
    }
}

/// `JobFailed` with the job's last state as `.job`.
pub fn job_failed(py: Python<'_>, message: &str, job: Bound<'_, PyDict>) -> PyErr {
    let err = JobFailed::new_err(message.to_string());
    let _ = err.value(py).setattr("job", job);
    let _ = err.value(py).setattr("field", py.None());
    let _ = err.value(py).setattr("code", "job_failed");
    err
}

/// Adds the exception classes to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("BaasError", py.get_type::<BaasError>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("Conflict", py.get_type::<Conflict>())?;
    m.add("InvalidInput", py.get_type::<InvalidInput>())?;
    m.add("TooLarge", py.get_type::<TooLarge>())?;
    m.add("Unauthenticated", py.get_type::<Unauthenticated>())?;
    m.add("PermissionDenied", py.get_type::<PermissionDenied>())?;
    m.add("Unavailable", py.get_type::<Unavailable>())?;
    m.add("JobFailed", py.get_type::<JobFailed>())?;
    Ok(())
}
