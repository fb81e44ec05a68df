//! Reading lines with a size cap: a line longer than the cap is not kept in memory (its first
//! bytes are, for the dead-letter queue; the rest is skipped up to the next newline). Standard
//! input is read by a thread of its own, so a trickling feed is processed line by line instead
//! of waiting for a full batch.

use std::io::{self, BufRead};

use crossbeam_channel::{Receiver, TryRecvError};

/// How much of an over-long line is kept for its dead letter.
pub const KEPT_OF_LONG_LINE: usize = 64 << 10;

/// One line read.
#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    /// A line (in the caller's buffer, with its newline if it had one) of `consumed` bytes.
    Line { consumed: u64 },
    /// A line longer than the cap: its first bytes are in the buffer; `len` is its length.
    TooLong { consumed: u64, len: u64 },
    /// The end of the input.
    End,
}

/// Reads one line into `buf` (cleared first), keeping at most `cap` bytes of it.
pub fn read_line_capped(
    reader: &mut dyn BufRead,
    buf: &mut Vec<u8>,
    cap: usize,
) -> io::Result<LineRead> {
    buf.clear();
    let mut consumed: u64 = 0;
    let mut too_long = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            break; // end of input: a last line without newline, or nothing
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let n = chunk.len();
        if !too_long {
            if buf.len() + n <= cap {
                buf.extend_from_slice(chunk);
            } else {
                too_long = true;
                let keep = KEPT_OF_LONG_LINE.min(cap).saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..keep.min(n)]);
                buf.truncate(KEPT_OF_LONG_LINE.min(cap));
            }
        }
        reader.consume(n);
        consumed += n as u64;
        if done {
            break;
        }
    }
    Ok(if consumed == 0 {
        LineRead::End
    } else if too_long {
        LineRead::TooLong {
            consumed,
            len: consumed,
        }
    } else {
        LineRead::Line { consumed }
    })
}

/// What the standard-input thread sends: a line (or an over-long one's head) with its result.
pub type FedLine = io::Result<(Vec<u8>, LineRead)>;

/// Lines read by a thread of their own from a blocking reader (standard input).
pub struct LineFeed {
    rx: Receiver<FedLine>,
    ended: bool,
}

impl LineFeed {
    /// Starts a thread reading `reader` line by line; at most `depth` lines wait unread.
    pub fn start(mut reader: Box<dyn BufRead + Send>, cap: usize, depth: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(depth.max(1));
        let spawned = std::thread::Builder::new()
            .name("stdin-reader".into())
            .spawn(move || loop {
                let mut buf = Vec::new();
                let read = read_line_capped(reader.as_mut(), &mut buf, cap);
                let end = matches!(read, Ok(LineRead::End) | Err(_));
                if tx.send(read.map(|r| (buf, r))).is_err() || end {
                    return;
                }
            });
        if let Err(e) = spawned {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let _ = tx.send(Err(e));
            return LineFeed { rx, ended: false };
        }
        LineFeed { rx, ended: false }
    }

    /// The next line if one was read already; `None` when none is waiting.
    pub fn try_next(&mut self) -> Option<FedLine> {
        if self.ended {
            return Some(Ok((Vec::new(), LineRead::End)));
        }
        match self.rx.try_recv() {
            Ok(Ok((buf, LineRead::End))) => {
                self.ended = true;
                Some(Ok((buf, LineRead::End)))
            }
            Ok(line) => Some(line),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => {
                self.ended = true;
                Some(Ok((Vec::new(), LineRead::End)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8], cap: usize) -> Vec<(Vec<u8>, LineRead)> {
        let mut r = io::BufReader::with_capacity(4, text);
        let mut out = Vec::new();
        loop {
            let mut buf = Vec::new();
            let read = read_line_capped(&mut r, &mut buf, cap).expect("read");
            if read == LineRead::End {
                return out;
            }
            out.push((buf, read));
        }
    }

    #[test]
    fn lines_within_the_cap_are_kept_whole_and_longer_ones_are_cut() {
        let got = lines(b"ab\nabcdefghij\nxyz", 6);
        assert_eq!(got[0], (b"ab\n".to_vec(), LineRead::Line { consumed: 3 }));
        assert_eq!(
            got[1],
            (
                b"abcdef".to_vec(),
                LineRead::TooLong {
                    consumed: 11,
                    len: 11
                }
            )
        );
        assert_eq!(got[2], (b"xyz".to_vec(), LineRead::Line { consumed: 3 }));
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn a_feed_delivers_each_line_as_soon_as_it_is_read() {
        let (mut w, r) = std::os::unix::net::UnixStream::pair().expect("pair");
        let mut feed = LineFeed::start(Box::new(io::BufReader::new(r)), 1024, 16);
        assert!(feed.try_next().is_none(), "nothing written yet");
        use std::io::Write;
        w.write_all(b"{\"a\":1}\n").expect("write");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let line = loop {
            if let Some(l) = feed.try_next() {
                break l.expect("line");
            }
            assert!(std::time::Instant::now() < deadline, "the line never came");
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert_eq!(
            line,
            (b"{\"a\":1}\n".to_vec(), LineRead::Line { consumed: 8 })
        );
        drop(w);
        let end = loop {
            if let Some(l) = feed.try_next() {
                break l.expect("end");
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert_eq!(end.1, LineRead::End);
    }
}
