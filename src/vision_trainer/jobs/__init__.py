"""Job runners behind the services' ``JobQueue`` protocol: the in-process local runner (default)."""
