// Package store is Tollgate's persistent state: keys, users, teams, end
// users, spend logs with daily rollups, and the audit log, behind one
// interface with SQLite and PostgreSQL engines sharing one SQL text.
//
// The store is never on the request path: the gateway serves auth and
// budgets from an in-memory snapshot (LoadAll), writes go through the store
// and then update the snapshot, and spend arrives in batches (ApplySpend).
//
// Each entity table keeps the columns that are filtered, joined or summed
// (ids, alias, spend, times) and the whole record as JSON in `data`, so the
// LiteLLM-shaped records can grow fields without a migration per field, and
// spend can still be incremented atomically in SQL.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors; engines wrap them.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("already exists")
	// ErrRejected: the store refused the data itself (a byte sequence
	// its encoding cannot hold, a value out of range, a constraint), not
	// for being unreachable: retrying the same data fails the same way.
	ErrRejected = errors.New("data refused by the store")
	// ErrChanged: a conditional write (UpdateTeam, UpdateUser) found the record
	// written by someone else since the caller read it; read it again and
	// redo the change.
	ErrChanged = errors.New("changed since it was read")
)

// OwnerDeletedError is a key write refused because the user or team it
// names was deleted while the write waited for the deletion (a SQL store
// on PostgreSQL; see sqlstore.lockOwners). It is an ErrNotFound.
type OwnerDeletedError struct {
	Kind Kind // KindUser or KindTeam
	ID   string
}

func (e *OwnerDeletedError) Error() string {
	return fmt.Sprintf("%s %s was deleted while the key was written", e.Kind, e.ID)
}

// Is makes an OwnerDeletedError an ErrNotFound.
func (e *OwnerDeletedError) Is(target error) bool { return target == ErrNotFound }

// Limits are an entity's budget and rate limits, as LiteLLM names them.
// Key, User, Team, EndUser and Budget embed them, so that their JSON stays
// flat (the same members, in the `data` column and on the wire) and the
// ledger (ledger.SpecOf) and the rate limiter take them whole.
//
// A soft budget is not among them: teams and end users have none, and
// their records show no such member, so Key, User and Budget carry
// SoftBudget beside their Limits. Spend is not either: a Budget has none.
type Limits struct {
	MaxBudget           *float64   `json:"max_budget"`
	BudgetDuration      *string    `json:"budget_duration"` // e.g. "30d": the period after which spend resets
	BudgetResetAt       *time.Time `json:"budget_reset_at"` // the end of the current period
	MaxParallelRequests *int64     `json:"max_parallel_requests"`
	TPMLimit            *int64     `json:"tpm_limit"`
	RPMLimit            *int64     `json:"rpm_limit"`
}

