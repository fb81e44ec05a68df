//! A topic read once to its end, as text: how `headwater dlq inspect` and `dlq replay` read
//! a dead-letter queue that is a Kafka sink (`dlq: { sink: NAME }`).

use std::time::{Duration, Instant};

use crate::config::spec::{KafkaFormat, KafkaSinkSpec, KafkaSourceSpec, KafkaStart};
use crate::sources::{Poll, SourceError, SourcePartition};

/// Longest a read of the whole topic may take.
const DEADLINE: Duration = Duration::from_secs(120);

/// Every committed message of the sink's topic up to the end offsets when the read starts,
/// partition after partition, each as UTF-8 text (one envelope per message for a DLQ).
pub fn read_texts(sink: &KafkaSinkSpec, pipeline: &str) -> Result<Vec<String>, SourceError> {
    let spec = KafkaSourceSpec {
        topics: vec![sink.topic.clone()],
        brokers: sink.brokers.clone(),
        // Offsets are never committed by this reader: the group only names it to the brokers.
        group: Some(format!("headwater-{pipeline}-topic-reader")),
        format: KafkaFormat::Raw,
        start: KafkaStart::Earliest,
        until_end: true,
        max_record_bytes: 64 << 20,
        properties: sink.properties.clone(),
    };
    let mut partitions = super::source::partitions(&sink.topic, 0, &spec, pipeline, None)?;
    let started = Instant::now();
    let mut texts = Vec::new();
    for p in &mut partitions {
        loop {
            let (mut out, mut dead) = (Vec::new(), Vec::new());
            let poll = p.poll(&mut out, &mut dead, 1024)?;
            for r in out {
                if let Some(text) = r.value().as_object().and_then(|o| o.get("value")) {
                    texts.push(text.as_str().unwrap_or_default().to_string());
                }
            }
            match poll {
                Poll::End => break,
                Poll::Ready => {}
                Poll::Pending if started.elapsed() > DEADLINE => {
                    return Err(SourceError::Kafka {
                        source_name: sink.topic.clone(),
                        message: format!(
                            "`{}` did not reach its end within {DEADLINE:?}",
                            p.name()
                        ),
                    })
                }
                Poll::Pending => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
    Ok(texts)
}
