// Package dynamostore implements store.Store on Amazon DynamoDB (or a
// DynamoDB-compatible service: dynalite, DynamoDB Local, ScyllaDB
// Alternator) with aws-sdk-go-v2, for general_settings.database_type
// "dynamo_db" as LiteLLM's virtual-keys page configures it.
//
// Four tables, named by database_args (docs/dynamodb.md has the layout):
//
//	user_table_name    users, teams, end users, budgets, organizations
//	key_table_name     keys, their alias locks, their model_max_budget spend
//	config_table_name  models, managed files and batches, audit log, tombstones
//	spend_table_name   spend logs, daily rollups, tag rollups, budget_spend, totals
//
// Every table has a string partition key "pk" and a string sort key "sk";
// the partition key starts with the item's type ("user#", "log#", ...).
// Entity records (users … keys) carry a "kind" and an "updated_at"
// (microseconds) attribute indexed by the sparse, keys-only global
// secondary index "by_kind", which is how Changes finds what other
// replicas wrote without scanning.
//
// DynamoDB (and dynalite) have no multi-statement transaction that this
// store relies on: spend is claimed row by row (a conditional put of the
// spend-log item) and then booked with atomic ADD updates; see ApplySpend.
package dynamostore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"

	"github.com/tollgate/tollgate/internal/store"
)

// Options are LiteLLM's database_args (DynamoDBArgs), plus Endpoint.
type Options struct {
	// BillingMode is PAY_PER_REQUEST (the default) or PROVISIONED_THROUGHPUT
	// (LiteLLM's name; AWS's PROVISIONED is accepted too), with
	// ReadCapacityUnits and WriteCapacityUnits (default 5 each) for every
	// table and index this store creates. Existing tables are used as
	// they are.
	BillingMode                           string
	ReadCapacityUnits, WriteCapacityUnits int64
	// Region is region_name; empty: the AWS chain (AWS_REGION, profile).
	Region string
	// SSLVerify false skips TLS certificate checks (ssl_verify: false).
	SSLVerify *bool
	// Table names; empty: LiteLLM's defaults (LiteLLM_UserTable,
	// LiteLLM_VerificationToken, LiteLLM_Config, LiteLLM_SpendLogs).
	UserTable, KeyTable, ConfigTable, SpendTable string
	// Endpoint is Tollgate's database_args.endpoint_url: a DynamoDB-
	// compatible server (http://127.0.0.1:8000). Empty: the SDK's own
	// resolution, which honours AWS_ENDPOINT_URL_DYNAMODB and
	// AWS_ENDPOINT_URL.
	Endpoint string
	// Credentials, when set, replace the AWS chain (tests).
	Credentials aws.CredentialsProvider
	// HTTPClient, when set, is the client the SDK uses (tests).
	HTTPClient aws.HTTPClient
	// ThrottleAttempts bounds the attempts of a throttled spend write
	// (default 10; tests lower it).
	ThrottleAttempts int
	// MeasureCapacity asks every call for its consumed capacity and adds it
	// to Capacity (docs/dynamodb.md's table was measured so).
	MeasureCapacity bool
}

// Default table names.
const (
	DefaultUserTable   = "LiteLLM_UserTable"
	DefaultKeyTable    = "LiteLLM_VerificationToken"
	DefaultConfigTable = "LiteLLM_Config"
	DefaultSpendTable  = "LiteLLM_SpendLogs"
)

// kindIndex is the global secondary index on (kind, updated_at).
const kindIndex = "by_kind"

// DB is a store on DynamoDB.
type DB struct {
	c                          *dynamodb.Client
	users, keys, config, spend string
	noSpendLogs                atomic.Bool
	timeout                    atomic.Int64
	capMu                      sync.Mutex
	readUnits, writeUnits      float64
	throttleOnly               func(*dynamodb.Options)
	throttleAttempts           int
	// pending are spend ADDs of earlier batches that failed without having
	// been applied (throttled to the end, or never sent): the next
	// ApplySpend sends them again (docs/dynamodb.md, Spend).
	pendMu  sync.Mutex
	pending []*booking
	// lostClaims are the claim tokens of spend-log puts whose answer was
	// lost (request id → token): a retry that finds the item carrying its
	// token knows the put was this process's and books the row.
	lostClaims       map[string]string
	region, endpoint string
	// clock, when set (tests), is the time ResetBudget stamps with: a
	// clock stopped on a stamp stands for writes in one microsecond.
	clock atomic.Pointer[func() time.Time]
}

