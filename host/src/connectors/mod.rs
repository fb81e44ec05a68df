//! Connectors: the systems a pipeline reads from and writes to, one module each with its
//! source, its sink and their tests together: [`files`] (files and the standard streams),
//! [`kafka`], [`nexmark`] (a generator). They implement the contracts of `crate::sources`
//! (partitions) and `crate::sinks` (sinks), and the checkpoint layer's participant traits
//! where they take part in commits. Adding a connector is a module here plus its arm in the
//! functions below that open what a pipeline names.

pub mod files;
pub mod kafka;
pub mod nexmark;
pub mod replay;

use crate::config::spec::{SinkKind, SinkSpec, SourceKind, SourceSpec};
use crate::sinks::{CheckpointedSinks, OpenedSink, Sink, SinkError};
use crate::sources::{time_field, SourceError, SourcePartition};
use crate::value::Value;
use files::{FileSink, StdoutSink};

/// Opens every partition of a source.
pub fn open_source(
    spec: &SourceSpec,
    source_index: u16,
    pipeline: &str,
) -> Result<Vec<Box<dyn SourcePartition>>, SourceError> {
    match &spec.kind {
        SourceKind::Kafka(k) => Ok(kafka::source::partitions(
            &spec.name,
            source_index,
            k,
            pipeline,
            spec.event_time.field.clone(),
        )?
        .into_iter()
        .map(|p| Box::new(p) as Box<dyn SourcePartition>)
        .collect()),
        SourceKind::Files {
            glob,
            max_line_bytes,
        } => {
            let field = time_field(spec)?;
            let paths = files::lines::expand_glob(&spec.name, glob)?;
            let mut parts: Vec<Box<dyn SourcePartition>> = Vec::with_capacity(paths.len());
            for (i, path) in paths.into_iter().enumerate() {
                parts.push(Box::new(files::lines::LinesPartition::open_file(
                    &spec.name,
                    source_index,
                    i as u32,
                    &path,
                    field.clone(),
                    *max_line_bytes,
                )?));
            }
            Ok(parts)
        }
        SourceKind::Stdin { max_line_bytes } => {
            let field = time_field(spec)?;
            Ok(vec![Box::new(files::lines::LinesPartition::stdin(
                &spec.name,
                source_index,
                field,
                *max_line_bytes,
            ))])
        }
        SourceKind::Nexmark(n) => Ok(nexmark::partitions(n, source_index)
            .into_iter()
            .map(|p| Box::new(p) as Box<dyn SourcePartition>)
            .collect()),
    }
}

/// How many instances of a sink a run with `parallelism` tasks opens: one per task for Kafka
/// (each with its own producers, so the sink scales with the tasks), one for the others
/// (a file is written by one writer).
pub fn instances(spec: &SinkSpec, parallelism: usize) -> usize {
    match spec.kind {
        SinkKind::Kafka(_) => parallelism.max(1),
        _ => 1,
    }
}

/// Opens a sink's instances for a checkpointed run: file sinks write pending parts, Kafka
/// sinks transactions, from epoch `first_epoch` on; the others are as in [`open_sink`].
pub fn open_checkpointed_sink(
    spec: &SinkSpec,
    instances: usize,
    ctx: &CheckpointedSinks<'_>,
) -> Result<Vec<OpenedSink>, SinkError> {
    match &spec.kind {
        SinkKind::File { path } => Ok(vec![(
            Box::new(files::parts::PartFileSink::create(
                &spec.name,
                path,
                ctx.first_epoch,
            )?),
            Some(std::sync::Arc::new(files::parts::FilePartsCommitter::new(
                &spec.name, path,
            ))),
        )]),
        SinkKind::Kafka(k) => kafka::sink::open(
            &spec.name,
            k,
            ctx.pipeline,
            &ctx.state_dir.join("kafka-sinks").join(&spec.name),
            instances,
            Some(kafka::sink::Checkpointed {
                first_epoch: ctx.first_epoch,
                restored: ctx.restored,
                restored_parallelism: ctx.restored_parallelism,
                interval: ctx.interval,
                tolerable_failures: ctx.tolerable_failures,
            }),
        ),
        _ => Ok(open_sink(spec, ctx.pipeline, instances)?
            .into_iter()
            .map(|s| (s, None))
            .collect()),
    }
}

/// Opens a sink's instances for a run without checkpoints.
pub fn open_sink(
    spec: &SinkSpec,
    pipeline: &str,
    instances: usize,
) -> Result<Vec<Box<dyn Sink>>, SinkError> {
    Ok(match &spec.kind {
        SinkKind::Kafka(k) => kafka::sink::open(
            &spec.name,
            k,
            pipeline,
            std::path::Path::new(""),
            instances,
            None,
        )?
        .into_iter()
        .map(|(s, _)| s)
        .collect(),
        SinkKind::File { path } => vec![Box::new(FileSink::create(&spec.name, path)?)],
        SinkKind::Stdout => vec![Box::new(StdoutSink::new(&spec.name))],
        SinkKind::Blackhole => vec![Box::new(Blackhole::default())],
    })
}

/// Discards records, counting them (benchmarks).
#[derive(Default)]
pub struct Blackhole {
    pub count: u64,
}

impl Sink for Blackhole {
    fn write(&mut self, records: &[Value]) -> Result<(), SinkError> {
        self.count += records.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
