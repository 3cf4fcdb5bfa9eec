package dynamostore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/tollgate/tollgate/internal/store"
)

// The spend table's items:
//
//	pk "log#<request id>", sk "#"         one spend log (its JSON in "data", filter attributes beside)
//	pk "day#<YYYY-MM-DD>", sk <JSON [key, user, team, end user, model]>   a daily rollup (ADD counters)
//	pk "tagday#<YYYY-MM-DD>", sk <JSON [tag, model]>                      a daily tag rollup
//	pk "days", sk "#"                     the string set of days that have rollups
//	pk "total", sk "#"                    all spend ever booked
//	pk "budget_spend", sk "<kind>#<id>"   budgets without a row (custom-auth keys, team members)
//
// A key's model budgets are in the key table (its partition), so a key is
// read with its ModelSpend in one query.

// workers bounds the requests one ApplySpend (or report) has in flight.
const workers = 16

// maxLogItem keeps a spend-log item under DynamoDB's 400 KB item limit:
// a row whose messages and response would pass it is stored without them.
const maxLogItem = 350 << 10

func logPK(id string) string { return "log#" + id }

// logItem is a spend row as its item. Messages, response and guardrails
// are attributes of their own, present only when the row has them.
func logItem(l store.SpendLog) (map[string]types.AttributeValue, error) {
	content := map[string]json.RawMessage{"messages": l.Messages, "response": l.Response, "guardrails": l.Guardrails}
	l.Messages, l.Response, l.Guardrails = nil, nil, nil
	data, err := json.Marshal(l)
	if err != nil {
		return nil, fmt.Errorf("dynamostore: spend log %s: %w: %w", l.RequestID, store.ErrRejected, err)
	}
	it := key(logPK(l.RequestID), recordSK)
	it["data"] = attrS(string(data))
	it["started_at"] = attrN(micros(l.StartedAt))
	size := len(data)
	for _, name := range []string{"guardrails", "messages", "response"} {
		raw := content[name]
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		if name != "guardrails" && size+len(raw) > maxLogItem {
			continue
		}
		size += len(raw)
		it[name] = attrS(string(raw))
	}
	return it, nil
}

func decodeLog(it map[string]types.AttributeValue) (store.SpendLog, error) {
	var l store.SpendLog
	if err := json.Unmarshal([]byte(getS(it, "data")), &l); err != nil {
		return l, fmt.Errorf("spend log %s: corrupt: %w", getS(it, "pk"), err)
	}
	l.Messages, l.Response, l.Guardrails = nil, nil, nil
	if v := getS(it, "guardrails"); v != "" {
		l.Guardrails = json.RawMessage(v)
	}
	return l, nil
}

// booking is one atomic ADD update.
type booking struct {
	table, pk, sk string
	// set are SET clauses applied with the ADD (an end user's record when
	// its first request creates it).
	set    string
	vals   map[string]types.AttributeValue
	adds   []string
	exists bool // the item must exist (entities); a missing one is skipped
	// made, when not 0, is the latest created_at (micros) the item may
	// have: a key's record, for spend of the key made then
	// (store.SpendLog.KeyCreatedAt), not a key made again under its hash.
	made int64
}