// now is the time a record write stamps (time.Now unless a test set the clock).
func (s *DB) now() time.Time {
	if f := s.clock.Load(); f != nil {
		return (*f)()
	}
	return time.Now()
}

var _ store.Store = (*DB)(nil)

// DefaultTimeout bounds calls whose context has no deadline (as sqlstore).
const DefaultTimeout = 10 * time.Second

// SetTimeout changes the bound of calls without a deadline.
func (s *DB) SetTimeout(d time.Duration) {
	if d <= 0 {
		d = DefaultTimeout
	}
	s.timeout.Store(int64(d))
}

func (s *DB) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, time.Duration(s.timeout.Load()))
}

// IsThrottle reports whether err is DynamoDB refusing a request for
// capacity: the request was not applied, so sending it again is safe
// even for a non-idempotent ADD.
func IsThrottle(err error) bool {
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.ErrorCode() {
	case "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded", "Throttling", "ThrottledException":
		return true
	}
	return false
}

// Open connects, creates the tables that are missing (with the billing
// mode asked for) and waits for them to be active.
func Open(ctx context.Context, o Options) (*DB, error) {
	var lo []func(*awsconfig.LoadOptions) error
	if o.Region != "" {
		lo = append(lo, awsconfig.WithRegion(o.Region))
	}
	if o.Credentials != nil {
		lo = append(lo, awsconfig.WithCredentialsProvider(o.Credentials))
	}
	switch {
	case o.HTTPClient != nil:
		lo = append(lo, awsconfig.WithHTTPClient(o.HTTPClient))
	case o.SSLVerify != nil && !*o.SSLVerify:
		// The SDK's buildable client, so that a CA bundle from the
		// environment (AWS_CA_BUNDLE) can still be added to it.
		lo = append(lo, awsconfig.WithHTTPClient(awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			if tr.TLSClientConfig == nil {
				tr.TLSClientConfig = &tls.Config{}
			}
			tr.TLSClientConfig.InsecureSkipVerify = true //nolint:gosec // ssl_verify: false asks for it
		})))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, lo...)
	if err != nil {
		return nil, fmt.Errorf("dynamodb: aws config: %w", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("dynamodb: no region: set general_settings.database_args.region_name or AWS_REGION")
	}
	s := &DB{users: or(o.UserTable, DefaultUserTable), keys: or(o.KeyTable, DefaultKeyTable),
		config: or(o.ConfigTable, DefaultConfigTable), spend: or(o.SpendTable, DefaultSpendTable), region: cfg.Region}
	s.SetTimeout(DefaultTimeout)
	s.c = dynamodb.NewFromConfig(cfg, func(do *dynamodb.Options) {
		if o.Endpoint != "" {
			do.BaseEndpoint = aws.String(o.Endpoint)
		}
		if do.BaseEndpoint != nil {
			s.endpoint = *do.BaseEndpoint
		}
		if o.MeasureCapacity {
			do.APIOptions = append(do.APIOptions, s.meter)
		}
	})
	// Spend ADDs are retried on throttling only: a throttled request was
	// not applied, while a timeout may have been.
	s.throttleAttempts = o.ThrottleAttempts
	if s.throttleAttempts <= 0 {
		s.throttleAttempts = 10
	}
	s.throttleOnly = s.throttleRetry(nil)
	if err := s.ensureTables(ctx, o); err != nil {
		return nil, err
	}
	return s, nil
}

// throttleBackoff waits a random time up to 25 ms × 2^attempt (at most
// 2 s) before resending a throttled request: DynamoDB's throttling is per
// second, so the first retries come soon.
func throttleBackoff(attempt int, _ error) (time.Duration, error) {
	ceiling := min(25*time.Millisecond<<min(attempt, 7), 2*time.Second)
	return time.Duration(rand.Int64N(int64(ceiling)) + 1), nil
}

// throttleRetry is the option that retries a call on throttling only;
// seen, when not nil, is told of every failed attempt's error.
func (s *DB) throttleRetry(seen func(error)) func(*dynamodb.Options) {
	return func(do *dynamodb.Options) {
		do.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = s.throttleAttempts
			so.MaxBackoff = 2 * time.Second
			so.Backoff = retry.BackoffDelayerFunc(throttleBackoff)
			so.RateLimiter = ratelimit.None
			so.Retryables = []retry.IsErrorRetryable{retry.IsErrorRetryableFunc(func(err error) aws.Ternary {
				if seen != nil {
					seen(err)
				}
				return aws.BoolTernary(IsThrottle(err))
			})}
		})
	}
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Region is the region the client signs for.
func (s *DB) Region() string { return s.region }

