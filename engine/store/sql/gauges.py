"""SQL of the gauges a `/metrics` scrape reads (engine/metrics.py): cheap, bounded, no locks."""
from __future__ import annotations

from engine.store.sql import Statement

# node_runs has no index on status (engine/schema.py: keeps its updates HOT), so queued nodes are
# found through live runs (their partial index), and at most :cap of them are looked at.
QUEUE_GAUGES = Statement("How many nodes of live runs are queued (at most :cap), and the oldest one's age.", """
WITH queued_nodes AS (
    SELECT n.queued_at FROM runs r JOIN node_runs n ON n.run_id = r.id
     WHERE r.status IN ('queued', 'running', 'interrupted') AND n.status = 'queued'
     LIMIT :cap
)
SELECT count(*) AS depth,
       coalesce(greatest(0, extract(epoch FROM now() - min(queued_nodes.queued_at))), 0) AS oldest_age_s
  FROM queued_nodes""")
