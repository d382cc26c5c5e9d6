//! Per-pod I/O limits: token buckets hull-vmm keeps on the pod's NIC (vmm/API.md, rate
//! limits), from hull.toml's `[limits]` and, where `[annotations] allowed` lets a pod set
//! them, its `io.hull.limits.*` annotations. Each value is hull-vmm's own
//! `RATE[:BURST[:ONE_TIME]]` ([`Bucket`]), or `unlimited` to lift a default.

use std::collections::BTreeMap;

use hull_contract::vmm_args::{Bucket, IoLimit};
use serde::Deserialize;

use crate::annotations::HullAnnotations;
use crate::config::HULL_ANNOTATION_PREFIX;

/// The settings, as `[limits]` keys and, under `io.hull.limits.`, annotation keys: the
/// direction (rx into the pod, tx out of it) and what is counted (bytes, frames).
const KEYS: [&str; 4] = ["net_rx_bytes", "net_rx_ops", "net_tx_bytes", "net_tx_ops"];

/// The value that lifts a limit.
const UNLIMITED: &str = "unlimited";

/// `[limits]` in hull.toml: every pod's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(transparent)]
pub(crate) struct LimitsSection(BTreeMap<String, String>);

/// A limit that cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LimitError {
    #[error("[limits] {key:?} is not one of {KEYS:?}")]
    UnknownKey { key: String },
    #[error("{origin} {key:?}: {reason}")]
    BadValue {
        origin: &'static str,
        key: String,
        reason: String,
    },
}

/// A pod NIC's limits: into the pod, out of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NetLimits {
    pub(crate) rx: IoLimit,
    pub(crate) tx: IoLimit,
}

fn parse(origin: &'static str, key: &str, value: &str) -> Result<Option<Bucket>, LimitError> {
    if value == UNLIMITED {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|reason| LimitError::BadValue {
            origin,
            key: key.to_owned(),
            reason,
        })
}

impl LimitsSection {
    /// Every key set to `value` (the config test's view of every key there is).
    #[cfg(test)]
    pub(crate) fn every_key(value: &str) -> Self {
        LimitsSection(
            KEYS.iter()
                .map(|k| ((*k).to_owned(), value.to_owned()))
                .collect(),
        )
    }

    /// Refuses unknown keys and values hull-vmm would refuse, when hull.toml is read.
    pub(crate) fn validate(&self) -> Result<(), LimitError> {
        for (key, value) in &self.0 {
            if !KEYS.contains(&key.as_str()) {
                return Err(LimitError::UnknownKey { key: key.clone() });
            }
            parse("[limits]", key, value)?;
        }
        Ok(())
    }

    /// The limits of a pod with allowed annotations `ann`: each annotation replaces the
    /// default of its key.
    pub(crate) fn for_pod(&self, ann: &HullAnnotations) -> Result<NetLimits, LimitError> {
        let mut l = NetLimits::default();
        for key in KEYS {
            let annotation = format!("{HULL_ANNOTATION_PREFIX}limits.{key}");
            let bucket = match (ann.get(&annotation), self.0.get(key)) {
                (Some(v), _) => parse("annotation", &annotation, v)?,
                (None, Some(v)) => parse("[limits]", key, v)?,
                (None, None) => None,
            };
            let slot = match key {
                "net_rx_bytes" => &mut l.rx.bytes,
                "net_rx_ops" => &mut l.rx.ops,
                "net_tx_bytes" => &mut l.tx.bytes,
                _ => &mut l.tx.ops,
            };
            *slot = bucket;
        }
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::AnnotationsSection;

    fn section(toml_text: &str) -> LimitsSection {
        toml::from_str(toml_text).unwrap()
    }

    fn annotations(pairs: &[(&str, &str)]) -> HullAnnotations {
        let map: serde_json::Map<String, serde_json::Value> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let allow = AnnotationsSection {
            allowed: vec!["io.hull.limits.".into()],
        };
        HullAnnotations::check(&json!({ "annotations": map }), &allow).unwrap()
    }

    #[test]
    fn defaults_apply_and_annotations_replace_them() {
        let s = section("net_rx_bytes = \"12500000:1250000\"\nnet_tx_ops = \"1000\"\n");
        s.validate().unwrap();
        let l = s.for_pod(&HullAnnotations::default()).unwrap();
        assert_eq!(
            l.rx.bytes.map(|b| (b.rate, b.burst())),
            Some((12_500_000, 1_250_000))
        );
        assert_eq!(l.tx.ops.map(|b| b.rate), Some(1000));
        assert!(l.rx.ops.is_none() && l.tx.bytes.is_none());

        let l = s
            .for_pod(&annotations(&[
                ("io.hull.limits.net_rx_bytes", "unlimited"),
                ("io.hull.limits.net_tx_bytes", "1000000:100000:5000000"),
            ]))
            .unwrap();
        assert!(l.rx.bytes.is_none(), "lifted by the pod");
        assert_eq!(l.tx.bytes.map(|b| b.one_time), Some(5_000_000));
        assert_eq!(l.tx.ops.map(|b| b.rate), Some(1000), "the default stays");
    }

    #[test]
    fn bad_keys_and_values_are_refused_by_name() {
        for (text, names) in [
            ("net_rx_rate = \"1\"\n", "net_rx_rate"),
            ("net_rx_bytes = \"0\"\n", "net_rx_bytes"),
            ("net_tx_ops = \"fast\"\n", "net_tx_ops"),
        ] {
            let e = section(text).validate().unwrap_err().to_string();
            assert!(e.contains(names), "{e}");
        }
        let e = LimitsSection::default()
            .for_pod(&annotations(&[("io.hull.limits.net_rx_ops", "1:0")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("annotation \"io.hull.limits.net_rx_ops\""),
            "{e}"
        );
    }
}
