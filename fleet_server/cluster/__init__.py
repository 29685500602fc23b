"""Beyond one machine: district brokers bridged into a RabbitMQ cluster, N stateless workers.

- `rabbit`: private RabbitMQ nodes on loopback from generated config (`ManagedRabbit`);
- `topology`: exchange, queue and routing-key names, and their declaration;
- `consumer`: a worker's ingest from its district partitions (`ClusterIngest`);
- `cli`: ``nigehbaan cluster up|down|status``.

The district broker's bridge is `fleet_server.broker.bridge`. docs/cluster.md
tells the whole design and why it partitions by district broker.
"""