// ApplySpend books a batch.
//
// Idempotency by request id, without transactions (dynalite and some
// DynamoDB-compatible services have none): each row is first claimed by a
// conditional put of its spend-log item (attribute_not_exists(pk)); a row
// whose item exists was booked before and is skipped. The claimed rows are
// then summed per target and booked with one atomic ADD update per target:
// spend on the key, user, team, end user and organization records, the
// model budgets, the daily rollup and tag rollup items, the day set and
// the grand total. These updates are retried on throttling only: a
// throttled request was not applied, so a retry cannot book twice.
//
// The rows claimed are booked even when claiming others failed (the
// error makes the spend writer retry the batch, and the retry skips them).
// An ADD that failed without having been applied (throttled to the end,
// or never sent because the batch's deadline had passed) is kept and sent
// again by the next call, before that call's own rows: so the spend
// writer's retry of the batch books it. Only an ADD whose failure leaves
// it unknown whether it was applied (a timeout, a 500) is not sent again:
// the batch may then be under-counted, never counted twice
// (docs/dynamodb.md).
func (s *DB) ApplySpend(ctx context.Context, batch []store.SpendLog) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return err
	}
	seen := make(map[string]bool, len(batch))
	rows := make([]store.SpendLog, 0, len(batch))
	for _, l := range batch {
		if !seen[l.RequestID] {
			seen[l.RequestID] = true
			rows = append(rows, l)
		}
	}
	claimed, claimErr := rows, error(nil)
	if !s.noSpendLogs.Load() && len(rows) > 0 {
		claimed, claimErr = s.claim(ctx, rows)
	}
	s.pendMu.Lock()
	adds := s.pending
	s.pending = nil
	s.pendMu.Unlock()
	if len(claimed) > 0 {
		adds = append(adds, s.bookings(claimed)...)
	}
	var mu sync.Mutex
	var again []*booking
	err := parallel(len(adds), workers, func(i int) error {
		notApplied, err := s.apply(ctx, adds[i])
		if err != nil && notApplied {
			mu.Lock()
			again = append(again, adds[i])
			mu.Unlock()
		}
		return err
	})
	if len(again) > 0 {
		s.pendMu.Lock()
		s.pending = append(s.pending, again...)
		s.pendMu.Unlock()
	}
	if claimErr != nil {
		return claimErr
	}
	if err != nil && s.noSpendLogs.Load() {
		// Without claims a retry of the batch would book its applied ADDs
		// again: the ADDs kept are sent by the next call instead.
		return nil
	}
	return err
}

// claim puts the rows' spend-log items, each on condition that it is not
// there yet, and returns the rows it put, with the first error (the rows
// it put are claimed: a retry skips them, so the caller books them).
//
// Each item carries a claim token. When a put's answer is lost (it may
// have been applied), its token is remembered: the retry of the row that
// finds the item there with that token knows the put was this process's,
// never booked, and claims the row then.
func (s *DB) claim(ctx context.Context, rows []store.SpendLog) ([]store.SpendLog, error) {
	items := make([]map[string]types.AttributeValue, len(rows))
	tokens := make([]string, len(rows))
	s.pendMu.Lock()
	for i, l := range rows {
		if tokens[i] = s.lostClaims[l.RequestID]; tokens[i] == "" {
			var b [12]byte
			_, _ = rand.Read(b[:])
			tokens[i] = hex.EncodeToString(b[:])
		}
	}
	s.pendMu.Unlock()
	for i, l := range rows {
		it, err := logItem(l)
		if err != nil {
			return nil, err
		}
		it["claim"] = attrS(tokens[i])
		items[i] = it
	}
	put := make([]bool, len(rows))
	err := parallel(len(rows), workers, func(i int) error {
		id := rows[i].RequestID
		_, err := s.c.PutItem(ctx, &dynamodb.PutItemInput{TableName: &s.spend, Item: items[i],
			ConditionExpression: aws.String("attribute_not_exists(pk)")}, s.throttleOnly)
		switch {
		case err == nil:
			put[i] = true
		case isCondFailed(err): // booked before: a replay, or our own lost put
			s.pendMu.Lock()
			lost := s.lostClaims[id]
			s.pendMu.Unlock()
			if lost == "" {
				return nil
			}
			out, gerr := s.c.GetItem(ctx, &dynamodb.GetItemInput{TableName: &s.spend, Key: key(logPK(id), recordSK),
				ConsistentRead: aws.Bool(true), ProjectionExpression: aws.String("claim")})
			if gerr != nil {
				return gerr
			}
			put[i] = getS(out.Item, "claim") == lost
		default:
			if !IsThrottle(err) && ctx.Err() == nil {
				// Perhaps applied: remember whose it would be.
				s.pendMu.Lock()
				if s.lostClaims == nil {
					s.lostClaims = map[string]string{}
				}
				s.lostClaims[id] = tokens[i]
				s.pendMu.Unlock()
			}
			return classify(err)
		}
		s.pendMu.Lock()
		delete(s.lostClaims, id)
		s.pendMu.Unlock()
		return nil
	})
	var claimed []store.SpendLog
	for i, ok := range put {
		if ok {
			claimed = append(claimed, rows[i])
		}
	}
	return claimed, err
}

