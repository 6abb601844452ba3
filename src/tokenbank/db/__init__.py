"""Storage: engine and connections, table definitions, migrations."""
