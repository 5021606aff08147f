//! Which server holds a run it trains: `HOST:PID:NONCE`. At its start a server takes back the runs
//! an earlier start of itself left (the same host, and that process gone or this very one with
//! another nonce: a restarted container is often the same PID), and leaves alone those of a server
//! still running beside it; a server on another host is waited for until its lease runs out.

use std::fmt;

pub struct ServerIdentity {
    host: String,
    pid: u32,
    nonce: String,
}

impl ServerIdentity {
    pub fn new() -> ServerIdentity {
        let host = host_name().unwrap_or_else(|| "localhost".to_owned());
        ServerIdentity {
            host,
            pid: std::process::id(),
            nonce: crate::db::new_id(""),
        }
    }

    /// Whether the server named `holder` is an earlier start of this one that is gone.
    pub fn is_gone(&self, holder: &str) -> bool {
        let mut parts = holder.rsplitn(3, ':');
        let (Some(nonce), Some(pid), Some(host)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            return false;
        };
        if host != self.host {
            return false;
        }
        if pid == self.pid {
            return nonce != self.nonce;
        }
        !alive(pid)
    }
}

impl fmt::Display for ServerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.host, self.pid, self.nonce)
    }
}

/// This machine's host name, where it has one.
pub(crate) fn host_name() -> Option<String> {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// Whether a process `pid` exists on this machine.
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_start_is_gone_and_a_live_server_is_not() {
        let me = ServerIdentity::new();
        // This very process under another nonce: a restart that kept its PID.
        assert!(me.is_gone(&format!("{}:{}:other", me.host, me.pid)));
        assert!(!me.is_gone(&me.to_string()));
        // A live process on this host (our parent) is another server still running.
        let parent = std::os::unix::process::parent_id();
        assert!(!me.is_gone(&format!("{}:{parent}:x", me.host)));
        // A PID no process has.
        assert!(me.is_gone(&format!("{}:{}:x", me.host, i32::MAX - 1)));
        // Another host's server is never judged from here.
        assert!(!me.is_gone(&format!("elsewhere:{}:x", i32::MAX - 1)));
        assert!(!me.is_gone("garbage"));
    }
}
