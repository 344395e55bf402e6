"""etcd service discovery with aetcd: keys kept on leases that re-register themselves, and a prefix
watcher that resumes after any outage. No Django in this package: nodes import it too."""

from nodes_app.discovery.etcd import (
    ETCD_ERRORS,
    Connector,
    Endpoint,
    Job,
    Reachability,
    describe,
    endpoints_parse,
    rpc_timeout,
)
from nodes_app.discovery.lease import lease_keep
from nodes_app.discovery.node import (
    NODES_PREFIX,
    SERVER_KEY,
    DiscoveryThread,
    ServerFollower,
    jobs_run,
    node_discovery_start,
)
from nodes_app.discovery.watch import prefix_watch

__all__ = [
    "ETCD_ERRORS", "NODES_PREFIX", "SERVER_KEY", "Connector", "DiscoveryThread", "Endpoint", "Job", "Reachability",
    "ServerFollower", "describe", "endpoints_parse", "jobs_run", "lease_keep", "node_discovery_start",
    "prefix_watch", "rpc_timeout",
]
