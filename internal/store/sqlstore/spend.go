package sqlstore

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/pressly/goose/v3"

	"github.com/tollgate/tollgate/internal/store"
)

// spendInsert inserts a batch's spend_logs rows on PostgreSQL (up to
// spendChunkBytes of them a statement): one typed array parameter per
// column, unnested into rows, so that the statement has the same text
// (prepared once per connection) and 31 parameters whatever the rows, and pgx encodes each column as one binary array rather
// than a boxed parameter per value (a multi-row VALUES list of 200 rows had
// 6,200, a new statement text per row count, and cost the gateway about a
// tenth of its CPU in the Bind message). unnest pads shorter arrays with
// NULLs; all are as long as the batch. A request id present, or repeated in
// the batch, is skipped (DO NOTHING); RETURNING names the rows inserted.
const spendInsert = `INSERT INTO spend_logs (request_id, key_hash, user_id, team_id, end_user, model_group, deployment, provider,
	prompt_tokens, completion_tokens, cached_tokens, cost, status, latency_ms, started_at, ended_at,
	reported_prompt_tokens, reported_completion_tokens, usage_clamped, usage_estimated, response_id, call_type,
	request_tags, metadata, messages, response, cache_hit, cache_key, saved_cost, guardrails, error_information)
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
	$9::bigint[], $10::bigint[], $11::bigint[], $12::float8[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[],
	$17::bigint[], $18::bigint[], $19::bigint[], $20::bigint[], $21::text[], $22::text[],
	$23::text[], $24::text[], $25::text[], $26::text[], $27::bigint[], $28::text[], $29::float8[], $30::text[], $31::text[])
	ON CONFLICT (request_id) DO NOTHING RETURNING request_id`

// spendColumns is a batch's spend_logs rows as spendInsert's column
// arrays; the NULL-able JSON columns are pgtype.Text, Valid false for NULL.
type spendColumns struct {
	requestID, keyHash, userID, teamID, endUser, modelGroup, deployment, provider []string
	prompt, completion, cached                                                    []int64
	cost                                                                          []float64
	status, latency, started, ended, reportedPrompt, reportedCompletion           []int64
	clamped, estimated                                                            []int64
	responseID, callType                                                          []string
	tags, metadata, messages, response                                            []pgtype.Text
	cacheHit                                                                      []int64
	cacheKey                                                                      []string
	savedCost                                                                     []float64
	guardrails, errorInfo                                                         []pgtype.Text
}

// spendColumnsOf is rows by column: the values the multi-row VALUES insert
// it replaced bound for each row.
func spendColumnsOf(rows []store.SpendLog) *spendColumns {
	n := len(rows)
	strs := make([]string, 11*n) // the text columns, NOT NULL
	ints := make([]int64, 13*n)
	floats := make([]float64, 2*n)
	texts := make([]pgtype.Text, 6*n) // the JSON columns, NULL-able
	cut := func(k int) (int, int) { return k * n, (k + 1) * n }
	s := func(k int) []string { a, b := cut(k); return strs[a:b:b] }
	i := func(k int) []int64 { a, b := cut(k); return ints[a:b:b] }
	f := func(k int) []float64 { a, b := cut(k); return floats[a:b:b] }
	t := func(k int) []pgtype.Text { a, b := cut(k); return texts[a:b:b] }
	c := &spendColumns{
		requestID: s(0), keyHash: s(1), userID: s(2), teamID: s(3), endUser: s(4), modelGroup: s(5), deployment: s(6), provider: s(7),
		prompt: i(0), completion: i(1), cached: i(2), cost: f(0), status: i(3), latency: i(4), started: i(5), ended: i(6),
		reportedPrompt: i(7), reportedCompletion: i(8), clamped: i(9), estimated: i(10), responseID: s(8), callType: s(9),
		tags: t(0), metadata: t(1), messages: t(2), response: t(3), cacheHit: i(11), cacheKey: s(10), savedCost: f(1),
		guardrails: t(4), errorInfo: t(5),
	}
	for j := range rows {
		l := &rows[j]
		c.requestID[j], c.keyHash[j], c.userID[j], c.teamID[j] = l.RequestID, l.KeyHash, l.UserID, l.TeamID
		c.endUser[j], c.modelGroup[j], c.deployment[j], c.provider[j] = l.EndUser, l.ModelGroup, l.Deployment, l.Provider
		c.prompt[j], c.completion[j], c.cached[j], c.cost[j] = l.PromptTokens, l.CompletionTokens, l.CachedTokens, l.Cost
		c.status[j], c.latency[j], c.started[j], c.ended[j] = int64(l.Status), l.LatencyMS, micros(l.StartedAt), micros(l.EndedAt)
		c.reportedPrompt[j], c.reportedCompletion[j] = l.ReportedPromptTokens, l.ReportedCompletionTokens
		c.clamped[j], c.estimated[j], c.responseID[j], c.callType[j] = flag(l.UsageClamped), flag(l.UsageEstimated), l.ResponseID, l.CallType
		c.tags[j], c.metadata[j] = pgText(tagsText(l.RequestTags)), pgText(metadataText(l.Metadata))
		c.messages[j], c.response[j] = pgText(rawText(l.Messages)), pgText(rawText(l.Response))
		c.cacheHit[j], c.cacheKey[j], c.savedCost[j] = flag(l.CacheHit), l.CacheKey, l.SavedCost
		c.guardrails[j], c.errorInfo[j] = pgText(rawText(l.Guardrails)), pgText(errorText(l.ErrorInformation))
	}
	return c
}

