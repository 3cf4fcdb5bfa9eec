package store

import "embed"

// Migrations are the schema migrations, one SQL text for every engine.
//
//go:embed migrations/*.sql
var Migrations embed.FS
