"""Storage plumbing shared by every domain: engine, sessions, models, schema checks."""
