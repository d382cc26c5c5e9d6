//! `GET /metrics/prometheus`: the [`MetricsReport`] in Prometheus' text format (version
//! 0.0.4), for a node's metrics endpoint (`hullctl monitor`) to label with the pod and serve.
//!
//! The report is walked with serde, so the JSON of `GET /metrics` and this text can never
//! disagree on what exists. Each [`Counter`], [`Gauge`], [`Flag`] and [`Stamp`] serializes
//! as a newtype struct named after its type (transparent in JSON), which tells this walker
//! the metric's kind; a plain number or string (a NIC's MTU, its MAC) is not a metric.
//!
//! Names: `hull_vmm_boot_phase_seconds{phase}` (the boot stamps, seconds after hull-vmm's
//! exec, once reached); `hull_vmm_vcpu_*_total`, `hull_vmm_guest_*_total`; per device
//! `hull_vmm_<device>_<field>[_total]{index}`, `index` counting devices of one kind in
//! configuration order (the API's `/net/N`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::ser::{self, Impossible, Serialize};

use super::MetricsReport;

/// The newtype names the metric types serialize under.
pub(crate) const COUNTER: &str = "Counter";
pub(crate) const GAUGE: &str = "Gauge";
pub(crate) const FLAG: &str = "Flag";
pub(crate) const STAMP: &str = "Stamp";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Debug)]
struct Sample {
    name: String,
    kind: Kind,
    labels: Vec<(&'static str, String)>,
    value: f64,
}

/// What the walk has seen.
#[derive(Debug, Default)]
struct Collector {
    path: Vec<&'static str>,
    /// The newtype being serialized (its value comes next).
    pending: Option<&'static str>,
    /// Inside `devices[i]`: its kind, and its index among devices of that kind.
    device: Option<(&'static str, usize)>,
    per_kind: BTreeMap<&'static str, usize>,
    samples: Vec<Sample>,
}

/// The walk cannot fail; serde wants an error type anyway.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct WalkError(String);

impl ser::Error for WalkError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        WalkError(msg.to_string())
    }
}

fn device_name(virtio_type: u64) -> &'static str {
    use crate::devices::virtio::{TYPE_BALLOON, TYPE_BLOCK, TYPE_FS, TYPE_NET, TYPE_RNG};
    use crate::devices::virtio::{TYPE_MEM, TYPE_VSOCK};
    match u32::try_from(virtio_type).unwrap_or(0) {
        TYPE_NET => "net",
        TYPE_BLOCK => "blk",
        TYPE_RNG => "rng",
        TYPE_BALLOON => "balloon",
        TYPE_VSOCK => "vsock",
        TYPE_FS => "fs",
        TYPE_MEM => "mem",
        _ => "device",
    }
}

impl Collector {
    /// A metric value of the pending kind at the current path.
    fn value(&mut self, v: f64) {
        let Some(kind) = self.pending.take() else {
            return;
        };
        let field = self.path.last().copied().unwrap_or("value");
        let (name, kind, labels, value) = match (self.path.first().copied(), kind) {
            (Some("boot"), STAMP) => {
                if v == 0.0 {
                    return; // not reached (yet)
                }
                let phase = field.strip_suffix("_us").unwrap_or(field);
                (
                    "hull_vmm_boot_phase_seconds".to_owned(),
                    Kind::Gauge,
                    vec![("phase", phase.to_owned())],
                    v / 1e6,
                )
            }
            (Some(group @ ("vcpu" | "guest")), COUNTER) => (
                format!("hull_vmm_{group}_{field}_total"),
                Kind::Counter,
                vec![],
                v,
            ),
            (Some("devices"), k) => {
                let Some((dev, index)) = self.device else {
                    return;
                };
                let (suffix, kind) = if k == COUNTER {
                    ("_total", Kind::Counter)
                } else {
                    ("", Kind::Gauge)
                };
                (
                    format!("hull_vmm_{dev}_{field}{suffix}"),
                    kind,
                    vec![("index", index.to_string())],
                    v,
                )
            }
            (_, k) => (
                format!("hull_vmm_{}", self.path.join("_")),
                if k == COUNTER {
                    Kind::Counter
                } else {
                    Kind::Gauge
                },
                vec![],
                v,
            ),
        };
        self.samples.push(Sample {
            name,
            kind,
            labels,
            value,
        });
    }

