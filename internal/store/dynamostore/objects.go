package dynamostore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/tollgate/tollgate/internal/store"
)

// Models and managed objects live in the config table: "model#<id>" and
// "object#<kind>#<id>", sort key "#".

func modelPK(id string) string { return "model#" + id }

// PutModel creates or replaces a model, keeping its creation time.
func (s *DB) PutModel(ctx context.Context, m *store.Model) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	now := time.Now().UTC()
	if m.CreatedAt.IsZero() {
		m.CreatedAt = now
	}
	m.UpdatedAt = now
	_, err := s.c.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: &s.config, Key: key(modelPK(m.ID), recordSK),
		UpdateExpression:         aws.String("SET #d = :d, updated_at = :u, created_at = if_not_exists(created_at, :c), #id = :id"),
		ExpressionAttributeNames: map[string]string{"#d": "data", "#id": "id"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":d": attrS(string(m.Entry)), ":u": attrN(micros(m.UpdatedAt)),
			":c": attrN(micros(m.CreatedAt)), ":id": attrS(m.ID)}})
	return classify(err)
}

// DeleteModel removes a model.
func (s *DB) DeleteModel(ctx context.Context, id string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	_, err := s.c.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: &s.config, Key: key(modelPK(id), recordSK),
		ConditionExpression: aws.String("attribute_exists(pk)")})
	if isCondFailed(err) {
		return fmt.Errorf("%w: model %s", store.ErrNotFound, id)
	}
	return err
}

// ListModels returns every model, oldest first.
func (s *DB) ListModels(ctx context.Context) ([]store.Model, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	items, err := s.scanAll(ctx, s.config, "begins_with(pk, :m)", nil, map[string]types.AttributeValue{":m": attrS("model#")})
	if err != nil {
		return nil, err
	}
	out := make([]store.Model, 0, len(items))
	for _, it := range items {
		out = append(out, store.Model{ID: getS(it, "id"), Entry: []byte(getS(it, "data")),
			CreatedAt: fromMicros(getN(it, "created_at")), UpdatedAt: fromMicros(getN(it, "updated_at"))})
	}
	slices.SortFunc(out, func(a, b store.Model) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

func objectPK(kind store.ObjectKind, id string) string { return "object#" + string(kind) + "#" + id }

func boolN(b bool) types.AttributeValue {
	if b {
		return attrN(1)
	}
	return attrN(0)
}

// PutObject records a new managed object.
func (s *DB) PutObject(ctx context.Context, o *store.ManagedObject) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	now := time.Now().UTC()
	if o.CreatedAt.IsZero() {
		o.CreatedAt = now
	}
	o.UpdatedAt = now
	// An id is taken whatever its kind (as the SQL primary key): a lock item.
	lock := key("object_id#"+o.ID, recordSK)
	if _, err := s.c.PutItem(ctx, &dynamodb.PutItemInput{TableName: &s.config, Item: lock, ConditionExpression: aws.String("attribute_not_exists(pk)")}); err != nil {
		if isCondFailed(err) {
			return fmt.Errorf("%w: object %s", store.ErrConflict, o.ID)
		}
		return err
	}
	it := key(objectPK(o.Kind, o.ID), recordSK)
	for k, v := range map[string]string{"id": o.ID, "object_kind": string(o.Kind), "key_hash": o.KeyHash, "user_id": o.UserID, "team_id": o.TeamID,
		"model_group": o.ModelGroup, "deployment": o.Deployment, "provider": o.Provider, "parent_id": o.ParentID, "object": string(o.Object)} {
		if v != "" {
			it[k] = attrS(v)
		}
	}
	it["charged"], it["cost"] = boolN(o.Charged), attrF(o.Cost)
	it["created_at"], it["updated_at"] = attrN(micros(o.CreatedAt)), attrN(micros(o.UpdatedAt))
	_, err := s.c.PutItem(ctx, &dynamodb.PutItemInput{TableName: &s.config, Item: it})
	if err != nil {
		_, _ = s.c.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: &s.config, Key: lock})
	}
	return classify(err)
}

