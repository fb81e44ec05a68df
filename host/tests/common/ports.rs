//! Ports for servers the tests start, so concurrent test processes do not share one.

/// A free port on loopback (for a control API given `--control 127.0.0.1:PORT`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A port of this test process's own in `base..base + span` (`offset` tells apart several
/// servers of one process), for services whose scripts take a fixed port.
pub fn process_port(base: u16, span: u32, offset: u32) -> u16 {
    base + ((std::process::id() + offset) % span) as u16
}
