//! Latency of every agent RPC, per method, for the node's metrics (`Guest.GuestStats`).
//!
//! The ttrpc server dispatches each unary call to a boxed `MethodHandler` out of the
//! generated `create_*` maps; [`instrument`] wraps each one, so every method is timed in one
//! place and a new method is timed without anyone remembering to. The set of methods is fixed
//! when the server starts, so the table cannot grow with what a caller sends.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ttrpc::proto::ResponseInit;
use ttrpc::r#async::{MethodHandler, Service, TtrpcContext};

/// Upper bounds of the latency buckets, seconds: from a cheap call on an idle guest (~100 µs)
/// to a container start pulling a large rootfs through virtio-fs.
pub const BUCKET_BOUNDS_SECONDS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

/// One method's histogram.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub errors: u64,
    pub sum_seconds: f64,
    /// Cumulative: `buckets[i]` counts the calls that took at most `BUCKET_BOUNDS_SECONDS[i]`.
    pub buckets: [u64; BUCKET_BOUNDS_SECONDS.len()],
}

impl Latency {
    fn observe(&mut self, took: Duration, failed: bool) {
        let secs = took.as_secs_f64();
        self.count += 1;
        self.errors += u64::from(failed);
        self.sum_seconds += secs;
        for (b, bound) in self.buckets.iter_mut().zip(BUCKET_BOUNDS_SECONDS) {
            if secs <= bound {
                *b += 1;
            }
        }
    }
}

/// Histograms by `Service/Method`; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct RpcStats(Arc<Mutex<BTreeMap<String, Latency>>>);

impl RpcStats {
    pub fn observe(&self, method: &str, took: Duration, failed: bool) {
        // A poisoned lock only means a panic elsewhere mid-update: the counts stay usable.
        let mut m = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match m.get_mut(method) {
            Some(l) => l.observe(took, failed),
            None => {
                let mut l = Latency::default();
                l.observe(took, failed);
                m.insert(method.to_owned(), l);
            }
        }
    }

    /// Every method called at least once, by name.
    pub fn snapshot(&self) -> Vec<(String, Latency)> {
        let m = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// One method's handler with its clock.
struct Timed {
    /// `Service/Method`.
    method: String,
    inner: Box<dyn MethodHandler + Send + Sync>,
    stats: RpcStats,
}

#[async_trait]
impl MethodHandler for Timed {
    async fn handler(
        &self,
        ctx: TtrpcContext,
        req: ttrpc::Request,
    ) -> ttrpc::Result<ttrpc::Response> {
        let start = Instant::now();
        let res = self.inner.handler(ctx, req).await;
        let failed = res.as_ref().map_or(true, |r| r.non_ok().is_some());
        self.stats.observe(&self.method, start.elapsed(), failed);
        res
    }
}

/// The services `create_*` made, each unary method timed into `stats` under
/// `Service/Method` (the last part of the package-qualified service name).
pub fn instrument(
    services: HashMap<String, Service>,
    stats: &RpcStats,
) -> HashMap<String, Service> {
    services
        .into_iter()
        .map(|(name, svc)| {
            let short = name.rsplit('.').next().unwrap_or(&name).to_owned();
            let methods = svc
                .methods
                .into_iter()
                .map(|(m, inner)| {
                    let timed: Box<dyn MethodHandler + Send + Sync> = Box::new(Timed {
                        method: format!("{short}/{m}"),
                        inner,
                        stats: stats.clone(),
                    });
                    (m, timed)
                })
                .collect();
            (
                name,
                Service {
                    methods,
                    streams: svc.streams,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_errors_counted() {
        let s = RpcStats::default();
        s.observe("Guest/GetLogs", Duration::from_micros(50), false);
        s.observe("Guest/GetLogs", Duration::from_millis(3), true);
        s.observe("Guest/GetLogs", Duration::from_secs(60), false);
        let snap = s.snapshot();
        assert_eq!(snap.len(), 1);
        let (name, l) = &snap[0];
        assert_eq!(name, "Guest/GetLogs");
        assert_eq!((l.count, l.errors), (3, 1));
        assert!((l.sum_seconds - 60.00305).abs() < 1e-9, "{}", l.sum_seconds);
        // 50 µs is in every bucket, 3 ms from the 5 ms bucket on, 60 s in none (only +Inf).
        assert_eq!(l.buckets, [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2]);
    }
}