// args is spendInsert's parameters. FlatArray is an array pgx encodes
// without reflection, pgtype.Text elements included.
func (c *spendColumns) args() []any {
	return []any{c.requestID, c.keyHash, c.userID, c.teamID, c.endUser, c.modelGroup, c.deployment, c.provider,
		c.prompt, c.completion, c.cached, c.cost, c.status, c.latency, c.started, c.ended,
		c.reportedPrompt, c.reportedCompletion, c.clamped, c.estimated, c.responseID, c.callType,
		pgtype.FlatArray[pgtype.Text](c.tags), pgtype.FlatArray[pgtype.Text](c.metadata),
		pgtype.FlatArray[pgtype.Text](c.messages), pgtype.FlatArray[pgtype.Text](c.response),
		c.cacheHit, c.cacheKey, c.savedCost,
		pgtype.FlatArray[pgtype.Text](c.guardrails), pgtype.FlatArray[pgtype.Text](c.errorInfo)}
}

// pgText is a value of tagsText, metadataText, rawText or errorText (a
// string, or nil for NULL) as a pgtype.Text.
func pgText(v any) pgtype.Text {
	s, ok := v.(string)
	return pgtype.Text{String: s, Valid: ok}
}

// errorText is a row's error information as JSON (nil, NULL, on a row
// that did not fail).
func errorText(e *store.ErrorInformation) any {
	if e == nil {
		return nil
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil
	}
	return string(b)
}

// tagsText is a row's tags as the JSON array stored in request_tags (nil,
// that is NULL, without tags). json.Marshal writes no spaces, which the tag
// filter of ListSpendLogs relies on.
func tagsText(tags []string) any {
	if len(tags) == 0 {
		return nil
	}
	b, err := json.Marshal(tags)
	if err != nil {
		return nil
	}
	return string(b)
}

// metadataText is a row's metadata as JSON (nil without any). The gateway
// builds it from decoded JSON, so it always encodes; anything that would
// not is dropped rather than failing the batch.
func metadataText(md map[string]any) any {
	if len(md) == 0 {
		return nil
	}
	b, err := json.Marshal(md)
	if err != nil {
		return nil
	}
	return string(b)
}

// rawText is stored JSON as text: nil for nothing or JSON null.
func rawText(raw json.RawMessage) any {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	return string(raw)
}