// bookings sums claimed rows into one ADD per target.
func (s *DB) bookings(rows []store.SpendLog) []*booking {
	type targetKey struct {
		table, pk, sk string
		made          int64
	}
	byTarget := map[targetKey]*booking{}
	madeTarget := func(table, pk, sk string, exists bool, made int64) *booking {
		k := targetKey{table, pk, sk, made}
		a := byTarget[k]
		if a == nil {
			a = &booking{table: table, pk: pk, sk: sk, exists: exists, made: made, vals: map[string]types.AttributeValue{}}
			byTarget[k] = a
		}
		return a
	}
	target := func(table, pk, sk string, exists bool) *booking { return madeTarget(table, pk, sk, exists, 0) }
	rollup := func(pk string, group ...string) *booking {
		sk, tuple := rollupSK(group...)
		a := target(s.spend, pk, sk, false)
		if tuple != "" {
			a.set, a.vals[":t"] = "t = :t", attrS(tuple)
		}
		return a
	}
	sums := map[*booking]map[string]float64{}
	bump := func(a *booking, field string, v float64) {
		if sums[a] == nil {
			sums[a] = map[string]float64{}
		}
		sums[a][field] += v
	}
	now := time.Now().UTC()
	days := map[string]bool{}
	total := 0.0
	for _, l := range rows {
		total += l.Cost
		if l.KeyHash != "" {
			var made int64
			if !l.KeyCreatedAt.IsZero() {
				made = micros(l.KeyCreatedAt)
			}
			bump(madeTarget(s.keys, pkOf(store.KindKey, l.KeyHash), recordSK, true, made), "spend", l.Cost)
		}
		for _, e := range []struct {
			kind store.Kind
			id   string
		}{{store.KindUser, l.UserID}, {store.KindTeam, l.TeamID}} {
			if e.id != "" {
				bump(target(kindEntities[e.kind](s), pkOf(e.kind, e.id), recordSK, true), "spend", l.Cost)
			}
		}
		if l.EndUser != "" {
			// End users come into being with their first request.
			a := target(s.users, pkOf(store.KindEndUser, l.EndUser), recordSK, false)
			if a.set == "" {
				data, _ := json.Marshal(store.EndUser{UserID: l.EndUser, CreatedAt: now, UpdatedAt: now})
				a.set = "kind = :kind, #d = if_not_exists(#d, :data), created_at = if_not_exists(created_at, :now), updated_at = if_not_exists(updated_at, :now)"
				a.vals[":kind"], a.vals[":data"], a.vals[":now"] = attrS(string(store.KindEndUser)), attrS(string(data)), attrN(micros(now))
			}
			bump(a, "spend", l.Cost)
		}
		for _, b := range l.Budgets {
			switch b.Kind {
			case store.KindOrganization:
				bump(target(s.users, pkOf(store.KindOrganization, b.ID), recordSK, true), "spend", l.Cost)
			case store.KindKeyModel:
				a := target(s.keys, pkOf(store.KindKey, l.KeyHash), "model#"+b.ID, false)
				a.set, a.vals[":id"] = "id = :id", attrS(b.ID)
				bump(a, "spend", l.Cost)
			default:
				a := target(s.spend, "budget_spend", string(b.Kind)+"#"+b.ID, false)
				a.set, a.vals[":kind"], a.vals[":id"] = "kind = :kind, id = :id", attrS(string(b.Kind)), attrS(b.ID)
				bump(a, "spend", l.Cost)
			}
		}
		day := l.StartedAt.UTC().Format(time.DateOnly)
		days[day] = true
		r := rollup("day#"+day, l.KeyHash, l.UserID, l.TeamID, l.EndUser, l.ModelGroup)
		bump(r, "requests", 1)
		bump(r, "prompt_tokens", float64(l.PromptTokens))
		bump(r, "completion_tokens", float64(l.CompletionTokens))
		bump(r, "spend", l.Cost)
		for i, tag := range l.RequestTags {
			if slices.Contains(l.RequestTags[:i], tag) {
				continue // a tag counts once per request
			}
			t := rollup("tagday#"+day, tag, l.ModelGroup)
			bump(t, "requests", 1)
			if l.Status == 0 || l.Status >= 400 {
				bump(t, "failed_requests", 1)
			} else {
				bump(t, "failed_requests", 0)
			}
			bump(t, "prompt_tokens", float64(l.PromptTokens))
			bump(t, "completion_tokens", float64(l.CompletionTokens))
			bump(t, "spend", l.Cost)
		}
	}
	out := make([]*booking, 0, len(byTarget)+2)
	for _, a := range byTarget {
		fields := make([]string, 0, len(sums[a]))
		for f := range sums[a] {
			fields = append(fields, f)
		}
		slices.Sort(fields)
		for i, f := range fields {
			ph := fmt.Sprintf(":a%d", i)
			a.adds = append(a.adds, "#"+f+" "+ph)
			if f == "spend" {
				a.vals[ph] = attrF(sums[a][f])
			} else {
				a.vals[ph] = attrN(int64(sums[a][f]))
			}
		}
		out = append(out, a)
	}
	dayList := make([]string, 0, len(days))
	for d := range days {
		dayList = append(dayList, d)
	}
	out = append(out, &booking{table: s.spend, pk: "days", sk: recordSK, adds: []string{"#days :days"},
		vals: map[string]types.AttributeValue{":days": &types.AttributeValueMemberSS{Value: dayList}}},
		&booking{table: s.spend, pk: "total", sk: recordSK, adds: []string{"#spend :t"},
			vals: map[string]types.AttributeValue{":t": attrF(total)}})
	return out
}

