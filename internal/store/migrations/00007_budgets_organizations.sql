-- +goose Up
-- Budgets as objects (LiteLLM's LiteLLM_BudgetTable): limits that end users,
-- keys, team memberships and organizations refer to by budget_id. A budget
-- has no spend of its own (what refers to it keeps its own); the column is
-- there so budgets share the document-table code, and stays 0.
CREATE TABLE budgets (
    budget_id   TEXT PRIMARY KEY,
    spend       DOUBLE PRECISION NOT NULL DEFAULT 0,
    data        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX budgets_updated ON budgets (updated_at);

-- Organizations own teams; their members (with their org role) are in the
-- record. spend is the spend of every team of the organization.
CREATE TABLE organizations (
    organization_id TEXT PRIMARY KEY,
    spend           DOUBLE PRECISION NOT NULL DEFAULT 0,
    data            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX organizations_updated ON organizations (updated_at);

-- +goose Down
DROP TABLE organizations;
DROP TABLE budgets;
