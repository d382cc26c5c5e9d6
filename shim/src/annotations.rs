//! `io.hull.*` annotations: the only way a pod may ask for VM settings, and only for the keys
//! the node's operator allows in hull.toml (`[annotations] allowed`, Kata's
//! `enable_annotations` model). Whoever may create pods writes their annotations, so an
//! unlisted one is refused at Create (RunPodSandbox / CreateContainer) with a message naming
//! the key and the setting, never ignored: a pod must not run with a setting it believes it
//! has. [`HullAnnotations`] holds what passed the check; code that configures a VM from an
//! annotation reads it there and nowhere else.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::config::{AnnotationsSection, HULL_ANNOTATION_PREFIX};

/// Why a spec's annotations are refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AnnotationError {
    #[error(
        "annotation {key:?} is not allowed: add it (or a prefix of it ending in '.') to \
         [annotations] allowed in hull.toml"
    )]
    NotAllowed { key: String },
    #[error("annotation {key:?} must be a string")]
    NotAString { key: String },
}

/// The `io.hull.*` annotations of a spec that hull.toml allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HullAnnotations(BTreeMap<String, String>);

fn allowed(key: &str, cfg: &AnnotationsSection) -> bool {
    cfg.allowed
        .iter()
        .any(|a| key == a || (a.ends_with('.') && key.starts_with(a.as_str())))
}

impl HullAnnotations {
    /// Checks every `io.hull.*` annotation of `spec` (an OCI spec as JSON) against `cfg`;
    /// the first one not allowed refuses the whole spec. Other annotations are not hull's.
    pub(crate) fn check(spec: &Value, cfg: &AnnotationsSection) -> Result<Self, AnnotationError> {
        let mut out = BTreeMap::new();
        let Some(all) = spec.get("annotations").and_then(Value::as_object) else {
            return Ok(HullAnnotations(out));
        };
        for (key, value) in all {
            if !key.starts_with(HULL_ANNOTATION_PREFIX) {
                continue;
            }
            if !allowed(key, cfg) {
                return Err(AnnotationError::NotAllowed { key: key.clone() });
            }
            let value = value
                .as_str()
                .ok_or_else(|| AnnotationError::NotAString { key: key.clone() })?;
            out.insert(key.clone(), value.to_owned());
        }
        Ok(HullAnnotations(out))
    }

    /// The value of allowed annotation `key`; `None` if the pod did not set it.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The keys in effect, for the log.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cfg(allowed: &[&str]) -> AnnotationsSection {
        AnnotationsSection {
            allowed: allowed.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn nothing_is_allowed_by_default_and_the_refusal_names_key_and_setting() {
        let spec = json!({"annotations": {"io.hull.net.rx_rate": "10M", "other": "x"}});
        let e = HullAnnotations::check(&spec, &cfg(&[])).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("\"io.hull.net.rx_rate\""), "{msg}");
        assert!(msg.contains("[annotations] allowed in hull.toml"), "{msg}");
    }

    #[test]
    fn exact_keys_and_dot_prefixes_allow_and_nothing_else_reaches_the_accessor() {
        let spec = json!({"annotations": {
            "io.hull.net.rx_rate": "10M",
            "io.hull.fs.cache": "never",
            "io.kubernetes.cri.sandbox-id": "s1",
        }});
        let a = HullAnnotations::check(&spec, &cfg(&["io.hull.net.rx_rate", "io.hull.fs."]))
            .expect("allowed");
        assert_eq!(a.get("io.hull.net.rx_rate"), Some("10M"));
        assert_eq!(a.get("io.hull.fs.cache"), Some("never"));
        assert_eq!(a.get("io.kubernetes.cri.sandbox-id"), None, "not hull's");
        assert_eq!(a.keys().count(), 2);
        // An exact key is not a prefix: io.hull.net.rx_rate2 stays refused.
        let spec = json!({"annotations": {"io.hull.net.rx_rate2": "1"}});
        assert!(matches!(
            HullAnnotations::check(&spec, &cfg(&["io.hull.net.rx_rate"])),
            Err(AnnotationError::NotAllowed { key }) if key == "io.hull.net.rx_rate2"
        ));
        // A prefix must end at a dot: io.hull.fs. does not allow io.hull.fsx.
        let spec = json!({"annotations": {"io.hull.fsx": "1"}});
        assert!(HullAnnotations::check(&spec, &cfg(&["io.hull.fs."])).is_err());
        let spec = json!({"annotations": {"io.hull.fs.cache": 3}});
        assert!(matches!(
            HullAnnotations::check(&spec, &cfg(&["io.hull.fs."])),
            Err(AnnotationError::NotAString { .. })
        ));
    }

    #[test]
    fn a_spec_without_annotations_passes_empty() {
        let a = HullAnnotations::check(&json!({}), &cfg(&[])).expect("ok");
        assert_eq!(a, HullAnnotations::default());
    }
}