// Endpoint is the endpoint the client was given, "" for AWS's own.
func (s *DB) Endpoint() string { return s.endpoint }

// Tables names the four tables: users, keys, config, spend.
func (s *DB) Tables() [4]string { return [4]string{s.users, s.keys, s.config, s.spend} }

// Engine names the engine.
func (s *DB) Engine() string { return "dynamodb" }

// Close releases nothing: the SDK client has no connection to close.
func (s *DB) Close() error { return nil }

// DropTables deletes the store's four tables (tests clean up with it).
func (s *DB) DropTables(ctx context.Context) error {
	for _, t := range s.Tables() {
		if _, err := s.c.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(t)}); err != nil && !isCode(err, "ResourceNotFoundException") {
			return err
		}
	}
	return nil
}

// Ping describes the key table.
func (s *DB) Ping(ctx context.Context) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	_, err := s.c.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: &s.keys})
	return err
}

// DisableSpendLogs stops writing spend-log items (general_settings.
// disable_spend_logs); spend and rollups are still booked, without replay
// protection.
func (s *DB) DisableSpendLogs(off bool) { s.noSpendLogs.Store(off) }

func (s *DB) ensureTables(ctx context.Context, o Options) error {
	mode := types.BillingModePayPerRequest
	switch strings.ToUpper(o.BillingMode) {
	case "", "PAY_PER_REQUEST":
	case "PROVISIONED", "PROVISIONED_THROUGHPUT":
		mode = types.BillingModeProvisioned
	default:
		return fmt.Errorf("dynamodb: billing_mode %q: want PAY_PER_REQUEST or PROVISIONED_THROUGHPUT", o.BillingMode)
	}
	if o.ReadCapacityUnits < 0 || o.WriteCapacityUnits < 0 {
		return fmt.Errorf("dynamodb: read_capacity_units %d, write_capacity_units %d: want positive numbers (or none: 5)", o.ReadCapacityUnits, o.WriteCapacityUnits)
	}
	var pt *types.ProvisionedThroughput
	if mode == types.BillingModeProvisioned {
		r, w := o.ReadCapacityUnits, o.WriteCapacityUnits
		if r <= 0 {
			r = 5
		}
		if w <= 0 {
			w = 5
		}
		pt = &types.ProvisionedThroughput{ReadCapacityUnits: aws.Int64(r), WriteCapacityUnits: aws.Int64(w)}
	}
	for _, t := range []struct {
		name  string
		index bool
	}{{s.users, true}, {s.keys, true}, {s.config, false}, {s.spend, false}} {
		if err := s.ensureTable(ctx, t.name, t.index, mode, pt); err != nil {
			return err
		}
	}
	return nil
}

func (s *DB) ensureTable(ctx context.Context, name string, index bool, mode types.BillingMode, pt *types.ProvisionedThroughput) error {
	if out, err := s.c.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: &name}); err == nil {
		if err := checkLayout(out.Table, index); err != nil {
			return fmt.Errorf("dynamodb: table %s exists with another layout than Tollgate's (docs/dynamodb.md, Layout): %w; name a table of Tollgate's own in database_args", name, err)
		}
		return s.waitActive(ctx, name)
	} else if !isCode(err, "ResourceNotFoundException") {
		return fmt.Errorf("dynamodb: describe %s: %w", name, err)
	}
	in := &dynamodb.CreateTableInput{
		TableName:   &name,
		BillingMode: mode,
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("sk"), AttributeType: types.ScalarAttributeTypeS},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String("sk"), KeyType: types.KeyTypeRange},
		},
		ProvisionedThroughput: pt,
	}
	if index {
		in.AttributeDefinitions = append(in.AttributeDefinitions,
			types.AttributeDefinition{AttributeName: aws.String("kind"), AttributeType: types.ScalarAttributeTypeS},
			types.AttributeDefinition{AttributeName: aws.String("updated_at"), AttributeType: types.ScalarAttributeTypeN})
		in.GlobalSecondaryIndexes = []types.GlobalSecondaryIndex{{
			IndexName: aws.String(kindIndex),
			KeySchema: []types.KeySchemaElement{
				{AttributeName: aws.String("kind"), KeyType: types.KeyTypeHash},
				{AttributeName: aws.String("updated_at"), KeyType: types.KeyTypeRange},
			},
			Projection:            &types.Projection{ProjectionType: types.ProjectionTypeKeysOnly},
			ProvisionedThroughput: pt,
		}}
	}
	if _, err := s.c.CreateTable(ctx, in); err != nil && !isCode(err, "ResourceInUseException") {
		return fmt.Errorf("dynamodb: create table %s: %w", name, err)
	}
	return s.waitActive(ctx, name)
}

