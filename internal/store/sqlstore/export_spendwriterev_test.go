package sqlstore

// SpendReplayDecodeCount is how many blocks the replay checks have decoded
// since the process started (read it from a test that is not parallel).
func SpendReplayDecodeCount() int64 { return spendReplayDecodes.Load() }
