//! The agent's bounded in-memory log: every tracing event is also kept here (newest N lines)
//! so the shim or `hullctl` can fetch it over `Guest.GetLogs` when the console is out of reach.
//!
//! A tracing layer is called synchronously from any thread, so the ring is behind a plain
//! mutex held only for a push or a copy.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// How many lines the log keeps by default.
pub const DEFAULT_CAPACITY: usize = 4096;
/// Most lines one `GetLogs` call returns by default.
pub(crate) const DEFAULT_MAX_LINES: usize = 1000;

/// One kept line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogEntry {
    pub(crate) seq: u64,
    pub(crate) timestamp_ns: i64,
    pub(crate) level: Level,
    pub(crate) target: String,
    pub(crate) message: String,
}

#[derive(Debug)]
struct Ring {
    next_seq: u64,
    lines: VecDeque<LogEntry>,
    capacity: usize,
}

/// Handle to the shared ring; cheap to clone.
#[derive(Debug, Clone)]
pub struct LogBuffer {
    ring: Arc<Mutex<Ring>>,
}

/// What a read returns: lines, the next cursor and how many wanted lines were already dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogRead {
    pub(crate) lines: Vec<LogEntry>,
    pub(crate) next_cursor: u64,
    pub(crate) dropped: u64,
}

impl LogBuffer {
    pub fn new(capacity: usize) -> Self {
        LogBuffer {
            ring: Arc::new(Mutex::new(Ring {
                next_seq: 0,
                lines: VecDeque::with_capacity(capacity.min(1024)),
                capacity: capacity.max(1),
            })),
        }
    }

    pub(crate) fn push(&self, level: Level, target: &str, message: String) {
        let timestamp_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let seq = ring.next_seq;
        ring.next_seq += 1;
        if ring.lines.len() == ring.capacity {
            ring.lines.pop_front();
        }
        ring.lines.push_back(LogEntry {
            seq,
            timestamp_ns,
            level,
            target: target.to_owned(),
            message,
        });
    }

    /// Lines with `seq >= cursor`, oldest first, at most `max_lines` (0 = default).
    pub(crate) fn read(&self, cursor: u64, max_lines: usize) -> LogRead {
        let max = if max_lines == 0 {
            DEFAULT_MAX_LINES
        } else {
            max_lines
        };
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = ring.lines.front().map_or(ring.next_seq, |l| l.seq);
        let dropped = oldest.saturating_sub(cursor);
        let lines: Vec<LogEntry> = ring
            .lines
            .iter()
            .filter(|l| l.seq >= cursor)
            .take(max)
            .cloned()
            .collect();
        let next_cursor = lines.last().map_or(cursor.max(oldest), |l| l.seq + 1);
        LogRead {
            lines,
            next_cursor,
            dropped,
        }
    }

    /// The tracing layer that feeds this buffer.
    pub fn layer(&self) -> LogLayer {
        LogLayer { buf: self.clone() }
    }
}

/// Tracing layer that copies each event into a [`LogBuffer`].
#[derive(Debug)]
pub struct LogLayer {
    buf: LogBuffer,
}

#[derive(Default)]
struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for LogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut v = MessageVisitor::default();
        event.record(&mut v);
        let meta = event.metadata();
        self.buf.push(*meta.level(), meta.target(), v.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_lines_and_counts_dropped() {
        let buf = LogBuffer::new(3);
        for i in 0..5 {
            buf.push(Level::INFO, "t", format!("line {i}"));
        }
        let r = buf.read(0, 0);
        assert_eq!(r.dropped, 2);
        assert_eq!(
            r.lines.iter().map(|l| l.seq).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(r.next_cursor, 5);
        let r = buf.read(5, 0);
        assert!(r.lines.is_empty());
        assert_eq!(r.next_cursor, 5);
        let r = buf.read(3, 1);
        assert_eq!(r.lines[0].message, "line 3");
        assert_eq!(r.next_cursor, 4);
    }
}
