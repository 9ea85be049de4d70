//! Ports for child processes, shared by every test binary and example.

use std::net::TcpListener;

use anyhow::{bail, Result};

/// A port for a child process to listen on. Asking the kernel for port 0 and handing the
/// number on races: until the child binds it, any outgoing connection may be given the same
/// ephemeral port. So ports come from below the ephemeral range (32768+), from a per-process
/// counter (never the same twice in one test binary), each checked free when handed out.
pub fn free_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Different processes start at different places, so concurrent test binaries rarely meet.
    let _ = NEXT.compare_exchange(u32::MAX, (std::process::id() * 97) % SPAN, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port between {LOW} and {}", LOW + SPAN)
}
