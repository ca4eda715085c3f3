//! Chaos tests against the local three-node RabbitMQ cluster
//! (`deploy/local/cluster.sh`). They need the cluster, so they are `#[ignore]`d in
//! `make test`; `make chaos` brings the cluster up, runs them, and removes it.

mod failover;