func decodeObject(it map[string]types.AttributeValue) store.ManagedObject {
	return store.ManagedObject{ID: getS(it, "id"), Kind: store.ObjectKind(getS(it, "object_kind")), KeyHash: getS(it, "key_hash"),
		UserID: getS(it, "user_id"), TeamID: getS(it, "team_id"), ModelGroup: getS(it, "model_group"), Deployment: getS(it, "deployment"),
		Provider: getS(it, "provider"), ParentID: getS(it, "parent_id"), Object: []byte(getS(it, "object")),
		Charged: getN(it, "charged") != 0, Cost: getF(it, "cost"),
		CreatedAt: fromMicros(getN(it, "created_at")), UpdatedAt: fromMicros(getN(it, "updated_at"))}
}

// GetObject reads one managed object of kind.
func (s *DB) GetObject(ctx context.Context, kind store.ObjectKind, id string) (*store.ManagedObject, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	out, err := s.c.GetItem(ctx, &dynamodb.GetItemInput{TableName: &s.config, Key: key(objectPK(kind, id), recordSK), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return nil, err
	}
	if out.Item == nil {
		return nil, fmt.Errorf("%w: %s %s", store.ErrNotFound, kind, id)
	}
	o := decodeObject(out.Item)
	return &o, nil
}

// UpdateObject replaces an object's last-seen JSON.
func (s *DB) UpdateObject(ctx context.Context, kind store.ObjectKind, id string, object []byte) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	_, err := s.c.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: &s.config, Key: key(objectPK(kind, id), recordSK),
		UpdateExpression: aws.String("SET #o = :o, updated_at = :u"), ConditionExpression: aws.String("attribute_exists(pk)"),
		ExpressionAttributeNames:  map[string]string{"#o": "object"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":o": attrS(string(object)), ":u": attrN(micros(time.Now()))}})
	if isCondFailed(err) {
		return fmt.Errorf("%w: %s %s", store.ErrNotFound, kind, id)
	}
	return classify(err)
}

// DeleteObject removes a managed object.
func (s *DB) DeleteObject(ctx context.Context, kind store.ObjectKind, id string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	_, err := s.c.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: &s.config, Key: key(objectPK(kind, id), recordSK),
		ConditionExpression: aws.String("attribute_exists(pk)")})
	if isCondFailed(err) {
		return fmt.Errorf("%w: %s %s", store.ErrNotFound, kind, id)
	}
	if err != nil {
		return err
	}
	_, err = s.c.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: &s.config, Key: key("object_id#"+id, recordSK)})
	return err
}

// ListObjects lists managed objects of one kind, newest first (a scan of
// the kind's items: files and batches are few next to spend logs).
func (s *DB) ListObjects(ctx context.Context, f store.ObjectFilter) ([]store.ManagedObject, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	limit := f.Limit
	if limit <= 0 {
		limit = 20
	}
	limit = min(limit, 10000)
	filter := "begins_with(pk, :p)"
	vals := map[string]types.AttributeValue{":p": attrS(objectPK(f.Kind, ""))}
	if f.KeyHash != "" {
		filter += " AND key_hash = :h"
		vals[":h"] = attrS(f.KeyHash)
	}
	items, err := s.scanAll(ctx, s.config, filter, nil, vals)
	if err != nil {
		return nil, err
	}
	objs := make([]store.ManagedObject, 0, len(items))
	for _, it := range items {
		objs = append(objs, decodeObject(it))
	}
	newer := func(a, b store.ManagedObject) int { // newest first, then id descending
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	}
	slices.SortFunc(objs, newer)
	if f.After != "" {
		i := slices.IndexFunc(objs, func(o store.ManagedObject) bool { return o.ID == f.After })
		if i < 0 {
			objs = nil // an unknown cursor (or another key's): nothing after it
		} else {
			objs = objs[i+1:]
		}
	}
	return objs[:min(limit, len(objs))], nil
}

// MarkCharged sets a batch's charged flag once, by a conditional update.
func (s *DB) MarkCharged(ctx context.Context, id string, cost float64) (bool, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	_, err := s.c.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: &s.config, Key: key(objectPK(store.ObjectBatch, id), recordSK),
		UpdateExpression:          aws.String("SET charged = :one, cost = :c, updated_at = :u"),
		ConditionExpression:       aws.String("attribute_exists(pk) AND charged = :zero"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":one": attrN(1), ":zero": attrN(0), ":c": attrF(cost), ":u": attrN(micros(time.Now()))}})
	if isCondFailed(err) {
		return false, nil
	}
	return err == nil, err
}
