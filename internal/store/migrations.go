package store

import "embed"

// Migrations are the schema migrations, one SQL text for every engine.
// The SQL store adds one in Go, PostgreSQL's alone: 00019, the
// transaction ids that order its changes for replicas (sqlstore's
// changeMarksMigration).
//
//go:embed migrations/*.sql
var Migrations embed.FS
