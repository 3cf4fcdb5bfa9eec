package dynamostore_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/tollgate/tollgate/internal/store/dynamostore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// TestProbeTeamResetStampsLater: as sqlstore's (ResetBudget stamped a
// team with the clock's time, not store.NextStamp).
func TestProbeTeamResetStampsLater(t *testing.T) {
	t.Parallel()
	s := open(t, options(t, endpoint(t)))
	storetest.TeamResetStampsLater(t, s, func(f func() time.Time) { dynamostore.SetClock(s, f) })
}

// TestProbeTeamStampReadIsCompared: GetTeam read updated_at from the JSON
// record, UpdateTeam's condition (and DeleteUser's) compared the item's
// updated_at attribute: a team whose two disagree was refused every edit.
func TestProbeTeamStampReadIsCompared(t *testing.T) {
	t.Parallel()
	o := options(t, endpoint(t))
	s := open(t, o)
	c := dynamodb.New(dynamodb.Options{Region: "us-west-2", BaseEndpoint: aws.String(o.Endpoint), Credentials: o.Credentials})
	storetest.TeamStampReadIsCompared(t, s, func(t *testing.T, id string, d time.Duration) {
		_, err := c.UpdateItem(context.Background(), &dynamodb.UpdateItemInput{TableName: aws.String(o.UserTable),
			Key:                       map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: "team#" + id}, "sk": &types.AttributeValueMemberS{Value: "#"}},
			UpdateExpression:          aws.String("SET updated_at = updated_at + :d"),
			ExpressionAttributeValues: map[string]types.AttributeValue{":d": &types.AttributeValueMemberN{Value: strconv.FormatInt(d.Microseconds(), 10)}}})
		if err != nil {
			t.Fatal(err)
		}
	})
}
