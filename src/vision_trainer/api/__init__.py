"""HTTP layer: app factory, routers, schemas, dependencies, error handlers. Thin by design."""
