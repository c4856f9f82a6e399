"""The partitioned plan every executor runs: map (parallel over input shards) -> decide (over keys only) -> reduce
(parallel over partitions) -> merge (deterministic). See DESIGN.md's "one plan, two executors"."""
