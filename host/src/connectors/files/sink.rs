//! Sinks that write JSON lines to a file (truncated when a run without checkpoints starts) or
//! to standard output. Checkpointed runs write file sinks in parts instead ([`super::parts`]).

use std::fs::File;
use std::io::{BufWriter, ErrorKind, Stdout, Write};
use std::path::PathBuf;

use crate::sinks::{write_json_lines, Sink, SinkError};
use crate::value::Value;

/// JSON lines written to a file. The file is truncated when the run starts: a run writes its
/// whole output.
pub struct FileSink {
    name: String,
    path: PathBuf,
    out: BufWriter<File>,
    line: Vec<u8>,
}

impl FileSink {
    pub fn create(name: &str, path: &std::path::Path) -> Result<FileSink, SinkError> {
        let err = |source| SinkError::Create {
            sink: name.to_string(),
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        let file = File::create(path).map_err(err)?;
        Ok(FileSink {
            name: name.to_string(),
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(256 << 10, file),
            line: Vec::with_capacity(256),
        })
    }

    fn err(&self, source: std::io::Error) -> SinkError {
        SinkError::Write {
            sink: self.name.clone(),
            path: self.path.clone(),
            source,
        }
    }
}

impl Sink for FileSink {
    fn write(&mut self, records: &[Value]) -> Result<(), SinkError> {
        write_json_lines(&mut self.out, &mut self.line, records).map_err(|e| self.err(e))
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if let Err(e) = self.out.flush() {
            return Err(self.err(e));
        }
        Ok(())
    }
}

/// JSON lines on standard output, flushed after every batch so results show up promptly.
pub struct StdoutSink {
    name: String,
    out: BufWriter<Stdout>,
    line: Vec<u8>,
}

impl StdoutSink {
    pub fn new(name: &str) -> StdoutSink {
        StdoutSink {
            name: name.to_string(),
            out: BufWriter::with_capacity(64 << 10, std::io::stdout()),
            line: Vec::new(),
        }
    }

    fn map(&self, e: std::io::Error) -> SinkError {
        if e.kind() == ErrorKind::BrokenPipe {
            SinkError::Closed {
                sink: self.name.clone(),
            }
        } else {
            SinkError::Write {
                sink: self.name.clone(),
                path: PathBuf::from("<stdout>"),
                source: e,
            }
        }
    }
}

impl Sink for StdoutSink {
    fn write(&mut self, records: &[Value]) -> Result<(), SinkError> {
        write_json_lines(&mut self.out, &mut self.line, records).map_err(|e| self.map(e))?;
        self.flush()
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        match self.out.flush() {
            Ok(()) => Ok(()),
            Err(e) => Err(self.map(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::spec::{Location, SinkKind, SinkSpec};

    #[test]
    fn file_sink_writes_json_lines_and_creates_folders() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a/b/out.jsonl");
        let spec = SinkSpec {
            name: "out".into(),
            kind: SinkKind::File { path: path.clone() },
            location: Location::default(),
        };
        let mut sinks = crate::connectors::open_sink(&spec, "test", 1).expect("open");
        let sink = &mut sinks[0];
        sink.write(&[
            Value::from_json(br#"{"a":1}"#).expect("json"),
            Value::from("x"),
        ])
        .expect("write");
        sink.flush().expect("flush");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "{\"a\":1}\n\"x\"\n"
        );
    }

    #[test]
    fn file_sink_truncates_an_earlier_runs_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "old\nlines\n").expect("seed");
        let mut sink = FileSink::create("out", &path).expect("open");
        sink.write(&[Value::Int(1)]).expect("write");
        sink.flush().expect("flush");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "1\n");
    }

    #[test]
    fn unwritable_path_names_the_sink_and_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").expect("seed");
        let err = FileSink::create("results", &blocker.join("out.jsonl"))
            .err()
            .expect("must fail");
        let msg = err.to_string();
        assert!(
            msg.contains("results") && msg.contains("out.jsonl"),
            "{msg}"
        );
    }
}