// checkLayout reports how an existing table differs from the layout this
// store writes: partition key pk and sort key sk, both strings, and (index)
// the global secondary index by_kind on (kind, updated_at).
func checkLayout(t *types.TableDescription, index bool) error {
	if t == nil {
		return errors.New("no description")
	}
	attrType := map[string]types.ScalarAttributeType{}
	for _, a := range t.AttributeDefinitions {
		attrType[aws.ToString(a.AttributeName)] = a.AttributeType
	}
	keys := func(ks []types.KeySchemaElement) string {
		var parts []string
		for _, k := range ks {
			parts = append(parts, fmt.Sprintf("%s %s", aws.ToString(k.AttributeName), k.KeyType))
		}
		return strings.Join(parts, ", ")
	}
	want := "pk HASH, sk RANGE"
	if got := keys(t.KeySchema); got != want || attrType["pk"] != types.ScalarAttributeTypeS || attrType["sk"] != types.ScalarAttributeTypeS {
		return fmt.Errorf("its key is (%s), not (%s) of strings", got, want)
	}
	if !index {
		return nil
	}
	for _, g := range t.GlobalSecondaryIndexes {
		if aws.ToString(g.IndexName) == kindIndex {
			if got := keys(g.KeySchema); got != "kind HASH, updated_at RANGE" || attrType["updated_at"] != types.ScalarAttributeTypeN {
				return fmt.Errorf("its index %s is on (%s), not (kind HASH, updated_at RANGE)", kindIndex, got)
			}
			return nil
		}
	}
	return fmt.Errorf("it has no global secondary index %s on (kind, updated_at)", kindIndex)
}

// waitActive polls until the table (and its indexes) are ACTIVE.
func (s *DB) waitActive(ctx context.Context, name string) error {
	delay := 50 * time.Millisecond
	for {
		out, err := s.c.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: &name})
		if err != nil && !isCode(err, "ResourceNotFoundException") {
			return fmt.Errorf("dynamodb: describe %s: %w", name, err)
		}
		if err == nil && out.Table.TableStatus == types.TableStatusActive {
			ready := true
			for _, g := range out.Table.GlobalSecondaryIndexes {
				ready = ready && g.IndexStatus == types.IndexStatusActive
			}
			if ready {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dynamodb: table %s not active: %w", name, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

func isCode(err error, code string) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == code
}

func isCondFailed(err error) bool {
	var cf *types.ConditionalCheckFailedException
	return errors.As(err, &cf) || isCode(err, "ConditionalCheckFailedException")
}

// classify marks what DynamoDB refused for the data itself (an item past
// 400 KB, a number out of range) with store.ErrRejected.
func classify(err error) error {
	if err == nil || errors.Is(err, store.ErrRejected) {
		return err
	}
	if isCode(err, "ValidationException") {
		return fmt.Errorf("%w: %w", store.ErrRejected, err)
	}
	return err
}

// Capacity is the read and write capacity units consumed since Open (or
// the last ResetCapacity), when Options.MeasureCapacity is set.
func (s *DB) Capacity() (read, write float64) {
	s.capMu.Lock()
	defer s.capMu.Unlock()
	return s.readUnits, s.writeUnits
}

// ResetCapacity zeroes the counters.
func (s *DB) ResetCapacity() {
	s.capMu.Lock()
	s.readUnits, s.writeUnits = 0, 0
	s.capMu.Unlock()
}

// meter asks each call for TOTAL consumed capacity and adds it up. Reads
// and writes are told apart by the operation. dynalite reports capacity
// for item calls only; a query or scan it reports none (or 0) for is
// counted from its items' sizes (4 KB per read unit, at least one, halved
// for eventually consistent reads), as DynamoDB bills it.
func (s *DB) meter(stack *middleware.Stack) error {
	if err := stack.Initialize.Add(middleware.InitializeMiddlewareFunc("tollgateAskCapacity",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			switch p := in.Parameters.(type) {
			case *dynamodb.GetItemInput:
				p.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
			case *dynamodb.PutItemInput:
				p.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
			case *dynamodb.UpdateItemInput:
				p.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
			case *dynamodb.DeleteItemInput:
				p.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
			case *dynamodb.BatchGetItemInput:
				p.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
			case *dynamodb.BatchWriteItemInput:
				p.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
			case *dynamodb.QueryInput:
				p.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
			case *dynamodb.ScanInput:
				p.ReturnConsumedCapacity = types.ReturnConsumedCapacityTotal
			}
			return next.HandleInitialize(ctx, in)
		}), middleware.After); err != nil {
		return err
	}
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("tollgateCountCapacity",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleInitialize(ctx, in)
			read := func(c *types.ConsumedCapacity) {
				if c != nil && c.CapacityUnits != nil {
					s.capMu.Lock()
					s.readUnits += *c.CapacityUnits
					s.capMu.Unlock()
				}
			}
			write := func(c *types.ConsumedCapacity) {
				if c != nil && c.CapacityUnits != nil {
					s.capMu.Lock()
					s.writeUnits += *c.CapacityUnits
					s.capMu.Unlock()
				}
			}
			if err != nil {
				// A conditional write that fails still costs its write.
				if isCondFailed(err) {
					s.capMu.Lock()
					s.writeUnits++
					s.capMu.Unlock()
				}
				return out, md, err
			}
			switch r := out.Result.(type) {
			case *dynamodb.GetItemOutput:
				read(r.ConsumedCapacity)
			case *dynamodb.PutItemOutput:
				write(r.ConsumedCapacity)
			case *dynamodb.UpdateItemOutput:
				write(r.ConsumedCapacity)
			case *dynamodb.DeleteItemOutput:
				write(r.ConsumedCapacity)
			case *dynamodb.BatchGetItemOutput:
				for i := range r.ConsumedCapacity {
					read(&r.ConsumedCapacity[i])
				}
			case *dynamodb.BatchWriteItemOutput:
				for i := range r.ConsumedCapacity {
					write(&r.ConsumedCapacity[i])
				}
			case *dynamodb.QueryOutput:
				if r.ConsumedCapacity != nil && aws.ToFloat64(r.ConsumedCapacity.CapacityUnits) > 0 {
					read(r.ConsumedCapacity)
				} else {
					s.estimateRead(r.Items, in.Parameters.(*dynamodb.QueryInput).ConsistentRead)
				}
			case *dynamodb.ScanOutput:
				if r.ConsumedCapacity != nil && aws.ToFloat64(r.ConsumedCapacity.CapacityUnits) > 0 {
					read(r.ConsumedCapacity)
				} else {
					s.estimateRead(r.Items, in.Parameters.(*dynamodb.ScanInput).ConsistentRead)
				}
			}
			return out, md, err
		}), middleware.Before)
}

