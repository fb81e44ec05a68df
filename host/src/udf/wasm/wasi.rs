//! The WASI preview 1 calls a guest may import, implemented by the host itself: standard
//! output and error go to the host's log, there are no arguments, no environment variables, no
//! pre-opened folders (so no files) and no sockets. The clocks and the random source are
//! deterministic unless the pipeline grants the real ones (`allow: [clock, random]`).
//!
//! Every other preview 1 function a module imports exists, and fails with `EBADF` or
//! `ENOTCAPABLE`, so toolchains that link them all (Go) load; an import from anywhere else is
//! refused when the module is loaded.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Extern, FuncType, Linker, Val, ValType};

use super::instance::HostState;

pub const MODULE: &str = "wasi_snapshot_preview1";

const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ESPIPE: i32 = 70;
const ENOTCAPABLE: i32 = 76;

/// Every preview 1 function: the ones implemented below, then the ones that only fail.
const IMPLEMENTED: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_close",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_filestat_get",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_read",
    "fd_seek",
    "fd_write",
    "poll_oneoff",
    "proc_exit",
    "random_get",
    "sched_yield",
];

const DENIED: &[&str] = &[
    "fd_advise",
    "fd_allocate",
    "fd_datasync",
    "fd_fdstat_set_rights",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_pwrite",
    "fd_readdir",
    "fd_renumber",
    "fd_sync",
    "fd_tell",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "proc_raise",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// Whether `name` is a WASI preview 1 function.
pub fn is_wasi_function(name: &str) -> bool {
    IMPLEMENTED.contains(&name) || DENIED.contains(&name)
}

/// The guest called `proc_exit`: its instance is over.
#[derive(Debug, thiserror::Error)]
#[error("the module called proc_exit({0})")]
pub struct ProcExit(pub i32);

/// A sleep (`poll_oneoff`) ran into the call's deadline.
#[derive(Debug, thiserror::Error)]
#[error("the module slept past its deadline")]
pub struct SleptPastDeadline;

/// What the WASI calls of one instance keep.
pub struct WasiState {
    pub allow_clock: bool,
    pub allow_random: bool,
    /// The deterministic clock (ns): starts at 0, advances 1 µs per reading and by every sleep.
    fake_ns: u64,
    /// The deterministic random stream (xorshift64*).
    rng: u64,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// The last output of the current call, for error messages.
    tail: String,
    /// When the current call must end (for real sleeps).
    pub deadline: Option<Instant>,
    udf: std::sync::Arc<str>,
}

/// Longest line logged at once; longer ones are cut into pieces.
const MAX_LINE: usize = 4096;
/// Output kept for error messages.
const TAIL: usize = 2048;

impl WasiState {
    pub fn new(udf: std::sync::Arc<str>, allow_clock: bool, allow_random: bool) -> Self {
        WasiState {
            allow_clock,
            allow_random,
            fake_ns: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
            stdout: Vec::new(),
            stderr: Vec::new(),
            tail: String::new(),
            deadline: None,
            udf,
        }
    }

    fn write(&mut self, fd: i32, bytes: &[u8]) {
        self.tail.push_str(&String::from_utf8_lossy(bytes));
        if self.tail.len() > TAIL {
            let mut cut = self.tail.len() - TAIL;
            while !self.tail.is_char_boundary(cut) {
                cut += 1;
            }
            self.tail.drain(..cut);
        }
        let buf = if fd == 1 {
            &mut self.stdout
        } else {
            &mut self.stderr
        };
        buf.extend_from_slice(bytes);
        loop {
            let end = match buf.iter().position(|&b| b == b'\n') {
                Some(newline) => newline + 1,
                None if buf.len() >= MAX_LINE => MAX_LINE,
                None => break,
            };
            let line: Vec<u8> = buf.drain(..end).collect();
            log_line(&self.udf, fd, &line);
        }
    }

    /// Logs what is left of unfinished lines.
    pub fn flush(&mut self) {
        for fd in [1, 2] {
            let buf = std::mem::take(if fd == 1 {
                &mut self.stdout
            } else {
                &mut self.stderr
            });
            if !buf.is_empty() {
                log_line(&self.udf, fd, &buf);
            }
        }
    }

    /// The output of the current call so far, and forgets it.
    pub fn take_tail(&mut self) -> String {
        std::mem::take(&mut self.tail)
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn now_ns(&mut self, clock: i32) -> u64 {
        if self.allow_clock {
            if clock == 0 {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            } else {
                monotonic_ns()
            }
        } else {
            self.fake_ns += 1_000;
            self.fake_ns
        }
    }
}

fn monotonic_ns() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

fn log_line(udf: &str, fd: i32, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\n', '\r']);
    if fd == 1 {
        tracing::info!(target: "headwater::udf::wasm::guest", "[udf {udf}] {text}");
    } else {
        tracing::warn!(target: "headwater::udf::wasm::guest", "[udf {udf}] {text}");
    }
}

type C<'a> = Caller<'a, HostState>;

/// The guest's memory (every guest exports `memory`).
fn memory<'a>(caller: &'a mut C<'_>) -> Option<&'a mut [u8]> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m.data_mut(caller)),
        _ => None,
    }
}