// maxSortKey is DynamoDB's bound on a sort key's bytes.
const maxSortKey = 1024

// rollupSK is a rollup item's sort key: the JSON array of its group
// (key, user, team, end user, model; or tag, model), or, when that is
// longer than a sort key may be, "#" and its sha256, with the array kept
// in the attribute "t".
func rollupSK(group ...string) (sk, tuple string) {
	b, _ := json.Marshal(group)
	if len(b) <= maxSortKey {
		return string(b), ""
	}
	sum := sha256.Sum256(b)
	return "#" + hex.EncodeToString(sum[:]), string(b)
}

// rollupTuple is the group of a rollup item, as rollupSK wrote it.
func rollupTuple(it map[string]types.AttributeValue) string {
	if t := getS(it, "t"); t != "" {
		return t
	}
	return getS(it, "sk")
}

// apply runs one ADD update, retried on throttling only. notApplied
// reports that a failed update was certainly not applied (its last attempt
// was throttled, or none was sent), so that it may be sent again.
func (s *DB) apply(ctx context.Context, a *booking) (notApplied bool, err error) {
	if err := ctx.Err(); err != nil {
		return true, err
	}
	expr := "ADD " + strings.Join(a.adds, ", ")
	if a.set != "" {
		expr = "SET " + a.set + " " + expr
	}
	names := map[string]string{}
	for _, x := range a.adds {
		f, _, _ := strings.Cut(x, " ")
		names[f] = f[1:]
	}
	if strings.Contains(a.set, "#d") {
		names["#d"] = "data"
	}
	in := &dynamodb.UpdateItemInput{TableName: &a.table, Key: key(a.pk, a.sk), UpdateExpression: &expr,
		ExpressionAttributeNames: names, ExpressionAttributeValues: a.vals}
	if a.exists {
		in.ConditionExpression = aws.String("attribute_exists(pk)")
		if a.made != 0 {
			in.ConditionExpression = aws.String("attribute_exists(pk) AND created_at <= :made")
			a.vals[":made"] = attrN(a.made)
		}
	}
	// answered: 0 no attempt has failed yet, 1 the last failed attempt was
	// throttled, 2 it failed otherwise (perhaps applied).
	var answered atomic.Int32
	_, err = s.c.UpdateItem(ctx, in, s.throttleRetry(func(err error) {
		if IsThrottle(err) {
			answered.Store(1)
		} else {
			answered.Store(2)
		}
	}))
	if a.exists && isCondFailed(err) {
		return false, nil // spend of a record that is gone (or never was)
	}
	if err != nil {
		// The retryer sends nothing once the context is done, so a
		// context error after a throttled attempt (or before any) means
		// the update was not applied.
		notApplied = answered.Load() == 1 || (answered.Load() == 0 && ctx.Err() != nil)
		return notApplied, fmt.Errorf("dynamostore: book spend on %s %s: %w", a.pk, a.sk, classify(err))
	}
	return false, nil
}

