//! The client side of the management socket, used by `cloudrack-ctl` (and tests).

use super::Request;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Send one request and return its `data`, or the switch's error message.
pub fn call(path: &Path, req: &Request) -> anyhow::Result<Value> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the switch at {}: {e} (is cloudrack-switch running with --ctl {}?)",
            path.display(),
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let line = serde_json::to_string(req)?;
    writeln!(stream, "{line}")?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply)?;
    let v: Value = serde_json::from_str(&reply).map_err(|e| anyhow::anyhow!("bad reply from the switch: {e}"))?;
    if v["ok"].as_bool() == Some(true) {
        Ok(v["data"].clone())
    } else {
        anyhow::bail!("{}", v["error"].as_str().unwrap_or("unknown error"))
    }
}
