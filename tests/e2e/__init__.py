"""End-to-end tests' helpers: workflows, activities and a worker process entry point."""