// statusKept says whether a row of HTTP status code passes
// SpendFilter.Status: "" keeps all, "success" below 400 (and not 0),
// "failure" 400 and up or none, a number that code only (the SQL
// store's semantics).
func statusKept(status string, code int) bool {
	switch status {
	case "":
		return true
	case "success":
		return code > 0 && code < 400
	case "failure":
		return code >= 400 || code == 0
	}
	n, err := strconv.Atoi(status)
	return err == nil && n == code
}

// ListSpendLogs returns spend logs, newest first. A request id is one
// read; other listings scan the spend-log items (docs/dynamodb.md).
func (s *DB) ListSpendLogs(ctx context.Context, f store.SpendFilter) ([]store.SpendLog, int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	status, err := statusFilter(f.Status)
	if err != nil {
		return nil, 0, err
	}
	var items []map[string]types.AttributeValue
	if f.RequestID != "" {
		out, gerr := s.c.GetItem(ctx, &dynamodb.GetItemInput{TableName: &s.spend, Key: key(logPK(f.RequestID), recordSK), ConsistentRead: aws.Bool(true)})
		if gerr != nil {
			return nil, 0, gerr
		}
		if out.Item != nil {
			items = append(items, out.Item)
		}
	}
	if len(items) == 0 {
		filter := "begins_with(pk, :log)"
		vals := map[string]types.AttributeValue{":log": attrS("log#")}
		if !f.From.IsZero() {
			filter += " AND started_at >= :from"
			vals[":from"] = attrN(micros(f.From))
		}
		if !f.To.IsZero() {
			filter += " AND started_at < :to"
			vals[":to"] = attrN(micros(f.To))
		}
		// The scan leaves the rows' content out (it may be ~350 KB a
		// row): only the page's rows have theirs read, below.
		in := &dynamodb.ScanInput{TableName: &s.spend, ConsistentRead: aws.Bool(true), FilterExpression: &filter,
			ExpressionAttributeValues: vals, ProjectionExpression: aws.String("pk, sk, #d, started_at"),
			ExpressionAttributeNames: map[string]string{"#d": "data"}}
		p := dynamodb.NewScanPaginator(s.c, in)
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, 0, err
			}
			items = append(items, page.Items...)
		}
	}
	var rows []store.SpendLog
	var raw []map[string]types.AttributeValue
	for _, it := range items {
		l, err := decodeLog(it)
		if err != nil {
			return nil, 0, err
		}
		if f.RequestID != "" && l.RequestID != f.RequestID && l.ResponseID != f.RequestID {
			continue
		}
		if (f.KeyHash != "" && l.KeyHash != f.KeyHash) || (f.UserID != "" && l.UserID != f.UserID) ||
			(f.TeamID != "" && l.TeamID != f.TeamID) || (f.EndUser != "" && l.EndUser != f.EndUser) ||
			(f.ModelGroup != "" && l.ModelGroup != f.ModelGroup) || !status(l.Status) ||
			(f.Tag != "" && !slices.Contains(l.RequestTags, f.Tag)) ||
			(f.ModelGroup != "" && l.ModelGroup != f.ModelGroup) || !statusKept(f.Status, l.Status) ||
			(!f.From.IsZero() && l.StartedAt.Before(f.From)) || (!f.To.IsZero() && !l.StartedAt.Before(f.To)) {
			continue
		}
		rows = append(rows, l)
		raw = append(raw, it)
	}
	idx := make([]int, len(rows))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		if c := rows[b].StartedAt.Compare(rows[a].StartedAt); c != 0 {
			return c
		}
		return strings.Compare(rows[a].RequestID, rows[b].RequestID)
	})
	total := len(rows)
	limit, offset := f.PageBounds()
	pageIdx := idx[min(offset, total):min(offset+limit, total)]
	// The page's content, when the scan left it out.
	var want []map[string]types.AttributeValue
	for _, i := range pageIdx {
		if _, ok := raw[i]["messages"]; !ok {
			if _, ok := raw[i]["response"]; !ok {
				want = append(want, key(logPK(rows[i].RequestID), recordSK))
			}
		}
	}
	if len(want) > 0 {
		got, err := s.batchGetProjected(ctx, s.spend, want, "pk, #m, #r", map[string]string{"#m": "messages", "#r": "response"})
		if err != nil {
			return nil, 0, err
		}
		byPK := make(map[string]map[string]types.AttributeValue, len(got))
		for _, it := range got {
			byPK[getS(it, "pk")] = it
		}
		for _, i := range pageIdx {
			if it, ok := byPK[logPK(rows[i].RequestID)]; ok {
				raw[i] = it
			}
		}
	}
	var out []store.SpendLog
	content := 0
	for _, i := range pageIdx {
		l := rows[i]
		messages, response := getS(raw[i], "messages"), getS(raw[i], "response")
		if n := len(messages) + len(response); f.ContentBytes > 0 && n > 0 && content+n > f.ContentBytes {
			l.ContentOmitted = true
			messages, response = "", ""
		} else {
			content += n
		}
		if messages != "" {
			l.Messages = json.RawMessage(messages)
		}
		if response != "" {
			l.Response = json.RawMessage(response)
		}
		out = append(out, l)
	}
	return out, total, nil
}