// flag stores a bool as 0 or 1 (an INTEGER column on both engines).
func flag(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// spendTx is one ApplySpend transaction as the engine runs it: SQLite's
// statements prepared on its one connection and run directly through the
// driver (sqliteSpendTx), PostgreSQL's as text through database/sql
// (pgSpendTx).
type spendTx interface {
	// insertRows inserts rows, skipping request ids already present, and
	// marks the ones it inserted.
	insertRows(rows []store.SpendLog, inserted map[string]bool) error
	// exec runs one of ApplySpend's other statements (q is its text).
	exec(q string, args ...any) error
	// execN is exec that reports how many rows the statement changed.
	execN(q string, args ...any) (int64, error)
	// lookup runs q, a query of one text column, with arg: its first
	// row's value, false without a row.
	lookup(q string, arg any) (string, bool, error)
}

// pgSpendTx is PostgreSQL's spendTx: the rows in one INSERT of column
// arrays (spendInsert), every statement sent as text (pgx prepares and
// caches it per connection).
type pgSpendTx struct {
	ctx context.Context
	tx  *sql.Tx
	s   *DB
}

func (t pgSpendTx) insertRows(rows []store.SpendLog, inserted map[string]bool) error {
	for len(rows) > 0 {
		n := spendChunk(rows)
		if err := t.insertChunk(rows[:n], inserted); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

// spendChunkBytes bounds the text of one spendInsert (but for a row
// larger on its own): PostgreSQL refuses a message (the Bind carrying the
// arrays), and an array, of 1 GB or more, which a writer's batch of 1000
// rows passes with content_logging.max_field_bytes of half a megabyte (it
// has no upper bound), and the batch then failed on every retry. 64 MiB;
// a variable only so that a test can make chunks small
// (SetSpendChunkBytes).
var spendChunkBytes atomic.Int64

func init() { spendChunkBytes.Store(64 << 20) }

// spendChunk is how many of rows, at least one, go in one spendInsert:
// their text (spendRowBytes) stays within spendChunkBytes.
func spendChunk(rows []store.SpendLog) int {
	size, limit := 0, int(spendChunkBytes.Load())
	for i := range rows {
		size += spendRowBytes(&rows[i])
		if size > limit && i > 0 {
			return i
		}
	}
	return len(rows)
}

// spendRowBytes is about what a row adds to spendInsert's arrays, at
// least: its text, metadata counted at the gateway's cap of 16 KiB (not
// encoded twice to measure it), and 256 bytes for the rest.
func spendRowBytes(l *store.SpendLog) int {
	n := 256 + len(l.RequestID) + len(l.KeyHash) + len(l.UserID) + len(l.TeamID) + len(l.EndUser) + len(l.ModelGroup) +
		len(l.Deployment) + len(l.Provider) + len(l.ResponseID) + len(l.CallType) + len(l.CacheKey) +
		len(l.Messages) + len(l.Response) + len(l.Guardrails)
	for _, tag := range l.RequestTags {
		n += len(tag) + 3
	}
	if len(l.Metadata) > 0 {
		n += 16 << 10
	}
	if e := l.ErrorInformation; e != nil {
		n += len(e.ErrorCode) + len(e.ErrorClass) + len(e.LLMProvider) + len(e.ErrorMessage)
	}
	return n
}

// insertChunk inserts rows in one spendInsert.
func (t pgSpendTx) insertChunk(rows []store.SpendLog, inserted map[string]bool) error {
	rs, err := t.tx.QueryContext(t.ctx, spendInsert, spendColumnsOf(rows).args()...)
	if err != nil {
		return fmt.Errorf("insert spend logs: %w", err)
	}
	defer rs.Close()
	for rs.Next() {
		var id string
		if err := rs.Scan(&id); err != nil {
			return err
		}
		inserted[id] = true
	}
	return rs.Err()
}

func (t pgSpendTx) exec(q string, args ...any) error {
	_, err := t.tx.ExecContext(t.ctx, q, args...)
	return err
}

func (t pgSpendTx) lookup(q string, arg any) (string, bool, error) {
	var v string
	switch err := t.tx.QueryRowContext(t.ctx, q, arg).Scan(&v); {
	case errors.Is(err, sql.ErrNoRows):
		return "", false, nil
	case err != nil:
		return "", false, err
	}
	return v, true, nil
}

func (t pgSpendTx) execN(q string, args ...any) (int64, error) {
	res, err := t.tx.ExecContext(t.ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// The statements of ApplySpend besides the row INSERT: the spend of the
// entities with a row of their own, budget_spend and the two rollups.
const (
	endUserSpend = `INSERT INTO end_users (user_id, spend, data, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)
	ON CONFLICT (user_id) DO UPDATE SET spend = end_users.spend + excluded.spend`
	budgetSpend = `INSERT INTO budget_spend (kind, id, key_hash, spend) VALUES ($1, $2, $3, $4)
	ON CONFLICT (kind, id) DO UPDATE SET spend = budget_spend.spend + excluded.spend`
	// A key's model budget is added to only while the key is there, and a
	// member's budget in a team only while the team is there and the
	// member's user or the key is, or her user was never deleted (no
	// tombstone: a member named by user_id has no user record, and a
	// custom_auth key none of its own): a batch that waited for a deletion
	// (or was flushed after it) does not bring back the budget_spend row the
	// deletion dropped (the spend_logs row and the rollups stay: spend
	// history is kept).
	keyBudgetSpend = `INSERT INTO budget_spend (kind, id, key_hash, spend)
	SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS TEXT), CAST($4 AS DOUBLE PRECISION)
	WHERE EXISTS (SELECT 1 FROM keys WHERE token_hash = $3 AND created_at <= $5)
	ON CONFLICT (kind, id) DO UPDATE SET spend = budget_spend.spend + excluded.spend`
	memberBudgetSpend = `INSERT INTO budget_spend (kind, id, key_hash, spend)
	SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS TEXT), CAST($4 AS DOUBLE PRECISION)
	WHERE EXISTS (SELECT 1 FROM teams WHERE team_id = $5)
		AND (EXISTS (SELECT 1 FROM users WHERE user_id = $6) OR EXISTS (SELECT 1 FROM keys WHERE token_hash = $3)
			OR NOT EXISTS (SELECT 1 FROM deletions WHERE kind = 'user' AND id = $6))
	ON CONFLICT (kind, id) DO UPDATE SET spend = budget_spend.spend + excluded.spend`
	// The hash that replaced a regenerated key's (ReplaceKey,
	// key_replacements): a request in flight across /key/regenerate
	// settles under the old hash, whose keys row is gone, and its spend
	// and model budgets go to the key that replaced it
	// (followReplacement).
	keyReplacement = `SELECT new_hash FROM key_replacements WHERE old_hash = $1`
	dailyRollup    = `INSERT INTO spend_daily (day, key_hash, user_id, team_id, end_user, model_group, requests, prompt_tokens, completion_tokens, spend)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
	ON CONFLICT (day, key_hash, user_id, team_id, end_user, model_group) DO UPDATE SET
		requests = spend_daily.requests + excluded.requests,
		prompt_tokens = spend_daily.prompt_tokens + excluded.prompt_tokens,
		completion_tokens = spend_daily.completion_tokens + excluded.completion_tokens,
		spend = spend_daily.spend + excluded.spend`
	tagRollup = `INSERT INTO spend_daily_tags (day, tag, model_group, requests, failed_requests, prompt_tokens, completion_tokens, spend)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
	ON CONFLICT (day, tag, model_group) DO UPDATE SET
		requests = spend_daily_tags.requests + excluded.requests,
		failed_requests = spend_daily_tags.failed_requests + excluded.failed_requests,
		prompt_tokens = spend_daily_tags.prompt_tokens + excluded.prompt_tokens,
		completion_tokens = spend_daily_tags.completion_tokens + excluded.completion_tokens,
		spend = spend_daily_tags.spend + excluded.spend`
)

// entitySpend is the statement adding to the spend of a row of table
// (keys, users, teams, organizations; end users have endUserSpend).
var entitySpend = map[string]string{
	"keys":          `UPDATE keys SET spend = spend + $1 WHERE token_hash = $2 AND created_at <= $3`,
	"users":         `UPDATE users SET spend = spend + $1 WHERE user_id = $2`,
	"teams":         `UPDATE teams SET spend = spend + $1 WHERE team_id = $2`,
	"organizations": `UPDATE organizations SET spend = spend + $1 WHERE organization_id = $2`,
}

// keyMade is the created_at (micros) a key's row must not pass for a spend
// row's cost to count on it: the creation of the key the request
// authenticated with (store.SpendLog.KeyCreatedAt), so that spend of a
// deleted key in flight or queued at its deletion is not booked on a key
// made again with the same secret; any key when it is not known.
func keyMade(l *store.SpendLog) int64 {
	if l.KeyCreatedAt.IsZero() {
		return math.MaxInt64
	}
	return micros(l.KeyCreatedAt)
}

// keySpendID is applySpend's id of a key's spend: the hash, and the
// incarnation (keyMade) unless any key's spend under the hash counts.
func keySpendID(hash string, made int64) string {
	if made == math.MaxInt64 {
		return hash
	}
	return hash + "@" + strconv.FormatInt(made, 10)
}

// splitKeySpendID undoes keySpendID.
func splitKeySpendID(id string) (string, int64) {
	if i := strings.LastIndexByte(id, '@'); i >= 0 {
		if n, err := strconv.ParseInt(id[i+1:], 10, 64); err == nil {
			return id[:i], n
		}
	}
	return id, math.MaxInt64
}

// ApplySpend writes a batch in one transaction. Rows already present (a
// batch replayed after a crash or a retry) are skipped and not counted again:
// spend and rollups are incremented only for rows this call inserted.
func (s *DB) ApplySpend(ctx context.Context, batch []store.SpendLog) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if len(batch) == 0 {
		return nil
	}
	noRows := s.noSpendLogs.Load()
	if s.dialect == goose.DialectSQLite3 {
		return refused(s.applySpendSQLite(ctx, batch, noRows))
	}
	// A batch naming a regenerated key's old hash is run again, once,
	// with the hash that replaced it known (lockReplacements).
	fw := &replacements{restart: true}
	for {
		err := s.tx(ctx, func(tx *sql.Tx) error {
			return applySpend(pgSpendTx{ctx, tx, s}, batch, noRows, fw)
		})
		var again *replacementsFound
		if !errors.As(err, &again) {
			return refused(err)
		}
		fw = &replacements{known: again.known}
	}
}

// replacements tells applySpend what to do with spend naming a key hash
// that has no keys row but a replacement (key_replacements, a key
// regenerated while requests were in flight): with restart (PostgreSQL's
// first run), end the transaction with replacementsFound, so that the
// batch runs again with known and locks the replacing keys in the keys'
// order, among the others; otherwise book it on the replacement at once
// (SQLite, whose one write lock leaves no order to keep, and a key
// regenerated again between the two runs).
type replacements struct {
	restart bool
	known   map[string]string // old hash -> the hash that replaced it
}

// replacementsFound ends a batch's first run on PostgreSQL: known are the
// replaced hashes it named. Nothing of the run is kept (rolled back).
type replacementsFound struct{ known map[string]string }

func (e *replacementsFound) Error() string {
	return fmt.Sprintf("spend of %d replaced key(s): run again", len(e.known))
}

// utcDays is t.UTC().Format(time.DateOnly) for the rows of a batch, made
// once per day rather than once per row (a batch's rows are mostly of one
// day): the UTC date is the Unix day number, floor(seconds / 86,400).
type utcDays struct {
	n   int64
	day string
}

func (d *utcDays) of(t time.Time) string {
	s := t.Unix()
	n := s / 86400
	if s%86400 < 0 {
		n-- // floor, for times before 1970
	}
	if d.day == "" || n != d.n {
		d.n, d.day = n, t.UTC().Format(time.DateOnly)
	}
	return d.day
}

// applySpend writes batch through t: the rows (unless noRows), then the
// spend, budget_spend and rollups of the rows it inserted.
func applySpend(t spendTx, batch []store.SpendLog, noRows bool, fw *replacements) error {
	inserted := make(map[string]bool, len(batch))
	rows := batch
	if noRows {
		// general_settings.disable_spend_logs: spend and rollups only.
		// Without the rows there is no replay check: a batch whose
		// commit succeeded but reported an error is counted twice.
		for _, l := range batch {
			inserted[l.RequestID] = true
		}
		rows = nil
	}
	if err := t.insertRows(rows, inserted); err != nil {
		return err
	}

	type rollKey struct{ day, key, user, team, endUser, model string }
	type roll struct {
		requests, prompt, completion int64
		spend                        float64
	}
	spend := map[[2]string]float64{} // {table, id} -> dollars
	type budget struct {
		store.BudgetRef
		key        string
		made       int64  // of a key model budget: keyMade
		team, user string // of a member budget (KindTeamMember)
	}
	budgets := map[budget]float64{}
	rolls := map[rollKey]*roll{}
	type tagKey struct{ day, tag, model string }
	type tagRoll struct {
		roll
		failed int64
	}
	var tagRolls map[tagKey]*tagRoll
	var days utcDays
	// A batch is mostly runs of rows of one key (and one rollup): the
	// previous row's key id and rollup are kept, so that such a run makes
	// its key id once and looks its rollup up once. The sums are the same
	// entries' in the same order.
	var (
		lastKey, lastID string
		lastMade        int64
		lastRollKey     rollKey
		lastRoll        *roll
	)
	for _, l := range batch {
		if !inserted[l.RequestID] {
			continue
		}
		inserted[l.RequestID] = false // a request id repeated inside one batch counts once
		if l.KeyHash != "" {
			if made := keyMade(&l); lastID == "" || l.KeyHash != lastKey || made != lastMade {
				lastKey, lastMade, lastID = l.KeyHash, made, keySpendID(l.KeyHash, made)
			}
			spend[[2]string{"keys", lastID}] += l.Cost
		}
		for _, e := range [][2]string{{"users", l.UserID}, {"teams", l.TeamID}, {"end_users", l.EndUser}} {
			if e[1] != "" {
				spend[e] += l.Cost
			}
		}
		for _, b := range l.Budgets {
			if b.Kind == store.KindOrganization { // has a row of its own
				spend[[2]string{"organizations", b.ID}] += l.Cost
				continue
			}
			bk := budget{BudgetRef: b, key: l.KeyHash, made: math.MaxInt64}
			if b.Kind == store.KindKeyModel {
				bk.made = keyMade(&l)
			}
			if b.Kind == store.KindTeamMember {
				bk.team, bk.user = l.TeamID, l.UserID
			}
			budgets[bk] += l.Cost
		}
		k := rollKey{days.of(l.StartedAt), l.KeyHash, l.UserID, l.TeamID, l.EndUser, l.ModelGroup}
		r := lastRoll
		if r == nil || k != lastRollKey {
			if r = rolls[k]; r == nil {
				r = &roll{}
				rolls[k] = r
			}
			lastRollKey, lastRoll = k, r
		}
		r.requests++
		r.prompt += l.PromptTokens
		r.completion += l.CompletionTokens
		r.spend += l.Cost
		for i, tag := range l.RequestTags {
			if slices.Contains(l.RequestTags[:i], tag) {
				continue // a tag counts once per request
			}
			if tagRolls == nil {
				tagRolls = map[tagKey]*tagRoll{}
			}
			tk := tagKey{k.day, tag, l.ModelGroup}
			tr := tagRolls[tk]
			if tr == nil {
				tr = &tagRoll{}
				tagRolls[tk] = tr
			}
			if l.Status == 0 || l.Status >= 400 {
				tr.failed++
			}
			tr.requests++
			tr.prompt += l.PromptTokens
			tr.completion += l.CompletionTokens
			tr.spend += l.Cost
		}
	}
	// Spend naming a key a previous run found replaced is the replacing
	// key's, locked in its place in the order.
	keyOf := map[string]string{} // a key hash -> the key that got its spend, if another
	if fw != nil && len(fw.known) > 0 {
		for e, amount := range spend {
			if e[0] != "keys" {
				continue
			}
			old, _ := splitKeySpendID(e[1])
			if to, ok := fw.known[old]; ok {
				delete(spend, e)
				spend[[2]string{"keys", to}] += amount
				keyOf[old] = to
			}
		}
	}
	var found map[string]string // replaced hashes this run found (fw.restart)
	// Rows are locked in one order, whatever the batch (Go's map order is
	// random): keys, then their owners, then budgets and rollups, each by
	// id. Two writers (replicas) of overlapping batches, or a writer and a
	// team's or user's deletion (deleteOwner: its keys, their budgets, then
	// the owner), then wait for each other instead of deadlocking, which on
	// PostgreSQL aborted one of them (a deleted team answered 500).
	now := micros(time.Now())
	for _, e := range sortedKeys(spend, func(a, b [2]string) int {
		if c := tableRank[a[0]] - tableRank[b[0]]; c != 0 {
			return c
		}
		return strings.Compare(a[1], b[1])
	}) {
		amount := spend[e]
		table, id := e[0], e[1]
		if found != nil && table != "keys" {
			// Run again before locking any owner.
			return &replacementsFound{known: found}
		}
		if table == "end_users" {
			// End users come into being with their first request.
			data, err := encode(store.EndUser{UserID: id, CreatedAt: fromMicros(now), UpdatedAt: fromMicros(now)})
			if err != nil {
				return err
			}
			if err := t.exec(endUserSpend, id, amount, data, now); err != nil {
				return fmt.Errorf("end user spend: %w", err)
			}
			continue
		}
		if table != "keys" {
			if err := t.exec(entitySpend[table], amount, id); err != nil {
				return fmt.Errorf("%s spend: %w", table, err)
			}
			continue
		}
		id, made := splitKeySpendID(id)
		n, err := t.execN(entitySpend[table], amount, id, made)
		if err != nil {
			return fmt.Errorf("%s spend: %w", table, err)
		}
		if n > 0 {
			continue
		}
		// No such key: regenerated (or deleted, or the master key's, a
		// static or custom-auth key's hash).
		if fw != nil && fw.restart {
			to, ok, err := t.lookup(keyReplacement, id)
			if err != nil {
				return fmt.Errorf("%s spend: %w", table, err)
			}
			if ok {
				if found == nil {
					found = map[string]string{}
				}
				found[id] = to
			}
			continue
		}
		// Booked in place: on PostgreSQL only for a key regenerated again
		// since the first run, whose replacement is locked out of the
		// order (a deadlock this may cause is run again by DB.tx).
		to, err := followReplacement(t, amount, id)
		if err != nil {
			return fmt.Errorf("%s spend: %w", table, err)
		}
		for old, via := range keyOf {
			if via == id {
				keyOf[old] = to // "" (no key got it) when the replacement is gone
			}
		}
		if to != "" {
			keyOf[id] = to
		}
	}
	if found != nil {
		return &replacementsFound{known: found}
	}
	for _, b := range sortedKeys(budgets, func(x, y budget) int {
		return cmp.Or(strings.Compare(string(x.Kind), string(y.Kind)), strings.Compare(x.ID, y.ID), strings.Compare(x.key, y.key), cmp.Compare(x.made, y.made))
	}) {
		amount := budgets[b]
		var err error
		switch b.Kind {
		case store.KindKeyModel:
			if to := keyOf[b.key]; to != "" && strings.HasPrefix(b.ID, b.key+"/") {
				err = t.exec(keyBudgetSpend, string(b.Kind), to+b.ID[len(b.key):], to, amount, int64(math.MaxInt64))
				break
			}
			err = t.exec(keyBudgetSpend, string(b.Kind), b.ID, b.key, amount, b.made)
		case store.KindTeamMember:
			err = t.exec(memberBudgetSpend, string(b.Kind), b.ID, b.key, amount, b.team, b.user)
		default:
			err = t.exec(budgetSpend, string(b.Kind), b.ID, b.key, amount)
		}
		if err != nil {
			return fmt.Errorf("budget spend: %w", err)
		}
	}
	for _, k := range sortedKeys(rolls, func(x, y rollKey) int {
		return cmp.Or(strings.Compare(x.day, y.day), strings.Compare(x.key, y.key), strings.Compare(x.user, y.user),
			strings.Compare(x.team, y.team), strings.Compare(x.endUser, y.endUser), strings.Compare(x.model, y.model))
	}) {
		r := rolls[k]
		if err := t.exec(dailyRollup, k.day, k.key, k.user, k.team, k.endUser, k.model, r.requests, r.prompt, r.completion, r.spend); err != nil {
			return fmt.Errorf("rollup: %w", err)
		}
	}
	for _, k := range sortedKeys(tagRolls, func(x, y tagKey) int {
		return cmp.Or(strings.Compare(x.day, y.day), strings.Compare(x.tag, y.tag), strings.Compare(x.model, y.model))
	}) {
		r := tagRolls[k]
		if err := t.exec(tagRollup, k.day, k.tag, k.model, r.requests, r.failed, r.prompt, r.completion, r.spend); err != nil {
			return fmt.Errorf("tag rollup: %w", err)
		}
	}
	return nil
}

// followReplacement adds amount to the spend of the key that replaced
// the key hash id (key_replacements) and returns its hash; "" when no key
// replaced id or the key that did is gone (deleted: its spend goes to no
// key). The forwarding is read, then the key updated, each with a
// statement of its own: on PostgreSQL a key regenerated again while the
// UPDATE waited for its row (ReplaceKey deleted it) is found by reading
// the forwarding again, which that ReplaceKey moved to the newest hash
// (one UPDATE whose subquery read the forwarding saw the old one, found
// the row gone and booked the spend on no key).
func followReplacement(t spendTx, amount float64, id string) (string, error) {
	tried := ""
	for range 4 {
		to, ok, err := t.lookup(keyReplacement, id)
		if err != nil || !ok || to == tried {
			return "", err
		}
		n, err := t.execN(entitySpend["keys"], amount, to, int64(math.MaxInt64))
		if err != nil || n > 0 {
			return to, err
		}
		tried = to
	}
	return "", nil
}

// tableRank orders applySpend's entity updates: keys first, as deleteOwner
// locks them before their owner.
var tableRank = map[string]int{"keys": 0, "users": 1, "teams": 2, "organizations": 3, "end_users": 4}

// sortedKeys returns m's keys in the order order gives.
func sortedKeys[K comparable, V any](m map[K]V, order func(a, b K) int) []K {
	ks := make([]K, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.SortFunc(ks, order)
	return ks
}

// spendLogsQueries is ListSpendLogs' two statements for f (the count and
// the page) and their arguments. Every condition that a spend_logs index
// serves carries that index's WHERE verbatim (TestSpendLogsPlans).
func spendLogsQueries(f store.SpendFilter) (count, page string, args []any, err error) {
	var conds []string
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, fmt.Sprintf(cond, len(args)))
	}
	if f.RequestID != "" {
		// The gateway's call id or the upstream answer's id. The response
		// id is found through spend_logs_response_tail (migration 00014),
		// whose first column is the id's last character; the index holds
		// only rows with an answer id (00016), and SQLite uses a partial
		// index only for a WHERE that carries its condition verbatim.
		args = append(args, f.RequestID, f.RequestID)
		conds = append(conds, fmt.Sprintf("(request_id = $%[1]d OR (substr(response_id, length(response_id)) = substr($%[2]d, length($%[2]d)) AND response_id = $%[2]d AND response_id <> ''))", len(args)-1, len(args)))
	}
	if f.KeyHash != "" {
		// spend_logs_key holds only rows with a key (00016): its
		// condition, verbatim, lets the query use it.
		add("key_hash = $%d AND key_hash <> ''", f.KeyHash)
	}
	for _, c := range []struct{ col, v string }{{"user_id", f.UserID}, {"team_id", f.TeamID}, {"end_user", f.EndUser}, {"model_group", f.ModelGroup}} {
		if c.v != "" {
			add(c.col+" = $%d", c.v)
		}
	}
	switch f.Status {
	case "":
	case "success":
		conds = append(conds, "(status > 0 AND status < 400)")
	case "failure":
		conds = append(conds, "(status >= 400 OR status = 0)")
	default:
		code, err := strconv.Atoi(f.Status)
		if err != nil {
			return "", "", nil, fmt.Errorf("spend filter: status %q is not success, failure or a number", f.Status)
		}
		add("status = $%d", code)
	}
	if f.Tag != "" {
		// request_tags is a JSON array written without spaces: inside a
		// JSON string a quote is always escaped, so `["t"` or `,"t"`
		// occurs only where an element is exactly t. replace() is
		// case-sensitive on both engines (SQLite's LIKE is not).
		quoted, _ := json.Marshal(f.Tag)
		args = append(args, "["+string(quoted), ","+string(quoted))
		conds = append(conds, fmt.Sprintf("(replace(request_tags, $%[1]d, '') <> request_tags OR replace(request_tags, $%[2]d, '') <> request_tags)", len(args)-1, len(args)))
	}
	if !f.From.IsZero() {
		add("started_at >= $%d", micros(f.From))
	}
	if !f.To.IsZero() {
		add("started_at < $%d", micros(f.To))
	}
	where := ""
	if len(conds) > 0 {
		where = " WHERE " + strings.Join(conds, " AND ")
	}
	limit, offset := f.PageBounds()
	return `SELECT COUNT(*) FROM spend_logs` + where, fmt.Sprintf(`SELECT request_id, key_hash, user_id, team_id, end_user, model_group, deployment, provider,
		prompt_tokens, completion_tokens, cached_tokens, cost, status, latency_ms, started_at, ended_at,
		reported_prompt_tokens, reported_completion_tokens, usage_clamped, usage_estimated, response_id, call_type,
		request_tags, metadata, messages, response, cache_hit, cache_key, saved_cost, guardrails, error_information
		FROM spend_logs%s ORDER BY started_at DESC, request_id LIMIT %d OFFSET %d`, where, limit, offset), args, nil
}

// ListSpendLogs returns spend logs, newest first: PostgreSQL's from
// spend_logs, SQLite's from its spend blocks.
func (s *DB) ListSpendLogs(ctx context.Context, f store.SpendFilter) ([]store.SpendLog, int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if s.dialect == goose.DialectSQLite3 {
		return s.listSpendBlocks(ctx, f) // SQLite keeps its spend log in blocks (spendblockread.go)
	}
	count, page, args, err := spendLogsQueries(f)
	if err != nil {
		return nil, 0, err
	}
	var total int
	if err := s.db.QueryRowContext(ctx, count, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	rows, err := s.db.QueryContext(ctx, page, args...)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []store.SpendLog
	content := 0 // messages and response bytes returned so far
	for rows.Next() {
		var l store.SpendLog
		var started, ended, clamped, estimated, hit int64
		var tags, md, messages, response, guards, errInfo sql.NullString
		if err := rows.Scan(&l.RequestID, &l.KeyHash, &l.UserID, &l.TeamID, &l.EndUser, &l.ModelGroup, &l.Deployment, &l.Provider,
			&l.PromptTokens, &l.CompletionTokens, &l.CachedTokens, &l.Cost, &l.Status, &l.LatencyMS, &started, &ended,
			&l.ReportedPromptTokens, &l.ReportedCompletionTokens, &clamped, &estimated, &l.ResponseID, &l.CallType,
			&tags, &md, &messages, &response, &hit, &l.CacheKey, &l.SavedCost, &guards, &errInfo); err != nil {
			return nil, 0, err
		}
		l.StartedAt, l.EndedAt = fromMicros(started), fromMicros(ended)
		l.UsageClamped, l.UsageEstimated, l.CacheHit = clamped != 0, estimated != 0, hit != 0
		// The columns hold what this store wrote; one that does not decode
		// (edited by hand) reads as absent rather than failing the listing.
		if tags.Valid {
			_ = json.Unmarshal([]byte(tags.String), &l.RequestTags)
		}
		if md.Valid {
			_ = json.Unmarshal([]byte(md.String), &l.Metadata)
		}
		if errInfo.Valid {
			var e store.ErrorInformation
			if json.Unmarshal([]byte(errInfo.String), &e) == nil {
				l.ErrorInformation = &e
			}
		}
		if guards.Valid && json.Valid([]byte(guards.String)) {
			l.Guardrails = json.RawMessage(guards.String)
		}
		if n := len(messages.String) + len(response.String); f.ContentBytes > 0 && n > 0 && content+n > f.ContentBytes {
			// Past the listing's content budget: the row without them.
			l.ContentOmitted = true
			messages.Valid, response.Valid = false, false
		} else {
			content += n
		}
		if messages.Valid && json.Valid([]byte(messages.String)) {
			l.Messages = json.RawMessage(messages.String)
		}
		if response.Valid && json.Valid([]byte(response.String)) {
			l.Response = json.RawMessage(response.String)
		}
		out = append(out, l)
	}
	return out, total, rows.Err()
}

// AppendAudit records one management write.
func (s *DB) AppendAudit(ctx context.Context, e store.AuditEntry) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if e.ID == "" {
		var b [12]byte
		_, _ = rand.Read(b[:])
		e.ID = hex.EncodeToString(b[:])
	}
	if e.At.IsZero() {
		e.At = time.Now().UTC()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO audit_log (id, at, actor, action, object_type, object_id, before_json, after_json)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, e.ID, micros(e.At), e.Actor, e.Action, e.ObjectType, e.ObjectID, e.Before, e.After)
	return err
}

// ListAudit returns audit entries, newest first.
func (s *DB) ListAudit(ctx context.Context, p store.Page) ([]store.AuditEntry, int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var total int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_log`).Scan(&total); err != nil {
		return nil, 0, err
	}
	limit, offset := p.PageBounds()
	rows, err := s.db.QueryContext(ctx, fmt.Sprintf(`SELECT id, at, actor, action, object_type, object_id, before_json, after_json
		FROM audit_log ORDER BY at DESC, id LIMIT %d OFFSET %d`, limit, offset))
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var out []store.AuditEntry
	for rows.Next() {
		var e store.AuditEntry
		var at int64
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.Action, &e.ObjectType, &e.ObjectID, &e.Before, &e.After); err != nil {
			return nil, 0, err
		}
		e.At = fromMicros(at)
		out = append(out, e)
	}
	return out, total, rows.Err()
}

// TotalSpend is all spend recorded, read from the daily rollups.
func (s *DB) TotalSpend(ctx context.Context) (float64, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var total float64
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(spend), 0) FROM spend_daily`).Scan(&total)
	return total, err
}

// BudgetSpends reads every budget_spend row.
func (s *DB) BudgetSpends(ctx context.Context) ([]store.BudgetSpend, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	rows, err := s.db.QueryContext(ctx, `SELECT kind, id, spend FROM budget_spend`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.BudgetSpend
	for rows.Next() {
		var b store.BudgetSpend
		if err := rows.Scan(&b.Kind, &b.ID, &b.Spend); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// DisableSpendLogs stops writing spend_logs rows (spend columns and the
// daily rollups are still written): general_settings.disable_spend_logs.
func (s *DB) DisableSpendLogs(off bool) { s.noSpendLogs.Store(off) }

// SpendReport sums the daily rollups; it never reads spend_logs, so its cost
// grows with days × groups × models, not with requests.
func (s *DB) SpendReport(ctx context.Context, f store.ReportFilter) ([]store.ReportRow, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if !store.ReportGroups[f.GroupBy] {
		return nil, fmt.Errorf("spend report: cannot group by %q", f.GroupBy)
	}
	var conds []string
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		conds = append(conds, fmt.Sprintf(cond, len(args)))
	}
	if !f.From.IsZero() {
		add("day >= $%d", f.From.UTC().Format(time.DateOnly))
	}
	if !f.To.IsZero() {
		add("day < $%d", f.To.UTC().Format(time.DateOnly))
	}
	for _, c := range []struct{ col, v string }{{"key_hash", f.KeyHash}, {"user_id", f.UserID}, {"team_id", f.TeamID}, {"end_user", f.EndUser}} {
		if c.v != "" {
			add(c.col+" = $%d", c.v)
		}
	}
	where := ""
	if len(conds) > 0 {
		where = " WHERE " + strings.Join(conds, " AND ")
	}
	// f.GroupBy is one of the fixed column names checked above.
	rows, err := s.db.QueryContext(ctx, fmt.Sprintf(`SELECT day, %[1]s, model_group, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), SUM(spend)
		FROM spend_daily%[2]s GROUP BY day, %[1]s, model_group ORDER BY day, %[1]s, model_group`, f.GroupBy, where), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.ReportRow
	for rows.Next() {
		var r store.ReportRow
		if err := rows.Scan(&r.Day, &r.Group, &r.Model, &r.Requests, &r.PromptTokens, &r.CompletionTokens, &r.Spend); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// TagReport sums the daily tag rollups; like SpendReport it never reads
// spend_logs.
func (s *DB) TagReport(ctx context.Context, f store.TagFilter) ([]store.TagRow, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var conds []string
	var args []any
	if !f.From.IsZero() {
		args = append(args, f.From.UTC().Format(time.DateOnly))
		conds = append(conds, fmt.Sprintf("day >= $%d", len(args)))
	}
	if !f.To.IsZero() {
		args = append(args, f.To.UTC().Format(time.DateOnly))
		conds = append(conds, fmt.Sprintf("day < $%d", len(args)))
	}
	if len(f.Tags) > 0 {
		in := make([]string, len(f.Tags))
		for i, t := range f.Tags {
			args = append(args, t)
			in[i] = fmt.Sprintf("$%d", len(args))
		}
		conds = append(conds, "tag IN ("+strings.Join(in, ", ")+")")
	}
	where := ""
	if len(conds) > 0 {
		where = " WHERE " + strings.Join(conds, " AND ")
	}
	rows, err := s.db.QueryContext(ctx, `SELECT day, tag, model_group, SUM(requests), SUM(failed_requests), SUM(prompt_tokens), SUM(completion_tokens), SUM(spend)
		FROM spend_daily_tags`+where+` GROUP BY day, tag, model_group ORDER BY day, tag, model_group`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.TagRow
	for rows.Next() {
		var r store.TagRow
		if err := rows.Scan(&r.Day, &r.Tag, &r.Model, &r.Requests, &r.FailedRequests, &r.PromptTokens, &r.CompletionTokens, &r.Spend); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
