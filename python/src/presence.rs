//! `presence_members`: a presence channel's members, asked of a server or forwarder over HTTP
//! with the client crate's `pushnote::presence::members`.

use pyo3::prelude::*;

use crate::errors::presence_error;

/// The members of presence channel `channel` as the HTTP port at `url` knows them, asked with
/// `api_key`: a list of `(user, info)`, `info` as JSON text. Waits at most 5 s, without the
/// GIL.
#[pyfunction]
pub fn presence_members(
    py: Python<'_>,
    url: &str,
    api_key: &str,
    channel: &str,
) -> PyResult<Vec<(String, String)>> {
    let members = py
        .allow_threads(|| pushnote::presence::members(url, api_key, channel))
        .map_err(|e| presence_error(py, e))?;
    Ok(members.into_iter().map(|m| (m.user, m.info)).collect())
}