    /// A plain number: the device's virtio type, which names the device's metrics.
    fn plain(&mut self, v: u64) {
        if self.pending.is_some() {
            // Precision: counters past 2^53 print rounded, as Prometheus stores them.
            #[allow(clippy::cast_precision_loss)]
            self.value(v as f64);
        } else if self.path == ["devices", "type"] {
            let dev = device_name(v);
            let n = self.per_kind.entry(dev).or_default();
            self.device = Some((dev, *n));
            *n += 1;
        }
    }

    fn render(&self) -> String {
        let mut families: BTreeMap<&str, (Kind, Vec<&Sample>)> = BTreeMap::new();
        for s in &self.samples {
            families
                .entry(&s.name)
                .or_insert_with(|| (s.kind, Vec::new()))
                .1
                .push(s);
        }
        let mut out = String::new();
        for (name, (kind, samples)) in families {
            let kind = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} hull-vmm metric (vmm/API.md, Metrics).");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for s in samples {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect();
                let labels = if labels.is_empty() {
                    String::new()
                } else {
                    format!("{{{}}}", labels.join(","))
                };
                let _ = writeln!(out, "{name}{labels} {}", s.value);
            }
        }
        out
    }
}

/// The report as Prometheus text.
pub fn render(report: &MetricsReport) -> String {
    let mut c = Collector::default();
    // The walk only fails on a type it does not expect, which the report does not contain.
    let _ = report.serialize(&mut c);
    c.render()
}

type Res = Result<(), WalkError>;

