package store

import (
	"encoding/json"
	"fmt"
	"time"
)

// ResetRecord starts a new budget period on a stored record (the JSON of
// its data column or attribute), ending at next, as of now, stamped stamp
// (updated_at: NextStamp of the stored one, later than any stamp an editor
// read): it returns the JSON to write, or ok false when this period, or a
// later one, has started already (a stored reset time at or past next, or
// still ahead of now: another replica's sweep got there first). The
// engines write the result conditionally on the data they read, with spend
// set to zero.
func ResetRecord(data string, next, now, stamp time.Time) (enc string, ok bool, err error) {
	var rec map[string]any
	if err := json.Unmarshal([]byte(data), &rec); err != nil {
		return "", false, err
	}
	if cur, isStr := rec["budget_reset_at"].(string); isStr {
		if at, err := time.Parse(time.RFC3339Nano, cur); err == nil && (!at.Before(next) || at.After(now)) {
			return "", false, nil
		}
	}
	rec["budget_reset_at"] = next.UTC()
	rec["updated_at"] = stamp.UTC()
	b, err := json.Marshal(rec)
	if err != nil {
		return "", false, fmt.Errorf("cannot store the reset record: %w: %w", ErrRejected, err)
	}
	return string(b), true, nil
}