fn slot(mem: &mut [u8], ptr: i32, len: usize) -> Option<&mut [u8]> {
    let start = u32::try_from(ptr).ok()? as usize;
    mem.get_mut(start..start.checked_add(len)?)
}

fn put(caller: &mut C<'_>, ptr: i32, bytes: &[u8]) -> i32 {
    match memory(caller).and_then(|m| slot(m, ptr, bytes.len())) {
        Some(s) => {
            s.copy_from_slice(bytes);
            ESUCCESS
        }
        None => EFAULT,
    }
}

fn get_u32(mem: &[u8], at: usize) -> Option<u32> {
    let b = mem.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn get_u64(mem: &[u8], at: usize) -> Option<u64> {
    let mut a = [0u8; 8];
    a.copy_from_slice(mem.get(at..at + 8)?);
    Some(u64::from_le_bytes(a))
}

/// The bytes an iovec array points at, concatenated.
fn gather(mem: &[u8], iovs: i32, count: i32) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..u32::try_from(count).ok()? as usize {
        let at = u32::try_from(iovs).ok()? as usize + i * 8;
        let ptr = get_u32(mem, at)? as usize;
        let len = get_u32(mem, at + 4)? as usize;
        out.extend_from_slice(mem.get(ptr..ptr.checked_add(len)?)?);
    }
    Some(out)
}

fn two_zeros(caller: &mut C<'_>, a: i32, b: i32) -> i32 {
    match (
        put(caller, a, &0u32.to_le_bytes()),
        put(caller, b, &0u32.to_le_bytes()),
    ) {
        (ESUCCESS, ESUCCESS) => ESUCCESS,
        _ => EFAULT,
    }
}

fn is_stdio(fd: i32) -> bool {
    (0..=2).contains(&fd)
}

