"""Job runners behind the services' ``JobQueue`` protocol: the in-process local runner (default),
and a queue that leaves the job to its caller (CLI, benchmarks)."""