// statusFilter is SpendFilter.Status as a test of a row's status, as the
// SQL engines read it: "success" (1–399), "failure" (400 and up, or 0:
// no answer), a number (that status), "" (any).
func statusFilter(v string) (func(int) bool, error) {
	switch v {
	case "":
		return func(int) bool { return true }, nil
	case "success":
		return func(c int) bool { return c > 0 && c < 400 }, nil
	case "failure":
		return func(c int) bool { return c >= 400 || c == 0 }, nil
	}
	code, err := strconv.Atoi(v)
	if err != nil {
		return nil, fmt.Errorf("spend filter: status %q is not success, failure or a number", v)
	}
	return func(c int) bool { return c == code }, nil
}

// AppendAudit records one management write: config table, partition
// "audit", sort key "<microseconds>#<id>".
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
	data, err := encode(e)
	if err != nil {
		return err
	}
	it := key("audit", fmt.Sprintf("%016d#%s", micros(e.At), e.ID))
	it["data"] = attrS(data)
	_, err = s.c.PutItem(ctx, &dynamodb.PutItemInput{TableName: &s.config, Item: it})
	return classify(err)
}

// ListAudit returns audit entries, newest first.
func (s *DB) ListAudit(ctx context.Context, p store.Page) ([]store.AuditEntry, int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	vals := map[string]types.AttributeValue{":pk": attrS("audit")}
	var total int
	cp := dynamodb.NewQueryPaginator(s.c, &dynamodb.QueryInput{TableName: &s.config, KeyConditionExpression: aws.String("pk = :pk"),
		ExpressionAttributeValues: vals, Select: types.SelectCount})
	for cp.HasMorePages() {
		page, err := cp.NextPage(ctx)
		if err != nil {
			return nil, 0, err
		}
		total += int(page.Count)
	}
	limit, offset := p.PageBounds()
	var out []store.AuditEntry
	seen := 0
	qp := dynamodb.NewQueryPaginator(s.c, &dynamodb.QueryInput{TableName: &s.config, KeyConditionExpression: aws.String("pk = :pk"),
		ExpressionAttributeValues: vals, ScanIndexForward: aws.Bool(false), ConsistentRead: aws.Bool(true)})
	for qp.HasMorePages() && len(out) < limit {
		page, err := qp.NextPage(ctx)
		if err != nil {
			return nil, 0, err
		}
		for _, it := range page.Items {
			if seen++; seen <= offset || len(out) >= limit {
				continue
			}
			var e store.AuditEntry
			if err := json.Unmarshal([]byte(getS(it, "data")), &e); err != nil {
				return nil, 0, fmt.Errorf("audit: corrupt entry: %w", err)
			}
			out = append(out, e)
		}
	}
	return out, total, nil
}