/// Adds the WASI functions `imports` (the module's imports from [`MODULE`]) to `linker`.
pub fn add_to_linker(
    linker: &mut Linker<HostState>,
    imports: &[(String, FuncType)],
) -> wasmtime::Result<()> {
    linker.func_wrap(MODULE, "args_get", |_: C<'_>, _: i32, _: i32| ESUCCESS)?;
    linker.func_wrap(MODULE, "args_sizes_get", |mut c: C<'_>, a: i32, b: i32| {
        two_zeros(&mut c, a, b)
    })?;
    linker.func_wrap(MODULE, "environ_get", |_: C<'_>, _: i32, _: i32| ESUCCESS)?;
    linker.func_wrap(
        MODULE,
        "environ_sizes_get",
        |mut c: C<'_>, a: i32, b: i32| two_zeros(&mut c, a, b),
    )?;
    linker.func_wrap(
        MODULE,
        "clock_res_get",
        |mut c: C<'_>, _id: i32, out: i32| put(&mut c, out, &1_000u64.to_le_bytes()),
    )?;
    linker.func_wrap(
        MODULE,
        "clock_time_get",
        |mut c: C<'_>, id: i32, _precision: i64, out: i32| {
            if !(0..=3).contains(&id) {
                return EINVAL;
            }
            let now = c.data_mut().wasi.now_ns(id);
            put(&mut c, out, &now.to_le_bytes())
        },
    )?;
    linker.func_wrap(MODULE, "fd_close", |_: C<'_>, fd: i32| {
        if is_stdio(fd) {
            ESUCCESS
        } else {
            EBADF
        }
    })?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_get",
        |mut c: C<'_>, fd: i32, out: i32| {
            if !is_stdio(fd) {
                return EBADF;
            }
            // filetype (character device), flags, rights: read (stdin) or write (stdout, stderr).
            let mut stat = [0u8; 24];
            stat[0] = 2;
            let rights: u64 = if fd == 0 { 1 << 1 } else { 1 << 6 };
            stat[8..16].copy_from_slice(&rights.to_le_bytes());
            put(&mut c, out, &stat)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_fdstat_set_flags",
        |_: C<'_>, fd: i32, _: i32| {
            if is_stdio(fd) {
                ESUCCESS
            } else {
                EBADF
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_filestat_get",
        |mut c: C<'_>, fd: i32, out: i32| {
            if !is_stdio(fd) {
                return EBADF;
            }
            let mut stat = [0u8; 64];
            stat[16] = 2; // character device
            put(&mut c, out, &stat)
        },
    )?;
    linker.func_wrap(MODULE, "fd_prestat_get", |_: C<'_>, _: i32, _: i32| EBADF)?;
    linker.func_wrap(
        MODULE,
        "fd_prestat_dir_name",
        |_: C<'_>, _: i32, _: i32, _: i32| EBADF,
    )?;
    linker.func_wrap(
        MODULE,
        "fd_read",
        |mut c: C<'_>, fd: i32, _iovs: i32, _n: i32, nread: i32| {
            if fd != 0 {
                return EBADF;
            }
            put(&mut c, nread, &0u32.to_le_bytes()) // standard input is empty
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_seek",
        |_: C<'_>, fd: i32, _: i64, _: i32, _: i32| {
            if is_stdio(fd) {
                ESPIPE
            } else {
                EBADF
            }
        },
    )?;
    linker.func_wrap(
        MODULE,
        "fd_write",
        |mut c: C<'_>, fd: i32, iovs: i32, count: i32, written: i32| {
            if fd != 1 && fd != 2 {
                return EBADF;
            }
            let Some(bytes) = memory(&mut c).and_then(|m| gather(m, iovs, count)) else {
                return EFAULT;
            };
            c.data_mut().wasi.write(fd, &bytes);
            put(&mut c, written, &(bytes.len() as u32).to_le_bytes())
        },
    )?;
    linker.func_wrap(MODULE, "poll_oneoff", poll_oneoff)?;
    linker.func_wrap(
        MODULE,
        "proc_exit",
        |_: C<'_>, code: i32| -> wasmtime::Result<()> { Err(wasmtime::Error::new(ProcExit(code))) },
    )?;
    linker.func_wrap(MODULE, "random_get", |mut c: C<'_>, ptr: i32, len: i32| {
        let Ok(len) = usize::try_from(len) else {
            return EINVAL;
        };
        if memory(&mut c).and_then(|m| slot(m, ptr, len)).is_none() {
            return EFAULT;
        }
        let mut bytes = vec![0u8; len];
        if c.data().wasi.allow_random {
            if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err()
            {
                return EFAULT;
            }
        } else {
            for chunk in bytes.chunks_mut(8) {
                let r = c.data_mut().wasi.next_random().to_le_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
        }
        put(&mut c, ptr, &bytes)
    })?;
    linker.func_wrap(MODULE, "sched_yield", |_: C<'_>| ESUCCESS)?;
    // The rest fail, with the signature the module expects.
    for (name, ty) in imports {
        if IMPLEMENTED.contains(&name.as_str()) {
            continue;
        }
        let errno = if name.starts_with("fd_") {
            EBADF
        } else {
            ENOTCAPABLE
        };
        let results: Vec<ValType> = ty.results().collect();
        if !matches!(results.as_slice(), [ValType::I32]) {
            return Err(wasmtime::Error::msg(format!(
                "the module imports `{MODULE}.{name}` with a signature WASI does not have"
            )));
        }
        linker.func_new(MODULE, name, ty.clone(), move |_, _, out: &mut [Val]| {
            out[0] = Val::I32(errno);
            Ok(())
        })?;
    }
    Ok(())
}

