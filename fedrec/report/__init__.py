"""Reports rendered from results.json files (privacy/utility sweeps)."""
