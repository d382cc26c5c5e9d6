//! UpdateContainer and StatsContainer: resources in, counters out, through the cgroup.

use super::error::Result;
use super::{spec, Engine};

impl Engine {
    pub(crate) async fn update(&self, id: &str, resources_json: &[u8]) -> Result<()> {
        let res = spec::parse_resources(resources_json)?;
        let c = self.registry().get(id).await?;
        c.cgroup.apply(&res)
    }

    pub(crate) async fn stats(&self, id: &str) -> Result<hull_proto::stats::ContainerStats> {
        let c = self.registry().get(id).await?;
        let cgroup = c.cgroup.clone();
        let mut stats = cgroup.stats();
        stats.network = crate::guest::network_stats();
        Ok(stats)
    }
}