impl ser::Serializer for &mut Collector {
    type Ok = ();
    type Error = WalkError;
    type SerializeSeq = Self;
    type SerializeTuple = Impossible<(), WalkError>;
    type SerializeTupleStruct = Impossible<(), WalkError>;
    type SerializeTupleVariant = Impossible<(), WalkError>;
    type SerializeMap = Impossible<(), WalkError>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), WalkError>;

    fn serialize_bool(self, v: bool) -> Res {
        if self.pending.is_some() {
            self.value(if v { 1.0 } else { 0.0 });
        }
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Res {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i16(self, v: i16) -> Res {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i32(self, v: i32) -> Res {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i64(self, v: i64) -> Res {
        self.plain(u64::try_from(v).unwrap_or(0));
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Res {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u16(self, v: u16) -> Res {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u32(self, v: u32) -> Res {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u64(self, v: u64) -> Res {
        self.plain(v);
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Res {
        self.serialize_f64(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Res {
        if self.pending.is_some() {
            self.value(v);
        }
        Ok(())
    }
    fn serialize_char(self, _v: char) -> Res {
        Ok(())
    }
    fn serialize_str(self, _v: &str) -> Res {
        Ok(())
    }
    fn serialize_bytes(self, _v: &[u8]) -> Res {
        Ok(())
    }
    fn serialize_none(self) -> Res {
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Res {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Res {
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Res {
        Ok(())
    }
    fn serialize_unit_variant(self, _n: &'static str, _i: u32, _v: &'static str) -> Res {
        Ok(())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, name: &'static str, value: &T) -> Res {
        if [COUNTER, GAUGE, FLAG, STAMP].contains(&name) {
            self.pending = Some(name);
        }
        let r = value.serialize(&mut *self);
        self.pending = None;
        r
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _value: &T,
    ) -> Res {
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self, WalkError> {
        Ok(self)
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, WalkError> {
        Err(ser::Error::custom("tuples are not metrics"))
    }
    fn serialize_tuple_struct(
        self,
        _n: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, WalkError> {
        Err(ser::Error::custom("tuple structs are not metrics"))
    }
    fn serialize_tuple_variant(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, WalkError> {
        Err(ser::Error::custom("tuple variants are not metrics"))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, WalkError> {
        Err(ser::Error::custom("maps are not metrics"))
    }
    fn serialize_struct(self, _n: &'static str, _len: usize) -> Result<Self, WalkError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, WalkError> {
        Err(ser::Error::custom("struct variants are not metrics"))
    }
}

impl ser::SerializeStruct for &mut Collector {
    type Ok = ();
    type Error = WalkError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Res {
        self.path.push(key);
        let r = value.serialize(&mut **self);
        self.path.pop();
        r
    }
    fn end(self) -> Res {
        Ok(())
    }
}

impl ser::SerializeSeq for &mut Collector {
    type Ok = ();
    type Error = WalkError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Res {
        self.device = None;
        let r = value.serialize(&mut **self);
        self.device = None;
        r
    }
    fn end(self) -> Res {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::devices::blk::BlockMetrics;
    use crate::devices::net::NetMetrics;
    use crate::devices::virtio::{DeviceMetrics, TYPE_BLOCK, TYPE_NET};
    use crate::metrics::DeviceReport;

    #[test]
    fn every_kind_of_metric_gets_its_prometheus_type_and_labels() {
        let net = |tx: u64| {
            let m = NetMetrics {
                tap: "tap0".into(),
                mtu: 1500,
                ..NetMetrics::default()
            };
            m.tx_packets.add(tx);
            m.watching_rx.set(true);
            DeviceReport {
                device_type: TYPE_NET,
                activated: true,
                metrics: DeviceMetrics::Net(Arc::new(m)),
            }
        };
        let blk = DeviceReport {
            device_type: TYPE_BLOCK,
            activated: false,
            metrics: DeviceMetrics::Block(Arc::new(BlockMetrics::default())),
        };
        let text = render(&MetricsReport::new(vec![net(5), blk, net(7)]));
        for line in [
            "# TYPE hull_vmm_net_tx_packets_total counter",
            "hull_vmm_net_tx_packets_total{index=\"0\"} 5",
            "hull_vmm_net_tx_packets_total{index=\"1\"} 7",
            "# TYPE hull_vmm_net_watching_rx gauge",
            "hull_vmm_net_watching_rx{index=\"1\"} 1",
            "hull_vmm_blk_reads_total{index=\"0\"} 0",
            "# TYPE hull_vmm_vcpu_exits_io_total counter",
            "# TYPE hull_vmm_guest_log_lines_suppressed_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Plain values are not metrics: the MTU, the tap's name, the device type.
        assert!(!text.contains("mtu") && !text.contains("tap0") && !text.contains("_type"));
        // One HELP and one TYPE per family, whatever the number of devices.
        assert_eq!(
            text.matches("# TYPE hull_vmm_net_tx_packets_total ")
                .count(),
            1,
            "{text}"
        );
        // The JSON of GET /metrics is unchanged by the newtype markers.
        let json: serde_json::Value =
            serde_json::from_str(&MetricsReport::new(vec![net(3)]).to_string()).unwrap();
        assert_eq!(json["devices"][0]["metrics"]["tx_packets"], 3);
        assert_eq!(json["devices"][0]["metrics"]["watching_rx"], true);
    }

    #[test]
    fn boot_phases_are_seconds_once_reached() {
        crate::metrics::METRICS.boot.vm_created_us.mark();
        let text = render(&MetricsReport::new(vec![]));
        assert!(
            text.contains("# TYPE hull_vmm_boot_phase_seconds gauge"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("hull_vmm_boot_phase_seconds{phase=\"vm_created\"} ")),
            "{text}"
        );
    }
}
