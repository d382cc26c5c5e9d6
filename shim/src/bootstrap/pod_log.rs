//! The shim's log lines carry their pod: containerd copies every shim's `log` FIFO into its
//! own log as it comes, with nothing saying which shim wrote a line, and a node runs one shim
//! per pod. Each line starts with `sandbox=<id> `.

use std::io::Write;
use std::sync::Arc;

/// A `MakeWriter` for tracing-subscriber's fmt layer: each event's writer starts its output
/// with the prefix, and repeats it after every newline it writes (an event with a multi-line
/// field, such as a boot failure's quoted logs).
pub(super) struct Prefixed<W> {
    prefix: Arc<str>,
    out: Arc<W>,
}

impl<W> Prefixed<W> {
    pub(super) fn new(sandbox_id: &str, out: W) -> Self {
        Prefixed {
            prefix: format!("sandbox={sandbox_id} ").into(),
            out: Arc::new(out),
        }
    }
}

/// One event's writer.
pub(super) struct LineWriter<'a, W> {
    prefix: &'a str,
    out: &'a W,
    at_line_start: bool,
}

impl<W> Write for LineWriter<'_, W>
where
    for<'w> &'w W: Write,
{
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut line = buf;
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            line = &buf[..=nl];
        }
        // Prefix and line go out in one write: containerd reads the FIFO concurrently with
        // nothing else writing to it, but one write keeps a line whole for it anyway.
        let mut out = self.out;
        if self.at_line_start {
            let mut whole = Vec::with_capacity(self.prefix.len() + line.len());
            whole.extend_from_slice(self.prefix.as_bytes());
            whole.extend_from_slice(line);
            out.write_all(&whole)?;
        } else {
            out.write_all(line)?;
        }
        self.at_line_start = line.ends_with(b"\n");
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let mut out = self.out;
        out.flush()
    }
}

impl<'a, W: 'static> tracing_subscriber::fmt::MakeWriter<'a> for Prefixed<W>
where
    for<'w> &'w W: Write,
{
    type Writer = LineWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            prefix: &self.prefix,
            out: &self.out,
            at_line_start: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tracing_subscriber::fmt::MakeWriter;

    /// A shared buffer, written through `&Sink` as a `File` is.
    #[derive(Default)]
    struct Sink(Mutex<Vec<u8>>);

    impl Write for &Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_of_every_event_names_the_pod() {
        let p = Prefixed::new("abc123", Sink::default());
        p.make_writer().write_all(b"INFO one\n").expect("write");
        p.make_writer()
            .write_all(b"ERROR agent did not come up: why\n--- hull-vmm log ---\nlast\n")
            .expect("write");
        let mut w = p.make_writer();
        w.write_all(b"WARN split ").expect("write");
        w.write_all(b"in two\n").expect("write");
        let got = String::from_utf8(p.out.0.lock().expect("lock").clone()).expect("utf8");
        assert_eq!(
            got,
            "sandbox=abc123 INFO one\n\
             sandbox=abc123 ERROR agent did not come up: why\n\
             sandbox=abc123 --- hull-vmm log ---\n\
             sandbox=abc123 last\n\
             sandbox=abc123 WARN split in two\n"
        );
    }
}
