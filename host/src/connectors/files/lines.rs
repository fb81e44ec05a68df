//! JSON-lines partitions: one file each, or standard input.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::line_reader::{read_line_capped, LineFeed, LineRead, KEPT_OF_LONG_LINE};
use crate::dlq::{DeadLetter, ErrorClass};
use crate::record::{Origin, Record};
use crate::sources::{
    decode_object, extract_event_time, Poll, Position, SourceError, SourcePartition,
};
use crate::value::Str;

/// `16 MiB`, `512 KiB`, `100 B`.
fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

/// The sorted files a glob matches.
pub fn expand_glob(source_name: &str, pattern: &str) -> Result<Vec<PathBuf>, SourceError> {
    let entries = glob::glob(pattern).map_err(|e| SourceError::BadGlob {
        source_name: source_name.to_string(),
        glob: pattern.to_string(),
        message: e.to_string(),
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(SourceError::NoFilesMatch {
            source_name: source_name.to_string(),
            glob: pattern.to_string(),
        });
    }
    Ok(paths)
}

/// Where lines come from.
enum Input {
    /// Read on the task's thread (files: reads do not wait for a writer).
    Direct(Box<dyn BufRead + Send>),
    /// Read by a thread of its own (standard input: a read may wait for the next line).
    Feed(LineFeed),
}

/// The default for `max_line_bytes`.
pub const DEFAULT_MAX_LINE: usize = crate::config::spec::DEFAULT_MAX_LINE_BYTES;

/// Reads JSON objects, one per line; blank lines are skipped.
pub struct LinesPartition {
    name: String,
    source_name: String,
    path: PathBuf,
    origin: Origin,
    input: Input,
    /// Longest line kept; longer ones are dead letters.
    max_line: usize,
    time_field: Vec<Str>,
    line: Vec<u8>,
    /// Bytes consumed so far (complete lines only).
    consumed: u64,
    /// The file, for seeking on restore (None for stdin and in-memory readers).
    file: Option<PathBuf>,
    /// Records carry their line ([`SourcePartition::keep_source_text`]).
    keep_text: bool,
}

impl LinesPartition {
    pub fn open_file(
        source_name: &str,
        source: u16,
        partition: u32,
        path: &Path,
        time_field: Vec<Str>,
        max_line: usize,
    ) -> Result<Self, SourceError> {
        let file = File::open(path).map_err(|error| SourceError::Io {
            source_name: source_name.to_string(),
            path: path.to_path_buf(),
            error,
        })?;
        let mut p = Self::new(
            source_name,
            source,
            partition,
            path.display().to_string(),
            path,
            Box::new(file),
            time_field,
        );
        p.file = Some(path.to_path_buf());
        p.max_line = max_line;
        Ok(p)
    }

    /// Standard input, read by a thread of its own so each line is processed when it comes.
    pub fn stdin(source_name: &str, source: u16, time_field: Vec<Str>, max_line: usize) -> Self {
        let mut p = Self::new(
            source_name,
            source,
            0,
            "stdin".into(),
            Path::new("<stdin>"),
            Box::new(std::io::empty()),
            time_field,
        );
        p.max_line = max_line;
        p.input = Input::Feed(LineFeed::start(
            Box::new(std::io::BufReader::with_capacity(
                64 << 10,
                std::io::stdin(),
            )),
            max_line,
            4096,
        ));
        p
    }

    /// A partition over any reader (tests, stdin).
    pub fn new(
        source_name: &str,
        source: u16,
        partition: u32,
        name: String,
        path: &Path,
        reader: Box<dyn Read + Send>,
        time_field: Vec<Str>,
    ) -> Self {
        LinesPartition {
            name,
            source_name: source_name.to_string(),
            path: path.to_path_buf(),
            origin: Origin {
                source,
                partition,
                offset: 0,
                entry: 0,
            },
            input: Input::Direct(Box::new(BufReader::with_capacity(256 << 10, reader))),
            max_line: DEFAULT_MAX_LINE,
            time_field,
            line: Vec::with_capacity(1024),
            consumed: 0,
            file: None,
            keep_text: false,
        }
    }

    fn decode(&self, bytes: &[u8]) -> Result<Record, (String, &'static str)> {
        let value = decode_object(bytes).map_err(|e| (e, "decode"))?;
        let time = extract_event_time(&value, &self.time_field).map_err(|e| (e, "event_time"))?;
        let record = Record::new(value, time, self.origin);
        Ok(match self.keep_text {
            true => record.with_source_text(bytes.into()),
            false => record,
        })
    }
}

impl SourcePartition for LinesPartition {
    fn name(&self) -> &str {
        &self.name
    }

    fn keep_source_text(&mut self) {
        self.keep_text = true;
    }

    fn poll(
        &mut self,
        out: &mut Vec<Record>,
        dead: &mut Vec<DeadLetter>,
        max: usize,
    ) -> Result<Poll, SourceError> {
        let mut produced = 0;
        while produced < max {
            let read = match &mut self.input {
                Input::Direct(reader) => {
                    read_line_capped(reader.as_mut(), &mut self.line, self.max_line)
                }
                Input::Feed(feed) => match feed.try_next() {
                    None => {
                        return Ok(if produced > 0 {
                            Poll::Ready
                        } else {
                            Poll::Pending
                        });
                    }
                    Some(Ok((line, read))) => {
                        self.line = line;
                        Ok(read)
                    }
                    Some(Err(e)) => Err(e),
                },
            }
            .map_err(|error| SourceError::Io {
                source_name: self.source_name.clone(),
                path: self.path.clone(),
                error,
            })?;
            let consumed = match read {
                LineRead::End => {
                    return Ok(if produced > 0 { Poll::Ready } else { Poll::End });
                }
                LineRead::Line { consumed } => consumed,
                LineRead::TooLong { consumed, len } => {
                    self.consumed += consumed;
                    self.origin.offset += 1;
                    produced += 1;
                    dead.push(DeadLetter::new(
                        std::mem::take(&mut self.line),
                        self.origin,
                        "decode".to_string(),
                        ErrorClass::Permanent,
                        format!(
                            "line of {len} bytes, more than max_line_bytes ({}); its first {} KiB are kept here, the rest was skipped",
                            human_bytes(self.max_line as u64),
                            KEPT_OF_LONG_LINE.min(self.max_line) >> 10
                        ),
                    ));
                    continue;
                }
            };
            self.consumed += consumed;
            self.origin.offset += 1;
            let mut bytes: &[u8] = &self.line;
            while let Some((last, rest)) = bytes.split_last() {
                if *last == b'\n' || *last == b'\r' {
                    bytes = rest;
                } else {
                    break;
                }
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            produced += 1;
            match self.decode(bytes) {
                Ok(record) => out.push(record),
                Err((error, step)) => dead.push(DeadLetter::new(
                    bytes.to_vec(),
                    self.origin,
                    step.to_string(),
                    ErrorClass::Permanent,
                    error,
                )),
            }
        }
        Ok(Poll::Ready)
    }

    fn position(&self) -> Position {
        Position {
            offset: self.consumed,
            records: self.origin.offset,
        }
    }

    fn seek(&mut self, position: Position) -> Result<(), SourceError> {
        let fail = |message: String| SourceError::Seek {
            source_name: self.source_name.clone(),
            partition: self.name.clone(),
            position: format!("byte {} (line {})", position.offset, position.records),
            message,
        };
        let Some(path) = self.file.clone() else {
            if position.offset == 0 {
                return Ok(());
            }
            return Err(fail("standard input cannot be read again".into()));
        };
        let mut file = File::open(&path).map_err(|e| fail(e.to_string()))?;
        let len = file.metadata().map_err(|e| fail(e.to_string()))?.len();
        if len < position.offset {
            return Err(fail(format!(
                "the file is only {len} bytes long now; it was truncated or replaced since the checkpoint"
            )));
        }
        file.seek(SeekFrom::Start(position.offset))
            .map_err(|e| fail(e.to_string()))?;
        self.input = Input::Direct(Box::new(BufReader::with_capacity(256 << 10, file)));
        self.consumed = position.offset;
        self.origin.offset = position.records;
        Ok(())
    }

    fn replayable(&self) -> bool {
        self.file.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::split_path;

    fn partition(text: &'static [u8]) -> LinesPartition {
        LinesPartition::new(
            "s",
            0,
            0,
            "mem".into(),
            Path::new("mem"),
            Box::new(text),
            split_path("ts"),
        )
    }

    fn drain(p: &mut LinesPartition, max: usize) -> (Vec<Record>, Vec<DeadLetter>, usize) {
        let (mut out, mut dead, mut polls) = (Vec::new(), Vec::new(), 0);
        while p.poll(&mut out, &mut dead, max).expect("poll") != Poll::End {
            polls += 1;
        }
        (out, dead, polls)
    }

    #[test]
    fn good_and_bad_lines_are_separated_with_positions() {
        let text: &[u8] = b"{\"ts\":1,\"a\":1}\r\n\n  \n{bad\n[1,2]\n{\"a\":2}\n{\"ts\":\"2026-01-01T00:00:00Z\"}\n\xff\xfe\n{\"ts\":3}";
        let mut p = partition(text);
        let (out, dead, _) = drain(&mut p, 100);
        assert_eq!(
            out.iter()
                .map(|r| (r.origin.offset, r.time))
                .collect::<Vec<_>>(),
            vec![(1, 1), (7, 1_767_225_600_000), (9, 3)]
        );
        let d: Vec<_> = dead
            .iter()
            .map(|d| (d.origin.offset, d.step.as_str()))
            .collect();
        assert_eq!(
            d,
            vec![
                (4, "decode"),
                (5, "decode"),
                (6, "event_time"),
                (8, "decode")
            ]
        );
        assert_eq!(dead[0].raw, b"{bad");
        assert!(dead[1].error.contains("found a array"), "{}", dead[1].error);
        assert_eq!(dead[3].raw, vec![0xff, 0xfe]);
    }

    #[test]
    fn poll_respects_max() {
        let mut p = partition(b"{\"ts\":1}\n{\"ts\":2}\n{\"ts\":3}\n");
        let (mut out, mut dead) = (Vec::new(), Vec::new());
        assert_eq!(p.poll(&mut out, &mut dead, 2).expect("poll"), Poll::Ready);
        assert_eq!(out.len(), 2);
        let (rest, _, _) = drain(&mut p, 2);
        assert_eq!(rest.len(), 1);
    }

    #[test]
    fn glob_matches_sorted_files_and_reports_no_match() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["b.jsonl", "a.jsonl", "c.txt"] {
            std::fs::write(dir.path().join(name), "").expect("write");
        }
        let pattern = format!("{}/*.jsonl", dir.path().display());
        let paths = expand_glob("s", &pattern).expect("glob");
        let names: Vec<_> = paths
            .iter()
            .filter_map(|p| p.file_name())
            .map(|n| n.to_string_lossy().to_string())
            .collect();
        assert_eq!(names, ["a.jsonl", "b.jsonl"]);
        let err = expand_glob("clicks", &format!("{}/*.csv", dir.path().display()))
            .expect_err("no match");
        assert!(err.to_string().contains("no files match"), "{err}");
    }
}