func (s *DB) estimateRead(items []map[string]types.AttributeValue, consistent *bool) {
	size := 0
	for _, it := range items {
		size += itemSize(it)
	}
	units := float64((size + 4095) / 4096)
	if units == 0 {
		units = 1
	}
	if !aws.ToBool(consistent) {
		units /= 2
	}
	s.capMu.Lock()
	s.readUnits += units
	s.capMu.Unlock()
}

// itemSize is DynamoDB's size of an item: names plus values.
func itemSize(it map[string]types.AttributeValue) int {
	n := 0
	for k, v := range it {
		n += len(k) + valueSize(v)
	}
	return n
}

func valueSize(v types.AttributeValue) int {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return len(v.Value)
	case *types.AttributeValueMemberN:
		return len(v.Value)/2 + 1
	case *types.AttributeValueMemberB:
		return len(v.Value)
	case *types.AttributeValueMemberBOOL, *types.AttributeValueMemberNULL:
		return 1
	case *types.AttributeValueMemberSS:
		n := 0
		for _, x := range v.Value {
			n += len(x)
		}
		return n
	case *types.AttributeValueMemberL:
		n := 3
		for _, x := range v.Value {
			n += valueSize(x) + 1
		}
		return n
	case *types.AttributeValueMemberM:
		n := 3
		for k, x := range v.Value {
			n += len(k) + valueSize(x) + 1
		}
		return n
	}
	return 0
}

// Attribute helpers.

func attrS(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }

func attrN(v int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(v, 10)}
}

func attrF(v float64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatFloat(v, 'f', -1, 64)}
}

func getS(it map[string]types.AttributeValue, k string) string {
	if v, ok := it[k].(*types.AttributeValueMemberS); ok {
		return v.Value
	}
	return ""
}

func getF(it map[string]types.AttributeValue, k string) float64 {
	if v, ok := it[k].(*types.AttributeValueMemberN); ok {
		f, _ := strconv.ParseFloat(v.Value, 64)
		return f
	}
	return 0
}