// Key is a virtual key. Only its sha256 is stored, never the key itself.
type Key struct {
	TokenHash  string            `json:"token"`
	KeyName    string            `json:"key_name"` // "sk-...ABCD"
	KeyAlias   *string           `json:"key_alias"`
	UserID     string            `json:"user_id,omitempty"`
	TeamID     string            `json:"team_id,omitempty"`
	Models     []string          `json:"models"`
	Aliases    map[string]string `json:"aliases"`
	Config     map[string]any    `json:"config"`
	Metadata   map[string]any    `json:"metadata"`
	Tags       []string          `json:"tags"`
	Spend      float64           `json:"spend"`
	SoftBudget *float64          `json:"soft_budget"`
	Limits
	ModelMaxBudget map[string]float64 `json:"model_max_budget"`
	ModelRPMLimit  map[string]int64   `json:"model_rpm_limit"`
	ModelTPMLimit  map[string]int64   `json:"model_tpm_limit"`
	ModelSpend     map[string]float64 `json:"model_spend"`
	// AllowedCacheControls are the cache controls (no-cache, no-store,
	// ttl, s-maxage, namespace, use-cache) the key's requests may set in
	// their cache member; empty: any (LiteLLM's allowed_cache_controls).
	AllowedCacheControls []string `json:"allowed_cache_controls,omitempty"`
	// BudgetID names a Budget whose limits apply where the key sets none.
	BudgetID string     `json:"budget_id,omitempty"`
	Expires  *time.Time `json:"expires"`
	Blocked  bool       `json:"blocked"`
	// BlockedBy says who blocked the key: "admin" (a proxy_admin, or a
	// block recorded before this field existed: "") or "owner" (the key's
	// own user, who may then unblock it herself).
	BlockedBy string    `json:"blocked_by,omitempty"`
	CreatedBy string    `json:"created_by,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// BudgetAccount names the key's budget account (the ledger's and
	// Redis's) when it is not TokenHash: the hash the key had before its
	// first /key/regenerate, kept by every regenerate after. Holds in flight
	// and spend not yet settled under the old hash are on that account,
	// so the regenerated key's budget counts them from the moment it exists,
	// on every replica. "" (a key never regenerated): TokenHash. Not shown
	// by the API.
	BudgetAccount string `json:"budget_account,omitempty"`
}

// Account is the id of the key's budget account (BudgetAccount, else
// TokenHash); its model budgets' are this + "/" + model.
func (k *Key) Account() string {
	if k.BudgetAccount != "" {
		return k.BudgetAccount
	}
	return k.TokenHash
}

// User is a gateway user; budgets apply across all its keys.
type User struct {
	UserID     string   `json:"user_id"`
	UserEmail  string   `json:"user_email,omitempty"`
	UserRole   string   `json:"user_role"`
	Teams      []string `json:"teams"`
	Models     []string `json:"models"`
	Spend      float64  `json:"spend"`
	SoftBudget *float64 `json:"soft_budget"`
	Limits
	Metadata  map[string]any `json:"metadata"`
	CreatedAt time.Time      `json:"created_at"`
	UpdatedAt time.Time      `json:"updated_at"`
}

// TeamMember is a user's membership of a team.
type TeamMember struct {
	UserID    string `json:"user_id"`
	UserEmail string `json:"user_email,omitempty"`
	Role      string `json:"role"` // admin or user
	// BudgetID names the Budget of this membership (LiteLLM's
	// LiteLLM_TeamMembership.budget_id).
	BudgetID string `json:"budget_id,omitempty"`
}

// MemberBudget is a member's own budget within a team (LiteLLM's
// max_budget_in_team, a LiteLLM_TeamMembership with its budget row). Its
// spend is kept in budget_spend under KindTeamMember.
type MemberBudget struct {
	UserID    string  `json:"user_id"`
	BudgetID  string  `json:"budget_id"`
	MaxBudget float64 `json:"max_budget"`
}

// Team groups users and keys under shared models and budgets.
type Team struct {
	TeamID         string       `json:"team_id"`
	TeamAlias      string       `json:"team_alias,omitempty"`
	OrganizationID string       `json:"organization_id,omitempty"`
	Models         []string     `json:"models"`
	Members        []TeamMember `json:"members_with_roles"`
	Spend          float64      `json:"spend"`
	Limits
	Metadata map[string]any `json:"metadata"`
	Blocked  bool           `json:"blocked"`
	// ModelAliases map a model name a key of the team asks for to the
	// model group that serves it (after the key's own aliases).
	ModelAliases  map[string]string `json:"model_aliases,omitempty"`
	MemberBudgets []MemberBudget    `json:"member_budgets,omitempty"`
	CreatedAt     time.Time         `json:"created_at"`
	UpdatedAt     time.Time         `json:"updated_at"`
}

// MemberBudget returns the budget user has within t, if she has one.
func (t *Team) MemberBudget(user string) (MemberBudget, bool) {
	for _, b := range t.MemberBudgets {
		if b.UserID == user {
			return b, true
		}
	}
	return MemberBudget{}, false
}

// MemberBudgetID is how a member's budget within a team is named in
// budget_spend and the ledger: "<team>/<user>".
func MemberBudgetID(team, user string) string { return team + "/" + user }

// EndUser is a customer of the caller, named by the request's `user` field.
type EndUser struct {
	UserID string  `json:"user_id"`
	Alias  string  `json:"alias,omitempty"`
	Spend  float64 `json:"spend"`
	// Limits on the requests made for this end user, across keys.
	Limits
	Blocked bool `json:"blocked"`
	// BudgetID names a Budget whose limits apply where the end user sets none.
	BudgetID string `json:"budget_id,omitempty"`
	// AllowedModelRegion ("eu", "us"): the end user's requests go only to
	// deployments of that region_name.
	AllowedModelRegion string         `json:"allowed_model_region,omitempty"`
	Metadata           map[string]any `json:"metadata"`
	CreatedAt          time.Time      `json:"created_at"`
	UpdatedAt          time.Time      `json:"updated_at"`
}

// Budget is a set of limits kept as an object of its own (LiteLLM's
// LiteLLM_BudgetTable) that end users, keys, team memberships and
// organizations refer to by BudgetID. It has no spend: whatever refers to
// it is charged, against these limits.
type Budget struct {
	BudgetID   string   `json:"budget_id"`
	SoftBudget *float64 `json:"soft_budget"`
	Limits
	// ModelMaxBudget is kept as sent ({"model": {"max_budget": ...}}).
	ModelMaxBudget map[string]any `json:"model_max_budget"`
	CreatedBy      string         `json:"created_by,omitempty"`
	UpdatedBy      string         `json:"updated_by,omitempty"`
	CreatedAt      time.Time      `json:"created_at"`
	UpdatedAt      time.Time      `json:"updated_at"`
}

// OrgMember is a user's membership of an organization
// (LiteLLM_OrganizationMembership).
type OrgMember struct {
	UserID    string    `json:"user_id"`
	UserRole  string    `json:"user_role"` // org_admin, internal_user, internal_user_viewer
	BudgetID  string    `json:"budget_id,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Organization owns teams: their models must be within its models, and its
// budget (BudgetID) bounds the spend of all of them together.
type Organization struct {
	OrganizationID    string         `json:"organization_id"`
	OrganizationAlias string         `json:"organization_alias"`
	BudgetID          string         `json:"budget_id"`
	Spend             float64        `json:"spend"`
	Models            []string       `json:"models"`
	Metadata          map[string]any `json:"metadata"`
	Members           []OrgMember    `json:"members"`
	Blocked           bool           `json:"blocked"`
	// BudgetResetAt is set when the organization's budget period first
	// rolls over; until then the budget's own reset time applies.
	BudgetResetAt *time.Time `json:"budget_reset_at,omitempty"`
	CreatedBy     string     `json:"created_by"`
	UpdatedBy     string     `json:"updated_by"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
}

// SpendLog is one request's usage and cost.
type SpendLog struct {
	RequestID string `json:"request_id"` // the gateway's call id (x-tollgate-call-id)
	// ResponseID is the id of the upstream's answer (chatcmpl-..., msg_...),
	// "" when it had none. SpendFilter.RequestID matches either id.
	ResponseID string `json:"response_id"`
	// CallType is LiteLLM's name of the operation: acompletion,
	// atext_completion, aembedding, anthropic_messages.
	CallType string `json:"call_type"`
	KeyHash  string `json:"api_key"`
	// KeyCreatedAt is the creation of the key the request authenticated
	// with (its incarnation; zero: not known, or no key record). The
	// store adds the row's cost to the key under KeyHash, and to its model
	// budgets, only while that key is this one: spend of a deleted key in
	// flight or queued at its deletion stays in the spend log, under the
	// hash, but is not booked on a key made again with the same secret.
	// Not a spend log column.
	KeyCreatedAt     time.Time `json:"-"`
	UserID           string    `json:"user"`
	TeamID           string    `json:"team_id"`
	EndUser          string    `json:"end_user"`
	ModelGroup       string    `json:"model_group"`
	Deployment       string    `json:"model_id"`
	Provider         string    `json:"custom_llm_provider"`
	PromptTokens     int64     `json:"prompt_tokens"`
	CompletionTokens int64     `json:"completion_tokens"`
	CachedTokens     int64     `json:"cached_tokens"`
	Cost             float64   `json:"spend"`
	Status           int       `json:"status"`
	LatencyMS        int64     `json:"latency_ms"`
	StartedAt        time.Time `json:"startTime"`
	EndedAt          time.Time `json:"endTime"`
	// ReportedPromptTokens and ReportedCompletionTokens are the usage the
	// upstream reported, as it reported it; the token columns above are
	// what was booked. They differ when UsageClamped: the report was
	// negative or beyond what the request could have used.
	ReportedPromptTokens     int64 `json:"reported_prompt_tokens"`
	ReportedCompletionTokens int64 `json:"reported_completion_tokens"`
	UsageClamped             bool  `json:"usage_clamped"`
	// UsageEstimated: the upstream reported no usage; the tokens booked
	// were counted or estimated by the gateway.
	UsageEstimated bool `json:"usage_estimated"`
	// CacheHit: the answer came from the response cache (docs/caching.md);
	// CacheKey is the key it was served under, SavedCost what it would
	// have cost at its deployment's price. Cost is what was charged.
	CacheHit  bool    `json:"cache_hit"`
	CacheKey  string  `json:"cache_key"`
	SavedCost float64 `json:"saved_cost"`
	// RequestTags are the request's tags (x-litellm-tags, metadata.tags,
	// the key's and the team's); Metadata the request body's own metadata
	// (LiteLLM's requester_metadata). Both bounded by the gateway.
	RequestTags []string       `json:"request_tags"`
	Metadata    map[string]any `json:"metadata"`
	// Guardrails is what the guardrails did (a JSON array of guardrail,
	// mode, action and entity counts; never the text found); nil when none
	// ran (migration 00012).
	Guardrails json.RawMessage `json:"guardrails"`
	// ErrorInformation is why a failed request failed (LiteLLM's
	// metadata.error_information); nil on a row that did not fail
	// (migration 00015).
	ErrorInformation *ErrorInformation `json:"error_information,omitempty"`
	// Messages and Response are what was asked and answered, redacted and
	// size-capped; nil unless general_settings.store_prompts_in_spend_logs
	// lets them be kept.
	Messages json.RawMessage `json:"messages"`
	Response json.RawMessage `json:"response"`
	// ContentOmitted reports that a listing left Messages and Response out
	// of this row to keep within SpendFilter.ContentBytes. Not a column.
	ContentOmitted bool `json:"-"`
	// Budgets are spend on budgets that have no entity row of their own
	// (a key's model_max_budget entry, a custom-auth key): ApplySpend adds
	// the row's cost to each in budget_spend. Not a spend_logs column.
	Budgets []BudgetRef `json:"-"`
}

// ErrorInformation is LiteLLM's StandardLoggingPayloadErrorInformation:
// the HTTP status as a string ("502"), the error's class in LiteLLM's
// names (APIConnectionError, Timeout, RateLimitError, ...), the provider
// that failed and a bounded message. It never holds the prompt or a key.
type ErrorInformation struct {
	ErrorCode    string `json:"error_code"`
	ErrorClass   string `json:"error_class"`
	LLMProvider  string `json:"llm_provider"`
	ErrorMessage string `json:"error_message"`
}

// BudgetRef names a budget kept in budget_spend: Kind KindKeyModel with
// ID "<key hash>/<model>", KindCustomAuthKey with the key hash,
// KindTeamMember with MemberBudgetID(team, user), or KindOrganization
// (whose spend ApplySpend adds to the organizations row, not to
// budget_spend).
type BudgetRef struct {
	Kind Kind
	ID   string
}

// BudgetSpend is what one budget_spend budget has spent.
type BudgetSpend struct {
	BudgetRef
	Spend float64
}

// AuditEntry records one management write.
type AuditEntry struct {
	ID         string    `json:"id"`
	At         time.Time `json:"updated_at"`
	Actor      string    `json:"changed_by"` // "master", or the acting key's hash
	Action     string    `json:"action"`     // created, updated, deleted, blocked, ...
	ObjectType string    `json:"table_name"` // key, user, team, end_user
	ObjectID   string    `json:"object_id"`
	Before     string    `json:"before_value,omitempty"` // JSON
	After      string    `json:"updated_values,omitempty"`
}

// Deletion is the tombstone of a deleted row.
type Deletion struct {
	Kind Kind
	ID   string
	At   time.Time
}

// Model is a deployment added through the API: its model_list entry as JSON.
type Model struct {
	ID        string
	Entry     []byte // {"model_name", "litellm_params", "model_info"}
	CreatedAt time.Time
	UpdatedAt time.Time
}

// ObjectKind is what a managed object is: an uploaded file or a batch.
type ObjectKind string

// The managed object kinds.
const (
	ObjectFile  ObjectKind = "file"
	ObjectBatch ObjectKind = "batch"
)

// ManagedObject is a file or batch created through the gateway: the
// upstream's id, its owner and deployment, and the upstream's JSON object
// as last seen. Charged and Cost are a batch's booking (MarkCharged).
type ManagedObject struct {
	ID         string
	Kind       ObjectKind
	KeyHash    string
	UserID     string
	TeamID     string
	ModelGroup string
	Deployment string
	Provider   string
	ParentID   string // an output or error file's batch
	Object     []byte
	Charged    bool
	Cost       float64
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// ObjectFilter selects managed objects of one kind, newest first: KeyHash
// "" means every owner; After is the id of the last object of the previous
// page; Limit 0 means 20 (OpenAI's default), at most 10,000.
type ObjectFilter struct {
	Kind    ObjectKind
	KeyHash string
	After   string
	Limit   int
}

// Snapshot is every key, user, team and end user, for the in-memory cache.
type Snapshot struct {
	Keys          []*Key
	Users         []*User
	Teams         []*Team
	EndUsers      []*EndUser
	Budgets       []*Budget
	Organizations []*Organization
}

// Page selects a slice of a listing; Size 0 means the default (50).
type Page struct{ Number, Size int }

// KeyFilter narrows ListKeys.
type KeyFilter struct {
	UserID, TeamID, Alias string // Alias matches as a substring
	Page
}

// SpendFilter narrows ListSpendLogs. RequestID matches a row's RequestID
// or its ResponseID.
type SpendFilter struct {
	RequestID, KeyHash, UserID, TeamID, EndUser string
	// Tag keeps the rows whose RequestTags hold it (exactly).
	Tag string
	// ModelGroup keeps the rows of that model group (the name the client
	// asked for).
	ModelGroup string
	// Status keeps rows by outcome: "success" (HTTP status below 400),
	// "failure" (400 and up, or none), or one HTTP status code.
	Status   string
	From, To time.Time // zero: unbounded
	// ContentBytes bounds the messages and response bytes a listing
	// returns: once the rows so far hold that many, the later rows come
	// without them (ContentOmitted). 0: no bound.
	ContentBytes int
	Page
}

// ReportFilter selects the daily rollups a spend report reads.
type ReportFilter struct {
	From, To time.Time // days [From, To); zero: unbounded
	// GroupBy is the rollup column grouped on: "team_id", "end_user",
	// "key_hash" or "user_id".
	GroupBy string
	// Optional narrowing on the same columns.
	KeyHash, UserID, TeamID, EndUser string
}

// ReportRow is one day's spend of one group on one model.
type ReportRow struct {
	Day              string  `json:"day"` // YYYY-MM-DD (UTC)
	Group            string  `json:"group"`
	Model            string  `json:"model"`
	Requests         int64   `json:"requests"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	Spend            float64 `json:"spend"`
}

// TagFilter selects the daily tag rollups a tag report reads.
type TagFilter struct {
	From, To time.Time // days [From, To); zero: unbounded
	Tags     []string  // empty: every tag
}

// TagRow is one day's spend of one request tag on one model group. A
// request with several tags counts once under each.
type TagRow struct {
	Day              string  `json:"day"` // YYYY-MM-DD (UTC)
	Tag              string  `json:"tag"`
	Model            string  `json:"model"`
	Requests         int64   `json:"requests"`
	FailedRequests   int64   `json:"failed_requests"` // status 0 or >= 400
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	Spend            float64 `json:"spend"`
}

// ReportGroups are the columns a report may group on.
var ReportGroups = map[string]bool{"team_id": true, "end_user": true, "key_hash": true, "user_id": true}

// Store is what every engine provides.
type Store interface {
	CreateKey(ctx context.Context, k *Key) error // ErrConflict on a taken hash or alias
	GetKey(ctx context.Context, hash string) (*Key, error)
	GetKeyByAlias(ctx context.Context, alias string) (*Key, error)
	UpdateKey(ctx context.Context, k *Key) error                  // full replace; ErrNotFound, ErrConflict
	ReplaceKey(ctx context.Context, oldHash string, k *Key) error // regenerate: new hash, same record
	// HashReplaced reports whether hash is a secret's that /key/regenerate
	// replaced and the store still knows: a key's BudgetAccount, or (SQL)
	// a forwarding in key_replacements. A new key with that hash would
	// share the regenerated key's budget account and late spend.
	HashReplaced(ctx context.Context, hash string) (bool, error)
	// HashesReplaced is HashReplaced for many hashes at once: the set of
	// those the store knows as replaced, read in a few bounded queries
	// (a resync after a bulk deletion asks about every deleted key).
	HashesReplaced(ctx context.Context, hashes []string) (map[string]bool, error)
	DeleteKey(ctx context.Context, hash string) error
	ListKeys(ctx context.Context, f KeyFilter) ([]*Key, int, error)

	CreateUser(ctx context.Context, u *User) error
	GetUser(ctx context.Context, id string) (*User, error)
	// UpdateUser replaces the user only if she is still as the caller
	// read her: her stored updated_at is u.UpdatedAt (a compare-and-swap,
	// as UpdateTeam: two read-modify-writes of one user, a /user/update and
	// a team's change of her teams, never lose one another's change).
	// ErrChanged when another write came in between, ErrNotFound when the
	// user is gone. On success u.UpdatedAt is the new stamp, always later
	// than the one read.
	UpdateUser(ctx context.Context, u *User) error
	DeleteUser(ctx context.Context, id string) error // and the user's keys, in one transaction
	ListUsers(ctx context.Context, p Page) ([]*User, int, error)

	CreateTeam(ctx context.Context, t *Team) error
	GetTeam(ctx context.Context, id string) (*Team, error)
	// UpdateTeam replaces the team only if it is still as the caller read
	// it: its stored updated_at is t.UpdatedAt (a compare-and-swap, so two
	// read-modify-writes never lose one another's change, nor undo a
	// DeleteUser's removal of a member). ErrChanged when another write came
	// in between, ErrNotFound when the team is gone. On success
	// t.UpdatedAt is the new stamp, always later than the one read.
	UpdateTeam(ctx context.Context, t *Team) error
	DeleteTeam(ctx context.Context, id string) error // and the team's keys, in one transaction
	ListTeams(ctx context.Context, p Page) ([]*Team, int, error)

	CreateEndUser(ctx context.Context, e *EndUser) error
	GetEndUser(ctx context.Context, id string) (*EndUser, error)
	UpdateEndUser(ctx context.Context, e *EndUser) error
	DeleteEndUser(ctx context.Context, id string) error
	ListEndUsers(ctx context.Context, p Page) ([]*EndUser, int, error)

	CreateBudget(ctx context.Context, b *Budget) error // ErrConflict on a taken id
	GetBudget(ctx context.Context, id string) (*Budget, error)
	UpdateBudget(ctx context.Context, b *Budget) error
	DeleteBudget(ctx context.Context, id string) error
	ListBudgets(ctx context.Context, p Page) ([]*Budget, int, error)

	CreateOrganization(ctx context.Context, o *Organization) error
	GetOrganization(ctx context.Context, id string) (*Organization, error)
	UpdateOrganization(ctx context.Context, o *Organization) error
	// DeleteOrganization removes the organization record (the API deletes
	// its teams first, as LiteLLM does).
	DeleteOrganization(ctx context.Context, id string) error
	ListOrganizations(ctx context.Context, p Page) ([]*Organization, int, error)

	// SetSpend overwrites an entity's spend (an operator edit).
	SetSpend(ctx context.Context, kind Kind, id string, spend float64) error
	// ResetBudget starts a new budget period: spend to zero and
	// budget_reset_at to next.
	ResetBudget(ctx context.Context, kind Kind, id string, next time.Time) error

	// LoadAll reads every key, user, team and end user.
	LoadAll(ctx context.Context) (*Snapshot, error)
	// LoadAllButKeys is LoadAll without the keys, and LoadKeys the keys
	// alone (a start serves before its keys are in: Server.New).
	LoadAllButKeys(ctx context.Context) (*Snapshot, error)
	// LoadKeys calls page with every key (and its model spend), a page at
	// a time (at most KeyPage keys on a SQL store, in token hash order),
	// each page read on its own so that the store serves other calls
	// between pages and no more than one page's rows are held at once. An
	// error from page stops it and is returned. A key written while it
	// runs may be read or not (a resync brings it).
	LoadKeys(ctx context.Context, page func([]*Key) error) error
	// Changes reads what was written or deleted at or after since, so a
	// replica can bring its snapshot up to date.
	Changes(ctx context.Context, since time.Time) (*Snapshot, []Deletion, error)
	// ApplySpend writes a batch in one transaction: spend_logs rows
	// (idempotent on request id: a replayed row is not counted again), spend
	// on keys, users, teams and end users, the daily rollups, and the daily
	// tag rollups (one per tag of each row). batch is the caller's only
	// for the call: the spend writer reuses its array for the next rows
	// once ApplySpend returns, so a store copies whatever it keeps (rows,
	// not just their strings) and reads nothing of batch after returning.
	ApplySpend(ctx context.Context, batch []SpendLog) error
	ListSpendLogs(ctx context.Context, f SpendFilter) ([]SpendLog, int, error)
	// SpendReport sums the daily rollups by day, group and model, ordered
	// by day, group, model.
	SpendReport(ctx context.Context, f ReportFilter) ([]ReportRow, error)
	// TagReport sums the daily tag rollups (spend_daily_tags) by day, tag
	// and model group, ordered by day, tag, model.
	TagReport(ctx context.Context, f TagFilter) ([]TagRow, error)
	// TotalSpend is all spend recorded (from the daily rollups).
	TotalSpend(ctx context.Context) (float64, error)
	// BudgetSpends reads every budget_spend row: the spend of budgets that
	// have no entity row (see SpendLog.Budgets), to seed them at start.
	BudgetSpends(ctx context.Context) ([]BudgetSpend, error)

	// PutModel creates or replaces a model; DeleteModel removes one
	// (ErrNotFound when absent); ListModels returns all, oldest first.
	PutModel(ctx context.Context, m *Model) error
	DeleteModel(ctx context.Context, id string) error
	ListModels(ctx context.Context) ([]Model, error)

	// PutObject records a new managed object (ErrConflict on a taken id);
	// GetObject reads one of a kind (ErrNotFound); UpdateObject replaces
	// its last-seen JSON; DeleteObject removes it (ErrNotFound when
	// absent); ListObjects lists newest first.
	PutObject(ctx context.Context, o *ManagedObject) error
	GetObject(ctx context.Context, kind ObjectKind, id string) (*ManagedObject, error)
	UpdateObject(ctx context.Context, kind ObjectKind, id string, object []byte) error
	DeleteObject(ctx context.Context, kind ObjectKind, id string) error
	ListObjects(ctx context.Context, f ObjectFilter) ([]ManagedObject, error)
	// MarkCharged sets a batch's charged flag and cost unless it is set
	// already, in one conditional update: it reports true to exactly one
	// caller, however many replicas race, and that caller books the cost.
	MarkCharged(ctx context.Context, id string, cost float64) (bool, error)

	AppendAudit(ctx context.Context, e AuditEntry) error
	ListAudit(ctx context.Context, p Page) ([]AuditEntry, int, error)

	Ping(ctx context.Context) error
	Close() error
}

// ChangeFeed is a Store whose changes a replica can read by a position in
// the store's order of commits, not by time. A row is stamped when it is
// written, but seen by other replicas when its transaction commits: a
// reader whose cursor is a time (Changes, with an overlap) never reads a
// row stamped before its cursor by a transaction that committed after the
// cursor moved past the stamp. A mark does not depend on clocks or on how
// long a writer's transaction lasts.
type ChangeFeed interface {
	// ChangeMark is a position taken before a read: whatever that read
	// does not see was written by a transaction at or after the mark. ok
	// is false when the store has no such order (Changes serves).
	ChangeMark(ctx context.Context) (mark uint64, ok bool, err error)
	// ChangesFrom reads what transactions at or after mark wrote or
	// deleted.
	ChangesFrom(ctx context.Context, mark uint64) (*Snapshot, []Deletion, error)
}

// PageBounds returns the LIMIT and OFFSET of p.
func (p Page) PageBounds() (limit, offset int) {
	size := p.Size
	if size <= 0 {
		size = 50
	}
	size = min(size, 1000)
	n := max(p.Number, 1)
	return size, (n - 1) * size
}

// KeyPage is how many keys a SQL store's LoadKeys reads per page: small
// enough that a page's rows (their JSON and the records decoded from it)
// cost about a megabyte and a request waiting for the store's connection
// waits one page, large enough that 100,000 keys take 100 queries.
const KeyPage = 1000

// Kind names a kind of entity, spelled the same wherever one is named: the
// entity tables and their tombstones, budget_spend rows, the ledger's
// accounts, rate-limit scopes, Redis keys, metric labels, log fields and
// error messages. Its values are persisted and on the wire: never change one.
type Kind string

// The entity kinds.
const (
	KindKey     Kind = "key"
	KindUser    Kind = "user"
	KindTeam    Kind = "team"
	KindEndUser Kind = "end_user"
	// KindOrganization has spend (its teams'), kept on its row.
	KindOrganization Kind = "organization"
	// KindBudget is a budget object: it has no spend, only tombstones.
	KindBudget Kind = "budget"
	// KindGlobal is the whole gateway (litellm_settings.max_budget, the
	// gateway-wide limits); its ID is "global" or empty.
	KindGlobal Kind = "global"
	// KindKeyModel is a key's model_max_budget entry or per-model limit,
	// with ID "<key hash>/<model>". Its budget_spend spend is read back as
	// the key's ModelSpend.
	KindKeyModel Kind = "key_model"
	// KindTeamMember is a team membership with a budget or limits of its
	// own (max_budget_in_team, or a budget object it names), with ID
	// MemberBudgetID(team, user).
	KindTeamMember Kind = "team_member"
	// KindCustomAuthKey is a key that only custom_auth (replace mode) knows,
	// with the budget the hook gives it: a budget_spend budget, booked in
	// the ledger as a key.
	KindCustomAuthKey Kind = "custom_auth_key"
)

// HasRow reports whether entities of kind have a row of their own with a
// spend column (SetSpend, ResetBudget); the others' spend, when they have
// any, is in budget_spend.
func (k Kind) HasRow() bool {
	switch k {
	case KindKey, KindUser, KindTeam, KindEndUser, KindOrganization:
		return true
	}
	return false
}

// NextStamp is the updated_at of a write that replaces a record stamped
// prev: now (UTC), or one microsecond (the stores' resolution) after prev
// when now is not past it (another replica's clock, the same microsecond).
// A stamp only grows, so a write conditional on the stamp it read
// (UpdateTeam) never mistakes a later record for the one it read.
func NextStamp(prev, now time.Time) time.Time {
	now = now.UTC()
	if now.UnixMicro() <= prev.UnixMicro() {
		return time.UnixMicro(prev.UnixMicro() + 1).UTC()
	}
	return now
}
