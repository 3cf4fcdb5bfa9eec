package sqlstore

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestUTCDaysMatchFormat: the rollups' day of a row, made once per day
// for a batch, is t.UTC().Format(time.DateOnly) for each row, whatever
// came before it: around midnight UTC to the nanosecond, in zones far from
// UTC, before 1970, and for random times in and out of order.
func TestUTCDaysMatchFormat(t *testing.T) {
	east, west := time.FixedZone("east", 14*3600), time.FixedZone("west", -12*3600)
	var ts []time.Time
	for _, mid := range []time.Time{
		time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC),
		time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC),
		time.Date(1, 1, 2, 0, 0, 0, 0, time.UTC),
		time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC),
	} {
		for _, d := range []time.Duration{-time.Nanosecond, 0, time.Nanosecond, -time.Second, time.Second, 12 * time.Hour, 24*time.Hour - 1, 24 * time.Hour} {
			for _, z := range []*time.Location{time.UTC, east, west, time.Local} {
				ts = append(ts, mid.Add(d).In(z))
			}
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	base := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for range 5000 {
		ts = append(ts, base.Add(time.Duration(r.Int64N(int64(96*time.Hour))-int64(48*time.Hour))).In([]*time.Location{time.UTC, east, west}[r.IntN(3)]))
	}
	var days utcDays
	for i, tm := range ts {
		if got, want := days.of(tm), tm.UTC().Format(time.DateOnly); got != want {
			t.Fatalf("row %d, %v: day %s, want %s", i, tm, got, want)
		}
	}
}