func getN(it map[string]types.AttributeValue, k string) int64 {
	if v, ok := it[k].(*types.AttributeValueMemberN); ok {
		n, err := strconv.ParseInt(v.Value, 10, 64)
		if err != nil {
			f, _ := strconv.ParseFloat(v.Value, 64)
			return int64(f)
		}
		return n
	}
	return 0
}

func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.UnixMicro(n).UTC()
}

// key is an item's primary key.
func key(pk, sk string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{"pk": attrS(pk), "sk": attrS(sk)}
}

// recordSK is the sort key of an entity's own item.
const recordSK = "#"

// scanAll reads every item of table matching filter (may be "").
func (s *DB) scanAll(ctx context.Context, table, filter string, names map[string]string, values map[string]types.AttributeValue) ([]map[string]types.AttributeValue, error) {
	in := &dynamodb.ScanInput{TableName: &table, ConsistentRead: aws.Bool(true)}
	if filter != "" {
		in.FilterExpression = &filter
		in.ExpressionAttributeNames = names
		in.ExpressionAttributeValues = values
	}
	var out []map[string]types.AttributeValue
	p := dynamodb.NewScanPaginator(s.c, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Items...)
	}
	return out, nil
}

// queryAll reads every item of one partition (optionally of an index).
func (s *DB) queryAll(ctx context.Context, in *dynamodb.QueryInput) ([]map[string]types.AttributeValue, error) {
	var out []map[string]types.AttributeValue
	p := dynamodb.NewQueryPaginator(s.c, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Items...)
	}
	return out, nil
}

// partition reads one partition of table, consistently.
func (s *DB) partition(ctx context.Context, table, pk string) ([]map[string]types.AttributeValue, error) {
	return s.queryAll(ctx, &dynamodb.QueryInput{TableName: &table, ConsistentRead: aws.Bool(true),
		KeyConditionExpression:    aws.String("pk = :pk"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": attrS(pk)}})
}

// batchGet reads items by key, 100 per request, retrying unprocessed keys.
func (s *DB) batchGet(ctx context.Context, table string, keys []map[string]types.AttributeValue) ([]map[string]types.AttributeValue, error) {
	return s.batchGetProjected(ctx, table, keys, "", nil)
}

// batchGetProjected is batchGet of the attributes projection names (with
// its placeholders' names; "": all).
func (s *DB) batchGetProjected(ctx context.Context, table string, keys []map[string]types.AttributeValue, projection string, names map[string]string) ([]map[string]types.AttributeValue, error) {
	var out []map[string]types.AttributeValue
	for start := 0; start < len(keys); start += 100 {
		pending := keys[start:min(start+100, len(keys))]
		for attempt := 0; len(pending) > 0; attempt++ {
			ka := types.KeysAndAttributes{Keys: pending, ConsistentRead: aws.Bool(true)}
			if projection != "" {
				ka.ProjectionExpression, ka.ExpressionAttributeNames = aws.String(projection), names
			}
			res, err := s.c.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: map[string]types.KeysAndAttributes{
				table: ka}})
			if err != nil {
				return nil, err
			}
			out = append(out, res.Responses[table]...)
			pending = res.UnprocessedKeys[table].Keys
			if len(pending) > 0 {
				if err := backoff(ctx, attempt); err != nil {
					return nil, err
				}
			}
		}
	}
	return out, nil
}

// batchWrite writes (puts or deletes) 25 per request, retrying the
// unprocessed ones (BatchWriteItem's answer to throttling).
func (s *DB) batchWrite(ctx context.Context, table string, reqs []types.WriteRequest) error {
	for start := 0; start < len(reqs); start += 25 {
		pending := reqs[start:min(start+25, len(reqs))]
		for attempt := 0; len(pending) > 0; attempt++ {
			res, err := s.c.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]types.WriteRequest{table: pending}})
			if err != nil {
				return classify(err)
			}
			pending = res.UnprocessedItems[table]
			if len(pending) > 0 {
				if err := backoff(ctx, attempt); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func backoff(ctx context.Context, attempt int) error {
	d := min(time.Duration(1<<min(attempt, 6))*25*time.Millisecond, 2*time.Second)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// parallel runs fn(i) for i in [0, n) on up to workers goroutines and
// returns the first error.
func parallel(n, workers int, fn func(i int) error) error {
	if n == 0 {
		return nil
	}
	workers = min(workers, n)
	var next atomic.Int64
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	wg.Wait()
	return first
}