/// Waits on clocks only (there is nothing to read or write but standard streams, always
/// ready). Deterministic clock: no real wait, the clock jumps ahead instead.
fn poll_oneoff(
    mut c: C<'_>,
    subs: i32,
    events: i32,
    count: i32,
    nevents: i32,
) -> wasmtime::Result<i32> {
    const SUB: usize = 48;
    const EVENT: usize = 32;
    let Ok(count) = usize::try_from(count) else {
        return Ok(EINVAL);
    };
    let Some(mem) = memory(&mut c) else {
        return Ok(EFAULT);
    };
    let base = u32::try_from(subs).unwrap_or(u32::MAX) as usize;
    let mut out = Vec::with_capacity(count * EVENT);
    let mut sleep_ns: Option<u64> = None;
    for i in 0..count {
        let at = base + i * SUB;
        let (Some(userdata), Some(&tag)) = (get_u64(mem, at), mem.get(at + 8)) else {
            return Ok(EFAULT);
        };
        let mut event = [0u8; EVENT];
        event[0..8].copy_from_slice(&userdata.to_le_bytes());
        event[10] = tag;
        match tag {
            0 => {
                let (Some(timeout), Some(flags)) = (get_u64(mem, at + 24), mem.get(at + 40)) else {
                    return Ok(EFAULT);
                };
                let relative = if flags & 1 == 1 { None } else { Some(timeout) };
                let ns = relative.unwrap_or(0);
                sleep_ns = Some(sleep_ns.map_or(ns, |s| s.min(ns)));
            }
            1 | 2 => {
                let fd = get_u32(mem, at + 16).unwrap_or(u32::MAX) as i32;
                if !is_stdio(fd) {
                    event[8..10].copy_from_slice(&(EBADF as u16).to_le_bytes());
                }
            }
            _ => event[8..10].copy_from_slice(&(EINVAL as u16).to_le_bytes()),
        }
        out.extend_from_slice(&event);
    }
    if let Some(ns) = sleep_ns {
        let wasi = &mut c.data_mut().wasi;
        if wasi.allow_clock {
            let mut wait = Duration::from_nanos(ns);
            if let Some(deadline) = wasi.deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if wait > left {
                    std::thread::sleep(left);
                    return Err(wasmtime::Error::new(SleptPastDeadline));
                }
                wait = wait.min(left);
            }
            std::thread::sleep(wait);
        } else {
            wasi.fake_ns = wasi.fake_ns.saturating_add(ns);
        }
    }
    let n = (out.len() / EVENT) as u32;
    if put(&mut c, events, &out) != ESUCCESS {
        return Ok(EFAULT);
    }
    Ok(put(&mut c, nevents, &n.to_le_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cut_into_lines_and_the_tail_keeps_the_end() {
        let mut w = WasiState::new("t".into(), false, false);
        w.write(2, b"first line\nsecond ");
        assert_eq!(w.stderr, b"second ");
        w.write(2, b"half\n");
        assert!(w.stderr.is_empty());
        assert_eq!(w.take_tail(), "first line\nsecond half\n");
        w.write(1, &vec![b'x'; 3 * TAIL]);
        assert_eq!(w.take_tail().len(), TAIL);
        assert!(w.stdout.len() < MAX_LINE);
    }

    #[test]
    fn the_default_clock_and_random_source_are_deterministic() {
        let mut a = WasiState::new("t".into(), false, false);
        let mut b = WasiState::new("t".into(), false, false);
        assert_eq!(a.now_ns(1), 1_000);
        assert_eq!(a.now_ns(0), 2_000);
        assert_eq!(
            (a.next_random(), a.next_random()),
            (b.next_random(), b.next_random())
        );
        assert!(is_wasi_function("path_open") && !is_wasi_function("path_opens"));
    }
}
