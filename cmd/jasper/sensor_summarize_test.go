package main

import (
	"testing"
	"time"
)

func TestTimeFormatterMatchesRFC3339Nano(t *testing.T) {
	var f timeFormatter
	start := time.Date(2026, 12, 31, 23, 59, 0, 0, time.UTC).Unix()
	for _, ms := range []uint32{0, 1, 10, 100, 120, 999, 1000, 1500, 59999, 60000, 86399999, 7, 1500} {
		want := time.Unix(start, 0).UTC().Add(time.Duration(ms) * time.Millisecond).Format(time.RFC3339Nano)
		if got := string(f.append(nil, start, ms)); got != want {
			t.Errorf("%d ms: %s, want %s", ms, got, want)
		}
	}
}