// TotalSpend reads the grand-total item.
func (s *DB) TotalSpend(ctx context.Context) (float64, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	out, err := s.c.GetItem(ctx, &dynamodb.GetItemInput{TableName: &s.spend, Key: key("total", recordSK), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return 0, err
	}
	return getF(out.Item, "spend"), nil
}

// BudgetSpends reads the budget_spend partition and the keys' model
// budgets.
func (s *DB) BudgetSpends(ctx context.Context) ([]store.BudgetSpend, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	items, err := s.partition(ctx, s.spend, "budget_spend")
	if err != nil {
		return nil, err
	}
	var out []store.BudgetSpend
	for _, it := range items {
		out = append(out, store.BudgetSpend{BudgetRef: store.BudgetRef{Kind: store.Kind(getS(it, "kind")), ID: getS(it, "id")}, Spend: getF(it, "spend")})
	}
	models, err := s.scanAll(ctx, s.keys, "begins_with(sk, :m)", nil, map[string]types.AttributeValue{":m": attrS("model#")})
	if err != nil {
		return nil, err
	}
	for _, it := range models {
		out = append(out, store.BudgetSpend{BudgetRef: store.BudgetRef{Kind: store.KindKeyModel, ID: getS(it, "id")}, Spend: getF(it, "spend")})
	}
	return out, nil
}

// reportDays are the days of [from, to) that have rollups, from the day set.
func (s *DB) reportDays(ctx context.Context, from, to time.Time) ([]string, error) {
	out, err := s.c.GetItem(ctx, &dynamodb.GetItemInput{TableName: &s.spend, Key: key("days", recordSK), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return nil, err
	}
	var days []string
	if ss, ok := out.Item["days"].(*types.AttributeValueMemberSS); ok {
		lo, hi := "", "9999-99-99"
		if !from.IsZero() {
			lo = from.UTC().Format(time.DateOnly)
		}
		if !to.IsZero() {
			hi = to.UTC().Format(time.DateOnly)
		}
		for _, d := range ss.Value {
			if d >= lo && d < hi {
				days = append(days, d)
			}
		}
	}
	slices.Sort(days)
	return days, nil
}

// readDays queries the partition prefix#<day> of each day, several days at
// once, and returns their items in day order.
func (s *DB) readDays(ctx context.Context, prefix string, days []string) ([][]map[string]types.AttributeValue, error) {
	out := make([][]map[string]types.AttributeValue, len(days))
	err := parallel(len(days), workers, func(i int) error {
		items, err := s.queryAll(ctx, &dynamodb.QueryInput{TableName: &s.spend, KeyConditionExpression: aws.String("pk = :pk"),
			ExpressionAttributeValues: map[string]types.AttributeValue{":pk": attrS(prefix + days[i])}})
		out[i] = items
		return err
	})
	return out, err
}

// SpendReport sums the daily rollup items: one query per day that has
// any, never the spend logs.
func (s *DB) SpendReport(ctx context.Context, f store.ReportFilter) ([]store.ReportRow, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	col := map[string]int{"key_hash": 0, "user_id": 1, "team_id": 2, "end_user": 3}
	g, ok := col[f.GroupBy]
	if !ok || !store.ReportGroups[f.GroupBy] {
		return nil, fmt.Errorf("spend report: cannot group by %q", f.GroupBy)
	}
	days, err := s.reportDays(ctx, f.From, f.To)
	if err != nil {
		return nil, err
	}
	perDay, err := s.readDays(ctx, "day#", days)
	if err != nil {
		return nil, err
	}
	var out []store.ReportRow
	for i, items := range perDay {
		sums := map[[2]string]*store.ReportRow{}
		for _, it := range items {
			var t []string
			if json.Unmarshal([]byte(rollupTuple(it)), &t) != nil || len(t) != 5 {
				continue
			}
			if (f.KeyHash != "" && t[0] != f.KeyHash) || (f.UserID != "" && t[1] != f.UserID) ||
				(f.TeamID != "" && t[2] != f.TeamID) || (f.EndUser != "" && t[3] != f.EndUser) {
				continue
			}
			k := [2]string{t[g], t[4]}
			r := sums[k]
			if r == nil {
				r = &store.ReportRow{Day: days[i], Group: k[0], Model: k[1]}
				sums[k] = r
			}
			r.Requests += getN(it, "requests")
			r.PromptTokens += getN(it, "prompt_tokens")
			r.CompletionTokens += getN(it, "completion_tokens")
			r.Spend += getF(it, "spend")
		}
		start := len(out)
		for _, r := range sums {
			out = append(out, *r)
		}
		slices.SortFunc(out[start:], func(a, b store.ReportRow) int {
			if c := strings.Compare(a.Group, b.Group); c != 0 {
				return c
			}
			return strings.Compare(a.Model, b.Model)
		})
	}
	return out, nil
}

// TagReport sums the daily tag rollup items, one query per day.
func (s *DB) TagReport(ctx context.Context, f store.TagFilter) ([]store.TagRow, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	days, err := s.reportDays(ctx, f.From, f.To)
	if err != nil {
		return nil, err
	}
	perDay, err := s.readDays(ctx, "tagday#", days)
	if err != nil {
		return nil, err
	}
	var out []store.TagRow
	for i, items := range perDay {
		start := len(out)
		for _, it := range items {
			var t []string
			if json.Unmarshal([]byte(rollupTuple(it)), &t) != nil || len(t) != 2 {
				continue
			}
			if len(f.Tags) > 0 && !slices.Contains(f.Tags, t[0]) {
				continue
			}
			out = append(out, store.TagRow{Day: days[i], Tag: t[0], Model: t[1], Requests: getN(it, "requests"),
				FailedRequests: getN(it, "failed_requests"), PromptTokens: getN(it, "prompt_tokens"),
				CompletionTokens: getN(it, "completion_tokens"), Spend: getF(it, "spend")})
		}
		slices.SortFunc(out[start:], func(a, b store.TagRow) int {
			if c := strings.Compare(a.Tag, b.Tag); c != 0 {
				return c
			}
			return strings.Compare(a.Model, b.Model)
		})
	}
	return out, nil
}
